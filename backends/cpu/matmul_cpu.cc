// y = x · wᵀ (+ bias) through oneDNN. Weights stay [n, k] row-major, as checkpoints store them;
// oneDNN reads them as a transposed [k, n] through strides.
#include <omp.h>

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/cpu/cpu_backend.h"

namespace ds {

absl::StatusOr<CpuBackend::MatmulEntry> CpuBackend::MatmulPrimitive(const MatmulKey& key) {
  std::lock_guard<std::mutex> lock(matmul_mutex_);
  if (auto it = matmuls_.find(key); it != matmuls_.end()) return it->second;
  const auto [m, k, n, x_stride, w_stride, y_stride, has_bias, bf16] = key;
  using md = dnnl::memory::desc;
  using dt = dnnl::memory::data_type;
  try {
    const dt in = bf16 ? dt::bf16 : dt::f32;
    const md x_md({m, k}, in, dnnl::memory::dims{x_stride, 1});
    const md w_md({k, n}, in, dnnl::memory::dims{1, w_stride});
    const md y_md({m, n}, dt::f32, dnnl::memory::dims{y_stride, 1});
    const md b_md = has_bias ? md({1, n}, dt::f32, dnnl::memory::dims{n, 1}) : md();
    const dnnl::matmul::desc desc(x_md, w_md, b_md, y_md);
    // A user scratchpad: oneDNN's own is shared between primitives (unless it was built with
    // concurrent execution), and sessions run matmuls from many threads at once.
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(desc, attr, engine_);
    MatmulEntry entry{pd, dnnl::matmul(pd)};
    matmuls_.emplace(key, entry);
    return entry;
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN matmul [", m, "x", k, "]·[", n, "x", k,
                                            "]ᵀ: ", e.what()));
  }
}

absl::Status CpuBackend::Matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  if (x.rows == 0) return absl::OkStatus();
  if (w.dtype != DType::kF32) return MatmulNarrow(x, w, bias, y);
  return RunMatmul({x.rows, x.cols, w.rows, x.stride, w.stride, y.stride, bias != nullptr, false}, x.data, w.data,
                   bias, y.data);
}

absl::Status CpuBackend::RunMatmul(const MatmulKey& key, const void* x, const void* w, const Tensor* bias, void* y) {
  auto entry = MatmulPrimitive(key);
  if (!entry.ok()) return entry.status();
  try {
    const auto& pd = entry->pd;
    // oneDNN takes the pointers as non-const but only reads the inputs.
    dnnl::memory x_mem(pd.src_desc(), engine_, const_cast<void*>(x));
    dnnl::memory w_mem(pd.weights_desc(), engine_, const_cast<void*>(w));
    dnnl::memory y_mem(pd.dst_desc(), engine_, y);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem}};
    if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(pd.bias_desc(), engine_, bias->data));
    thread_local std::vector<uint8_t> scratchpad;
    const size_t scratch_bytes = pd.scratchpad_desc().get_size();
    if (scratchpad.size() < scratch_bytes) scratchpad.resize(scratch_bytes);
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(pd.scratchpad_desc(), engine_, scratchpad.data()));
    ScopedOmpThreads threads(n_threads_);
    dnnl::stream stream(engine_);
    entry->primitive.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN matmul: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace ds

// Routed experts on the device. For a few tokens (decode) two kernels read only the chosen
// experts' rows, with the expert ids never leaving the device; NormMoeAdd's input norm, shared
// experts and residual add ride along in the same two kernels. For a prompt the ids come to
// the host once, and each chosen expert runs its rows as GEMMs, as the CPU backend does.
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/kernels.h"
#include "core/status.h"

namespace ds::cuda {
namespace {

// As many tokens as the GEMV takes: a speculative verification pass stays on the device path.
constexpr int64_t kOnDeviceMaxTokens = kGemvMaxRows;

}  // namespace

absl::Status CudaBackend::Moe(const Tensor& x, const Tensor& ids, const Tensor& weights,
                              const std::vector<MlpWeights>& experts, const Tensor& out) {
  if (experts.empty()) return absl::InternalError("moe: no experts");
  if (MoeOnDeviceFits(x, ids, experts, nullptr)) return MoeOnDevice(x, nullptr, 0.0f, ids, weights, experts, nullptr, out);
  return MoeThroughHost(x, ids, weights, experts, out);
}

absl::Status CudaBackend::NormMoeAdd(const Tensor& x, const Tensor& norm, float eps, const Tensor& ids,
                                     const Tensor& weights, const std::vector<MlpWeights>& experts,
                                     const MlpWeights* shared, const Tensor& out) {
  if (!experts.empty() && MoeOnDeviceFits(x, ids, experts, shared))
    return MoeOnDevice(x, &norm, eps, ids, weights, experts, shared, out);
  return Backend::NormMoeAdd(x, norm, eps, ids, weights, experts, shared, out);
}

// The two decode kernels take a few tokens, experts of one layout (and shared experts of theirs,
// in whole blocks of an expert's rows).
bool CudaBackend::MoeOnDeviceFits(const Tensor& x, const Tensor& ids, const std::vector<MlpWeights>& experts,
                                  const MlpWeights* shared) const {
  const MlpWeights& first = experts.front();
  const DType dtype = first.gate_proj.dtype;
  if (x.rows > kOnDeviceMaxTokens || (dtype != DType::kBF16 && dtype != DType::kF32)) return false;
  for (const MlpWeights& e : experts) {
    if (e.gate_proj.dtype != dtype || e.down_proj.dtype != dtype || e.up_proj.dtype != dtype ||
        e.gate_proj.stride != first.gate_proj.stride || e.up_proj.stride != first.gate_proj.stride ||
        e.down_proj.stride != first.down_proj.stride || e.gate_proj.rows != first.gate_proj.rows)
      return false;
  }
  const int64_t inter = first.gate_proj.rows;
  int64_t segments = ids.cols;
  if (shared) {
    if (shared->gate_proj.dtype != dtype || shared->up_proj.dtype != dtype || shared->down_proj.dtype != dtype ||
        shared->up_proj.stride != shared->gate_proj.stride || shared->gate_proj.rows % inter != 0)
      return false;
    segments += shared->gate_proj.rows / inter;
  }
  return segments <= kMoeMaxSegments;
}

absl::Status CudaBackend::MoeOnDevice(const Tensor& x, const Tensor* norm, float eps, const Tensor& ids,
                                      const Tensor& weights, const std::vector<MlpWeights>& experts,
                                      const MlpWeights* shared, const Tensor& out) {
  const MlpWeights& first = experts.front();
  ExpertPointers* table = nullptr;
  {
    std::lock_guard<std::mutex> lock(experts_mutex_);
    auto it = expert_pointers_.find(first.gate_proj.data);
    if (it == expert_pointers_.end()) {
      const int64_t n = static_cast<int64_t>(experts.size());
      std::vector<const void*> gate(n), up(n), down(n);
      for (int64_t e = 0; e < n; ++e) {
        gate[e] = experts[e].gate_proj.data;
        up[e] = experts[e].up_proj.data;
        down[e] = experts[e].down_proj.data;
      }
      ExpertPointers p;
      static_assert(sizeof(void*) == 2 * sizeof(int32_t));
      DS_ASSIGN_OR_RETURN(p.gate, Alloc(DType::kI32, 1, 2 * n));
      DS_ASSIGN_OR_RETURN(p.up, Alloc(DType::kI32, 1, 2 * n));
      DS_ASSIGN_OR_RETURN(p.down, Alloc(DType::kI32, 1, 2 * n));
      DS_RETURN_IF_ERROR(Upload(gate.data(), p.gate));
      DS_RETURN_IF_ERROR(Upload(up.data(), p.up));
      DS_RETURN_IF_ERROR(Upload(down.data(), p.down));
      it = expert_pointers_.emplace(first.gate_proj.data, std::move(p)).first;
    }
    table = &it->second;  // entries are never erased while the backend lives
  }
  const ExpertTable e{.gate = static_cast<const void* const*>(table->gate.data),
                      .up = static_cast<const void* const*>(table->up.data),
                      .down = static_cast<const void* const*>(table->down.data),
                      .n_experts = static_cast<int64_t>(experts.size()),
                      .bf16 = first.gate_proj.dtype == DType::kBF16,
                      .gate_up_stride = first.gate_proj.stride,
                      .down_stride = first.down_proj.stride,
                      .inter = first.gate_proj.rows,
                      .hidden = x.cols,
                      .shared_gate = shared ? shared->gate_proj.data : nullptr,
                      .shared_up = shared ? shared->up_proj.data : nullptr,
                      .shared_down = shared ? shared->down_proj.data : nullptr,
                      .n_shared = shared ? shared->gate_proj.rows / first.gate_proj.rows : 0,
                      .shared_gate_up_stride = shared ? shared->gate_proj.stride : 0,
                      .shared_down_stride = shared ? shared->down_proj.stride : 0};
  DS_ASSIGN_OR_RETURN(Tensor h, Alloc(DType::kF32, x.rows * (ids.cols + e.n_shared), e.inter));
  const MoeInput input{.x = x.ptr<float>(), .x_stride = x.stride, .norm = norm ? norm->ptr<float>() : nullptr,
                       .eps = eps};
  return Check(LaunchMoeDecode(input, x.rows, ids.ptr<int32_t>(), ids.stride, weights.ptr<float>(), weights.stride,
                               ids.cols, e, h.ptr<float>(), out.ptr<float>(), out.stride, sm_count_, stream()),
               "moe");
}

absl::Status CudaBackend::MoeThroughHost(const Tensor& x, const Tensor& ids, const Tensor& weights,
                                         const std::vector<MlpWeights>& experts, const Tensor& out) {
  const int64_t T = x.rows, hidden = x.cols, top_k = ids.cols;
  std::vector<int32_t> host_ids(static_cast<size_t>(T * top_k));
  std::vector<float> host_weights(host_ids.size());
  DS_RETURN_IF_ERROR(Download(ids, host_ids.data()));
  DS_RETURN_IF_ERROR(Download(weights, host_weights.data()));
  // Rows and weights grouped by expert, uploaded once: [rows of expert 0 | rows of expert 1 | ...].
  std::vector<std::vector<std::pair<int32_t, float>>> routed(experts.size());
  for (int64_t i = 0; i < T * top_k; ++i) {
    const int32_t e = host_ids[i];
    if (e < 0 || static_cast<size_t>(e) >= experts.size()) return absl::InternalError("moe: expert id out of range");
    routed[e].emplace_back(static_cast<int32_t>(i / top_k), host_weights[i]);
  }
  std::vector<int32_t> rows;
  std::vector<float> scales;
  for (const auto& r : routed)
    for (const auto& [row, w] : r) rows.push_back(row), scales.push_back(w);
  DS_ASSIGN_OR_RETURN(Tensor rows_dev, Alloc(DType::kI32, 1, static_cast<int64_t>(rows.size())));
  DS_ASSIGN_OR_RETURN(Tensor scales_dev, Alloc(DType::kF32, 1, static_cast<int64_t>(scales.size())));
  DS_RETURN_IF_ERROR(Upload(rows.data(), rows_dev));
  DS_RETURN_IF_ERROR(Upload(scales.data(), scales_dev));
  DS_RETURN_IF_ERROR(Check(cudaMemset2DAsync(out.data, out.stride * sizeof(float), 0, hidden * sizeof(float), T, stream()),
                           "moe clear"));
  int64_t at = 0;
  for (size_t e = 0; e < experts.size(); ++e) {
    const int64_t n = static_cast<int64_t>(routed[e].size());
    if (n == 0) continue;
    const MlpWeights& mlp = experts[e];
    const int64_t inter = mlp.gate_proj.rows;
    DS_ASSIGN_OR_RETURN(Tensor xe, Alloc(DType::kF32, n, hidden));
    DS_ASSIGN_OR_RETURN(Tensor h, Alloc(DType::kF32, n, inter));
    DS_ASSIGN_OR_RETURN(Tensor ye, Alloc(DType::kF32, n, hidden));
    const int32_t* expert_rows = rows_dev.ptr<int32_t>() + at;
    DS_RETURN_IF_ERROR(Check(LaunchGather(x.ptr<float>(), x.stride, expert_rows, n, xe.ptr<float>(), hidden, hidden,
                                          stream()),
                             "moe gather"));
    DS_RETURN_IF_ERROR(GateUp(xe, mlp.gate_proj, mlp.up_proj, h));
    DS_RETURN_IF_ERROR(Matmul(h, mlp.down_proj, nullptr, ye));
    DS_RETURN_IF_ERROR(Check(LaunchScatterAdd(ye.ptr<float>(), hidden, expert_rows, scales_dev.ptr<float>() + at, n,
                                              out.ptr<float>(), out.stride, hidden, stream()),
                             "moe scatter"));
    at += n;
  }
  return absl::OkStatus();
}

}  // namespace ds::cuda

// Routed experts on the device, the expert ids never leaving it. For a few tokens (decode, a
// verification pass) two kernels read only the chosen experts' rows (LaunchMoeDecode); for a
// prompt the tokens are sorted by expert on the device and each expert's rows run as grouped
// GEMMs (LaunchMoeGrouped). NormMoeAdd's input norm, shared experts and residual add ride along
// in both.
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/kernels.h"
#include "core/status.h"

namespace ds::cuda {
namespace {

// As many tokens as the GEMV takes: a speculative verification pass stays on the decode kernels.
constexpr int64_t kDecodeMaxTokens = kGemvMaxRows;

bool SameLayout(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.stride == b.stride && a.rows == b.rows && a.cols == b.cols;
}

bool Aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data) % 16 == 0; }

// The shared experts ride along as more experts where they are in blocks of an expert's rows, of
// the experts' type.
bool SharedRidesAlong(const MlpWeights& first, const MlpWeights& shared) {
  const DType dtype = first.gate_proj.dtype;
  return shared.gate_proj.dtype == dtype && shared.up_proj.dtype == dtype && shared.down_proj.dtype == dtype &&
         SameLayout(shared.up_proj, shared.gate_proj) && shared.gate_proj.cols == first.gate_proj.cols &&
         shared.down_proj.cols == shared.gate_proj.rows && shared.down_proj.rows == first.down_proj.rows &&
         shared.gate_proj.rows % first.gate_proj.rows == 0;
}

}  // namespace

absl::StatusOr<const CudaBackend::ExpertPointers*> CudaBackend::ExpertsOnDevice(const std::vector<MlpWeights>& experts) {
  if (experts.empty()) return absl::InternalError("moe: no experts");
  const MlpWeights& first = experts.front();
  std::lock_guard<std::mutex> lock(experts_mutex_);
  auto it = expert_pointers_.find(first.gate_proj.data);
  if (it != expert_pointers_.end()) return &it->second;  // entries are never erased while the backend lives
  ExpertPointers p;
  const DType dtype = first.gate_proj.dtype;
  p.usable = dtype == DType::kBF16 || dtype == DType::kF32;
  p.aligned = true;
  const int64_t n = static_cast<int64_t>(experts.size());
  std::vector<const void*> gate(n), up(n), down(n);
  for (int64_t e = 0; e < n; ++e) {
    const MlpWeights& w = experts[e];
    p.usable = p.usable && SameLayout(w.gate_proj, first.gate_proj) && SameLayout(w.up_proj, first.gate_proj) &&
               SameLayout(w.down_proj, first.down_proj) && w.down_proj.cols == first.gate_proj.rows;
    p.aligned = p.aligned && Aligned16(w.gate_proj) && Aligned16(w.up_proj) && Aligned16(w.down_proj);
    gate[e] = w.gate_proj.data, up[e] = w.up_proj.data, down[e] = w.down_proj.data;
  }
  static_assert(sizeof(void*) == 2 * sizeof(int32_t));
  DS_ASSIGN_OR_RETURN(p.gate, Alloc(DType::kI32, 1, 2 * n));
  DS_ASSIGN_OR_RETURN(p.up, Alloc(DType::kI32, 1, 2 * n));
  DS_ASSIGN_OR_RETURN(p.down, Alloc(DType::kI32, 1, 2 * n));
  DS_RETURN_IF_ERROR(Upload(gate.data(), p.gate));
  DS_RETURN_IF_ERROR(Upload(up.data(), p.up));
  DS_RETURN_IF_ERROR(Upload(down.data(), p.down));
  return &expert_pointers_.emplace(first.gate_proj.data, std::move(p)).first->second;
}

absl::Status CudaBackend::Moe(const Tensor& x, const Tensor& ids, const Tensor& weights,
                              const std::vector<MlpWeights>& experts, const Tensor& out) {
  return MoeOnDevice(x, nullptr, 0.0f, ids, weights, experts, nullptr, out);
}

absl::Status CudaBackend::NormMoeAdd(const Tensor& x, const Tensor& norm, float eps, const Tensor& ids,
                                     const Tensor& weights, const std::vector<MlpWeights>& experts,
                                     const MlpWeights* shared, const Tensor& out) {
  if (experts.empty() || (shared && !SharedRidesAlong(experts.front(), *shared)))
    return Backend::NormMoeAdd(x, norm, eps, ids, weights, experts, shared, out);
  return MoeOnDevice(x, &norm, eps, ids, weights, experts, shared, out);
}

absl::Status CudaBackend::MoeOnDevice(const Tensor& x, const Tensor* norm, float eps, const Tensor& ids,
                                      const Tensor& weights, const std::vector<MlpWeights>& experts,
                                      const MlpWeights* shared, const Tensor& out) {
  DS_ASSIGN_OR_RETURN(const ExpertPointers* table, ExpertsOnDevice(experts));
  if (!table->usable)
    return absl::UnimplementedError(
        "moe: the CUDA backend runs experts of one layout only (bf16 or f32, equal shapes and strides)");
  const MlpWeights& first = experts.front();
  const int64_t inter = first.gate_proj.rows, n_shared = shared ? shared->gate_proj.rows / inter : 0;
  if (ids.cols + n_shared > kMoeMaxSegments)
    return absl::UnimplementedError(absl::StrCat("moe: ", ids.cols, " experts a token and ", n_shared,
                                                 " shared, past the CUDA backend's ", kMoeMaxSegments));
  if (x.rows == 0) return absl::OkStatus();
  const ExpertTable e{.gate = static_cast<const void* const*>(table->gate.data),
                      .up = static_cast<const void* const*>(table->up.data),
                      .down = static_cast<const void* const*>(table->down.data),
                      .n_experts = static_cast<int64_t>(experts.size()),
                      .bf16 = first.gate_proj.dtype == DType::kBF16,
                      .gate_up_stride = first.gate_proj.stride,
                      .down_stride = first.down_proj.stride,
                      .inter = inter,
                      .hidden = x.cols,
                      .shared_gate = shared ? shared->gate_proj.data : nullptr,
                      .shared_up = shared ? shared->up_proj.data : nullptr,
                      .shared_down = shared ? shared->down_proj.data : nullptr,
                      .n_shared = n_shared,
                      .shared_gate_up_stride = shared ? shared->gate_proj.stride : 0,
                      .shared_down_stride = shared ? shared->down_proj.stride : 0,
                      .aligned = table->aligned && (!shared || (Aligned16(shared->gate_proj) &&
                                                                Aligned16(shared->up_proj) &&
                                                                Aligned16(shared->down_proj)))};
  const MoeInput input{.x = x.ptr<float>(), .x_stride = x.stride, .norm = norm ? norm->ptr<float>() : nullptr,
                       .eps = eps};
  if (x.rows <= kDecodeMaxTokens) {
    DS_ASSIGN_OR_RETURN(Tensor h, Alloc(DType::kF32, x.rows * (ids.cols + e.n_shared), e.inter));
    return Check(LaunchMoeDecode(input, x.rows, ids.ptr<int32_t>(), ids.stride, weights.ptr<float>(), weights.stride,
                                 ids.cols, e, h.ptr<float>(), out.ptr<float>(), out.stride, sm_count_, stream()),
                 "moe");
  }
  const int64_t scratch_bytes = MoeGroupedScratchBytes(x.rows, ids.cols, e);
  DS_ASSIGN_OR_RETURN(Tensor scratch, Alloc(DType::kI32, 1, (scratch_bytes + 3) / 4));
  return Check(LaunchMoeGrouped(input, x.rows, ids.ptr<int32_t>(), ids.stride, weights.ptr<float>(), weights.stride,
                                ids.cols, e, scratch.data, out.ptr<float>(), out.stride, stream()),
               "moe");
}

}  // namespace ds::cuda

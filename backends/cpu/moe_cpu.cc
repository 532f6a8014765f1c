// Routed experts on the CPU: the rows routed to an expert are gathered and run through its
// MLP together, so only the selected experts' weights are read.
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/status.h"

namespace ds {

absl::Status CpuBackend::Moe(const Tensor& x, const Tensor& ids, const Tensor& weights,
                             const std::vector<MlpWeights>& experts, const Tensor& out) {
  const int64_t T = x.rows, hidden = x.cols, top_k = ids.cols;
  std::vector<std::vector<std::pair<int64_t, float>>> routed(experts.size());  // (row, weight)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t e = ids.ptr<int32_t>()[t * ids.stride + j];
      if (e < 0 || static_cast<size_t>(e) >= experts.size())
        return absl::InternalError("moe: expert id out of range");
      routed[e].emplace_back(t, weights.ptr<float>()[t * weights.stride + j]);
    }
  }
  for (int64_t t = 0; t < T; ++t) std::memset(out.ptr<float>() + t * out.stride, 0, hidden * sizeof(float));

  for (size_t e = 0; e < experts.size(); ++e) {
    const auto& rows = routed[e];
    if (rows.empty()) continue;
    const MlpWeights& mlp = experts[e];
    const int64_t n = static_cast<int64_t>(rows.size()), inter = mlp.gate_proj.rows;
    DS_ASSIGN_OR_RETURN(Tensor xe, Alloc(DType::kF32, n, hidden));
    DS_ASSIGN_OR_RETURN(Tensor h, Alloc(DType::kF32, n, inter));
    DS_ASSIGN_OR_RETURN(Tensor ye, Alloc(DType::kF32, n, hidden));
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(xe.ptr<float>() + i * hidden, x.ptr<float>() + rows[i].first * x.stride, hidden * sizeof(float));
    DS_RETURN_IF_ERROR(GateUp(xe, mlp.gate_proj, mlp.up_proj, h));
    DS_RETURN_IF_ERROR(Matmul(h, mlp.down_proj, nullptr, ye));
    for (int64_t i = 0; i < n; ++i) {
      float* o = out.ptr<float>() + rows[i].first * out.stride;
      const float* y = ye.ptr<float>() + i * hidden;
      for (int64_t c = 0; c < hidden; ++c) o[c] += rows[i].second * y[c];
    }
  }
  return absl::OkStatus();
}

}  // namespace ds

// Causal attention on the device: the split-key kernel for a few query rows (decode, verify),
// two cuBLASLt products around a causal softmax for prompts.
#include <algorithm>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/kernels.h"
#include "core/status.h"

namespace ds::cuda {
namespace {

constexpr int64_t kSplitKernelMaxRows = 16;
constexpr int64_t kScoresBudgetBytes = 256ll << 20;  // per pass of the prompt path

}  // namespace

absl::Status CudaBackend::Attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& s,
                                    const Tensor& out) {
  if (q.rows > kSplitKernelMaxRows || s.head_dim_v > kMaxHeadDimV) return AttentionByGemm(q, k, v, s, out);
  const AttentionArgs a{.q = q.ptr<float>(), .q_stride = q.stride, .k = k.ptr<float>(), .k_stride = k.stride,
                        .v = v.ptr<float>(), .v_stride = v.stride, .out = out.ptr<float>(), .out_stride = out.stride,
                        .T = q.rows, .n_heads = s.n_heads, .n_kv_heads = s.n_kv_heads, .head_dim_qk = s.head_dim_qk,
                        .head_dim_v = s.head_dim_v, .pos0 = s.position.pos0,
                        .pos0_device = s.position.device.valid() ? s.position.device.ptr<int32_t>() : nullptr,
                        .key_rows = k.rows, .scale = s.scale};
  const int64_t splits = AttentionSplits(a);
  DS_ASSIGN_OR_RETURN(Tensor partials, Alloc(DType::kF32, 1, AttentionSplitScratch(a, splits)));
  return Check(LaunchAttentionSplit(a, splits, partials.ptr<float>(), attention_counters_.ptr<int>(),
                                    attention_counters_.cols, stream()),
               "attention");
}

// Per kv head, its group of query heads as one batch: scores = scale · Q Kᵀ, the causal
// softmax, out = P V. Long contexts take the prompt's rows in passes that bound the scores.
absl::Status CudaBackend::AttentionByGemm(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& s,
                                          const Tensor& out) {
  const int64_t T = q.rows, pos0 = s.position.pos0, S = pos0 + T, group = s.n_heads / s.n_kv_heads;
  const int64_t dqk = s.head_dim_qk, dv = s.head_dim_v;
  const int64_t rows_per_pass =
      std::clamp<int64_t>(kScoresBudgetBytes / (group * S * static_cast<int64_t>(sizeof(float))), 1, T);
  DS_ASSIGN_OR_RETURN(Tensor scores, Alloc(DType::kF32, group * rows_per_pass, S));
  for (int64_t kv = 0; kv < s.n_kv_heads; ++kv) {
    for (int64_t t0 = 0; t0 < T; t0 += rows_per_pass) {
      const int64_t tb = std::min(rows_per_pass, T - t0);
      // scoresᵀ [S, tb] per head = K [S, dqk] · Q_hᵀ: column-major, K read transposed.
      DS_RETURN_IF_ERROR(Gemm({.tf32 = tf32_attention_, .transpose_a = true, .m = S, .n = tb, .k = dqk,
                               .a = k.ptr<float>() + kv * dqk, .lda = k.stride, .stride_a = 0,
                               .b = q.ptr<float>() + t0 * q.stride + kv * group * dqk, .ldb = q.stride, .stride_b = dqk,
                               .c = scores.ptr<float>(), .ldc = S, .stride_c = tb * S, .batch = group,
                               .alpha = s.scale}));
      DS_RETURN_IF_ERROR(Check(LaunchCausalSoftmax(scores.ptr<float>(), group, tb, S, pos0, t0, stream()), "softmax"));
      // out_hᵀ [dv, tb] = Vᵀ [dv, S] · P_hᵀ [S, tb].
      DS_RETURN_IF_ERROR(Gemm({.tf32 = tf32_attention_, .m = dv, .n = tb, .k = S, .a = v.ptr<float>() + kv * dv, .lda = v.stride, .stride_a = 0,
                               .b = scores.ptr<float>(), .ldb = S, .stride_b = tb * S,
                               .c = out.ptr<float>() + t0 * out.stride + kv * group * dv, .ldc = out.stride,
                               .stride_c = dv, .batch = group}));
    }
  }
  return absl::OkStatus();
}

}  // namespace ds::cuda

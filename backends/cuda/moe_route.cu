// DeepSeek-V3 expert routing on the device, one thread per token: the choice is a few hundred
// comparisons, and doing it here keeps the expert ids on the device for the expert kernels.
// The order of selection (highest first, the lower index on ties) is the CPU backend's.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {
namespace {

// The index of the largest v[i] not yet taken; the lowest index among equals.
__device__ int64_t TakeBest(const float* v, bool* taken, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
  taken[best] = true;
  return best;
}

__global__ void MoeRouteKernel(const float* logits, int64_t ls, int64_t T, int64_t n_experts, const float* correction,
                               int64_t n_group, int64_t topk_group, int64_t top_k, bool norm_topk_prob, float scaling,
                               int32_t* ids, int64_t ids_stride, float* weights, int64_t weights_stride) {
  WaitForPreviousKernels();
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= T) return;
  float scores[kMaxExperts], choice[kMaxExperts], group_score[kMaxGroups];
  bool taken[kMaxExperts], keep[kMaxGroups];
  const int64_t group_size = n_experts / n_group;
  const float* l = logits + t * ls;
  for (int64_t e = 0; e < n_experts; ++e) {
    scores[e] = 1.0f / (1.0f + expf(-l[e]));
    choice[e] = scores[e] + correction[e];
    taken[e] = false;
  }
  // A group's score is the sum of its two best choices.
  for (int64_t g = 0; g < n_group; ++g) {
    const float* c = &choice[g * group_size];
    float best = -INFINITY, second = -INFINITY;
    for (int64_t i = 0; i < group_size; ++i) {
      if (c[i] > best) {
        second = best;
        best = c[i];
      } else if (c[i] > second) {
        second = c[i];
      }
    }
    group_score[g] = group_size > 1 ? best + second : best;
    keep[g] = false;
  }
  for (int64_t i = 0; i < topk_group; ++i) keep[TakeBest(group_score, keep, n_group)] = true;
  // transformers masks the other groups with 0.0 (not -inf).
  for (int64_t e = 0; e < n_experts; ++e)
    if (!keep[e / group_size]) choice[e] = 0.0f;
  int32_t* id = ids + t * ids_stride;
  float* w = weights + t * weights_stride;
  float sum = 0.0f;
  for (int64_t j = 0; j < top_k; ++j) {
    const int64_t e = TakeBest(choice, taken, n_experts);
    id[j] = static_cast<int32_t>(e);
    w[j] = scores[e];
    sum += w[j];
  }
  for (int64_t j = 0; j < top_k; ++j) {
    if (norm_topk_prob) w[j] /= sum + 1e-20f;
    w[j] *= scaling;
  }
}

}  // namespace

cudaError_t LaunchMoeRoute(const float* logits, int64_t logits_stride, int64_t T, int64_t n_experts,
                           const float* correction, int64_t n_group, int64_t topk_group, int64_t top_k,
                           bool norm_topk_prob, float routed_scaling_factor, int32_t* ids, int64_t ids_stride,
                           float* weights, int64_t weights_stride, cudaStream_t stream) {
  if (T <= 0) return cudaSuccess;
  if (n_experts > kMaxExperts || n_group > kMaxGroups || n_group < 1 || n_experts % n_group != 0 ||
      topk_group > n_group || top_k > n_experts)
    return cudaErrorInvalidValue;
  return Launch(MoeRouteKernel, Blocks(T, 64, 2147483647), 64, 0, stream, logits, logits_stride, T, n_experts,
                correction, n_group, topk_group, top_k, norm_topk_prob, routed_scaling_factor, ids, ids_stride, weights,
                weights_stride);
}

}  // namespace ds::cuda

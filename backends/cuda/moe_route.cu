// DeepSeek-V3 expert routing on the device, a warp per token: doing it here keeps the expert
// ids on the device for the expert kernels. The order of selection (highest first, the lower
// index on ties) is the CPU backend's. (One thread per token, as this was first, took 39 us a
// layer on the H100: the experts' arrays did not fit in registers.) A block is one warp, with
// little shared memory: 4 KB at most.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {
namespace {

constexpr int kExpertsPerLane = kMaxExperts / 32;  // lane l holds experts l, l + 32, ...

// The index of the largest v[i] not yet taken; the lowest index among equals.
__device__ int TakeBest(const float* v, bool* taken, int n) {
  int best = -1;
  for (int i = 0; i < n; ++i)
    if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
  taken[best] = true;
  return best;
}

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Whether candidate (v, e) beats (best, at): larger, or equal with the lower index; e < 0 is none.
__device__ __forceinline__ bool Beats(float v, int e, float best, int at) {
  return e >= 0 && (at < 0 || v > best || (v == best && e < at));
}

__global__ void __launch_bounds__(32)
    MoeRouteKernel(const float* logits, int64_t ls, int64_t T, int n_experts, const float* correction, int n_group,
                   int topk_group, int top_k, bool norm_topk_prob, float scaling, int32_t* ids, int64_t ids_stride,
                   float* weights, int64_t weights_stride) {
  __shared__ float choice[kMaxExperts], group_score[kMaxGroups];
  __shared__ bool keep[kMaxGroups];
  __shared__ int32_t chosen[kMaxExperts];
  WaitForPreviousKernels();
  const int lane = threadIdx.x;
  const int64_t t = blockIdx.x;
  const float* l = logits + t * ls;
  for (int e = lane; e < n_experts; e += 32) choice[e] = Sigmoid(l[e]) + correction[e];
  __syncwarp();
  // A group's score is the sum of its two best choices: a lane per group.
  const int group_size = n_experts / n_group;
  for (int g = lane; g < n_group; g += 32) {
    const float* c = &choice[g * group_size];
    float best = -INFINITY, second = -INFINITY;
    for (int i = 0; i < group_size; ++i) {
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
  __syncwarp();
  if (lane == 0)
    for (int i = 0; i < topk_group; ++i) keep[TakeBest(group_score, keep, n_group)] = true;
  __syncwarp();
  // This lane's experts' choices; transformers masks the other groups with 0.0 (not -inf).
  float mine[kExpertsPerLane] = {};
  uint32_t taken = 0;  // bit i: expert lane + 32 * i is chosen (or past n_experts)
#pragma unroll
  for (int i = 0; i < kExpertsPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < n_experts) {
      mine[i] = keep[e / group_size] ? choice[e] : 0.0f;
    } else {
      taken |= 1u << i;
    }
  }
  for (int j = 0; j < top_k; ++j) {
    float best = 0.0f;
    int at = -1;
#pragma unroll
    for (int i = 0; i < kExpertsPerLane; ++i)
      if (!(taken >> i & 1u) && Beats(mine[i], lane + 32 * i, best, at)) best = mine[i], at = lane + 32 * i;
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other = __shfl_down_sync(0xffffffffu, best, offset);
      const int other_at = __shfl_down_sync(0xffffffffu, at, offset);
      if (Beats(other, other_at, best, at)) best = other, at = other_at;
    }
    at = __shfl_sync(0xffffffffu, at, 0);  // lane 0's is the warp's
    if (at % 32 == lane) taken |= 1u << (at / 32);
    if (lane == 0) chosen[j] = at;
  }
  if (lane != 0) return;
  // The weights are the plain scores (the same sigmoid of the same logit as above).
  int32_t* id = ids + t * ids_stride;
  float* w = weights + t * weights_stride;
  float sum = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    id[j] = chosen[j];
    w[j] = Sigmoid(l[chosen[j]]);
    sum += w[j];
  }
  for (int j = 0; j < top_k; ++j) {
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
  return Launch(MoeRouteKernel, Blocks(T, 1, 2147483647), 32, 0, stream, logits, logits_stride, T,
                static_cast<int>(n_experts), correction, static_cast<int>(n_group), static_cast<int>(topk_group),
                static_cast<int>(top_k), norm_topk_prob, routed_scaling_factor, ids, ids_stride, weights,
                weights_stride);
}

}  // namespace ds::cuda

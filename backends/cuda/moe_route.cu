// DeepSeek-V3 expert routing on the device, a warp per token: doing it here keeps the expert
// ids on the device for the expert kernels. The order of selection (highest first, the lower
// index on ties) is the CPU backend's. Every stage is spread over the warp's lanes: one thread
// per token, as this was first, took 39 us a layer on the H100 (its arrays in local memory), a
// warp with one lane scanning each group and one writing the weights still 11 us.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {
namespace {

// Whether candidate (v, e) beats (best, at): larger, or equal with the lower index; e < 0 is none.
__device__ __forceinline__ bool Beats(float v, int e, float best, int at) {
  return e >= 0 && (at < 0 || v > best || (v == best && e < at));
}

// The warp's best item not yet taken (lane l holds items l, l + 32, ... of n in v; `taken` its
// bits), marked taken by its lane; every lane gets its index.
template <int N>
__device__ __forceinline__ int WarpTakeBest(const float (&v)[N], uint32_t& taken, int n) {
  const int lane = threadIdx.x % 32;
  float best = 0.0f;
  int at = -1;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int item = lane + 32 * i;
    if (item < n && !(taken >> i & 1u) && Beats(v[i], item, best, at)) best = v[i], at = item;
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_down_sync(0xffffffffu, best, offset);
    const int other_at = __shfl_down_sync(0xffffffffu, at, offset);
    if (Beats(other, other_at, best, at)) best = other, at = other_at;
  }
  at = __shfl_sync(0xffffffffu, at, 0);  // lane 0's is the warp's
  if (at % 32 == lane) taken |= 1u << (at / 32);
  return at;
}

// The two largest of the warp's values (counted with repeats), in every lane.
__device__ __forceinline__ void WarpTopTwo(float& best, float& second) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const float b = __shfl_xor_sync(0xffffffffu, best, offset), s = __shfl_xor_sync(0xffffffffu, second, offset);
    second = fmaxf(fminf(best, b), fmaxf(second, s));
    best = fmaxf(best, b);
  }
}

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

constexpr int kGroupsPerLane = kMaxGroups / 32;

// kExpertsPerLane: lane l holds experts l, l + 32, ... (n_experts <= 32 * kExpertsPerLane), a
// template so that a layer of 64 experts scans two a lane, not kMaxExperts / 32.
template <int kExpertsPerLane>
__global__ void __launch_bounds__(32)
    MoeRouteKernel(const float* logits, int64_t ls, int n_experts, const float* correction, int n_group,
                   int topk_group, int top_k, bool norm_topk_prob, float scaling, int32_t* ids, int64_t ids_stride,
                   float* weights, int64_t weights_stride) {
  __shared__ float score[kMaxExperts], choice[kMaxExperts], group_score[kMaxGroups];
  __shared__ bool keep[kMaxGroups];
  __shared__ int32_t chosen[kMaxExperts];
  __shared__ float chosen_weight[kMaxExperts];
  WaitForPreviousKernels();
  const int lane = threadIdx.x;
  const int64_t t = blockIdx.x;
  const float* l = logits + t * ls;
  for (int e = lane; e < n_experts; e += 32) {
    score[e] = Sigmoid(l[e]);
    choice[e] = score[e] + correction[e];
  }
  __syncwarp();
  // A group's score is the sum of its two best choices, found by the whole warp.
  const int group_size = n_experts / n_group;
  for (int g = 0; g < n_group; ++g) {
    float best = -INFINITY, second = -INFINITY;
    for (int i = lane; i < group_size; i += 32) {
      const float c = choice[g * group_size + i];
      second = fmaxf(second, fminf(best, c));
      best = fmaxf(best, c);
    }
    WarpTopTwo(best, second);
    if (lane == 0) group_score[g] = group_size > 1 ? best + second : best;
  }
  __syncwarp();
  float group_v[kGroupsPerLane];
  uint32_t group_taken = 0;
#pragma unroll
  for (int i = 0; i < kGroupsPerLane; ++i) group_v[i] = lane + 32 * i < n_group ? group_score[lane + 32 * i] : 0.0f;
  for (int g = lane; g < n_group; g += 32) keep[g] = false;
  __syncwarp();
  for (int i = 0; i < topk_group; ++i) {
    const int g = WarpTakeBest(group_v, group_taken, n_group);
    if (lane == 0) keep[g] = true;
  }
  __syncwarp();
  // This lane's experts' choices; transformers masks the other groups with 0.0 (not -inf).
  float mine[kExpertsPerLane] = {};
  uint32_t taken = 0;
#pragma unroll
  for (int i = 0; i < kExpertsPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < n_experts) mine[i] = keep[e / group_size] ? choice[e] : 0.0f;
  }
  for (int j = 0; j < top_k; ++j) {
    const int e = WarpTakeBest(mine, taken, n_experts);
    if (lane == 0) chosen[j] = e, chosen_weight[j] = score[e];
  }
  __syncwarp();
  // The weights are the chosen experts' plain scores; their sum in order, as the CPU's.
  float sum = 0.0f;
  for (int j = 0; j < top_k; ++j) sum += chosen_weight[j];
  for (int j = lane; j < top_k; j += 32) {
    ids[t * ids_stride + j] = chosen[j];
    const float w = chosen_weight[j];
    weights[t * weights_stride + j] = (norm_topk_prob ? w / (sum + 1e-20f) : w) * scaling;
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
  static_assert(kMaxExperts == 512);
  auto kernel = n_experts <= 64    ? MoeRouteKernel<2>
                : n_experts <= 128 ? MoeRouteKernel<4>
                : n_experts <= 256 ? MoeRouteKernel<8>
                                   : MoeRouteKernel<16>;
  return Launch(kernel, Blocks(T, 1, 2147483647), 32, 0, stream, logits, logits_stride, static_cast<int>(n_experts),
                correction, static_cast<int>(n_group), static_cast<int>(topk_group), static_cast<int>(top_k),
                norm_topk_prob, routed_scaling_factor, ids, ids_stride, weights, weights_stride);
}

}  // namespace ds::cuda

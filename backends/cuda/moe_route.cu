// DeepSeek-V3 expert routing on the device, a warp per token: doing it here keeps the expert
// ids on the device for the expert kernels. The order of selection (highest first, the lower
// index on ties) is the CPU backend's. Every stage is spread over the warp's lanes: one thread
// per token, as this was first, took 39 us a layer on the H100 (its arrays in local memory), a
// warp with one lane scanning each group and one writing the weights still 11 us.
#include "backends/cuda/gemv.cuh"

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

// What one warp's routing of a token needs in shared memory, for up to 32 * kExpertsPerLane
// experts.
template <int kExpertsPerLane>
struct RouteScratch {
  static constexpr int kExperts = 32 * kExpertsPerLane;
  float score[kExperts], choice[kExperts], group_score[kMaxGroups];
  bool keep[kMaxGroups];
  int32_t chosen[kExperts];
  float chosen_weight[kExperts];
};

// Token t's routing from its logits l, by one warp (lane = threadIdx.x % 32). kExpertsPerLane:
// lane l holds experts l, l + 32, ... (n_experts <= 32 * kExpertsPerLane), a template so that a
// layer of 64 experts scans two a lane, not kMaxExperts / 32. The logits are read through L2
// (another block may have written them in this kernel).
template <int kExpertsPerLane>
__device__ void RouteToken(const float* l, int64_t t, const MoeRouteArgs& r, RouteScratch<kExpertsPerLane>& s) {
  const int lane = threadIdx.x % 32;
  const int n_experts = static_cast<int>(r.n_experts), n_group = static_cast<int>(r.n_group);
  for (int e = lane; e < n_experts; e += 32) {
    s.score[e] = Sigmoid(__ldcg(l + e));
    s.choice[e] = s.score[e] + r.correction[e];
  }
  __syncwarp();
  // A group's score is the sum of its two best choices, found by the whole warp.
  const int group_size = n_experts / n_group;
  for (int g = 0; g < n_group; ++g) {
    float best = -INFINITY, second = -INFINITY;
    for (int i = lane; i < group_size; i += 32) {
      const float c = s.choice[g * group_size + i];
      second = fmaxf(second, fminf(best, c));
      best = fmaxf(best, c);
    }
    WarpTopTwo(best, second);
    if (lane == 0) s.group_score[g] = group_size > 1 ? best + second : best;
  }
  __syncwarp();
  float group_v[kGroupsPerLane];
  uint32_t group_taken = 0;
#pragma unroll
  for (int i = 0; i < kGroupsPerLane; ++i) group_v[i] = lane + 32 * i < n_group ? s.group_score[lane + 32 * i] : 0.0f;
  for (int g = lane; g < n_group; g += 32) s.keep[g] = false;
  __syncwarp();
  for (int i = 0; i < r.topk_group; ++i) {
    const int g = WarpTakeBest(group_v, group_taken, n_group);
    if (lane == 0) s.keep[g] = true;
  }
  __syncwarp();
  // This lane's experts' choices; transformers masks the other groups with 0.0 (not -inf).
  float mine[kExpertsPerLane] = {};
  uint32_t taken = 0;
#pragma unroll
  for (int i = 0; i < kExpertsPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < n_experts) mine[i] = s.keep[e / group_size] ? s.choice[e] : 0.0f;
  }
  for (int j = 0; j < r.top_k; ++j) {
    const int e = WarpTakeBest(mine, taken, n_experts);
    if (lane == 0) s.chosen[j] = e, s.chosen_weight[j] = s.score[e];
  }
  __syncwarp();
  // The weights are the chosen experts' plain scores; their sum in order, as the CPU's.
  float sum = 0.0f;
  for (int j = 0; j < r.top_k; ++j) sum += s.chosen_weight[j];
  for (int j = lane; j < r.top_k; j += 32) {
    r.ids[t * r.ids_stride + j] = s.chosen[j];
    const float w = s.chosen_weight[j];
    r.weights[t * r.weights_stride + j] = (r.norm_topk_prob ? w / (sum + 1e-20f) : w) * r.routed_scaling_factor;
  }
}

// A warp per token.
template <int kExpertsPerLane>
__global__ void __launch_bounds__(32) MoeRouteKernel(const float* logits, int64_t ls, MoeRouteArgs r) {
  __shared__ RouteScratch<kExpertsPerLane> scratch;
  WaitForPreviousKernels();
  RouteToken(logits + blockIdx.x * ls, blockIdx.x, r, scratch);
}

// One token's router and routing in one launch: the router's GEMV (f32 weights, the norm on the
// way in) as LaunchGemv runs it, so the logits are the same bits, then the last block to finish
// routes (the other blocks' logits are visible to it after their fences) and leaves the counter
// at zero for the next launch.
template <int kExpertsPerLane>
__global__ void __launch_bounds__(kWarps * 32)
    NormMoeRouteKernel(const float* __restrict__ x, int64_t hidden, const float* __restrict__ gate,
                       int64_t gate_stride, int slices, GemvOptions options, float* logits, int* counter,
                       MoeRouteArgs r) {
  GemvRows<float, 1, 1, true, false, true, false>(x, 0, 1, gate, nullptr, gate_stride, r.n_experts, hidden, nullptr,
                                                  logits, 0, slices, options);
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(counter, 1) == static_cast<int>(gridDim.x) - 1;
    if (last) *counter = 0;
  }
  __syncthreads();
  if (!last || threadIdx.x >= 32) return;
  __shared__ RouteScratch<kExpertsPerLane> scratch;
  RouteToken(logits, 0, r, scratch);
}

bool RoutingFits(const MoeRouteArgs& r) {
  return r.n_experts >= 1 && r.n_experts <= kMaxExperts && r.n_group >= 1 && r.n_group <= kMaxGroups &&
         r.n_experts % r.n_group == 0 && r.topk_group <= r.n_group && r.top_k <= r.n_experts;
}

}  // namespace

cudaError_t LaunchMoeRoute(const float* logits, int64_t logits_stride, int64_t T, const MoeRouteArgs& r,
                           cudaStream_t stream) {
  if (T <= 0) return cudaSuccess;
  if (!RoutingFits(r)) return cudaErrorInvalidValue;
  static_assert(kMaxExperts == 512);
  auto kernel = r.n_experts <= 64    ? MoeRouteKernel<2>
                : r.n_experts <= 128 ? MoeRouteKernel<4>
                : r.n_experts <= 256 ? MoeRouteKernel<8>
                                     : MoeRouteKernel<16>;
  return Launch(kernel, Blocks(T, 1, 2147483647), 32, 0, stream, logits, logits_stride, r);
}

bool NormMoeRouteInOneLaunch(const float* x, int64_t x_stride, int64_t T, int64_t hidden, const float* norm,
                             const float* gate, int64_t gate_stride, int64_t n_experts) {
  // The kernel's GEMV loads 16-byte chunks (LaunchGemv's too, here), its routing scratch holds at
  // most 8 experts a lane.
  return T == 1 && n_experts <= 256 &&
         GemvVectorizable<float>(x, x_stride, gate, nullptr, gate_stride, hidden, {.norm = norm});
}

cudaError_t LaunchNormMoeRoute(const float* x, int64_t x_stride, int64_t hidden, const float* norm, float eps,
                               const float* gate, int64_t gate_stride, float* logits, int* counter,
                               const MoeRouteArgs& r, int sm_count, cudaStream_t stream) {
  if (!RoutingFits(r) || !counter || !NormMoeRouteInOneLaunch(x, x_stride, 1, hidden, norm, gate, gate_stride, r.n_experts))
    return cudaErrorInvalidValue;
  const GemvOptions options{.norm = norm, .eps = eps};
  // LaunchGemv's slices and loads (a row's sum does not depend on how many rows a warp takes:
  // here one).
  const GemvShape shape = GemvShapeFor<float>(x, x_stride, gate, nullptr, gate_stride, r.n_experts, hidden, options, 1,
                                              sm_count);
  auto kernel = r.n_experts <= 64 ? NormMoeRouteKernel<2> : r.n_experts <= 128 ? NormMoeRouteKernel<4> : NormMoeRouteKernel<8>;
  return Launch(kernel, static_cast<unsigned>(shape.blocks), kWarps * 32, 0, stream, x, hidden, gate, gate_stride,
                shape.slices, options, logits, counter, r);
}

}  // namespace ds::cuda

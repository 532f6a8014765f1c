// Attention kernels. Decode (few query rows, a long cache) splits each head's keys over many
// blocks, flash-decoding style: a block keeps a running max, sum and weighted value sum per warp
// (online softmax), and the last block of a head to finish merges the blocks' partial results
// (or, without a counter for it, a second kernel does). Prefill uses
// cuBLASLt for the two products (attention_cuda.cc) with the causal softmax below between them.
#include <algorithm>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {
namespace {

constexpr int kAttnWarps = 4;
constexpr int kKeysAtOnce = 4;  // keys a warp scores before folding them in: their loads overlap

// partials layout per (t, h, split): [max, sum, acc[head_dim_v]].
__host__ __device__ inline int64_t PartialIndex(int64_t t, int64_t h, int64_t split, int64_t n_heads, int64_t splits,
                                                int64_t dv) {
  return ((t * n_heads + h) * splits + split) * (dv + 2);
}

// Keys per split: 32, doubled while there would be more than 256 splits. The split boundaries
// (multiples of the chunk) then do not depend on how many query rows a call has, so a position
// attends with the same arithmetic in a verification pass as in a decode step (up to 8192 keys
// always; past that unless the two calls straddle a doubling).
constexpr int64_t kMaxAttentionSplits = 256;
__host__ __device__ inline int64_t AttentionChunk(int64_t n_keys) {
  int64_t chunk = 32;
  while ((n_keys + chunk - 1) / chunk > kMaxAttentionSplits) chunk *= 2;
  return chunk;
}

// The keys of the pass's last row (pos0 + T) and the splits that cover them.
struct KeySplits {
  int64_t pos0, chunk, splits;
};
__device__ inline KeySplits ActiveSplits(const AttentionArgs& a) {
  KeySplits k;
  k.pos0 = a.pos0_device ? *a.pos0_device : a.pos0;
  k.chunk = AttentionChunk(k.pos0 + a.T);
  k.splits = (k.pos0 + a.T + k.chunk - 1) / k.chunk;
  if (k.pos0 < 0 || k.pos0 + a.T > a.key_rows) k.splits = 0;  // a position past the cache: read nothing
  return k;
}

// out[t, h] from the splits' partials, by the block's threads.
__device__ void CombineSplits(const AttentionArgs& a, int64_t splits, const float* partials, int64_t t, int64_t h,
                              int64_t active) {
  // Each split's weight exp(max_s - global max) (0 for a split without keys) and the total, by
  // the first warp; then every thread sums its output elements over the splits.
  __shared__ float weight[kMaxAttentionSplits];
  __shared__ float total;
  const int64_t dv = a.head_dim_v;
  const float* base = partials + PartialIndex(t, h, 0, a.n_heads, splits, dv);
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    float global_max = -INFINITY;
    for (int64_t s = lane; s < active; s += 32) global_max = fmaxf(global_max, __ldcg(base + s * (dv + 2)));
    global_max = WarpMax(global_max);
    float sum = 0.0f;
    for (int64_t s = lane; s < active; s += 32) {
      const float ms = __ldcg(base + s * (dv + 2));
      weight[s] = ms == -INFINITY ? 0.0f : expf(ms - global_max);
      sum += ms == -INFINITY ? 0.0f : __ldcg(base + s * (dv + 2) + 1) * weight[s];
    }
    sum = WarpSum(sum);
    if (lane == 0) total = sum;
  }
  __syncthreads();
  float* out = a.out + t * a.out_stride + h * dv;
  for (int64_t i = threadIdx.x; i < dv; i += blockDim.x) {
    float acc = 0.0f;
    int64_t s = 0;
    for (; s + 8 <= active; s += 8) {  // eight loads in flight, then their sums in order
      float p[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) p[u] = __ldcg(base + (s + u) * (dv + 2) + 2 + i);
#pragma unroll
      for (int u = 0; u < 8; ++u) acc = fmaf(p[u], weight[s + u], acc);
    }
    for (; s < active; ++s) acc = fmaf(__ldcg(base + s * (dv + 2) + 2 + i), weight[s], acc);
    out[i] = acc / total;
  }
}

// counters: one per (t, h), zero between launches, or null (AttentionCombineKernel merges).
template <int kVPerLane>
__global__ void __launch_bounds__(kAttnWarps * 32) AttentionSplitKernel(AttentionArgs a, int64_t splits,
                                                                        float* partials, int* counters) {
  extern __shared__ float smem[];
  float* q = smem;                                        // [head_dim_qk]
  float* warp_ml = smem + a.head_dim_qk;                  // [kAttnWarps][2]
  float* warp_acc = warp_ml + 2 * kAttnWarps;             // [kAttnWarps][head_dim_v]
  const int64_t h = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
  WaitForPreviousKernels();
  const KeySplits ks = ActiveSplits(a);
  if (split >= ks.splits) return;  // a launch sized for more keys than this pass has
  const int64_t chunk = ks.chunk;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kv = h / (a.n_heads / a.n_kv_heads);
  const int64_t n_keys = ks.pos0 + t + 1;
  const int64_t begin = split * chunk, end = min(begin + chunk, n_keys);
  const int64_t dqk = a.head_dim_qk, dv = a.head_dim_v;

  for (int64_t i = threadIdx.x; i < dqk; i += blockDim.x) q[i] = a.q[t * a.q_stride + h * dqk + i];
  __syncthreads();

  float m = -INFINITY, l = 0.0f, acc[kVPerLane];
#pragma unroll
  for (int u = 0; u < kVPerLane; ++u) acc[u] = 0.0f;
  // The warp takes keys begin + warp, + kAttnWarps, ... in that order, kKeysAtOnce at a time.
  for (int64_t j0 = begin + warp; j0 < end; j0 += kAttnWarps * kKeysAtOnce) {
    // The keys' value rows load with their key rows (they do not wait for the scores): one
    // memory latency per kKeysAtOnce keys. A key past the end loads a live row, unused.
    float value[kKeysAtOnce][kVPerLane];
#pragma unroll
    for (int b = 0; b < kKeysAtOnce; ++b) {
      const float* vr = a.v + min(j0 + b * kAttnWarps, end - 1) * a.v_stride + kv * dv;
#pragma unroll
      for (int u = 0; u < kVPerLane; ++u) value[b][u] = lane + 32 * u < dv ? vr[lane + 32 * u] : 0.0f;
    }
    float score[kKeysAtOnce];
#pragma unroll
    for (int b = 0; b < kKeysAtOnce; ++b) {
      const int64_t j = j0 + b * kAttnWarps;
      float dot = 0.0f;
      if (j < end) {
        const float* kr = a.k + j * a.k_stride + kv * dqk;
        for (int64_t i = lane; i < dqk; i += 32) dot = fmaf(q[i], kr[i], dot);
      }
      score[b] = WarpSum(dot) * a.scale;
    }
#pragma unroll
    for (int b = 0; b < kKeysAtOnce; ++b) {
      const int64_t j = j0 + b * kAttnWarps;
      if (j >= end) break;
      const float m_new = fmaxf(m, score[b]);
      const float correction = expf(m - m_new);  // 0 on the first key (m = -inf)
      const float p = expf(score[b] - m_new);
      l = l * correction + p;
#pragma unroll
      for (int u = 0; u < kVPerLane; ++u) {
        if (lane + 32 * u < dv) acc[u] = fmaf(p, value[b][u], acc[u] * correction);
      }
      m = m_new;
    }
  }

  // Merge the warps, then write the block's partial.
  if (lane == 0) warp_ml[2 * warp] = m, warp_ml[2 * warp + 1] = l;
#pragma unroll
  for (int u = 0; u < kVPerLane; ++u) {
    const int64_t i = lane + 32 * u;
    if (i < dv) warp_acc[warp * dv + i] = acc[u];
  }
  __syncthreads();
  float block_max = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) block_max = fmaxf(block_max, warp_ml[2 * w]);
  float* out = partials + PartialIndex(t, h, split, a.n_heads, splits, dv);
  float scale[kAttnWarps];
  float block_sum = 0.0f;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) {
    scale[w] = warp_ml[2 * w] == -INFINITY ? 0.0f : expf(warp_ml[2 * w] - block_max);
    block_sum += warp_ml[2 * w + 1] * scale[w];
  }
  if (threadIdx.x == 0) out[0] = block_max, out[1] = block_sum;
  for (int64_t i = threadIdx.x; i < dv; i += blockDim.x) {
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) s += warp_acc[w * dv + i] * scale[w];
    out[2 + i] = s;
  }
  if (!counters) return;
  // The last of the head's blocks to get here merges them all (their partials are visible to it
  // after their fences), and leaves the counter at zero for the next launch.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = counters + t * a.n_heads + h;
    last = atomicAdd(counter, 1) == ks.splits - 1;
    if (last) *counter = 0;
  }
  __syncthreads();
  if (last) CombineSplits(a, splits, partials, t, h, ks.splits);
}

__global__ void AttentionCombineKernel(AttentionArgs a, int64_t splits, const float* partials) {
  WaitForPreviousKernels();
  CombineSplits(a, splits, partials, blockIdx.y, blockIdx.x, ActiveSplits(a).splits);
}

__global__ void CausalSoftmaxKernel(float* scores, int64_t T, int64_t S, int64_t pos0, int64_t t0) {
  WaitForPreviousKernels();
  const int64_t row = blockIdx.x, t = row % T;
  float* r = scores + row * S;
  const int64_t n = min(S, pos0 + t0 + t + 1);
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, r[j]);
  m = BlockMax(m);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float p = expf(r[j] - m);
    r[j] = p;
    sum += p;
  }
  sum = BlockSum(sum);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) r[j] = j < n ? r[j] * inv : 0.0f;
}

}  // namespace

int64_t AttentionSplits(const AttentionArgs& a) {
  // With the position on the device: as many as the most keys k holds could need (fewer keys
  // never need more splits, and never more than kMaxAttentionSplits).
  if (a.pos0_device) return std::clamp<int64_t>((a.key_rows + 31) / 32, 1, kMaxAttentionSplits);
  const int64_t chunk = AttentionChunk(a.pos0 + a.T);
  return std::max<int64_t>(1, (a.pos0 + a.T + chunk - 1) / chunk);
}

int64_t AttentionSplitScratch(const AttentionArgs& a, int64_t splits) {
  return a.T * a.n_heads * splits * (a.head_dim_v + 2);
}

cudaError_t LaunchAttentionSplit(const AttentionArgs& a, int64_t splits, float* partials, int* counters,
                                 int64_t n_counters, cudaStream_t stream) {
  if (a.T <= 0) return cudaSuccess;
  if (a.head_dim_v > kMaxHeadDimV || a.n_heads > 65535 || a.T > 65535 || splits > 65535) return cudaErrorInvalidValue;
  if (a.pos0_device ? a.T > a.key_rows : splits * AttentionChunk(a.pos0 + a.T) < a.pos0 + a.T)
    return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(a.n_heads), static_cast<unsigned>(a.T), static_cast<unsigned>(splits));
  const size_t smem = (a.head_dim_qk + 2 * kAttnWarps + kAttnWarps * a.head_dim_v) * sizeof(float);
  if (smem > 48 * 1024) return cudaErrorInvalidValue;
  if (a.T * a.n_heads > n_counters) counters = nullptr;
  auto* kernel = a.head_dim_v <= 128   ? AttentionSplitKernel<4>
                 : a.head_dim_v <= 256 ? AttentionSplitKernel<8>
                                       : AttentionSplitKernel<16>;
  if (cudaError_t err = Launch(kernel, grid, kAttnWarps * 32, smem, stream, a, splits, partials, counters);
      err != cudaSuccess || counters)
    return err;
  return Launch(AttentionCombineKernel, dim3(static_cast<unsigned>(a.n_heads), static_cast<unsigned>(a.T)), 128, 0,
                stream, a, splits, static_cast<const float*>(partials));
}

cudaError_t LaunchCausalSoftmax(float* scores, int64_t n_heads, int64_t T, int64_t S, int64_t pos0, int64_t t0,
                                cudaStream_t stream) {
  const int64_t rows = n_heads * T;
  if (rows <= 0) return cudaSuccess;
  if (rows > 2147483647) return cudaErrorInvalidValue;
  return Launch(CausalSoftmaxKernel, static_cast<unsigned>(rows), 256, 0, stream, scores, T, S, pos0, t0);
}

}  // namespace ds::cuda

// Attention kernels. Decode (few query rows, a long cache) splits each head's keys over many
// blocks, flash-decoding style: a block keeps a running max, sum and weighted value sum per warp
// (online softmax), and a second kernel merges the blocks' partial results. Prefill uses
// cuBLASLt for the two products (attention_cuda.cc) with the causal softmax below between them.
#include <algorithm>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {
namespace {

constexpr int kAttnWarps = 4;

// partials layout per (t, h, split): [max, sum, acc[head_dim_v]].
__host__ __device__ inline int64_t PartialIndex(int64_t t, int64_t h, int64_t split, int64_t n_heads, int64_t splits,
                                                int64_t dv) {
  return ((t * n_heads + h) * splits + split) * (dv + 2);
}

template <int kVPerLane>
__global__ void __launch_bounds__(kAttnWarps * 32) AttentionSplitKernel(AttentionArgs a, int64_t splits, int64_t chunk,
                                                                        float* partials) {
  extern __shared__ float smem[];
  float* q = smem;                                        // [head_dim_qk]
  float* warp_ml = smem + a.head_dim_qk;                  // [kAttnWarps][2]
  float* warp_acc = warp_ml + 2 * kAttnWarps;             // [kAttnWarps][head_dim_v]
  const int64_t h = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kv = h / (a.n_heads / a.n_kv_heads);
  const int64_t n_keys = a.pos0 + t + 1;
  const int64_t begin = split * chunk, end = min(begin + chunk, n_keys);
  const int64_t dqk = a.head_dim_qk, dv = a.head_dim_v;

  for (int64_t i = threadIdx.x; i < dqk; i += blockDim.x) q[i] = a.q[t * a.q_stride + h * dqk + i];
  __syncthreads();

  float m = -INFINITY, l = 0.0f, acc[kVPerLane];
#pragma unroll
  for (int u = 0; u < kVPerLane; ++u) acc[u] = 0.0f;
  for (int64_t j = begin + warp; j < end; j += kAttnWarps) {
    const float* kr = a.k + j * a.k_stride + kv * dqk;
    float dot = 0.0f;
    for (int64_t i = lane; i < dqk; i += 32) dot = fmaf(q[i], kr[i], dot);
    const float score = WarpSum(dot) * a.scale;
    const float m_new = fmaxf(m, score);
    const float correction = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = expf(score - m_new);
    l = l * correction + p;
    const float* vr = a.v + j * a.v_stride + kv * dv;
#pragma unroll
    for (int u = 0; u < kVPerLane; ++u) {
      const int64_t i = lane + 32 * u;
      if (i < dv) acc[u] = fmaf(p, vr[i], acc[u] * correction);
    }
    m = m_new;
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
}

__global__ void AttentionCombineKernel(AttentionArgs a, int64_t splits, const float* partials) {
  const int64_t h = blockIdx.x, t = blockIdx.y, dv = a.head_dim_v;
  const float* base = partials + PartialIndex(t, h, 0, a.n_heads, splits, dv);
  float global_max = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) global_max = fmaxf(global_max, base[s * (dv + 2)]);
  float total = 0.0f;
  for (int64_t s = 0; s < splits; ++s) {
    const float ms = base[s * (dv + 2)];
    if (ms != -INFINITY) total += base[s * (dv + 2) + 1] * expf(ms - global_max);
  }
  float* out = a.out + t * a.out_stride + h * dv;
  for (int64_t i = threadIdx.x; i < dv; i += blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = 0; s < splits; ++s) {
      const float ms = base[s * (dv + 2)];
      if (ms != -INFINITY) acc += base[s * (dv + 2) + 2 + i] * expf(ms - global_max);
    }
    out[i] = acc / total;
  }
}

__global__ void CausalSoftmaxKernel(float* scores, int64_t T, int64_t S, int64_t pos0, int64_t t0) {
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

// Keys per split: 32, doubled while there would be more than 256 splits. The split boundaries
// (multiples of the chunk) then do not depend on how many query rows a call has, so a position
// attends with the same arithmetic in a verification pass as in a decode step (up to 8192 keys
// always; past that unless the two calls straddle a doubling).
static int64_t AttentionChunk(const AttentionArgs& a) {
  const int64_t max_keys = a.pos0 + a.T;
  int64_t chunk = 32;
  while ((max_keys + chunk - 1) / chunk > 256) chunk *= 2;
  return chunk;
}

int64_t AttentionSplits(const AttentionArgs& a) {
  const int64_t chunk = AttentionChunk(a);
  return std::max<int64_t>(1, (a.pos0 + a.T + chunk - 1) / chunk);
}

int64_t AttentionSplitScratch(const AttentionArgs& a, int64_t splits) {
  return a.T * a.n_heads * splits * (a.head_dim_v + 2);
}

cudaError_t LaunchAttentionSplit(const AttentionArgs& a, int64_t splits, float* partials, cudaStream_t stream) {
  if (a.T <= 0) return cudaSuccess;
  if (a.head_dim_v > kMaxHeadDimV || a.n_heads > 65535 || a.T > 65535 || splits > 65535) return cudaErrorInvalidValue;
  const int64_t chunk = AttentionChunk(a);
  if (splits * chunk < a.pos0 + a.T) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(a.n_heads), static_cast<unsigned>(a.T), static_cast<unsigned>(splits));
  const size_t smem = (a.head_dim_qk + 2 * kAttnWarps + kAttnWarps * a.head_dim_v) * sizeof(float);
  if (smem > 48 * 1024) return cudaErrorInvalidValue;
  if (a.head_dim_v <= 128) {
    AttentionSplitKernel<4><<<grid, kAttnWarps * 32, smem, stream>>>(a, splits, chunk, partials);
  } else if (a.head_dim_v <= 256) {
    AttentionSplitKernel<8><<<grid, kAttnWarps * 32, smem, stream>>>(a, splits, chunk, partials);
  } else {
    AttentionSplitKernel<16><<<grid, kAttnWarps * 32, smem, stream>>>(a, splits, chunk, partials);
  }
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  AttentionCombineKernel<<<dim3(static_cast<unsigned>(a.n_heads), static_cast<unsigned>(a.T)), 128, 0, stream>>>(
      a, splits, partials);
  return cudaGetLastError();
}

cudaError_t LaunchCausalSoftmax(float* scores, int64_t n_heads, int64_t T, int64_t S, int64_t pos0, int64_t t0,
                                cudaStream_t stream) {
  const int64_t rows = n_heads * T;
  if (rows <= 0) return cudaSuccess;
  if (rows > 2147483647) return cudaErrorInvalidValue;
  CausalSoftmaxKernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(scores, T, S, pos0, t0);
  return cudaGetLastError();
}

}  // namespace ds::cuda

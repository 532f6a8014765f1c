// Row-wise and element-wise kernels: RMSNorm, add, SiLU-mul, embedding gather, rope, the bf16
// conversion ahead of tensor-core GEMMs.
#include "backends/cuda/common.cuh"
#include "backends/cuda/gemv.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void RmsNormKernel(const float* x, int64_t xs, const float* w, float eps, float* y, int64_t ys,
                              int64_t cols) {
  WaitForPreviousKernels();
  const float* xr = x + blockIdx.x * xs;
  float* yr = y + blockIdx.x * ys;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) sum_sq += xr[i] * xr[i];
  sum_sq = BlockSum(sum_sq);
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(cols) + eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv_rms);
}

// Per row, the index of the largest value, the first on ties. Every thread starts from
// element 0 and takes only strictly larger values, as the host's loop does (so a NaN is never
// chosen, unless at 0, where it stays).
__device__ __forceinline__ void TakeBetter(float& best, int64_t& at, float v, int64_t i) {
  if (v > best || (v == best && i < at)) best = v, at = i;
}

// TakeBetter over the warp's lanes: every lane ends with the warp's best.
__device__ __forceinline__ void WarpBest(float& best, int64_t& at) {
  for (int offset = 16; offset > 0; offset /= 2)
    TakeBetter(best, at, __shfl_xor_sync(0xffffffffu, best, offset), __shfl_xor_sync(0xffffffffu, at, offset));
}

// Block (row, p) takes the part [p * part_cols, (p + 1) * part_cols) of the row: one SM alone
// reads a 151936-wide row at ~50 GB/s (11 us), so the row is spread over many. Each part starts
// from element 0 (the host loop's start, and what keeps a NaN there), and keeps kUnroll 16-byte
// loads in flight per thread before it compares. With one part it writes ids, else its part's
// best for ArgmaxMergeKernel.
constexpr int kArgmaxThreads = 256, kArgmaxUnroll = 4;
constexpr int64_t kArgmaxPartCols = 4 * kArgmaxThreads * kArgmaxUnroll;

__global__ void ArgmaxKernel(const float* x, int64_t xs, int64_t cols, bool vec, float* part_best, int32_t* part_at,
                             int32_t* ids) {
  __shared__ float warp_best[32];
  __shared__ int64_t warp_at[32];
  WaitForPreviousKernels();
  const int64_t row = blockIdx.x, part = blockIdx.y;
  const float* r = x + row * xs;
  const int64_t begin = part * kArgmaxPartCols, end = min(cols, begin + kArgmaxPartCols);
  float best = r[0];
  int64_t at = 0;
  int64_t scalar_from = begin;
  if (vec) {
    const float4* r4 = reinterpret_cast<const float4*>(r);
    const int64_t end4 = end / 4;
    float4 v[kArgmaxUnroll];
#pragma unroll
    for (int u = 0; u < kArgmaxUnroll; ++u) {
      const int64_t i = begin / 4 + threadIdx.x + u * kArgmaxThreads;
      if (i < end4) v[u] = r4[i];
    }
#pragma unroll
    for (int u = 0; u < kArgmaxUnroll; ++u) {
      const int64_t i = begin / 4 + threadIdx.x + u * kArgmaxThreads;
      if (i < end4) {
        TakeBetter(best, at, v[u].x, 4 * i);
        TakeBetter(best, at, v[u].y, 4 * i + 1);
        TakeBetter(best, at, v[u].z, 4 * i + 2);
        TakeBetter(best, at, v[u].w, 4 * i + 3);
      }
    }
    scalar_from = max(begin, 4 * end4);
  }
  for (int64_t i = scalar_from + threadIdx.x; i < end; i += kArgmaxThreads) TakeBetter(best, at, r[i], i);
  WarpBest(best, at);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_best[warp] = best, warp_at[warp] = at;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kArgmaxThreads / 32; ++w) TakeBetter(best, at, warp_best[w], warp_at[w]);
  if (gridDim.y == 1) {
    ids[row] = static_cast<int32_t>(at);
  } else {
    part_best[row * gridDim.y + part] = best;
    part_at[row * gridDim.y + part] = static_cast<int32_t>(at);
  }
}

// A warp per row: the best of its parts' bests, the first index on ties as before.
__global__ void ArgmaxMergeKernel(const float* part_best, const int32_t* part_at, int64_t parts, int32_t* ids) {
  WaitForPreviousKernels();
  const int64_t row = blockIdx.x;
  float best = part_best[row * parts];
  int64_t at = part_at[row * parts];
  for (int64_t p = threadIdx.x; p < parts; p += 32) TakeBetter(best, at, part_best[row * parts + p], part_at[row * parts + p]);
  WarpBest(best, at);
  if (threadIdx.x == 0) ids[row] = static_cast<int32_t>(at);
}

// The element-wise kernels walk a [rows, cols] grid with a grid-stride loop.
template <typename F>
__global__ void RowsKernel(int64_t rows, int64_t cols, F f) {
  WaitForPreviousKernels();
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    f(i / cols, i % cols);
}

template <typename F>
cudaError_t LaunchRows(int64_t rows, int64_t cols, cudaStream_t stream, F f) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  return Launch(RowsKernel<F>, Blocks(rows * cols, kThreads, 8192), kThreads, 0, stream, rows, cols, f);
}

// The block's cos/sin table for position pos: [half] cos, then [half] sin. As transformers (and
// the CPU backend): a float32 angle, cos and sin of it, then the scale.
__device__ __forceinline__ void RopeTableFor(float pos, const float* inv_freq, int64_t half, float factor,
                                             float* cos_sin) {
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = pos * inv_freq[i];
    cos_sin[i] = static_cast<float>(cos(static_cast<double>(angle))) * factor;
    cos_sin[half + i] = static_cast<float>(sin(static_cast<double>(angle))) * factor;
  }
}

// Rotates pair i of a head from `from` into `to` (the same place, or another):
// (x[i], x[i + half]) or, interleaved, (x[2i], x[2i + 1]).
__device__ __forceinline__ void RotatePairInto(const float* from, float* to, int64_t i, int64_t half,
                                               bool interleaved, const float* cos_sin) {
  const int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
  const float c = cos_sin[i], s = cos_sin[half + i], x0 = from[a], x1 = from[b];
  to[a] = x0 * c - x1 * s;
  to[b] = x1 * c + x0 * s;
}
__device__ __forceinline__ void RotatePair(float* head, int64_t i, int64_t half, bool interleaved,
                                           const float* cos_sin) {
  RotatePairInto(head, head, i, half, interleaved, cos_sin);
}

__global__ void RopeKernel(float* x, int64_t xs, int64_t n_heads, int64_t head_stride, int64_t half,
                           const float* inv_freq, float factor, bool interleaved, int64_t pos0,
                           const int32_t* pos0_device) {
  extern __shared__ float cos_sin[];  // [half] cos, then [half] sin: shared by the row's heads
  float* row = x + blockIdx.x * xs;
  RopeTableFor(static_cast<float>((pos0_device ? *pos0_device : pos0) + blockIdx.x), inv_freq, half, factor, cos_sin);
  // The table needs only the frequencies and the position (written before the pass's first
  // kernel): it is made while the kernel ahead finishes.
  WaitForPreviousKernels();
  __syncthreads();
  for (int64_t j = threadIdx.x; j < n_heads * half; j += blockDim.x)
    RotatePair(row + j / half * head_stride, j % half, half, interleaved, cos_sin);
}

// A block per row t of the pass: RopeKernel's rotation of q's and k's heads, then k's and v's
// rows into the caches at pos0 + t (rows past the caches' end are left out, as LaunchWriteRows).
__global__ void RopeAndStoreKvKernel(RopeAndStoreKvArgs a) {
  extern __shared__ float cos_sin[];  // [half] cos, then [half] sin
  const RopeArgs& rope = a.rope;
  const int64_t t = blockIdx.x, half = rope.rot_dim / 2;
  const int64_t pos0 = rope.pos0_device ? *rope.pos0_device : rope.pos0;
  RopeTableFor(static_cast<float>(pos0 + t), rope.inv_freq, half, rope.attention_factor, cos_sin);
  WaitForPreviousKernels();
  __syncthreads();
  float* q = a.q + t * a.q_stride;
  float* k = a.k + t * a.k_stride;
  const int64_t q_pairs = a.q_heads * half;
  for (int64_t j = threadIdx.x; j < (a.q_heads + a.kv_heads) * half; j += blockDim.x) {
    const bool is_q = j < q_pairs;
    const int64_t pair = is_q ? j : j - q_pairs;
    RotatePair((is_q ? q : k) + pair / half * a.head_dim, pair % half, half, rope.interleaved, cos_sin);
  }
  __syncthreads();  // the block's rotated k is visible to all its threads
  const int64_t row = pos0 + t;
  if (row < 0 || row >= a.cache_rows) return;
  const float* v = a.v + t * a.v_stride;
  for (int64_t c = threadIdx.x; c < a.kv_heads * a.head_dim; c += blockDim.x) a.k_cache[row * a.k_cache_stride + c] = k[c];
  for (int64_t c = threadIdx.x; c < a.v_cols; c += blockDim.x) a.v_cache[row * a.v_cache_stride + c] = v[c];
}

// Row t of the pass (Backend::MlaRopeAndStore), by a block: c_kv's rms as RmsNormKernel finds
// it, the normalized c_kv and the rotated k_pe into the cache row, the heads' rotated q_pe into
// q_latent. cos_sin: rot_dim floats of shared memory.
__device__ __forceinline__ void MlaRopeAndStoreRow(const MlaRopeAndStoreArgs& a, int64_t t, float* cos_sin) {
  const RopeArgs& rope = a.rope;
  const int64_t half = rope.rot_dim / 2, r = a.kv_lora;
  const int64_t pos0 = rope.pos0_device ? *rope.pos0_device : rope.pos0;
  RopeTableFor(static_cast<float>(pos0 + t), rope.inv_freq, half, rope.attention_factor, cos_sin);
  WaitForPreviousKernels();
  const float* kv = a.kv + t * a.kv_stride;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < r; i += blockDim.x) sum_sq += kv[i] * kv[i];
  sum_sq = BlockSum(sum_sq);  // also orders the cos/sin table's writes before its reads
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(r) + a.eps);
  const float* q = a.q + t * a.q_stride + a.q_rope_at;
  float* q_latent = a.q_latent + t * a.q_latent_stride + (a.q_latent_head_dim - rope.rot_dim);
  for (int64_t j = threadIdx.x; j < a.n_heads * half; j += blockDim.x)
    RotatePairInto(q + j / half * a.q_head_dim, q_latent + j / half * a.q_latent_head_dim, j % half, half,
                   rope.interleaved, cos_sin);
  const int64_t row = pos0 + t;
  if (row < 0 || row >= a.cache_rows) return;
  float* cache = a.cache + row * a.cache_stride;
  for (int64_t i = threadIdx.x; i < r; i += blockDim.x) cache[i] = a.kv_norm[i] * (kv[i] * inv_rms);
  for (int64_t j = threadIdx.x; j < half; j += blockDim.x)
    RotatePairInto(kv + r, cache + r, j, half, rope.interleaved, cos_sin);
}

// A block per row of the pass.
__global__ void MlaRopeAndStoreKernel(MlaRopeAndStoreArgs a) {
  extern __shared__ float cos_sin[];  // [half] cos, then [half] sin
  MlaRopeAndStoreRow(a, blockIdx.x, cos_sin);
}

// One row's absorbed query and cache write in one launch: the W_UK product of every head (a
// grouped GEMV over q's nope parts into q_latent, its blocks first) and, in the last block,
// MlaRopeAndStoreRow. The two need nothing of each other; as two launches the second waited for
// the first.
template <typename W, bool kVec>
__global__ void __launch_bounds__(kWarps * 32)
    MlaQueryAndStoreKernel(MlaRopeAndStoreArgs a, const W* __restrict__ w_uk, int64_t w_stride, int64_t n, int64_t k,
                           int slices, GemvOptions options) {
  extern __shared__ float cos_sin[];
  if (blockIdx.x == gridDim.x - 1) {
    MlaRopeAndStoreRow(a, 0, cos_sin);
    return;
  }
  GemvRows<W, 1, 2, kVec, false, false, true>(a.q, a.q_stride, 1, w_uk, nullptr, w_stride, n, k, nullptr, a.q_latent,
                                              a.q_latent_stride, slices, options);
}

// MlaQueryAndStoreKernel's launch: the grouped GEMV's blocks as LaunchGemv makes them for one
// row (two rows a warp, the same slices and vectorized loads), so q_latent gets the same bits.
template <typename W>
cudaError_t LaunchMlaQueryAndStoreRow(const MlaRopeAndStoreArgs& a, const W* w, int64_t w_stride, int64_t n,
                                      int64_t k, const GemvOptions& options, int sm_count, cudaStream_t stream) {
  if (a.rope.rot_dim < 2 || a.rope.rot_dim > 8192 || a.kv_lora < 1 || options.y_group_step < n / a.n_heads)
    return cudaErrorInvalidValue;
  const GemvShape shape = GemvShapeFor<W>(a.q, a.q_stride, w, nullptr, w_stride, n, k, options, 2, sm_count);
  const int64_t blocks = shape.blocks + 1;  // + the rope block
  if (blocks > 2147483647) return cudaErrorInvalidValue;
  return Launch(shape.vec ? MlaQueryAndStoreKernel<W, true> : MlaQueryAndStoreKernel<W, false>,
                static_cast<unsigned>(blocks), kWarps * 32, a.rope.rot_dim * sizeof(float), stream, a, w, w_stride, n,
                k, shape.slices, options);
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, int64_t x_stride, const float* w, float eps, float* y, int64_t y_stride,
                          int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (rows > 2147483647) return cudaErrorInvalidValue;
  return Launch(RmsNormKernel, static_cast<unsigned>(rows), cols >= 1024 ? 512 : 128, 0, stream, x, x_stride, w, eps,
                y, y_stride, cols);
}

cudaError_t LaunchAdd(const float* a, int64_t as, const float* b, int64_t bs, float* y, int64_t ys, int64_t rows,
                      int64_t cols, cudaStream_t stream) {
  return LaunchRows(rows, cols, stream, [=] __device__(int64_t r, int64_t c) { y[r * ys + c] = a[r * as + c] + b[r * bs + c]; });
}

cudaError_t LaunchSiluMul(const float* g, int64_t gs, const float* u, int64_t us, float* y, int64_t ys, int64_t rows,
                          int64_t cols, cudaStream_t stream) {
  return LaunchRows(rows, cols, stream, [=] __device__(int64_t r, int64_t c) {
    const float gv = g[r * gs + c];
    y[r * ys + c] = gv / (1.0f + expf(-gv)) * u[r * us + c];
  });
}

cudaError_t LaunchEmbedding(const void* table, bool table_bf16, int64_t ts, int64_t vocab, const int32_t* ids,
                            int64_t n, float* y, int64_t ys, int64_t cols, cudaStream_t stream) {
  return LaunchRows(n, cols, stream, [=] __device__(int64_t r, int64_t c) {
    const int32_t id = ids[r];
    float v = 0.0f;
    if (id >= 0 && id < vocab) {
      v = table_bf16 ? Bf16ToFloat(static_cast<const uint16_t*>(table)[id * ts + c])
                     : static_cast<const float*>(table)[id * ts + c];
    }
    y[r * ys + c] = v;
  });
}

cudaError_t LaunchRope(float* x, int64_t x_stride, int64_t rows, int64_t n_heads, int64_t head_stride,
                       int64_t rot_dim, const float* inv_freq, float attention_factor, bool interleaved,
                       int64_t pos0, const int32_t* pos0_device, cudaStream_t stream) {
  if (rows <= 0 || rot_dim < 2) return cudaSuccess;
  if (rows > 2147483647) return cudaErrorInvalidValue;
  if (rot_dim > 8192) return cudaErrorInvalidValue;  // the cos/sin table in shared memory
  return Launch(RopeKernel, static_cast<unsigned>(rows), 128, rot_dim * sizeof(float), stream, x, x_stride, n_heads,
                head_stride, rot_dim / 2, inv_freq, attention_factor, interleaved, pos0, pos0_device);
}

cudaError_t LaunchRopeAndStoreKv(const RopeAndStoreKvArgs& a, int64_t rows, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (rows > 2147483647 || a.rope.rot_dim < 2 || a.rope.rot_dim > 8192) return cudaErrorInvalidValue;
  return Launch(RopeAndStoreKvKernel, static_cast<unsigned>(rows), 256, a.rope.rot_dim * sizeof(float), stream, a);
}

cudaError_t LaunchMlaRopeAndStore(const MlaRopeAndStoreArgs& a, int64_t rows, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (rows > 2147483647 || a.rope.rot_dim < 2 || a.rope.rot_dim > 8192 || a.kv_lora < 1) return cudaErrorInvalidValue;
  return Launch(MlaRopeAndStoreKernel, static_cast<unsigned>(rows), 256, a.rope.rot_dim * sizeof(float), stream, a);
}

cudaError_t LaunchMlaQueryAndStore(const MlaRopeAndStoreArgs& a, const void* w_uk, bool w_bf16, int64_t w_stride,
                                   int64_t n, int64_t k, int sm_count, cudaStream_t stream) {
  const GemvOptions options{.groups = a.n_heads, .x_group_step = a.q_head_dim, .y_group_step = a.q_latent_head_dim};
  if (a.n_heads < 1 || n % a.n_heads != 0 || (n / a.n_heads) % kGemvGroupRowMultiple != 0) return cudaErrorInvalidValue;
  return w_bf16 ? LaunchMlaQueryAndStoreRow(a, static_cast<const __nv_bfloat16*>(w_uk), w_stride, n, k, options,
                                            sm_count, stream)
                : LaunchMlaQueryAndStoreRow(a, static_cast<const float*>(w_uk), w_stride, n, k, options, sm_count,
                                            stream);
}

cudaError_t LaunchWriteRows(const float* x, int64_t xs, int64_t rows, int64_t cols, float* y, int64_t ys,
                            int64_t y_rows, const int32_t* pos0_device, cudaStream_t stream) {
  return LaunchRows(rows, cols, stream, [=] __device__(int64_t r, int64_t c) {
    const int64_t row = *pos0_device + r;
    if (row >= 0 && row < y_rows) y[row * ys + c] = x[r * xs + c];
  });
}

int64_t ArgmaxParts(int64_t cols) { return (cols + kArgmaxPartCols - 1) / kArgmaxPartCols; }

cudaError_t LaunchArgmax(const float* x, int64_t x_stride, int64_t rows, int64_t cols, int32_t* ids,
                         float* part_best, int32_t* part_at, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const int64_t parts = ArgmaxParts(cols);
  if (rows > 2147483647 || parts > 65535) return cudaErrorInvalidValue;
  const bool vec = reinterpret_cast<uintptr_t>(x) % 16 == 0 && x_stride % 4 == 0;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(parts));
  if (cudaError_t err =
          Launch(ArgmaxKernel, grid, kArgmaxThreads, 0, stream, x, x_stride, cols, vec, part_best, part_at, ids);
      err != cudaSuccess || parts == 1)
    return err;
  return Launch(ArgmaxMergeKernel, static_cast<unsigned>(rows), 32, 0, stream, static_cast<const float*>(part_best),
                static_cast<const int32_t*>(part_at), parts, ids);
}

cudaError_t LaunchToBf16(const float* x, int64_t xs, int64_t rows, int64_t cols, uint16_t* y, cudaStream_t stream) {
  return LaunchRows(rows, cols, stream, [=] __device__(int64_t r, int64_t c) {
    y[r * cols + c] = __bfloat16_as_ushort(__float2bfloat16_rn(x[r * xs + c]));
  });
}

}  // namespace ds::cuda

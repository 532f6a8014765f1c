// Attention kernels. Decode (few query rows, a long cache) splits each head's keys over many
// blocks, flash-decoding style, and a merge of the blocks' partial results (running max, sum and
// weighted value sum per head) follows. A block takes a tile of a kv head's keys and values into
// shared memory in one asynchronous copy and scores all the query heads that share them
// (AttentionTileKernel): the Qwen and Llama distills' GQA groups, and MLA's 16 heads over its
// one 576-wide latent row, whose first 512 values are also the values (copied once). Shapes the
// tile does not fit (heads not whole 16-byte pieces, too wide for shared memory) take a warp per
// key and one query head per block (AttentionSplitKernel), whose last block to finish merges.
// Prefill uses cuBLASLt for the two products (attention_cuda.cc) with the causal softmax below
// between them.
#include <algorithm>
#include <cstdint>

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

// Keys per split: a first chunk, doubled while there would be more splits than a most (each
// kernel has its rule). The split boundaries (multiples of the chunk) then do not depend on how
// many query rows a call has, so a position attends with the same arithmetic in a verification
// pass as in a decode step (always while the chunk is the first; past that unless the two calls
// straddle a doubling).
struct SplitRule {
  int64_t first_chunk, max_splits;
};
constexpr int64_t kMaxAttentionSplits = 256;
constexpr SplitRule kWarpPerKeyRule{32, kMaxAttentionSplits};  // chunk 32 up to 8192 keys
__host__ __device__ inline int64_t AttentionChunk(int64_t n_keys, SplitRule rule = kWarpPerKeyRule) {
  int64_t chunk = rule.first_chunk;
  while ((n_keys + chunk - 1) / chunk > rule.max_splits) chunk *= 2;
  return chunk;
}

// The keys of the pass's last row (pos0 + T) and the splits that cover them.
struct KeySplits {
  int64_t pos0, chunk, splits;
};
__device__ inline KeySplits ActiveSplits(const AttentionArgs& a, SplitRule rule) {
  KeySplits k;
  k.pos0 = a.pos0_device ? *a.pos0_device : a.pos0;
  k.chunk = AttentionChunk(k.pos0 + a.T, rule);
  k.splits = (k.pos0 + a.T + k.chunk - 1) / k.chunk;
  if (k.pos0 < 0 || k.pos0 + a.T > a.key_rows) k.splits = 0;  // a position past the cache: read nothing
  return k;
}

// out[t, h]'s elements dim0 + threadIdx.x, + dim_step, ... from the splits' partials, by the
// block's threads.
__device__ void CombineSplits(const AttentionArgs& a, int64_t splits, const float* partials, int64_t t, int64_t h,
                              int64_t active, int64_t dim0, int64_t dim_step) {
  // Each split's weight exp(max_s - global max) (0 for a split without keys) and the total, by
  // the first warp; then every thread sums its output elements over the splits. A thread's first
  // element's values of the first kEarly splits load with the maxima and sums, not after them.
  constexpr int kEarly = 32;
  __shared__ float weight[kMaxAttentionSplits];
  __shared__ float total;
  const int64_t dv = a.head_dim_v;
  const float* base = partials + PartialIndex(t, h, 0, a.n_heads, splits, dv);
  const int64_t first = dim0 + threadIdx.x;
  float early[kEarly];
  if (first < dv) {
#pragma unroll
    for (int u = 0; u < kEarly; ++u) early[u] = u < active ? __ldcg(base + u * (dv + 2) + 2 + first) : 0.0f;
  }
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
  for (int64_t i = first; i < dv; i += dim_step) {
    float acc = 0.0f;
    int64_t s = 0;
    if (i == first) {
#pragma unroll
      for (int u = 0; u < kEarly; ++u)
        if (u < active) acc = fmaf(early[u], weight[u], acc);
      s = min(active, static_cast<int64_t>(kEarly));
    }
    for (; s + 16 <= active; s += 16) {  // sixteen loads in flight, then their sums in order
      float p[16];
#pragma unroll
      for (int u = 0; u < 16; ++u) p[u] = __ldcg(base + (s + u) * (dv + 2) + 2 + i);
#pragma unroll
      for (int u = 0; u < 16; ++u) acc = fmaf(p[u], weight[s + u], acc);
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
  const KeySplits ks = ActiveSplits(a, kWarpPerKeyRule);
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
  if (last) CombineSplits(a, splits, partials, t, h, ks.splits, 0, blockDim.x);
}

__global__ void AttentionCombineKernel(AttentionArgs a, SplitRule rule, int64_t splits, const float* partials) {
  const int64_t active = ActiveSplits(a, rule).splits;  // the pass's position: readable before the wait
  WaitForPreviousKernels();
  CombineSplits(a, splits, partials, blockIdx.y, blockIdx.x, active, blockIdx.z * blockDim.x,
                gridDim.z * blockDim.x);
}

// --- the tile kernel -----------------------------------------------------------------------------
// kTileKeys keys at a time in shared memory, each scored by kScoreLanes lanes: 16 keys a round
// over the block's 128 threads, so all of them score at the 16 keys a split of short contexts.
constexpr int kTileKeys = 32, kTileThreads = 128, kScoreLanes = 8;
// Output elements per thread: up to 4, so head_dim_v up to 512 (MLA's kv_lora_rank).
constexpr int kTileMaxDimsPerThread = 4;
// Shared memory a block may use: within what sm_86 and sm_89 allow a block (99 KB).
constexpr int64_t kTileMaxSmemBytes = 96 * 1024;
// 16 keys per split up to 2048 keys, then doubled; past 4096 keys a block takes several tiles.
// Chosen on the H100 over 8, 32 and 64 keys per split and 256 splits at most (bench/RESULTS.md).
constexpr SplitRule kTileRule{16, 128};

// Whether a key's value row is the start of its key row (MLA's latent cache: v = c_kv, the first
// kv_lora_rank values of [c_kv | k_pe]): the tile then copies the rows once.
__host__ __device__ inline bool ValuesInKeyRows(const AttentionArgs& a) {
  return a.v == a.k && a.v_stride == a.k_stride && a.head_dim_v <= a.head_dim_qk &&
         (a.n_kv_heads == 1 || a.head_dim_v == a.head_dim_qk);
}

// Shared memory of a block of kHeads query heads: q [kHeads][dqk], the tile's keys
// [kTileKeys][dqk + 4] (the pad puts consecutive rows in different banks), values
// [kTileKeys][dv] (none where they are in the key rows), probabilities [kHeads][kTileKeys], and
// per head the running max, sum and the tile's correction.
__host__ __device__ inline int64_t TileSmemFloats(const AttentionArgs& a, int heads) {
  const int64_t values = ValuesInKeyRows(a) ? 0 : kTileKeys * a.head_dim_v;
  return heads * a.head_dim_qk + kTileKeys * (a.head_dim_qk + 4) + values + heads * kTileKeys + 3 * heads;
}

// The tile kernel's blocks per kv head: its query heads in parts of at most heads_per_block.
__host__ __device__ inline int64_t TileBlocksPerKvHead(const AttentionArgs& a, int heads_per_block) {
  return (a.n_heads / a.n_kv_heads + heads_per_block - 1) / heads_per_block;
}

// Heads block x of the tile kernel takes: its kv head, the first query head and how many.
__device__ inline void TileHeads(const AttentionArgs& a, int heads_per_block, int64_t x, int64_t* kv, int64_t* h0,
                                 int* n) {
  const int64_t group = a.n_heads / a.n_kv_heads;
  const int64_t per_kv = TileBlocksPerKvHead(a, heads_per_block);
  *kv = x / per_kv;
  const int64_t first = (x % per_kv) * heads_per_block;
  *h0 = *kv * group + first;
  *n = static_cast<int>(min(static_cast<int64_t>(heads_per_block), group - first));
}

// Starts the copy of rows [from, to) of the tile at key j0 (kv head kv) into shared memory: a
// warp per row, a lane per 16 bytes of it. values null: they are in the key rows.
__device__ inline void CopyTileRows(const AttentionArgs& a, int64_t kv, int64_t j0, int from, int to, float* keys,
                                    float* values) {
  const int64_t dqk = a.head_dim_qk, dv = a.head_dim_v, k_pitch = dqk + 4;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int key = from + warp; key < to; key += kTileThreads / 32) {
    const float* k_row = a.k + (j0 + key) * a.k_stride + kv * dqk;
    for (int part = 4 * lane; part < dqk; part += 4 * 32) CopyAsync16(keys + key * k_pitch + part, k_row + part);
    if (!values) continue;
    const float* v_row = a.v + (j0 + key) * a.v_stride + kv * dv;
    for (int part = 4 * lane; part < dv; part += 4 * 32) CopyAsync16(values + key * dv + part, v_row + part);
  }
}

// Block (x, t, split): row t's query heads of part x (TileHeads) over the split's keys, a tile
// of kTileKeys at a time: the tile's key and value rows copied to shared memory together, the
// scores (kScoreLanes lanes a key, all heads), the online softmax per head (a warp per head),
// then the weighted values (kDims output elements a thread, all heads; kValuesInKeys: the
// values are the key rows' start, ValuesInKeyRows). The partial per head goes to `partials`;
// AttentionCombineKernel merges them. A head's arithmetic does not depend on
// which heads share its block or on how many rows the pass has.
template <int kHeads, int kDims, bool kValuesInKeys>
__global__ void __launch_bounds__(kTileThreads) AttentionTileKernel(AttentionArgs a, SplitRule rule, int64_t splits,
                                                                    float* partials) {
  extern __shared__ float4 tile_smem[];
  const int64_t dqk = a.head_dim_qk, dv = a.head_dim_v, k_pitch = dqk + 4;
  float* q = reinterpret_cast<float*>(tile_smem);
  float* keys = q + kHeads * dqk;
  float* own_values = kValuesInKeys ? nullptr : keys + kTileKeys * k_pitch;  // CopyTileRows' values
  const float* values = kValuesInKeys ? keys : own_values;
  const int64_t v_pitch = kValuesInKeys ? k_pitch : dv;
  float* prob = keys + kTileKeys * k_pitch + (kValuesInKeys ? 0 : kTileKeys * dv);
  float* state = prob + kHeads * kTileKeys;  // [kHeads][max, sum, correction]
  const int64_t t = blockIdx.y, split = blockIdx.z;
  int64_t kv, h0;
  int nh;
  TileHeads(a, kHeads, blockIdx.x, &kv, &h0, &nh);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const KeySplits ks = ActiveSplits(a, rule);  // the pass's position: readable before the wait
  const bool active = split < ks.splits;       // else a launch sized for more keys than this pass has
  const int64_t n_keys = ks.pos0 + t + 1;
  const int64_t begin = split * ks.chunk, end = active ? min(begin + ks.chunk, n_keys) : begin;
  // The first tile's keys below the pass's position were written by earlier passes, whose kernels
  // have all finished (the kernel ahead of this one waited for those before it): their copy
  // overlaps the kernel ahead. The pass's own rows come after the wait.
  const int first_tile = static_cast<int>(max(int64_t{0}, min(static_cast<int64_t>(kTileKeys), end - begin)));
  const int old_rows = static_cast<int>(min(static_cast<int64_t>(first_tile), max(int64_t{0}, ks.pos0 - begin)));
  CopyTileRows(a, kv, begin, 0, old_rows, keys, own_values);
  WaitForPreviousKernels();
  if (!active) return;
  CopyTileRows(a, kv, begin, old_rows, first_tile, keys, own_values);
  for (int64_t i = tid; i < nh * dqk; i += kTileThreads) q[i] = a.q[t * a.q_stride + h0 * dqk + i];
  if (tid < kHeads) state[3 * tid] = -INFINITY, state[3 * tid + 1] = 0.0f;
  float acc[kDims][kHeads];
#pragma unroll
  for (int d = 0; d < kDims; ++d)
#pragma unroll
    for (int g = 0; g < kHeads; ++g) acc[d][g] = 0.0f;

  for (int64_t j0 = begin; j0 < end; j0 += kTileKeys) {
    const int tile = static_cast<int>(min(static_cast<int64_t>(kTileKeys), end - j0));
    WaitAsyncCopies();
    __syncthreads();

    // Scores: lane `part` of a key's kScoreLanes sums dims 4 * part + 4 * kScoreLanes * i, for
    // every head; the key's lanes then add theirs. A round takes kTileThreads / kScoreLanes keys.
    const int part = tid % kScoreLanes;
    for (int round = 0; round < tile; round += kTileThreads / kScoreLanes) {
      const int key = round + tid / kScoreLanes;
      const float* kr = keys + min(key, tile - 1) * k_pitch;  // a lane past the tile reads a live row, unused
      float dot[kHeads];
#pragma unroll
      for (int g = 0; g < kHeads; ++g) dot[g] = 0.0f;
#pragma unroll 4
      for (int i = 4 * part; i < dqk; i += 4 * kScoreLanes) {
        const float4 k4 = *reinterpret_cast<const float4*>(kr + i);
#pragma unroll
        for (int g = 0; g < kHeads; ++g) {
          if (g >= nh) break;
          const float4 q4 = *reinterpret_cast<const float4*>(q + g * dqk + i);
          dot[g] = fmaf(q4.x, k4.x, dot[g]);
          dot[g] = fmaf(q4.y, k4.y, dot[g]);
          dot[g] = fmaf(q4.z, k4.z, dot[g]);
          dot[g] = fmaf(q4.w, k4.w, dot[g]);
        }
      }
#pragma unroll
      for (int g = 0; g < kHeads; ++g) {
#pragma unroll
        for (int offset = kScoreLanes / 2; offset > 0; offset /= 2)
          dot[g] += __shfl_xor_sync(0xffffffffu, dot[g], offset);
      }
      if (part == 0 && key < tile) {
#pragma unroll
        for (int g = 0; g < kHeads; ++g)
          if (g < nh) prob[g * kTileKeys + key] = dot[g] * a.scale;
      }
    }
    __syncthreads();

    // Online softmax over the tile, a warp per head (a lane per key): new max, the probabilities
    // under it, and the correction of what the head has summed so far.
    static_assert(kTileKeys == 32, "a lane per key of the tile");
    for (int g = warp; g < nh; g += kTileThreads / 32) {
      float* pg = prob + g * kTileKeys;
      const float s = lane < tile ? pg[lane] : -INFINITY;
      const float m_old = state[3 * g], m_new = fmaxf(m_old, WarpMax(s));
      const float e = lane < tile ? expf(s - m_new) : 0.0f;
      pg[lane] = e;
      const float sum = WarpSum(e);
      __syncwarp();  // the lanes have read the head's state before lane 0 writes it
      if (lane == 0) {
        const float correction = expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
        state[3 * g] = m_new, state[3 * g + 1] = state[3 * g + 1] * correction + sum, state[3 * g + 2] = correction;
      }
    }
    __syncthreads();

    // Weighted values: output elements tid, tid + kTileThreads, ... of every head, keys in order.
#pragma unroll
    for (int d = 0; d < kDims; ++d) {
      const int col = tid + d * kTileThreads;
      if (col >= dv) break;
#pragma unroll
      for (int g = 0; g < kHeads; ++g)
        if (g < nh) acc[d][g] *= state[3 * g + 2];
      int j = 0;
      for (; j + 4 <= tile; j += 4) {  // four keys' probabilities in one load per head
        const float v[4] = {values[j * v_pitch + col], values[(j + 1) * v_pitch + col],
                            values[(j + 2) * v_pitch + col], values[(j + 3) * v_pitch + col]};
#pragma unroll
        for (int g = 0; g < kHeads; ++g) {
          if (g >= nh) break;
          const float4 p4 = *reinterpret_cast<const float4*>(prob + g * kTileKeys + j);
          acc[d][g] = fmaf(p4.x, v[0], acc[d][g]);
          acc[d][g] = fmaf(p4.y, v[1], acc[d][g]);
          acc[d][g] = fmaf(p4.z, v[2], acc[d][g]);
          acc[d][g] = fmaf(p4.w, v[3], acc[d][g]);
        }
      }
      for (; j < tile; ++j) {
        const float v = values[j * v_pitch + col];
#pragma unroll
        for (int g = 0; g < kHeads; ++g)
          if (g < nh) acc[d][g] = fmaf(prob[g * kTileKeys + j], v, acc[d][g]);
      }
    }
    __syncthreads();  // the next tile overwrites keys, values and prob
    if (j0 + kTileKeys < end)
      CopyTileRows(a, kv, j0 + kTileKeys, 0, static_cast<int>(min(static_cast<int64_t>(kTileKeys), end - j0 - kTileKeys)),
                   keys, own_values);
  }
  __syncthreads();  // a split past this row's keys skips the loop: the state's first values

#pragma unroll
  for (int g = 0; g < kHeads; ++g) {
    if (g >= nh) break;
    float* out = partials + PartialIndex(t, h0 + g, split, a.n_heads, splits, dv);
    if (tid == 0) out[0] = state[3 * g], out[1] = state[3 * g + 1];
#pragma unroll
    for (int d = 0; d < kDims; ++d)
      if (tid + d * kTileThreads < dv) out[2 + tid + d * kTileThreads] = acc[d][g];
  }
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

namespace {

// Query heads per block of the tile kernel: as many of a kv head's as its group has, up to 8,
// and up to 4 for values wider than a thread each (MLA's 512): twice the blocks over the short
// splits of a few hundred keys (V2-Lite on the H100: 240 -> 247 tok/s at 512 keys, 195 -> 208 at
// 4096, bench/RESULTS.md).
int TileHeadsPerBlock(const AttentionArgs& a) {
  const int64_t group = a.n_heads / a.n_kv_heads;
  if (group >= 5 && a.head_dim_v <= kTileThreads) return 8;
  return group >= 3 ? 4 : static_cast<int>(group);
}

// The tile kernel takes heads whose rows are whole 16-byte pieces, values up to
// kTileMaxDimsPerThread elements a thread, where its shared memory fits.
bool UseTileKernel(const AttentionArgs& a) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.head_dim_v <= kTileMaxDimsPerThread * kTileThreads && a.head_dim_qk % 4 == 0 && a.head_dim_v % 4 == 0 &&
         a.k_stride % 4 == 0 && a.v_stride % 4 == 0 && aligned(a.k) && aligned(a.v) &&
         TileSmemFloats(a, TileHeadsPerBlock(a)) * static_cast<int64_t>(sizeof(float)) <= kTileMaxSmemBytes;
}

SplitRule RuleFor(const AttentionArgs& a) { return UseTileKernel(a) ? kTileRule : kWarpPerKeyRule; }

// The second kernel that merges the splits' partials, a block per (head, row, 128 output
// elements): a thread per element (MLA's 512-wide heads in four blocks each, not one).
cudaError_t LaunchCombine(const AttentionArgs& a, SplitRule rule, int64_t splits, const float* partials,
                          cudaStream_t stream) {
  constexpr int kThreads = 128;
  const dim3 grid(static_cast<unsigned>(a.n_heads), static_cast<unsigned>(a.T),
                  static_cast<unsigned>((a.head_dim_v + kThreads - 1) / kThreads));
  return Launch(AttentionCombineKernel, grid, kThreads, 0, stream, a, rule, splits, partials);
}

template <int kHeads, int kDims, bool kValuesInKeys>
cudaError_t LaunchTileKernel(const AttentionArgs& a, int64_t splits, float* partials, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.n_kv_heads * TileBlocksPerKvHead(a, kHeads)), static_cast<unsigned>(a.T),
                  static_cast<unsigned>(splits));
  const size_t smem = TileSmemFloats(a, kHeads) * sizeof(float);
  auto* kernel = AttentionTileKernel<kHeads, kDims, kValuesInKeys>;
  if (cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
      err != cudaSuccess)
    return err;
  if (cudaError_t err = Launch(kernel, grid, kTileThreads, smem, stream, a, kTileRule, splits, partials);
      err != cudaSuccess)
    return err;
  return LaunchCombine(a, kTileRule, splits, partials, stream);
}

// kHeads query heads a block, values of at most 128 (the distills) or 512 (MLA) elements.
template <int kHeads>
cudaError_t LaunchTileKernelFor(const AttentionArgs& a, int64_t splits, float* partials, cudaStream_t stream) {
  const bool in_keys = ValuesInKeyRows(a);
  if (a.head_dim_v <= kTileThreads)
    return in_keys ? LaunchTileKernel<kHeads, 1, true>(a, splits, partials, stream)
                   : LaunchTileKernel<kHeads, 1, false>(a, splits, partials, stream);
  return in_keys ? LaunchTileKernel<kHeads, kTileMaxDimsPerThread, true>(a, splits, partials, stream)
                 : LaunchTileKernel<kHeads, kTileMaxDimsPerThread, false>(a, splits, partials, stream);
}

}  // namespace

int64_t AttentionSplits(const AttentionArgs& a) {
  const SplitRule rule = RuleFor(a);
  // With the position on the device: as many as the most keys k holds could need (fewer keys
  // never need more splits, and never more than the rule's most).
  if (a.pos0_device)
    return std::clamp<int64_t>((a.key_rows + rule.first_chunk - 1) / rule.first_chunk, 1, rule.max_splits);
  const int64_t chunk = AttentionChunk(a.pos0 + a.T, rule);
  return std::max<int64_t>(1, (a.pos0 + a.T + chunk - 1) / chunk);
}

int64_t AttentionSplitScratch(const AttentionArgs& a, int64_t splits) {
  return a.T * a.n_heads * splits * (a.head_dim_v + 2);
}

cudaError_t LaunchAttentionSplit(const AttentionArgs& a, int64_t splits, float* partials, int* counters,
                                 int64_t n_counters, cudaStream_t stream) {
  if (a.T <= 0) return cudaSuccess;
  if (a.head_dim_v > kMaxHeadDimV || a.n_heads > 65535 || a.T > 65535 || splits > 65535) return cudaErrorInvalidValue;
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0) return cudaErrorInvalidValue;
  if (a.pos0_device ? a.T > a.key_rows : splits * AttentionChunk(a.pos0 + a.T, RuleFor(a)) < a.pos0 + a.T)
    return cudaErrorInvalidValue;
  if (UseTileKernel(a)) {
    switch (TileHeadsPerBlock(a)) {
      case 8: return LaunchTileKernelFor<8>(a, splits, partials, stream);
      case 4: return LaunchTileKernelFor<4>(a, splits, partials, stream);
      case 2: return LaunchTileKernelFor<2>(a, splits, partials, stream);
      default: return LaunchTileKernelFor<1>(a, splits, partials, stream);
    }
  }
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
  return LaunchCombine(a, kWarpPerKeyRule, splits, partials, stream);
}

cudaError_t LaunchCausalSoftmax(float* scores, int64_t n_heads, int64_t T, int64_t S, int64_t pos0, int64_t t0,
                                cudaStream_t stream) {
  const int64_t rows = n_heads * T;
  if (rows <= 0) return cudaSuccess;
  if (rows > 2147483647) return cudaErrorInvalidValue;
  return Launch(CausalSoftmaxKernel, static_cast<unsigned>(rows), 256, 0, stream, scores, T, S, pos0, t0);
}

}  // namespace ds::cuda

// Sampling on the device: temperature, top-k, top-p and min-p over a row of logits, so that only
// the chosen id crosses to the host (the host's sampler took ~1 ms a token for top-p over a
// 150k vocabulary, plus the row's download). The kept set is the host sampler's (core/sampling):
// the k largest logits (ties: lower id first), then the shortest prefix of that order whose
// probability reaches top_p, then those at least min_p times the most likely. Its members are
// drawn by the inverse CDF in id order, as the host's temperature-only path walks them.
//
// Weights are fixed point, exp((logit - max) / T) * 2^S with S = 62 - ceil(log2 n), so every sum
// fits 64 bits and is exact: the result does not depend on the order blocks finish in, and a
// weight below 2^-S of the largest counts as zero (such a token is never drawn; a 150k vocabulary
// has S = 44, 6e-14).
//
// The thresholds come from radix selection over the logits' order-preserving 32-bit keys, three
// digits of 11, 11 and 10 bits: each pass histograms the digit of the elements that match the
// prefix chosen so far (by count for top-k, by weight for top-p), and the pass's last block picks
// the digit. A block takes 1024 elements, one a thread, so that a histogram bin many elements
// share costs a block one round of shared-memory atomics.
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {
namespace {

constexpr int kThreads = 1024, kWarpsPerBlock = kThreads / 32;
constexpr int kBins = 2048;
constexpr int kMaxBlocks = kMaxSampleVocab / kThreads;
// The three digits, from the top: 11, 11 and 10 bits.
__host__ __device__ constexpr int DigitShift(int pass) { return pass == 0 ? 21 : pass == 1 ? 10 : 0; }
__host__ __device__ constexpr uint32_t DigitMask(int pass) { return pass == 2 ? 0x3ffu : 0x7ffu; }
constexpr uint64_t kAllTies = ~0ull;

// Per row, between the launches.
struct State {
  uint32_t max_key;
  uint32_t counter;  // blocks done in the current pass; its last block leaves it at zero
  uint32_t prefix, mask;
  uint64_t need;                // count (top-k) or weight (top-p) still to place below the prefix
  uint32_t top_k_key;           // top-k: keys above kept, and the first top_k_ties at it
  uint64_t top_k_ties;
  uint32_t key;                 // the kept set: keys above, and the first `ties` at it
  uint64_t ties;
  uint64_t hist[kBins];
  uint32_t block_ties[kMaxBlocks];
  uint64_t block_weight[kMaxBlocks];
};

struct Args {
  const float* logits;
  int64_t stride, n;
  float temperature;
  int64_t top_k;  // 0 where off (or >= n)
  float top_p;    // 1 where off
  bool min_p;
  double min_p_below_max;  // min-p drops logits below max + T ln(min_p)
  double unit;    // 2^S, the largest weight
  SampleDraws draws;
  int32_t* ids;
  State* states;
};

__device__ __forceinline__ void AtomicAdd64(uint64_t* p, uint64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// Order-preserving: a larger logit has a larger key. NaN reads as -inf, -0 as +0 (equal logits
// must tie).
__device__ __forceinline__ uint32_t Key(float v) {
  if (isnan(v)) v = -INFINITY;
  if (v == 0.0f) v = 0.0f;
  const uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float FromKey(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ uint64_t Weight(const Args& a, uint32_t key, uint32_t max_key) {
  const float m = FromKey(max_key), v = FromKey(key);
  if (!isfinite(m)) return key == max_key ? static_cast<uint64_t>(a.unit) : 0;  // all -inf, or a +inf
  if (v == -INFINITY) return 0;
  return static_cast<uint64_t>(static_cast<double>(expf((v - m) / a.temperature)) * a.unit);
}

// Exclusive prefix over the block of one value a thread (in thread order), and the total.
template <typename T>
__device__ T BlockExclusiveScan(T v, T& total) {
  __shared__ T warp_totals[kWarpsPerBlock];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  T inclusive = v;
  for (int offset = 1; offset < 32; offset *= 2) {
    const T other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  __syncthreads();  // warp_totals may still be read by a previous call
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  T before = 0;
  total = 0;
  for (int w = 0; w < kWarpsPerBlock; ++w) {
    if (w < warp) before += warp_totals[w];
    total += warp_totals[w];
  }
  return before + inclusive - v;
}

// The bin where the histogram's sum from the top reaches need, and the sum of the bins above it.
// Thread t holds bins 2t and 2t + 1; every thread gets the answer.
__device__ void SelectBin(const uint64_t* hist, uint64_t need, uint32_t& bin, uint64_t& above) {
  __shared__ uint64_t mirror[kThreads];
  __shared__ uint32_t chosen_bin;
  __shared__ uint64_t chosen_above;
  const int t = threadIdx.x;
  const uint64_t low = __ldcg(&hist[2 * t]), high = __ldcg(&hist[2 * t + 1]);
  // The sums above each thread's pair: a prefix over the threads in reverse order.
  mirror[t] = low + high;
  __syncthreads();
  uint64_t total;
  const uint64_t above_mirrored = BlockExclusiveScan<uint64_t>(mirror[kThreads - 1 - t], total);
  __syncthreads();
  mirror[kThreads - 1 - t] = above_mirrored;
  __syncthreads();
  const uint64_t above_high = mirror[t];  // the bins above 2t + 1
  if (above_high < need && above_high + high >= need) chosen_bin = 2 * t + 1, chosen_above = above_high;
  if (above_high + high < need && above_high + high + low >= need) chosen_bin = 2 * t, chosen_above = above_high + high;
  __syncthreads();
  bin = chosen_bin;
  above = chosen_above;
  __syncthreads();
}

// After a block's part of a pass: whether it is the pass's last block (then the others' atomics
// are visible to it). Every thread gets the answer.
__device__ bool LastBlock(State& s) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&s.counter, 1u) == gridDim.x - 1;
  __syncthreads();
  return last;
}

__global__ void __launch_bounds__(kThreads) MaxKernel(Args a) {
  WaitForPreviousKernels();
  State& s = a.states[blockIdx.y];
  const float* row = a.logits + blockIdx.y * a.stride;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  uint32_t key = i < a.n ? Key(row[i]) : 0u;
  key = __reduce_max_sync(0xffffffffu, key);
  if (threadIdx.x % 32 == 0) atomicMax(&s.max_key, key);
}

// One digit of the radix selection: by count for top-k (kWeighted false), by weight for top-p
// over the top-k set (kWeighted true).
template <bool kWeighted>
__global__ void __launch_bounds__(kThreads) SelectPassKernel(Args a, int pass) {
  __shared__ uint64_t hist[kBins];
  WaitForPreviousKernels();
  State& s = a.states[blockIdx.y];
  const float* row = a.logits + blockIdx.y * a.stride;
  for (int b = threadIdx.x; b < kBins; b += kThreads) hist[b] = 0;
  __syncthreads();
  const uint32_t prefix = s.prefix, mask = s.mask, max_key = s.max_key;
  const bool top_k = kWeighted && a.top_k > 0;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < a.n) {
    const uint32_t key = Key(row[i]);
    // For top-p, the top-k set: keys above its threshold here, those at it added by the last block.
    const bool in_set = !top_k || key > s.top_k_key;
    if (in_set && (key & mask) == prefix) {
      const uint64_t add = kWeighted ? Weight(a, key, max_key) : 1;
      if (add) AtomicAdd64(&hist[(key >> DigitShift(pass)) & DigitMask(pass)], add);
    }
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kBins; b += kThreads)
    if (hist[b]) AtomicAdd64(&s.hist[b], hist[b]);
  if (!LastBlock(s)) return;

  if (threadIdx.x == 0 && top_k && (s.top_k_key & mask) == prefix)  // the top-k ties, of one weight
    AtomicAdd64(&s.hist[(s.top_k_key >> DigitShift(pass)) & DigitMask(pass)],
              s.top_k_ties * Weight(a, s.top_k_key, max_key));
  __syncthreads();
  uint64_t need = s.need;
  if (pass == 0) {
    if constexpr (kWeighted) {
      uint64_t total = 0;
      const uint64_t pair = __ldcg(&s.hist[2 * threadIdx.x]) + __ldcg(&s.hist[2 * threadIdx.x + 1]);
      BlockExclusiveScan<uint64_t>(pair, total);
      // The nucleus reaches top_p of the set's weight: the least integer weight at or past it.
      need = static_cast<uint64_t>(ceil(static_cast<double>(a.top_p) * static_cast<double>(total)));
      if (need == 0) need = 1;
    } else {
      need = static_cast<uint64_t>(a.top_k);
    }
  }
  uint32_t bin;
  uint64_t above;
  SelectBin(s.hist, need, bin, above);
  for (int b = threadIdx.x; b < kBins; b += kThreads) s.hist[b] = 0;  // for the next pass
  if (threadIdx.x != 0) return;
  need -= above;
  uint32_t new_prefix = prefix | (bin << DigitShift(pass)), new_mask = mask | (DigitMask(pass) << DigitShift(pass));
  s.counter = 0;
  if (pass < 2) {
    s.prefix = new_prefix, s.mask = new_mask, s.need = need;
    return;
  }
  s.prefix = 0, s.mask = 0, s.need = 0;
  if constexpr (kWeighted) {
    // Keys above new_prefix hold less than the nucleus; those at it (one weight each) join in id
    // order until it is reached.
    const uint64_t w = Weight(a, new_prefix, max_key);
    s.key = new_prefix;
    s.ties = w ? (need + w - 1) / w : kAllTies;
  } else {
    s.top_k_key = s.key = new_prefix;
    s.top_k_ties = s.ties = need;
  }
}

// The kept set's membership of element i (key, and its rank among the elements at the set's
// threshold key in id order), and its weight.
__device__ __forceinline__ uint64_t KeptWeight(const Args& a, const State& s, uint32_t key, float v, uint64_t tie_rank) {
  const bool kept = key > s.key || (key == s.key && tie_rank < s.ties);
  if (!kept || (a.min_p && static_cast<double>(v) < static_cast<double>(FromKey(s.max_key)) + a.min_p_below_max))
    return 0;
  return Weight(a, key, s.max_key);
}

// Each block's count of elements at the set's threshold key.
__global__ void __launch_bounds__(kThreads) TiesKernel(Args a) {
  WaitForPreviousKernels();
  State& s = a.states[blockIdx.y];
  const float* row = a.logits + blockIdx.y * a.stride;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool tie = i < a.n && Key(row[i]) == s.key;
  const unsigned ballot = __ballot_sync(0xffffffffu, tie);
  __shared__ uint32_t count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  if (threadIdx.x % 32 == 0 && ballot) atomicAdd(&count, static_cast<uint32_t>(__popc(ballot)));
  __syncthreads();
  if (threadIdx.x == 0) s.block_ties[blockIdx.x] = count;
}

// Block b's kept weights in id order: every thread's exclusive prefix within the block and the
// block's total.
__device__ uint64_t BlockKeptWeights(const Args& a, const State& s, const float* row, int block, uint64_t& mine,
                                     uint64_t& total) {
  // The ties of the blocks before, a count a thread (a loop of dependent-latency loads in one
  // thread took most of this kernel's 20 us).
  uint32_t ties_before;
  BlockExclusiveScan<uint32_t>(threadIdx.x < block ? s.block_ties[threadIdx.x] : 0u, ties_before);
  const int64_t i = static_cast<int64_t>(block) * kThreads + threadIdx.x;
  const float v = i < a.n ? row[i] : -INFINITY;
  const uint32_t key = i < a.n ? Key(v) : 0u;
  uint32_t tie_total;
  const uint32_t tie_rank = BlockExclusiveScan<uint32_t>(i < a.n && key == s.key ? 1u : 0u, tie_total);
  mine = i < a.n ? KeptWeight(a, s, key, v, ties_before + tie_rank) : 0;
  return BlockExclusiveScan<uint64_t>(mine, total);
}

// Each block's kept weight; the last block draws: the block whose weights hold the draw, then
// the element within it.
__global__ void __launch_bounds__(kThreads) DrawKernel(Args a) {
  WaitForPreviousKernels();
  State& s = a.states[blockIdx.y];
  const float* row = a.logits + blockIdx.y * a.stride;
  uint64_t mine, total;
  BlockKeptWeights(a, s, row, blockIdx.x, mine, total);
  if (threadIdx.x == 0) s.block_weight[blockIdx.x] = total;
  if (!LastBlock(s)) return;

  __shared__ uint64_t target;
  __shared__ int target_block;
  const int blocks = static_cast<int>(gridDim.x);
  const uint64_t w = threadIdx.x < blocks ? __ldcg(&s.block_weight[threadIdx.x]) : 0;
  uint64_t all;
  const uint64_t before = BlockExclusiveScan<uint64_t>(w, all);
  if (threadIdx.x == 0) target_block = -1;
  __syncthreads();
  // r = floor(u * all), u = draw * 2^-53, exactly: all < 2^62 and draw < 2^53.
  const uint64_t draw = a.draws.draw[blockIdx.y];
  const uint64_t r = (__umul64hi(draw, all) << 11) | ((draw * all) >> 53);
  if (threadIdx.x < blocks && w > 0 && before <= r && r < before + w) target_block = threadIdx.x, target = r - before;
  __syncthreads();
  if (target_block < 0) {  // nothing kept has weight: every logit -inf or NaN
    if (threadIdx.x == 0) a.ids[blockIdx.y] = 0, s.counter = 0;
    return;
  }
  const uint64_t in_block = BlockKeptWeights(a, s, row, target_block, mine, total);
  if (mine > 0 && in_block <= target && target < in_block + mine)
    a.ids[blockIdx.y] = static_cast<int32_t>(static_cast<int64_t>(target_block) * kThreads + threadIdx.x);
  if (threadIdx.x == 0) s.counter = 0;
}

}  // namespace

int64_t SampleScratchBytes(int64_t rows) { return rows * static_cast<int64_t>(sizeof(State)); }

cudaError_t LaunchSampleTokens(const float* logits, int64_t stride, int64_t rows, int64_t n, const SampleFilters& f,
                               const SampleDraws& draws, void* scratch, int32_t* ids, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  if (n <= 0 || n > kMaxSampleVocab || rows > kMaxSampleRows || !(f.temperature > 0.0f)) return cudaErrorInvalidValue;
  int bits = 0;
  while ((int64_t{1} << bits) < n) ++bits;
  Args a{.logits = logits,
         .stride = stride,
         .n = n,
         .temperature = f.temperature,
         .top_k = f.top_k > 0 && f.top_k < n ? f.top_k : 0,
         .top_p = f.top_p,
         .min_p = f.min_p > 0.0f,
         .min_p_below_max = f.min_p > 0.0f ? static_cast<double>(f.temperature) * std::log(static_cast<double>(f.min_p)) : 0.0,
         .unit = std::ldexp(1.0, 62 - bits),
         .draws = draws,
         .ids = ids,
         .states = static_cast<State*>(scratch)};
  if (cudaError_t err = cudaMemsetAsync(scratch, 0, SampleScratchBytes(rows), stream); err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(rows));
  if (cudaError_t err = Launch(MaxKernel, grid, kThreads, 0, stream, a); err != cudaSuccess) return err;
  if (a.top_k > 0)
    for (int pass = 0; pass < 3; ++pass)
      if (cudaError_t err = Launch(SelectPassKernel<false>, grid, kThreads, 0, stream, a, pass); err != cudaSuccess)
        return err;
  if (a.top_p < 1.0f)
    for (int pass = 0; pass < 3; ++pass)
      if (cudaError_t err = Launch(SelectPassKernel<true>, grid, kThreads, 0, stream, a, pass); err != cudaSuccess)
        return err;
  // Without top-k or top-p every key is above the set's (zero): no ties to count.
  if (a.top_k > 0 || a.top_p < 1.0f)
    if (cudaError_t err = Launch(TiesKernel, grid, kThreads, 0, stream, a); err != cudaSuccess) return err;
  return Launch(DrawKernel, grid, kThreads, 0, stream, a);
}

}  // namespace ds::cuda

// A prompt's routed experts as grouped GEMMs, the expert ids never leaving the device (no host
// round trip; a pass can be captured in a graph). The (token, expert) pairs are sorted by expert;
// each expert then multiplies its rows by its weights in tiles of kTileRows rows, one launch for
// every expert's gate/up and one for every down. The shared experts are more groups that every
// token takes with weight 1, as in LaunchMoeDecode. The steps:
//   input:   xs [T, hidden] = x, or rms_norm(x) * norm, in the weights' type (bf16 rounds, as
//            the bf16 GEMMs round their activations)
//   sort:    each group's first row and first tile, the token of each routed row, and the row of
//            each (token, slot)
//   gate/up: h[row] = silu(xs[token] · gateᵀ) * (xs[token] · upᵀ), in the weights' type
//   down:    y[row] = h[row] · downᵀ, f32
//   combine: out[t] = (x[t] +) Σ_j weights[t, j] · y[row(t, j)] + Σ_s y[shared row(t, s)], in that
//            order, so a token's result does not depend on the tokens beside it.
// bf16 weights of 16-byte pieces go through the tensor cores (mma.sync, sm_80+); f32 weights and
// other widths through a plain tiled kernel of f32 FMAs.
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/gemv.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {
namespace {

constexpr int kTileRows = 64;  // a group's rows (tokens) per tile
constexpr int64_t kMaxSortedExperts = 8192;  // the sort keeps a count per expert in shared memory

__host__ __device__ constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Where each piece of the scratch lies, in bytes from its start.
struct Scratch {
  int64_t xs, start, tile_start, token, row_of, h, y, total;
};
Scratch ScratchFor(int64_t T, int64_t top_k, const ExpertTable& e) {
  const int64_t element = e.bf16 ? 2 : 4, groups = e.n_experts + e.n_shared;
  const int64_t routed = T * top_k, rows = routed + e.n_shared * T;
  const auto round = [](int64_t bytes) { return CeilDiv(bytes, 256) * 256; };
  Scratch s{};
  s.start = s.xs + round(T * e.hidden * element);
  s.tile_start = s.start + round((groups + 1) * 4);
  s.token = s.tile_start + round((groups + 1) * 4);
  s.row_of = s.token + round(routed * 4);
  s.h = s.row_of + round(routed * 4);
  s.y = s.h + round(rows * e.inter * element);
  s.total = s.y + round(rows * e.hidden * 4);
  return s;
}

// What the GEMM kernels read: the experts, the sort's results, their input and output.
struct GroupedArgs {
  ExpertTable e;
  int64_t T, groups;
  const int32_t* start;       // [groups + 1]: group g's rows are [start[g], start[g + 1])
  const int32_t* tile_start;  // [groups + 1]: its tiles [tile_start[g], tile_start[g + 1])
  const int32_t* token;       // the token of each routed row (rows below start[n_experts])
  const void* xs;             // [T, hidden]
  void* h;                    // [rows, inter]
  float* y;                   // [rows, hidden]
};

// A tile: rows [row0, row0 + rows) of group g.
struct Tile {
  int64_t group, row0, rows;
};
__device__ bool FindTile(const GroupedArgs& a, int64_t t, Tile& tile) {
  if (t >= a.tile_start[a.groups]) return false;
  int64_t lo = 0, hi = a.groups - 1;  // the last group whose tiles start at or before t
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (a.tile_start[mid] <= t) lo = mid; else hi = mid - 1;
  }
  tile.group = lo;
  tile.row0 = a.start[lo] + (t - a.tile_start[lo]) * kTileRows;
  tile.rows = min(static_cast<int64_t>(kTileRows), a.start[lo + 1] - tile.row0);
  return true;
}

// The token a row of h (and y) belongs to: routed rows as sorted, then each shared group's T rows.
__device__ __forceinline__ int64_t TokenOf(const GroupedArgs& a, int64_t row) {
  const int64_t shared_from = a.start[a.e.n_experts];
  return row < shared_from ? a.token[row] : (row - shared_from) % a.T;
}

// Group g's matrices and row strides; a shared group is a block of the shared experts' rows
// (gate, up) or columns (down).
template <typename W>
struct GroupWeights {
  const W *gate, *up, *down;
  int64_t gate_up_stride, down_stride;
};
template <typename W>
__device__ GroupWeights<W> WeightsOf(const ExpertTable& e, int64_t g) {
  if (g < e.n_experts)
    return {static_cast<const W*>(e.gate[g]), static_cast<const W*>(e.up[g]), static_cast<const W*>(e.down[g]),
            e.gate_up_stride, e.down_stride};
  const int64_t s = g - e.n_experts;
  return {static_cast<const W*>(e.shared_gate) + s * e.inter * e.shared_gate_up_stride,
          static_cast<const W*>(e.shared_up) + s * e.inter * e.shared_gate_up_stride,
          static_cast<const W*>(e.shared_down) + s * e.inter, e.shared_gate_up_stride, e.shared_down_stride};
}

// A block's share of a grouped GEMM: its tile, the tile's group's matrices, and the product's
// depth and outputs (gate/up: hidden deep, inter out; down: the reverse).
template <typename W, bool kGateUp>
struct TileWork {
  Tile tile;
  GroupWeights<W> w;
  int64_t depth, outputs;
};
template <typename W, bool kGateUp>
__device__ bool FindTileWork(const GroupedArgs& a, TileWork<W, kGateUp>& work) {
  if (!FindTile(a, blockIdx.x, work.tile)) return false;
  work.w = WeightsOf<W>(a.e, work.tile.group);
  work.depth = kGateUp ? a.e.hidden : a.e.inter;
  work.outputs = kGateUp ? a.e.inter : a.e.hidden;
  return true;
}

__device__ __forceinline__ float Silu(float g) { return g / (1.0f + expf(-g)); }
__device__ __forceinline__ void StoreAs(float* p, float v) { *p = v; }
__device__ __forceinline__ void StoreAs(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// --- input -----------------------------------------------------------------------------------

// A block (of kWarps warps, as InverseRms wants) per token: its row, normalized where norm is
// given, in W.
template <typename W>
__global__ void __launch_bounds__(kWarps * 32) InputKernel(MoeInput in, int64_t hidden, W* xs) {
  WaitForPreviousKernels();
  const float* x = in.x + blockIdx.x * in.x_stride;
  W* out = xs + blockIdx.x * hidden;
  float inv_rms[1] = {1.0f};
  if (in.norm) InverseRms<1, false>(x, 0, 1, hidden, in.eps, inv_rms);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x)
    StoreAs(out + i, in.norm ? in.norm[i] * (x[i] * inv_rms[0]) : x[i]);
}

// --- sort ------------------------------------------------------------------------------------

constexpr int kSortThreads = 256;

// Block e places expert e's rows: every block counts every expert (the ids are few and in L2),
// so each knows where its rows and tiles begin; the routed pairs keep their order within an
// expert. The last block also lays out the shared groups. Ids out of range take no row.
__global__ void __launch_bounds__(kSortThreads)
    SortKernel(const int32_t* ids, int64_t ids_stride, int64_t T, int64_t top_k, int64_t n_experts, int64_t n_shared,
               int32_t* start, int32_t* tile_start, int32_t* token, int32_t* row_of) {
  extern __shared__ int count[];  // [n_experts]
  __shared__ int warp_matches[kSortThreads / 32];
  __shared__ int first_row;
  WaitForPreviousKernels();
  const int64_t routed = T * top_k, expert = blockIdx.x;
  const auto id_of = [&](int64_t i) { return ids[(i / top_k) * ids_stride + i % top_k]; };
  for (int64_t g = threadIdx.x; g < n_experts; g += blockDim.x) count[g] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < routed; i += blockDim.x) {
    const int32_t id = id_of(i);
    if (id >= 0 && id < n_experts) atomicAdd(&count[id], 1);
    else if (expert == 0) row_of[i] = -1;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t rows = 0, tiles = 0;
    for (int64_t g = 0; g < expert; ++g) rows += count[g], tiles += CeilDiv(count[g], kTileRows);
    start[expert] = static_cast<int32_t>(rows);
    tile_start[expert] = static_cast<int32_t>(tiles);
    first_row = static_cast<int>(rows);
    if (expert == n_experts - 1) {
      rows += count[expert], tiles += CeilDiv(count[expert], kTileRows);
      for (int64_t s = 0; s <= n_shared; ++s) {
        start[n_experts + s] = static_cast<int32_t>(rows + s * T);
        tile_start[n_experts + s] = static_cast<int32_t>(tiles + s * CeilDiv(T, kTileRows));
      }
    }
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int64_t placed = first_row;
  for (int64_t from = 0; from < routed; from += blockDim.x) {
    const int64_t i = from + threadIdx.x;
    const bool mine = i < routed && id_of(i) == expert;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (lane == 0) warp_matches[warp] = __popc(ballot);
    __syncthreads();
    int64_t before = placed + __popc(ballot & ((1u << lane) - 1u)), total = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) {
      if (w < warp) before += warp_matches[w];
      total += warp_matches[w];
    }
    if (mine) token[before] = static_cast<int32_t>(i / top_k), row_of[i] = static_cast<int32_t>(before);
    placed += total;
    __syncthreads();  // warp_matches is rewritten next round
  }
}

// --- grouped GEMM on the tensor cores (bf16) ----------------------------------------------------

// A block's tile: kTileRows rows by 128 weight rows (down's outputs, or 64 outputs of gate and up
// interleaved by eights, so that a thread holds both halves of its outputs), kDepth of depth a
// stage, kStages stages of cp.async in flight. Four warps, each 32 rows by 64 weight rows: 2 x 8
// m16n8k16 products per 16 of depth.
constexpr int kMmaThreads = 128, kTileWeightRows = 128;

template <int kDepth, int kStages>
struct MmaTiles {
  static constexpr int kPitch = kDepth + 8;  // rows 16 bytes longer: ldmatrix's eight rows fall in distinct banks
  static constexpr int kPieces = kDepth / 8;  // 16-byte pieces a row
  static constexpr int kRowsPerPass = kMmaThreads / kPieces;
  static constexpr size_t kBytes = static_cast<size_t>(kStages) * (kTileRows + kTileWeightRows) * kPitch * 2;
};

// 16 bytes from global to shared memory, or zeros where !valid (the source is then not read).
__device__ __forceinline__ void CopyAsync16OrZero(void* shared, const void* global, bool valid) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(address), "l"(global), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void CommitCopies() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void WaitCopies() { asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory"); }

__device__ __forceinline__ void LoadMatrices(uint32_t (&r)[4], const void* shared) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// c += a (16x16, rows) · b (16x8, columns), bf16 in, f32 accumulated.
__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <bool kGateUp, int kDepth, int kStages>
__global__ void __launch_bounds__(kMmaThreads) GroupedMmaKernel(GroupedArgs a) {
  using Tiles = MmaTiles<kDepth, kStages>;
  constexpr int kPitch = Tiles::kPitch, kPieces = Tiles::kPieces, kPass = Tiles::kRowsPerPass;
  extern __shared__ __align__(16) unsigned char tiles_memory[];
  auto rows_tile = reinterpret_cast<__nv_bfloat16(*)[kTileRows][kPitch]>(tiles_memory);
  auto weights_tile = reinterpret_cast<__nv_bfloat16(*)[kTileWeightRows][kPitch]>(
      tiles_memory + static_cast<size_t>(kStages) * kTileRows * kPitch * 2);
  WaitForPreviousKernels();
  TileWork<__nv_bfloat16, kGateUp> work;
  if (!FindTileWork(a, work)) return;
  const ExpertTable& e = a.e;
  const auto& [tile, w, depth, outputs] = work;
  const int64_t out0 = blockIdx.y * (kGateUp ? kTileWeightRows / 2 : kTileWeightRows);

  // Each thread copies the 16-byte piece `piece` of rows tid / kPieces + kPass i.
  const int tid = threadIdx.x, piece = tid % kPieces, row_in_pass = tid / kPieces;
  constexpr int kRowPasses = kTileRows / kPass, kWeightPasses = kTileWeightRows / kPass;
  const __nv_bfloat16* row_src[kRowPasses];
  bool row_ok[kRowPasses];
#pragma unroll
  for (int i = 0; i < kRowPasses; ++i) {
    const int r = row_in_pass + kPass * i;
    row_ok[i] = r < tile.rows;
    const int64_t row = tile.row0 + (row_ok[i] ? r : 0);
    row_src[i] = kGateUp ? static_cast<const __nv_bfloat16*>(a.xs) + TokenOf(a, row) * e.hidden
                         : static_cast<const __nv_bfloat16*>(a.h) + row * e.inter;
  }
  // A thread's weight rows are one matrix's (gate or up: pieces of 8 rows alternate, and kPass is
  // a multiple of 16), kPass apart in the tile, so many outputs apart.
  static_assert(kPass % 16 == 0, "a thread's weight rows must stay in one matrix");
  const int64_t out_first = kGateUp ? out0 + (row_in_pass / 16) * 8 + row_in_pass % 8 : out0 + row_in_pass;
  constexpr int kOutStep = kGateUp ? kPass / 2 : kPass;
  const int64_t weight_stride = kGateUp ? w.gate_up_stride : w.down_stride;
  const __nv_bfloat16* weight_src =
      (kGateUp ? ((row_in_pass / 8) % 2 ? w.up : w.gate) : w.down) + out_first * weight_stride;
  const int64_t stages = CeilDiv(depth, kDepth);
  // depth and outputs are structured bindings, which a C++17 lambda takes only by init-capture.
  const auto load = [&, depth = depth, outputs = outputs](int stage, int64_t s) {
    const int64_t k = s * kDepth + piece * 8;
    const bool k_ok = k < depth;
#pragma unroll
    for (int i = 0; i < kRowPasses; ++i)
      CopyAsync16OrZero(&rows_tile[stage][row_in_pass + kPass * i][piece * 8], row_src[i] + (k_ok ? k : 0),
                        row_ok[i] && k_ok);
#pragma unroll
    for (int i = 0; i < kWeightPasses; ++i) {
      const bool ok = k_ok && out_first + kOutStep * i < outputs;
      CopyAsync16OrZero(&weights_tile[stage][row_in_pass + kPass * i][piece * 8],
                        ok ? weight_src + kOutStep * i * weight_stride + k : weight_src, ok);
    }
  };

  const int warp = tid / 32, lane = tid % 32, warp_row = warp / 2 * 32, warp_col = warp % 2 * 64;
  float acc[2][8][4] = {};
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < stages) load(s, s);
    CommitCopies();
  }
  for (int64_t s = 0; s < stages; ++s) {
    WaitCopies<kStages - 2>();
    __syncthreads();  // stage s is in; every warp is done with the stage the next copy overwrites
    if (s + kStages - 1 < stages) load(static_cast<int>((s + kStages - 1) % kStages), s + kStages - 1);
    CommitCopies();
    const int stage = static_cast<int>(s % kStages);
#pragma unroll
    for (int k16 = 0; k16 < kDepth; k16 += 16) {
      uint32_t af[2][4], bf[4][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
        LoadMatrices(af[mi], &rows_tile[stage][warp_row + mi * 16 + lane % 16][k16 + lane / 16 * 8]);
#pragma unroll
      for (int nj = 0; nj < 4; ++nj)
        LoadMatrices(bf[nj], &weights_tile[stage][warp_col + nj * 16 + lane % 8 + lane / 16 * 8][k16 + lane / 8 % 2 * 8]);
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int nj = 0; nj < 4; ++nj) {
          Mma(acc[mi][2 * nj], af[mi], bf[nj][0], bf[nj][1]);
          Mma(acc[mi][2 * nj + 1], af[mi], bf[nj][2], bf[nj][3]);
        }
    }
  }
  WaitCopies<0>();

  // Thread (lane) holds rows lane / 4 and + 8 of each 16, columns 2 (lane % 4) and + 1 of each 8.
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = warp_row + mi * 16 + lane / 4 + half * 8;
      if (r >= tile.rows) continue;
      const int64_t row = tile.row0 + r;
      if constexpr (kGateUp) {
#pragma unroll
        for (int ni = 0; ni < 8; ni += 2) {  // eights of gate, then of up, for the same outputs
          const int64_t out = out0 + (warp_col / 16 + ni / 2) * 8 + lane % 4 * 2;
          if (out >= outputs) continue;
          const float* g = &acc[mi][ni][half * 2];
          const float* u = &acc[mi][ni + 1][half * 2];
          *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(a.h) + row * e.inter + out) =
              __floats2bfloat162_rn(Silu(g[0]) * u[0], Silu(g[1]) * u[1]);
        }
      } else {
#pragma unroll
        for (int ni = 0; ni < 8; ++ni) {
          const int64_t out = out0 + warp_col + ni * 8 + lane % 4 * 2;
          if (out >= outputs) continue;
          *reinterpret_cast<float2*>(a.y + row * e.hidden + out) = make_float2(acc[mi][ni][half * 2], acc[mi][ni][half * 2 + 1]);
        }
      }
    }
}

// --- grouped GEMM of f32 FMAs (f32 weights, widths not in 16-byte pieces) ----------------------

constexpr int kFmaThreads = 256, kFmaOutputs = 64, kFmaDepth = 16;

// A tile of kTileRows rows by 64 outputs (of gate and of up for kGateUp); thread (ty, tx) holds
// rows ty + 16 i and outputs tx + 16 j.
template <typename W, bool kGateUp>
__global__ void __launch_bounds__(kFmaThreads) GroupedFmaKernel(GroupedArgs a) {
  constexpr int kMats = kGateUp ? 2 : 1;
  __shared__ float rows_tile[kFmaDepth][kTileRows + 1];
  __shared__ float weights_tile[kMats][kFmaDepth][kFmaOutputs + 1];
  WaitForPreviousKernels();
  TileWork<W, kGateUp> work;
  if (!FindTileWork(a, work)) return;
  const ExpertTable& e = a.e;
  const auto& [tile, w, depth, outputs] = work;
  const int64_t out0 = blockIdx.y * kFmaOutputs;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[kMats][4][4] = {};
  for (int64_t k0 = 0; k0 < depth; k0 += kFmaDepth) {
    for (int i = tid; i < kTileRows * kFmaDepth; i += kFmaThreads) {
      const int r = i / kFmaDepth, k = i % kFmaDepth;
      float v = 0.0f;
      if (r < tile.rows && k0 + k < depth) {
        const int64_t row = tile.row0 + r;
        v = kGateUp ? ToFloat(static_cast<const W*>(a.xs)[TokenOf(a, row) * e.hidden + k0 + k])
                    : ToFloat(static_cast<const W*>(a.h)[row * e.inter + k0 + k]);
      }
      rows_tile[k][r] = v;
    }
    for (int m = 0; m < kMats; ++m)
      for (int i = tid; i < kFmaOutputs * kFmaDepth; i += kFmaThreads) {
        const int o = i / kFmaDepth, k = i % kFmaDepth;
        const int64_t out = out0 + o;
        float v = 0.0f;
        if (out < outputs && k0 + k < depth)
          v = kGateUp ? ToFloat((m ? w.up : w.gate)[out * w.gate_up_stride + k0 + k])
                      : ToFloat(w.down[out * w.down_stride + k0 + k]);
        weights_tile[m][k][o] = v;
      }
    __syncthreads();
    for (int k = 0; k < kFmaDepth; ++k)
      for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j)
            acc[m][i][j] = fmaf(rows_tile[k][ty + 16 * i], weights_tile[m][k][tx + 16 * j], acc[m][i][j]);
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int r = ty + 16 * i;
    if (r >= tile.rows) continue;
    const int64_t row = tile.row0 + r;
    for (int j = 0; j < 4; ++j) {
      const int64_t out = out0 + tx + 16 * j;
      if (out >= outputs) continue;
      if constexpr (kGateUp)
        StoreAs(static_cast<W*>(a.h) + row * e.inter + out, Silu(acc[0][i][j]) * acc[1][i][j]);
      else
        a.y[row * e.hidden + out] = acc[0][i][j];
    }
  }
}

// --- combine ---------------------------------------------------------------------------------

constexpr int kCombineThreads = 256;

// A block per token: its routed rows weighted, in slot order, then its shared rows; four columns
// a thread at a time where the rows allow (kVec4).
template <bool kVec4>
__global__ void __launch_bounds__(kCombineThreads)
    CombineKernel(MoeInput in, int64_t T, int64_t top_k, const float* weights, int64_t weights_stride,
                  const int32_t* row_of, const int32_t* start, int64_t n_experts, int64_t n_shared, int64_t hidden,
                  const float* y, float* out, int64_t out_stride) {
  __shared__ int64_t rows[kMoeMaxSegments];
  __shared__ float scale[kMoeMaxSegments];
  WaitForPreviousKernels();
  const int64_t t = blockIdx.x;
  if (threadIdx.x < top_k) {
    const int32_t r = row_of[t * top_k + threadIdx.x];
    rows[threadIdx.x] = r;
    scale[threadIdx.x] = r < 0 ? 0.0f : weights[t * weights_stride + threadIdx.x];
  } else if (threadIdx.x < top_k + n_shared) {
    rows[threadIdx.x] = start[n_experts] + (threadIdx.x - top_k) * T + t;
    scale[threadIdx.x] = 1.0f;
  }
  __syncthreads();
  constexpr int kWidth = kVec4 ? 4 : 1;
  using Chunk = std::conditional_t<kVec4, float4, float>;
  for (int64_t c = threadIdx.x * kWidth; c < hidden; c += blockDim.x * kWidth) {
    float sum[kWidth] = {};
    const auto add = [&](int64_t row, float w, bool weighted) {
      const Chunk v = *reinterpret_cast<const Chunk*>(y + row * hidden + c);
      const float* f = reinterpret_cast<const float*>(&v);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) sum[i] = weighted ? fmaf(w, f[i], sum[i]) : sum[i] + f[i];
    };
    for (int64_t j = 0; j < top_k; ++j)
      if (rows[j] >= 0) add(rows[j], scale[j], true);
    for (int64_t j = top_k; j < top_k + n_shared; ++j) add(rows[j], 1.0f, false);
#pragma unroll
    for (int i = 0; i < kWidth; ++i) {
      const int64_t col = c + i;
      out[t * out_stride + col] = in.norm ? in.x[t * in.x_stride + col] + sum[i] : sum[i];
    }
  }
}

// The gate/up and the down launches of the tensor-core kernel.
template <int kDepth, int kStages>
cudaError_t MmaGemms(const GroupedArgs& args, int64_t tiles, cudaStream_t stream) {
  constexpr size_t kBytes = MmaTiles<kDepth, kStages>::kBytes;
  // Past 48 KB of shared memory a kernel must ask (per device, so at every launch: it is cheap).
  for (auto kernel : {GroupedMmaKernel<true, kDepth, kStages>, GroupedMmaKernel<false, kDepth, kStages>})
    if (cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
        err != cudaSuccess)
      return err;
  const ExpertTable& e = args.e;
  const dim3 up_grid(static_cast<unsigned>(tiles), Blocks(e.inter, kTileWeightRows / 2));
  if (cudaError_t err = Launch(GroupedMmaKernel<true, kDepth, kStages>, up_grid, kMmaThreads, kBytes, stream, args);
      err != cudaSuccess)
    return err;
  const dim3 down_grid(static_cast<unsigned>(tiles), Blocks(e.hidden, kTileWeightRows));
  return Launch(GroupedMmaKernel<false, kDepth, kStages>, down_grid, kMmaThreads, kBytes, stream, args);
}

template <typename W>
cudaError_t MoeGroupedTyped(const MoeInput& in, int64_t T, const int32_t* ids, int64_t ids_stride,
                            const float* weights, int64_t weights_stride, int64_t top_k, const ExpertTable& e,
                            void* scratch, float* out, int64_t out_stride, cudaStream_t stream) {
  const Scratch s = ScratchFor(T, top_k, e);
  char* base = static_cast<char*>(scratch);
  const auto at = [&](int64_t offset) { return reinterpret_cast<int32_t*>(base + offset); };
  const int64_t groups = e.n_experts + e.n_shared;
  W* xs = reinterpret_cast<W*>(base + s.xs);
  if (cudaError_t err = Launch(InputKernel<W>, static_cast<unsigned>(T), kWarps * 32, 0, stream, in, e.hidden, xs);
      err != cudaSuccess)
    return err;
  if (cudaError_t err = Launch(SortKernel, static_cast<unsigned>(e.n_experts), kSortThreads, e.n_experts * sizeof(int),
                               stream, ids, ids_stride, T, top_k, e.n_experts, e.n_shared, at(s.start),
                               at(s.tile_start), at(s.token), at(s.row_of));
      err != cudaSuccess)
    return err;
  const GroupedArgs args{.e = e, .T = T, .groups = groups, .start = at(s.start), .tile_start = at(s.tile_start),
                         .token = at(s.token), .xs = xs, .h = base + s.h, .y = reinterpret_cast<float*>(base + s.y)};
  // At most a tile per kTileRows rows plus a partial one per group.
  const int64_t tiles = CeilDiv(T * top_k, kTileRows) + e.n_experts + e.n_shared * CeilDiv(T, kTileRows);
  // Tensor cores where every row the tiles copy is whole 16-byte pieces: the matrices (the table
  // says they start 16-byte aligned), their strides and widths.
  const auto pieces = [](int64_t n) { return n % 8 == 0; };
  const bool mma = std::is_same_v<W, __nv_bfloat16> && e.aligned && pieces(e.hidden) && pieces(e.inter) &&
                   pieces(e.gate_up_stride) && pieces(e.down_stride) &&
                   (e.n_shared == 0 || (pieces(e.shared_gate_up_stride) && pieces(e.shared_down_stride)));
  cudaError_t err = cudaSuccess;
  if (mma) {
    // Depth 64 a stage (128-byte pieces of each weight row; 32 read the rows in halves, and
    // V2-Lite's prompt then took 1.3x as long in these kernels), two stages (three or four were no
    // faster: bench/RESULTS.md).
    err = MmaGemms<64, 2>(args, tiles, stream);
  } else {
    const dim3 up_grid(static_cast<unsigned>(tiles), Blocks(e.inter, kFmaOutputs));
    err = Launch(GroupedFmaKernel<W, true>, up_grid, kFmaThreads, 0, stream, args);
    const dim3 down_grid(static_cast<unsigned>(tiles), Blocks(e.hidden, kFmaOutputs));
    if (err == cudaSuccess) err = Launch(GroupedFmaKernel<W, false>, down_grid, kFmaThreads, 0, stream, args);
  }
  if (err != cudaSuccess) return err;
  // y's rows are hidden apart from a 256-byte boundary.
  return Launch(e.hidden % 4 == 0 ? CombineKernel<true> : CombineKernel<false>, static_cast<unsigned>(T),
                kCombineThreads, 0, stream, in, T, top_k, weights,
                weights_stride, static_cast<const int32_t*>(at(s.row_of)), static_cast<const int32_t*>(at(s.start)),
                e.n_experts, e.n_shared, e.hidden, static_cast<const float*>(args.y), out, out_stride);
}

}  // namespace

int64_t MoeGroupedScratchBytes(int64_t T, int64_t top_k, const ExpertTable& experts) {
  return ScratchFor(T, top_k, experts).total;
}

cudaError_t LaunchMoeGrouped(const MoeInput& input, int64_t T, const int32_t* ids, int64_t ids_stride,
                             const float* weights, int64_t weights_stride, int64_t top_k, const ExpertTable& experts,
                             void* scratch, float* out, int64_t out_stride, cudaStream_t stream) {
  if (T <= 0) return cudaSuccess;
  const int64_t routed = T * top_k, rows = routed + experts.n_shared * T;
  if (top_k <= 0 || top_k + experts.n_shared > kMoeMaxSegments || experts.n_experts <= 0 ||
      experts.n_experts > kMaxSortedExperts || rows > 2147483647 / 2 || T > 2147483647)
    return cudaErrorInvalidValue;
  if (experts.bf16)
    return MoeGroupedTyped<__nv_bfloat16>(input, T, ids, ids_stride, weights, weights_stride, top_k, experts, scratch,
                                          out, out_stride, stream);
  return MoeGroupedTyped<float>(input, T, ids, ids_stride, weights, weights_stride, top_k, experts, scratch, out,
                                out_stride, stream);
}

}  // namespace ds::cuda

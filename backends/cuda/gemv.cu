// Matrix-vector products for decode, where every weight byte is read once per token and the
// time is the bytes over the memory bandwidth. A block of 8 warps covers 8 / slices output rows;
// each row's dot product is split over `slices` warps (more warps in flight when the matrix has
// few rows), each lane streaming 16-byte chunks of the weights.
#include "backends/cuda/gemv.cuh"

namespace ds::cuda {
namespace {

// The plain GEMV (and the gate/up pair, and the grouped form): GemvRows as a kernel.
template <typename W, int M, int R, bool kVec, bool kGateUp, bool kNorm, bool kGroups>
__global__ void __launch_bounds__(kWarps * 32) GemvKernel(const float* __restrict__ x, int64_t xs, int m,
                                                          const W* __restrict__ w, const W* __restrict__ w2,
                                                          int64_t ws, int64_t n, int64_t k,
                                                          const float* __restrict__ bias, float* __restrict__ y,
                                                          int64_t ys, int slices, GemvOptions options) {
  GemvRows<W, M, R, kVec, kGateUp, kNorm, kGroups>(x, xs, m, w, w2, ws, n, k, bias, y, ys, slices, options);
}

// Weight rows per warp: for verification passes several, so that each activation chunk loaded
// (M rows of it) serves several weight rows: four up to 4 rows, two past that, where the
// accumulators (R * M, twice that for gate/up) fill the registers. Measured on the H100
// (bench/RESULTS.md): four rows a warp at 5-8 rows was slower than two. For decode (M = 1) one,
// but two in a grouped GEMV (GemvFor).
template <int M>
constexpr int RowsPerWarp() { return M == 1 ? 1 : M <= 4 ? 4 : 2; }

template <typename W, int M, bool kGateUp, int kR = RowsPerWarp<M>()>
cudaError_t GemvFor(const float* x, int64_t xs, int64_t m, const W* w, const W* w2, int64_t ws, int64_t n, int64_t k,
                    const float* bias, float* y, int64_t ys, const GemvOptions& options, int sm_count,
                    cudaStream_t stream) {
  constexpr int R = kR;
  const GemvShape shape = GemvShapeFor(x, xs, w, kGateUp ? w2 : nullptr, ws, n, k, options, R, sm_count);
  // Two rows a warp where a warp's share of a row is short: MLA's per-head products (a grouped
  // GEMV; rows of 128 and 512 values on V2-Lite, 5.6 -> 4.5 us each on the H100), and a GEMV
  // with the norm whose rows are at most four 16-byte chunks a lane, whose blocks spent as long
  // finding the rms as streaming (V2-Lite's stacked q/kv_a, 2048 values over two warps: decode
  // +3-4%; the 1.5B's qkv, 1536 over four: +2-5%). The other decode GEMVs stay at one: two rows a
  // warp for every GEMV of few slices cost the distills 1-4% (bench/RESULTS.md).
  if constexpr (M == 1 && R == 1) {
    const bool short_rows = k / 8 <= 4 * 32 * static_cast<int64_t>(shape.slices);
    if (options.groups > 1 || (!kGateUp && options.norm && short_rows))
      return GemvFor<W, M, kGateUp, 2>(x, xs, m, w, w2, ws, n, k, bias, y, ys, options, sm_count, stream);
  }
  if (shape.blocks > 2147483647) return cudaErrorInvalidValue;
  static_assert(kGemvGroupRowMultiple % R == 0, "a warp's rows must lie in one group");
  const bool vec = shape.vec;
  auto kernel = options.norm
                    ? (vec ? GemvKernel<W, M, R, true, kGateUp, true, false> : GemvKernel<W, M, R, false, kGateUp, true, false>)
                    : (vec ? GemvKernel<W, M, R, true, kGateUp, false, false>
                           : GemvKernel<W, M, R, false, kGateUp, false, false>);
  if constexpr (!kGateUp) {
    if (options.groups > 1)
      kernel = vec ? GemvKernel<W, M, R, true, false, false, true> : GemvKernel<W, M, R, false, false, false, true>;
  }
  return Launch(kernel, static_cast<unsigned>(shape.blocks), kWarps * 32, 0, stream, x, xs, static_cast<int>(m), w, w2,
                ws, n, k, bias, y, ys, shape.slices, options);
}

template <typename W, bool kGateUp>
cudaError_t GemvTyped(const float* x, int64_t xs, int64_t m, const void* w, const void* w2, int64_t ws, int64_t n,
                      int64_t k, const float* bias, float* y, int64_t ys, const GemvOptions& o, int sm_count,
                      cudaStream_t stream) {
  const W* a = static_cast<const W*>(w);
  const W* b = static_cast<const W*>(w2);
  if (m == 1) return GemvFor<W, 1, kGateUp>(x, xs, m, a, b, ws, n, k, bias, y, ys, o, sm_count, stream);
  if (m == 2) return GemvFor<W, 2, kGateUp>(x, xs, m, a, b, ws, n, k, bias, y, ys, o, sm_count, stream);
  if (m <= 4) return GemvFor<W, 4, kGateUp>(x, xs, m, a, b, ws, n, k, bias, y, ys, o, sm_count, stream);
  if (m <= 8) return GemvFor<W, 8, kGateUp>(x, xs, m, a, b, ws, n, k, bias, y, ys, o, sm_count, stream);
  if (m <= 12) return GemvFor<W, 12, kGateUp>(x, xs, m, a, b, ws, n, k, bias, y, ys, o, sm_count, stream);
  return GemvFor<W, 16, kGateUp>(x, xs, m, a, b, ws, n, k, bias, y, ys, o, sm_count, stream);
}

// A token's segment s of the MoE (MoeSegment): its s-th routed expert, or past top_k a block of
// inter rows of the shared experts, weight 1. Invalid expert ids (never routed) give null matrices.
struct MoeSegment {
  const void* gate;
  const void* up;
  const void* down;  // the segment's first column of down's rows
  int64_t gate_up_stride, down_stride;
  float weight;
};

// The shared segments need nothing an earlier kernel wrote (the weights are fixed): they may be
// found before WaitForPreviousKernels. The routed ones read the routing's ids and weights.
__device__ __forceinline__ MoeSegment SharedSegment(const ExpertTable& e, int64_t s) {
  return {static_cast<const char*>(e.shared_gate) + s * e.inter * e.shared_gate_up_stride * (e.bf16 ? 2 : 4),
          static_cast<const char*>(e.shared_up) + s * e.inter * e.shared_gate_up_stride * (e.bf16 ? 2 : 4),
          static_cast<const char*>(e.shared_down) + s * e.inter * (e.bf16 ? 2 : 4),
          e.shared_gate_up_stride,
          e.shared_down_stride,
          1.0f};
}
__device__ __forceinline__ MoeSegment RoutedSegment(const ExpertTable& e, int32_t id, float weight) {
  if (id < 0 || id >= e.n_experts) return {nullptr, nullptr, nullptr, 0, 0, 0.0f};
  return {e.gate[id], e.up[id], e.down[id], e.gate_up_stride, e.down_stride, weight};
}

// Rows of a segment each warp of the expert kernels computes: a chunk of activations loaded
// once serves two weight rows, and twice the loads are in flight (measured against one row a
// warp at V2-Lite's and V3's shapes: 2-4% faster).
constexpr int kMoeRowsPerWarp = 2;

// h[(t, s), r] = weight * silu(x[t] · gate_s[r]) * (x[t] · up_s[r]) for token t's segment s
// (blockIdx.y = s * T + t): the routing weight is applied here, so the down kernel's sum over
// segments is one dot product. The T tokens' blocks of a segment's rows run side by side, so in
// a verification pass the shared experts' rows (every token's) come from memory once and from
// L2 for the other tokens. kNorm: x[t] is taken as rms_norm(x[t]) * norm, as
// GemvKernel's kNorm (each block finds the row's rms).
template <typename W, bool kVec, bool kNorm>
__global__ void __launch_bounds__(kWarps * 32) MoeGateUpKernel(MoeInput in, const int32_t* __restrict__ ids,
                                                               int64_t ids_stride,
                                                               const float* __restrict__ weights,
                                                               int64_t weights_stride, int64_t top_k, ExpertTable e,
                                                               float* __restrict__ h, int slices) {
  constexpr int R = kMoeRowsPerWarp;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * (kWarps / slices) + warp / slices) * R;
  const int64_t segments = top_k + e.n_shared, T = gridDim.y / segments, s = blockIdx.y / T, t = blockIdx.y % T;
  const int64_t start = (warp % slices) * 32 + lane, step = 32 * slices;
  const bool shared = s >= top_k;
  MoeSegment seg{};
  if (shared) seg = SharedSegment(e, s - top_k);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (kVec && shared && row0 < e.inter && start < e.hidden / 8 && lane % (128 / (8 * sizeof(W))) == 0) {
    PrefetchL2(static_cast<const W*>(seg.gate) + row0 * seg.gate_up_stride + start * 8);
    PrefetchL2(static_cast<const W*>(seg.up) + row0 * seg.gate_up_stride + start * 8);
  }
#endif
  WaitForPreviousKernels();
  if (!shared) seg = RoutedSegment(e, ids[t * ids_stride + s], weights[t * weights_stride + s]);
  const float* __restrict__ xt = in.x + t * in.x_stride;
  const float* __restrict__ norm = in.norm;
  float inv_rms[1];
  if constexpr (kNorm) InverseRms<1, kVec>(xt, 0, 1, e.hidden, in.eps, inv_rms);
  float acc[2 * R] = {};  // [2 * q]: gate row q, [2 * q + 1]: up row q
  if (seg.gate && row0 < e.inter) {
    const W* g[R];
    const W* u[R];
#pragma unroll
    for (int q = 0; q < R; ++q) {
      const int64_t row = row0 + q < e.inter ? row0 + q : e.inter - 1;  // past the end: read the last row, never written
      g[q] = static_cast<const W*>(seg.gate) + row * seg.gate_up_stride;
      u[q] = static_cast<const W*>(seg.up) + row * seg.gate_up_stride;
    }
    if constexpr (kVec) {
#pragma unroll 4
      for (int64_t c = start; c < e.hidden / 8; c += step) {
        float gf[R][8], uf[R][8], xf[8];
#pragma unroll
        for (int q = 0; q < R; ++q) LoadStream8(g[q] + c * 8, gf[q]), LoadStream8(u[q] + c * 8, uf[q]);
        Load8(xt + c * 8, xf);
        if constexpr (kNorm) {
          float nf[8];
          Load8(norm + c * 8, nf);
#pragma unroll
          for (int i = 0; i < 8; ++i) xf[i] = nf[i] * (xf[i] * inv_rms[0]);
        }
#pragma unroll
        for (int q = 0; q < R; ++q)
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            acc[2 * q] = fmaf(gf[q][i], xf[i], acc[2 * q]);
            acc[2 * q + 1] = fmaf(uf[q][i], xf[i], acc[2 * q + 1]);
          }
      }
    } else {
      for (int64_t c = start; c < e.hidden; c += step) {
        const float xc = kNorm ? norm[c] * (xt[c] * inv_rms[0]) : xt[c];
#pragma unroll
        for (int q = 0; q < R; ++q) {
          acc[2 * q] = fmaf(ToFloat(g[q][c]), xc, acc[2 * q]);
          acc[2 * q + 1] = fmaf(ToFloat(u[q][c]), xc, acc[2 * q + 1]);
        }
      }
    }
  }
  SumSlices<2 * R>(acc, slices);
  if (warp % slices != 0 || lane != 0) return;
#pragma unroll
  for (int q = 0; q < R; ++q) {
    if (row0 + q >= e.inter) break;
    const float gate = acc[2 * q];
    h[(t * segments + s) * e.inter + row0 + q] = seg.gate ? seg.weight * (gate / (1.0f + expf(-gate)) * acc[2 * q + 1]) : 0.0f;
  }
}

// out[t, r] = residual[t, r] + sum over token t's segments s of h[(t, s)] · down_s[r]: the
// segments' rows taken as one row of segments * inter values, so every lane has chunks of all of
// them in flight at once (a loop over the segments had a chunk or two a lane between waits).
// blockIdx.x = t: the tokens' blocks of the same rows run side by side (the gate/up kernel's
// reason).
template <typename W, bool kVec>
__global__ void __launch_bounds__(kWarps * 32) MoeDownKernel(const float* __restrict__ h, const int32_t* __restrict__ ids,
                                                             int64_t ids_stride, int64_t top_k, ExpertTable e,
                                                             const float* __restrict__ residual,
                                                             int64_t residual_stride, float* __restrict__ out,
                                                             int64_t out_stride, int slices) {
  constexpr int R = kMoeRowsPerWarp;
  __shared__ const W* down[kMoeMaxSegments];
  __shared__ int64_t down_stride[kMoeMaxSegments];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.y) * (kWarps / slices) + warp / slices) * R;
  const int64_t segments = top_k + e.n_shared, t = blockIdx.x;
  const int64_t start = (warp % slices) * 32 + lane, step = 32 * slices;
  for (int64_t s = threadIdx.x + top_k; s < segments; s += blockDim.x) {
    const MoeSegment seg = SharedSegment(e, s - top_k);
    down[s] = static_cast<const W*>(seg.down), down_stride[s] = seg.down_stride;
  }
  WaitForPreviousKernels();
  for (int64_t s = threadIdx.x; s < top_k; s += blockDim.x) {
    const MoeSegment seg = RoutedSegment(e, ids[t * ids_stride + s], 0.0f);
    down[s] = static_cast<const W*>(seg.down), down_stride[s] = seg.down_stride;
  }
  __syncthreads();
  float acc[R] = {};
  if (row0 < e.hidden) {
    const float* ht = h + t * segments * e.inter;
    int64_t rows[R];
#pragma unroll
    for (int q = 0; q < R; ++q) rows[q] = row0 + q < e.hidden ? row0 + q : e.hidden - 1;  // past the end: read, never written
    if constexpr (kVec) {
      const int64_t chunks = e.inter / 8;
#pragma unroll 4
      for (int64_t i = start; i < segments * chunks; i += step) {
        const int64_t s = i / chunks, c = i - s * chunks;
        if (!down[s]) continue;  // an invalid id: its h is 0
        float wf[R][8], hf[8];
#pragma unroll
        for (int q = 0; q < R; ++q) LoadStream8(down[s] + rows[q] * down_stride[s] + c * 8, wf[q]);
        Load8(ht + s * e.inter + c * 8, hf);
#pragma unroll
        for (int q = 0; q < R; ++q)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[q] = fmaf(wf[q][j], hf[j], acc[q]);
      }
    } else {
      for (int64_t i = start; i < segments * e.inter; i += step) {
        const int64_t s = i / e.inter, c = i - s * e.inter;
        if (!down[s]) continue;
#pragma unroll
        for (int q = 0; q < R; ++q) acc[q] = fmaf(ToFloat(down[s][rows[q] * down_stride[s] + c]), ht[i], acc[q]);
      }
    }
  }
  SumSlices<R>(acc, slices);
  if (warp % slices != 0 || lane != 0) return;
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int64_t row = row0 + q;
    if (row >= e.hidden) break;
    out[t * out_stride + row] = (residual ? residual[t * residual_stride + row] : 0.0f) + acc[q];
  }
}

// Slices (warps a row) for the down kernel: about eight 16-byte chunks a lane (measured at
// V2-Lite's and V3's shapes against 2x more and fewer), from the model's shape alone.
int MoeDownSlices(int64_t segments, int64_t inter) {
  int slices = 1;
  while (slices < kWarps && segments * (inter / 8) >= 2 * slices * 32 * 8) slices *= 2;
  return slices;
}

template <typename W>
cudaError_t MoeDecodeTyped(const MoeInput& in, int64_t T, const int32_t* ids, int64_t ids_stride,
                           const float* weights, int64_t weights_stride, int64_t top_k, const ExpertTable& e,
                           float* h, float* out, int64_t out_stride, int sm_count, cudaStream_t stream) {
  constexpr int R = kMoeRowsPerWarp;
  const int64_t segments = top_k + e.n_shared;
  if (segments > kMoeMaxSegments || T * segments > 65535 || (e.hidden + 1) / R > 65535) return cudaErrorInvalidValue;
  const auto aligned = [](const void* p, int64_t stride) {
    return !p || (reinterpret_cast<uintptr_t>(p) % 16 == 0 && stride % 8 == 0);
  };
  // Expert matrices are contiguous allocations (16-byte aligned), x rows aligned; h's rows are
  // inter apart.
  const bool vec_up = e.hidden % 8 == 0 && e.gate_up_stride % 8 == 0 && aligned(e.shared_gate, e.shared_gate_up_stride) &&
                      aligned(e.shared_up, e.shared_gate_up_stride) && reinterpret_cast<uintptr_t>(in.x) % 16 == 0 &&
                      in.x_stride % 4 == 0 && reinterpret_cast<uintptr_t>(in.norm) % 16 == 0;
  const bool vec_down = e.inter % 8 == 0 && e.down_stride % 8 == 0 && aligned(e.shared_down, e.shared_down_stride);
  // Slices from the model's shape alone (its segments' rows), not the token count: a token's
  // result is then the same in a verification pass as in a decode step.
  const int up_slices = SlicesFor(segments * e.inter / R, sm_count);
  const dim3 up_grid(Blocks(e.inter, kWarps / up_slices * R, 2147483647), static_cast<unsigned>(T * segments));
  auto up_kernel = in.norm ? (vec_up ? MoeGateUpKernel<W, true, true> : MoeGateUpKernel<W, false, true>)
                           : (vec_up ? MoeGateUpKernel<W, true, false> : MoeGateUpKernel<W, false, false>);
  if (cudaError_t err = Launch(up_kernel, up_grid, kWarps * 32, 0, stream, in, ids, ids_stride, weights, weights_stride,
                               top_k, e, h, up_slices);
      err != cudaSuccess)
    return err;
  const int down_slices = MoeDownSlices(segments, e.inter);
  const dim3 down_grid(static_cast<unsigned>(T), Blocks(e.hidden, kWarps / down_slices * R, 65535));
  return Launch(vec_down ? MoeDownKernel<W, true> : MoeDownKernel<W, false>, down_grid, kWarps * 32, 0, stream,
                static_cast<const float*>(h), ids, ids_stride, top_k, e, in.norm ? in.x : nullptr, in.x_stride, out,
                out_stride, down_slices);
}

}  // namespace

cudaError_t LaunchGemv(const float* x, int64_t xs, int64_t m, const void* w, bool w_bf16, int64_t ws, int64_t n,
                       int64_t k, const float* bias, float* y, int64_t ys, const GemvOptions& options, int sm_count,
                       cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  if (m > kGemvMaxRows) return cudaErrorInvalidValue;
  if (options.groups < 1 || n % options.groups != 0) return cudaErrorInvalidValue;
  if (options.groups > 1 && (options.norm || options.residual || bias || (n / options.groups) % kGemvGroupRowMultiple ||
                             options.y_group_step < n / options.groups || options.x_group_step < 0))
    return cudaErrorInvalidValue;
  if (w_bf16)
    return GemvTyped<__nv_bfloat16, false>(x, xs, m, w, nullptr, ws, n, k, bias, y, ys, options, sm_count, stream);
  return GemvTyped<float, false>(x, xs, m, w, nullptr, ws, n, k, bias, y, ys, options, sm_count, stream);
}

cudaError_t LaunchGateUp(const float* x, int64_t xs, int64_t m, const void* gate, const void* up, bool w_bf16,
                         int64_t ws, int64_t n, int64_t k, float* y, int64_t ys, const GemvOptions& options,
                         int sm_count, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  if (m > kGemvMaxRows || options.residual || options.groups != 1) return cudaErrorInvalidValue;
  if (w_bf16)
    return GemvTyped<__nv_bfloat16, true>(x, xs, m, gate, up, ws, n, k, nullptr, y, ys, options, sm_count, stream);
  return GemvTyped<float, true>(x, xs, m, gate, up, ws, n, k, nullptr, y, ys, options, sm_count, stream);
}

cudaError_t LaunchMoeDecode(const MoeInput& input, int64_t T, const int32_t* ids, int64_t ids_stride,
                            const float* weights, int64_t weights_stride, int64_t top_k, const ExpertTable& experts,
                            float* h, float* out, int64_t out_stride, int sm_count, cudaStream_t stream) {
  if (T <= 0 || top_k <= 0) return cudaSuccess;
  if (experts.bf16)
    return MoeDecodeTyped<__nv_bfloat16>(input, T, ids, ids_stride, weights, weights_stride, top_k, experts, h, out,
                                         out_stride, sm_count, stream);
  return MoeDecodeTyped<float>(input, T, ids, ids_stride, weights, weights_stride, top_k, experts, h, out, out_stride,
                               sm_count, stream);
}

}  // namespace ds::cuda

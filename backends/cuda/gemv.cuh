// The decode GEMV's device code (GemvRows and its helpers), for gemv.cu's kernels and for the
// kernels elsewhere that run a GEMV beside or before other work in one launch (the router with
// the routing, MLA's absorbed query with its rope and cache write; InverseRms also for the MoE
// prompt's input norm).
#pragma once

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace ds::cuda {

constexpr int kWarps = 8;

// Slices per row: enough warps in flight to cover the memory latency on every multiprocessor.
inline int SlicesFor(int64_t rows, int sm_count) {
  const int64_t want_warps = static_cast<int64_t>(sm_count) * 32;
  int slices = 1;
  while (slices < kWarps && rows * slices < want_warps) slices *= 2;
  return slices;
}

// Can rows of this matrix be read in aligned 8-element chunks?
template <typename T>
bool Vectorizable(const T* p, int64_t stride, int64_t k) {
  const int64_t elems16 = 16 / static_cast<int64_t>(sizeof(T));
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && stride % elems16 == 0 && k % 8 == 0;
}

// How LaunchGemv runs a GEMV of n rows of k at R weight rows a warp: the warps a row (from n
// alone: part of what keeps a row's sum the same whatever the call), its blocks, and whether it
// loads 16-byte chunks (the two loops sum in different orders). A kernel that runs GemvRows
// inside another launch takes its shape from here, so its rows are LaunchGemv's bits.
struct GemvShape {
  int slices;
  int64_t blocks;
  bool vec;
};
template <typename W>
bool GemvVectorizable(const float* x, int64_t xs, const W* w, const W* w2, int64_t ws, int64_t k,
                      const GemvOptions& options) {
  return Vectorizable(w, ws, k) && Vectorizable(x, xs, k) && (!w2 || Vectorizable(w2, ws, k)) &&
         (!options.norm || Vectorizable(options.norm, 0, k)) && (options.groups == 1 || options.x_group_step % 4 == 0);
}
template <typename W>
GemvShape GemvShapeFor(const float* x, int64_t xs, const W* w, const W* w2, int64_t ws, int64_t n, int64_t k,
                       const GemvOptions& options, int R, int sm_count) {
  const int slices = SlicesFor(n, sm_count);
  const int64_t rows_per_block = kWarps / slices * R;
  return {slices, (n + rows_per_block - 1) / rows_per_block, GemvVectorizable(x, xs, w, w2, ws, k, options)};
}

// Sums each row's slices: warp `warp` holds slice warp % slices of local row warp / slices.
// Returns the total in every lane of each row's first slice warp.
template <int M>
__device__ __forceinline__ void SumSlices(float (&acc)[M], int slices) {
  __shared__ float part[kWarps][M];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = WarpSum(acc[r]);
  if (slices == 1) return;
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < M; ++r) part[warp][r] = acc[r];
  }
  __syncthreads();
  if (warp % slices == 0) {
#pragma unroll
    for (int r = 0; r < M; ++r) {
      float s = 0.0f;
      for (int j = 0; j < slices; ++j) s += part[warp + j][r];
      acc[r] = s;
    }
  }
}

// The rms of each of the m activation rows (over k), into inv_rms[r] = 1 / sqrt(mean(x²) + eps),
// by the whole block in a fixed order: the same in every block and whatever m is. It runs ahead
// of every block's weight stream, so its loads all go out at once (16 bytes each, kVec) rather
// than one round trip after another: with one row, four float4 per thread cover 4096 values.
template <int M, bool kVec>
__device__ __forceinline__ void InverseRms(const float* __restrict__ x, int64_t xs, int m, int64_t k, float eps,
                                           float (&inv_rms)[M]) {
  __shared__ float part[kWarps][M];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float sum_sq[M] = {};
  if constexpr (kVec) {
    constexpr int kAtOnce = M <= 2 ? 4 : M <= 4 ? 2 : 1;  // float4 loads per row in flight
    const int64_t k4 = k / 4, step = static_cast<int64_t>(blockDim.x);
    for (int64_t i0 = threadIdx.x; i0 < k4; i0 += kAtOnce * step) {
      float4 v[kAtOnce][M];
#pragma unroll
      for (int u = 0; u < kAtOnce; ++u)
#pragma unroll
        for (int r = 0; r < M; ++r)
          if (r < m && i0 + u * step < k4) v[u][r] = __ldg(reinterpret_cast<const float4*>(x + r * xs) + i0 + u * step);
#pragma unroll
      for (int u = 0; u < kAtOnce; ++u)
#pragma unroll
        for (int r = 0; r < M; ++r)
          if (r < m && i0 + u * step < k4) {
            const float4 q = v[u][r];
            sum_sq[r] += q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w;
          }
    }
  } else {
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
#pragma unroll
      for (int r = 0; r < M; ++r) {
        if (r < m) {
          const float v = x[r * xs + i];
          sum_sq[r] += v * v;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) {
    sum_sq[r] = WarpSum(sum_sq[r]);
    if (lane == 0) part[warp][r] = sum_sq[r];
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < M; ++r) {
    float s = 0.0f;
    for (int j = 0; j < kWarps; ++j) s += part[j][r];
    inv_rms[r] = rsqrtf(s / static_cast<float>(k) + eps);
  }
}

// Block blockIdx.x's output rows of y = x · wᵀ (+ b), every thread of the block taking part (a
// kernel that adds other work puts its own blocks after the GEMV's). kGateUp: w2 is a second
// matrix of w's shape and y = silu(x · wᵀ) * (x · w2ᵀ), the SwiGLU
// MLP's first half in one pass (bias and residual unused). kNorm: the activation rows are
// normalized on the way in, x[r, i] -> norm[i] * (x[r, i] * inv_rms[r]) as RmsNorm computes it,
// so the norm before a projection needs no kernel (nor pass over memory) of its own. A residual
// is added last: y = residual + (x · wᵀ + b), as Matmul then Add.
// Each warp (or `slices` warps) computes R output rows: an activation chunk loaded once serves R
// weight rows, which keeps the loads of many activation rows (a verification pass) from
// saturating L1. A row's dot product (and its rms) is summed in the same order whatever M and R
// are, so its result does not depend on how many rows the call has. kGroups: options.groups
// blocks of rows, each with its own columns of x and y (Backend::HeadsMatmul).
template <typename W, int M, int R, bool kVec, bool kGateUp, bool kNorm, bool kGroups>
__device__ __forceinline__ void GemvRows(const float* __restrict__ x, int64_t xs, int m, const W* __restrict__ w,
                                         const W* __restrict__ w2, int64_t ws, int64_t n, int64_t k,
                                         const float* __restrict__ bias, float* __restrict__ y, int64_t ys, int slices,
                                         const GemvOptions& options) {
  constexpr int kMats = kGateUp ? 2 : 1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * (kWarps / slices) + warp / slices) * R;
  const int64_t start = (warp % slices) * 32 + lane, step = 32 * slices;
  float acc[R * kMats * M] = {};  // [(q * kMats + j) * M + r]: weight row q, matrix j, activation row r
  if constexpr (kGroups) {  // a warp's R rows lie in one group (checked at launch)
    const int64_t group_rows = n / options.groups, g = min(row0, n - 1) / group_rows;
    x += g * options.x_group_step;
    y += g * (options.y_group_step - group_rows);  // y[r * ys + row]: group g's row j at g * y_group_step + j
  }
  const W* wr[R][kMats];
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int64_t row = row0 + q < n ? row0 + q : n - 1;  // past the end: read row n-1, never written
    wr[q][0] = w + row * ws;
    if constexpr (kGateUp) wr[q][1] = w2 + row * ws;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The weights never change: start their stream while the kernel ahead finishes. One lane in
  // each 128-byte line asks for the first chunks (at most one wave of blocks gets here early; two
  // chunks per lane keep that well within L2).
  constexpr int kPrefetchChunks = 2;
  if (kVec && row0 < n && lane % (128 / (8 * sizeof(W))) == 0) {
#pragma unroll
    for (int p = 0; p < kPrefetchChunks; ++p) {
      const int64_t c = start + p * step;
      if (c < k / 8) {
#pragma unroll
        for (int q = 0; q < R; ++q)
#pragma unroll
          for (int j = 0; j < kMats; ++j) PrefetchL2(wr[q][j] + c * 8);
      }
    }
  }
#endif
  WaitForPreviousKernels();
  float inv_rms[M];
  if constexpr (kNorm) InverseRms<M, kVec>(x, xs, m, k, options.eps, inv_rms);
  const float* __restrict__ norm = options.norm;
  if (row0 < n) {
    if constexpr (kVec) {
#pragma unroll 2
      for (int64_t c = start; c < k / 8; c += step) {
        float wf[R][kMats][8];
#pragma unroll
        for (int q = 0; q < R; ++q)
#pragma unroll
          for (int j = 0; j < kMats; ++j) LoadStream8(wr[q][j] + c * 8, wf[q][j]);
        float nf[8];
        if constexpr (kNorm) Load8(norm + c * 8, nf);
#pragma unroll
        for (int r = 0; r < M; ++r) {
          if (r < m) {
            float xf[8];
            Load8(x + r * xs + c * 8, xf);
            if constexpr (kNorm) {
#pragma unroll
              for (int i = 0; i < 8; ++i) xf[i] = nf[i] * (xf[i] * inv_rms[r]);
            }
#pragma unroll
            for (int q = 0; q < R; ++q)
#pragma unroll
              for (int j = 0; j < kMats; ++j)
#pragma unroll
                for (int i = 0; i < 8; ++i)
                  acc[(q * kMats + j) * M + r] = fmaf(wf[q][j][i], xf[i], acc[(q * kMats + j) * M + r]);
          }
        }
      }
    } else {
      for (int64_t c = start; c < k; c += step) {
        float xc[M];
#pragma unroll
        for (int r = 0; r < M; ++r) {
          xc[r] = r < m ? x[r * xs + c] : 0.0f;
          if constexpr (kNorm) xc[r] = norm[c] * (xc[r] * inv_rms[r]);
        }
#pragma unroll
        for (int q = 0; q < R; ++q)
#pragma unroll
          for (int j = 0; j < kMats; ++j) {
            const float wv = ToFloat(wr[q][j][c]);
#pragma unroll
            for (int r = 0; r < M; ++r)
              if (r < m) acc[(q * kMats + j) * M + r] = fmaf(wv, xc[r], acc[(q * kMats + j) * M + r]);
          }
      }
    }
  }
  SumSlices<R * kMats * M>(acc, slices);
  if (warp % slices != 0 || lane != 0) return;
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int64_t row = row0 + q;
    if (row >= n) break;
    const float b = bias ? bias[row] : 0.0f;
#pragma unroll
    for (int r = 0; r < M; ++r) {
      if (r < m) {
        if constexpr (kGateUp) {
          const float g = acc[q * kMats * M + r];
          y[r * ys + row] = g / (1.0f + expf(-g)) * acc[(q * kMats + 1) * M + r];
        } else if (options.residual) {
          y[r * ys + row] = options.residual[r * options.residual_stride + row] + (acc[q * M + r] + b);
        } else {
          y[r * ys + row] = acc[q * M + r] + b;
        }
      }
    }
  }
}

}  // namespace ds::cuda

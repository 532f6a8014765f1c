// y = x · wᵀ with bf16 weights, computed in f32. Decode and speculative verification (a few
// rows) are bound by reading the weights: each weight row is streamed once, widened to f32 in
// registers and dotted with every activation row (AVX2 + FMA, picked at run time; a portable
// loop otherwise). Prefill (many rows) is bound by arithmetic: blocks of weight rows are widened
// into a buffer and multiplied by oneDNN's f32 GEMM.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/model/dtype.h"
#include "core/status.h"

namespace ds {
namespace {

constexpr int64_t kMaxGemvRows = 8;

// out[m] = Σ_i w[i] x[m][i] for m < rows.
void DotRowsPortable(const uint16_t* w, const float* x, int64_t x_stride, int64_t rows, int64_t k, float* out) {
  for (int64_t m = 0; m < rows; ++m) {
    float acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += Bf16ToF32(w[i]) * x[m * x_stride + i];
    out[m] = acc;
  }
}

__attribute__((target("avx2,fma"))) void DotRowsAvx2(const uint16_t* w, const float* x, int64_t x_stride,
                                                      int64_t rows, int64_t k, float* out) {
  __m256 acc[kMaxGemvRows];
  for (int64_t m = 0; m < rows; ++m) acc[m] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    // bf16 is the top half of an f32: widen to 32 bits and shift into place.
    const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(raw)), 16));
    const __m256 w1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(raw, 1)), 16));
    for (int64_t m = 0; m < rows; ++m) {
      const float* xm = x + m * x_stride + i;
      acc[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xm), acc[m]);
      acc[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xm + 8), acc[m]);
    }
  }
  for (int64_t m = 0; m < rows; ++m) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(acc[m]), _mm256_extractf128_ps(acc[m], 1));
    const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
    float sum = _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)));
    for (int64_t j = i; j < k; ++j) sum += Bf16ToF32(w[j]) * x[m * x_stride + j];
    out[m] = sum;
  }
}

using DotRows = void (*)(const uint16_t*, const float*, int64_t, int64_t, int64_t, float*);

DotRows PickDotRows() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? DotRowsAvx2 : DotRowsPortable;
}

}  // namespace

absl::Status CpuBackend::MatmulBf16(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  static const DotRows dot_rows = PickDotRows();
  const int64_t M = x.rows, N = w.rows, K = w.cols;
  const float* b = bias ? bias->ptr<float>() : nullptr;
  ScopedOmpThreads threads(n_threads_);
  if (M <= kMaxGemvRows) {
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < N; ++j) {
      float out[kMaxGemvRows];
      dot_rows(w.ptr<uint16_t>() + j * w.stride, x.ptr<float>(), x.stride, M, K, out);
      for (int64_t m = 0; m < M; ++m) y.ptr<float>()[m * y.stride + j] = out[m] + (b ? b[j] : 0.0f);
    }
    return absl::OkStatus();
  }
  // Prefill: widen ~16 MB of weight rows at a time and multiply them with oneDNN.
  const int64_t block = std::max<int64_t>(64, (int64_t{4} << 20) / std::max<int64_t>(K, 1));
  thread_local std::vector<float> widened;
  widened.resize(static_cast<size_t>(std::min(block, N) * K));
  float* const buffer = widened.data();  // this thread's: the workers below write into it
  for (int64_t j0 = 0; j0 < N; j0 += block) {
    const int64_t n = std::min(block, N - j0);
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) ConvertToF32(StorageType::kBF16, w.ptr<uint16_t>() + (j0 + j) * w.stride, K, buffer + j * K);
    Tensor w_block;
    w_block.data = buffer;
    w_block.dtype = DType::kF32;
    w_block.rows = n;
    w_block.cols = K;
    w_block.stride = K;
    const Tensor bias_block = bias ? bias->Cols(j0, n) : Tensor{};
    DS_RETURN_IF_ERROR(Matmul(x, w_block, bias ? &bias_block : nullptr, y.Cols(j0, n)));
  }
  return absl::OkStatus();
}

}  // namespace ds

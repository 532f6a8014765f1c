// y = x · wᵀ with weights stored narrower than f32 (bf16, Q8_0, Q4_0), computed in f32.
//
// Decode and speculative verification (a few rows) are bound by reading the weights: each weight
// row is streamed once and dotted with every activation row, all threads on disjoint rows.
//   bf16: widened to f32 in registers.
//   Q8_0 / Q4_0: the activation rows are first quantized to int8 blocks of 32 with an f32 scale
//   each (as llama.cpp does), so a block's dot product runs in 8-bit integer instructions and one
//   multiply by the two scales. AVX2 (+FMA, F16C) is picked at run time; a portable loop with the
//   same arithmetic otherwise.
// Prefill (many rows) is bound by arithmetic: blocks of weight rows are widened to f32 into a
// buffer and multiplied by oneDNN's f32 GEMM.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/cpu/cpu_backend.h"
#include "core/model/dtype.h"
#include "core/model/quant.h"
#include "core/status.h"

namespace ds {
namespace {

constexpr int64_t kMaxGemvRows = 8;

// Activation rows quantized for the integer dot: q [rows, k] int8 codes, d [rows, k / 32] scales.
struct QuantizedRows {
  const int8_t* q;
  const float* d;
  int64_t k;
};

void QuantizeActivations(const float* x, int64_t x_stride, int64_t rows, int64_t k, int8_t* q, float* d) {
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t b = 0; b < k / kQuantBlock; ++b) {
      const float* v = x + m * x_stride + b * kQuantBlock;
      float amax = 0;
      for (int64_t i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float scale = amax / 127.0f, inv = amax != 0 ? 127.0f / amax : 0.0f;
      d[m * (k / kQuantBlock) + b] = scale;
      for (int64_t i = 0; i < kQuantBlock; ++i)
        q[m * k + b * kQuantBlock + i] = static_cast<int8_t>(std::nearbyint(v[i] * inv));
    }
}

// --- portable kernels: out[m] = w_row · x[m] for m < rows ------------------------------------

void DotBf16Portable(const void* w_row, const float* x, int64_t x_stride, const QuantizedRows&, int64_t rows,
                     int64_t k, float* out) {
  const uint16_t* w = static_cast<const uint16_t*>(w_row);
  for (int64_t m = 0; m < rows; ++m) {
    float acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += Bf16ToF32(w[i]) * x[m * x_stride + i];
    out[m] = acc;
  }
}

// The integer dot of one block's 32 weight codes (already signed) with the activation codes.
int32_t DotCodes(const int8_t* w, const int8_t* x) {
  int32_t sum = 0;
  for (int64_t i = 0; i < kQuantBlock; ++i) sum += w[i] * x[i];
  return sum;
}

void DotQ8Portable(const void* w_row, const float*, int64_t, const QuantizedRows& x, int64_t rows, int64_t k,
                   float* out) {
  const BlockQ8_0* w = static_cast<const BlockQ8_0*>(w_row);
  const int64_t blocks = k / kQuantBlock;
  for (int64_t m = 0; m < rows; ++m) {
    float acc = 0;
    for (int64_t b = 0; b < blocks; ++b)
      acc += F16ToF32(w[b].d) * x.d[m * blocks + b] * static_cast<float>(DotCodes(w[b].q, x.q + m * k + b * kQuantBlock));
    out[m] = acc;
  }
}

void DotQ4Portable(const void* w_row, const float*, int64_t, const QuantizedRows& x, int64_t rows, int64_t k,
                   float* out) {
  const BlockQ4_0* w = static_cast<const BlockQ4_0*>(w_row);
  const int64_t blocks = k / kQuantBlock;
  for (int64_t m = 0; m < rows; ++m) out[m] = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    int8_t codes[kQuantBlock];
    for (int64_t i = 0; i < kQuantBlock / 2; ++i) {
      codes[i] = static_cast<int8_t>((w[b].q[i] & 0xf) - 8);
      codes[i + kQuantBlock / 2] = static_cast<int8_t>((w[b].q[i] >> 4) - 8);
    }
    const float wd = F16ToF32(w[b].d);
    for (int64_t m = 0; m < rows; ++m)
      out[m] += wd * x.d[m * blocks + b] * static_cast<float>(DotCodes(codes, x.q + m * k + b * kQuantBlock));
  }
}

// --- AVX2 kernels ------------------------------------------------------------------------------

__attribute__((target("avx2,fma"))) float HorizontalSum(__m256 v) {
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)));
}

template <int Rows>
__attribute__((target("avx2,fma"))) void DotBf16Avx2(const void* w_row, const float* x, int64_t x_stride, int64_t k,
                                                      float* out) {
  const uint16_t* w = static_cast<const uint16_t*>(w_row);
  __m256 acc[Rows];
  for (int m = 0; m < Rows; ++m) acc[m] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    // bf16 is the top half of an f32: widen to 32 bits and shift into place.
    const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(raw)), 16));
    const __m256 w1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(raw, 1)), 16));
    for (int m = 0; m < Rows; ++m) {
      const float* xm = x + m * x_stride + i;
      acc[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xm), acc[m]);
      acc[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xm + 8), acc[m]);
    }
  }
  for (int m = 0; m < Rows; ++m) {
    float sum = HorizontalSum(acc[m]);
    for (int64_t j = i; j < k; ++j) sum += Bf16ToF32(w[j]) * x[m * x_stride + j];
    out[m] = sum;
  }
}

// acc[m] += (w_codes · x_codes of block b of row m) * scale, for signed weight codes in [-127, 127].
// maddubs multiplies unsigned by signed bytes, so the weights' signs move onto the activations.
// Rows is a template parameter so the accumulators live in registers.
template <int Rows>
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void AccumulateBlock(__m256i w_codes, float w_scale,
                                                                                  const QuantizedRows& x, int64_t b,
                                                                                  __m256* acc) {
  const int64_t blocks = x.k / kQuantBlock;
  const __m256i w_abs = _mm256_sign_epi8(w_codes, w_codes);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int m = 0; m < Rows; ++m) {
    const __m256i x_codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + m * x.k + b * kQuantBlock));
    // |products| <= 2 * 127 * 127 per pair of bytes: no int16 saturation.
    const __m256i pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x_codes, w_codes));
    const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
    acc[m] = _mm256_fmadd_ps(dot, _mm256_set1_ps(w_scale * x.d[m * blocks + b]), acc[m]);
  }
}

template <int Rows>
__attribute__((target("avx2,fma,f16c"))) void DotQ8Avx2(const void* w_row, const QuantizedRows& x, float* out) {
  const BlockQ8_0* w = static_cast<const BlockQ8_0*>(w_row);
  __m256 acc[Rows];
  for (int m = 0; m < Rows; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t b = 0; b < x.k / kQuantBlock; ++b) {
    const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].q));
    AccumulateBlock<Rows>(codes, _cvtsh_ss(w[b].d), x, b, acc);
  }
  for (int m = 0; m < Rows; ++m) out[m] = HorizontalSum(acc[m]);
}

template <int Rows>
__attribute__((target("avx2,fma,f16c"))) void DotQ4Avx2(const void* w_row, const QuantizedRows& x, float* out) {
  const BlockQ4_0* w = static_cast<const BlockQ4_0*>(w_row);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
  __m256 acc[Rows];
  for (int m = 0; m < Rows; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t b = 0; b < x.k / kQuantBlock; ++b) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].q));
    // Elements 0..15 are the low nibbles, 16..31 the high ones.
    const __m256i nibbles = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low_nibbles);
    AccumulateBlock<Rows>(_mm256_sub_epi8(nibbles, eight), _cvtsh_ss(w[b].d), x, b, acc);
  }
  for (int m = 0; m < Rows; ++m) out[m] = HorizontalSum(acc[m]);
}

// The kernel for `rows` activation rows (1..kMaxGemvRows), from one instantiated per count.
template <template <int> class Kernel>
void DispatchRows(const void* w_row, const float* x, int64_t x_stride, const QuantizedRows& xq, int64_t rows,
                  int64_t k, float* out) {
  switch (rows) {
    case 1: return Kernel<1>::Run(w_row, x, x_stride, xq, k, out);
    case 2: return Kernel<2>::Run(w_row, x, x_stride, xq, k, out);
    case 3: return Kernel<3>::Run(w_row, x, x_stride, xq, k, out);
    case 4: return Kernel<4>::Run(w_row, x, x_stride, xq, k, out);
    case 5: return Kernel<5>::Run(w_row, x, x_stride, xq, k, out);
    case 6: return Kernel<6>::Run(w_row, x, x_stride, xq, k, out);
    case 7: return Kernel<7>::Run(w_row, x, x_stride, xq, k, out);
    default: return Kernel<8>::Run(w_row, x, x_stride, xq, k, out);
  }
}
template <int Rows>
struct Bf16Kernel {
  static void Run(const void* w, const float* x, int64_t x_stride, const QuantizedRows&, int64_t k, float* out) {
    DotBf16Avx2<Rows>(w, x, x_stride, k, out);
  }
};
template <int Rows>
struct Q8Kernel {
  static void Run(const void* w, const float*, int64_t, const QuantizedRows& xq, int64_t, float* out) {
    DotQ8Avx2<Rows>(w, xq, out);
  }
};
template <int Rows>
struct Q4Kernel {
  static void Run(const void* w, const float*, int64_t, const QuantizedRows& xq, int64_t, float* out) {
    DotQ4Avx2<Rows>(w, xq, out);
  }
};
static_assert(kMaxGemvRows == 8);

using DotRow = void (*)(const void* w_row, const float* x, int64_t x_stride, const QuantizedRows& xq,
                        int64_t rows, int64_t k, float* out);

bool HasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

std::atomic<bool> portable_kernels{false};

DotRow PickDotRow(DType dtype) {
  static const bool has_avx2 = HasAvx2();
  const bool avx2 = has_avx2 && !portable_kernels.load(std::memory_order_relaxed);
  switch (dtype) {
    case DType::kBF16: return avx2 ? DispatchRows<Bf16Kernel> : DotBf16Portable;
    case DType::kQ8_0: return avx2 ? DispatchRows<Q8Kernel> : DotQ8Portable;
    case DType::kQ4_0: return avx2 ? DispatchRows<Q4Kernel> : DotQ4Portable;
    default: return nullptr;
  }
}

}  // namespace

void UsePortableCpuKernels(bool portable) { portable_kernels = portable; }

void WidenRow(DType dtype, const void* row, int64_t n, float* out) {
  switch (dtype) {
    case DType::kF32: std::memcpy(out, row, static_cast<size_t>(n) * sizeof(float)); return;
    case DType::kBF16: ConvertToF32(StorageType::kBF16, row, static_cast<size_t>(n), out); return;
    case DType::kQ8_0: DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(row), n, out); return;
    case DType::kQ4_0: DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(row), n, out); return;
    case DType::kI32: break;
  }
  std::fill(out, out + n, std::nanf(""));  // not a weight format: make the mistake visible
}

absl::Status CpuBackend::MatmulNarrow(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  const int64_t M = x.rows, N = w.rows, K = w.cols;
  const float* b = bias ? bias->ptr<float>() : nullptr;
  ScopedOmpThreads threads(n_threads_);
  if (M <= kMaxGemvRows) {
    const DotRow dot_row = PickDotRow(w.dtype);
    if (!dot_row) return absl::InternalError(absl::StrCat("cpu matmul: ", DTypeName(w.dtype), " is not a weight format"));
    // Quantized formats dot int8 codes: quantize the activations once, on this thread.
    thread_local std::vector<int8_t> x_codes;
    thread_local std::vector<float> x_scales;
    if (IsBlockQuantized(w.dtype)) {
      x_codes.resize(static_cast<size_t>(M * K));
      x_scales.resize(static_cast<size_t>(M * K / kQuantBlock));
      QuantizeActivations(x.ptr<float>(), x.stride, M, K, x_codes.data(), x_scales.data());
    }
    const QuantizedRows xq{x_codes.data(), x_scales.data(), K};
    const size_t row_bytes = RowBytes(w.dtype, w.stride);
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < N; ++j) {
      float out[kMaxGemvRows];
      dot_row(w.ptr<char>() + j * row_bytes, x.ptr<float>(), x.stride, xq, M, K, out);
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
    const Tensor rows = w.Rows(j0, n);
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) WidenRow(w.dtype, rows.Rows(j, 1).data, K, buffer + j * K);
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

// Small AVX2 + FMA helpers the CPU kernels share. Internal linkage: a file compiled for other
// targets (gemv_avx512.cc) keeps its own copy (see gemv.h).
//
// ExpAvx2: exp(x) for 8 floats at a time, for the softmax and SiluMul loops whose exponentials
// were one libm call per value. Cody-Waite range reduction (x = n ln2 + r, |r| <=
// ln2 / 2, ln2 in two parts) and a degree-6 polynomial for e^r (Cephes' expf coefficients): within
// 2 ulp of the correctly rounded result over the normal range; below -87.3 it returns 0 (no
// subnormals), above 88.7 +inf, and NaN stays NaN.
#pragma once

#include <immintrin.h>

namespace ds {
namespace {

// The sum of a vector's 8 floats.
__attribute__((target("avx2,fma"), always_inline)) inline float HorizontalSum(__m256 v) {
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)));
}

__attribute__((target("avx2,fma"), always_inline)) inline __m256 ExpAvx2(__m256 x) {
  const __m256 kMax = _mm256_set1_ps(88.7228394f), kMin = _mm256_set1_ps(-87.3365479f);
  const __m256 overflow = _mm256_cmp_ps(x, kMax, _CMP_GT_OQ), underflow = _mm256_cmp_ps(x, kMin, _CMP_LT_OQ);
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, kMin), kMax);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n in two exponent fields, 2^(n >> 1) and 2^(n - (n >> 1)): n is in [-126, 128] here, and
  // neither 2^-126 as a product with p < 1 nor 2^128 fits one field.
  const __m256i ni = _mm256_cvtps_epi32(n), half = _mm256_srai_epi32(ni, 1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 scale_a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
  const __m256 scale_b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, scale_a), scale_b);
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), underflow);
  y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), overflow);
  return _mm256_blendv_ps(y, x, nan);
}

}  // namespace
}  // namespace ds

// The CPU's vectorized exp (backends/cpu/vector_avx2.h), which the attention softmax and SiluMul use,
// against the correctly rounded exp (from double): within 2 ulp wherever the result is a normal
// float, 0 below the normal range, +inf above it, NaN kept.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/vector_avx2.h"

namespace ds {
namespace {

__attribute__((target("avx2,fma"))) void Exp8(const float* x, float* y) {
  _mm256_storeu_ps(y, ExpAvx2(_mm256_loadu_ps(x)));
}

int64_t UlpDistance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, sizeof ia);
  std::memcpy(&ib, &b, sizeof ib);
  return std::abs(static_cast<int64_t>(ia) - ib);  // both positive here
}

TEST(ExpAvx2, WithinTwoUlpOverTheNormalRange) {
  if (!CpuHasAvx2Fma()) GTEST_SKIP() << "this CPU has no AVX2 + FMA: the kernel is not used";
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.5f; v += 0.0137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-8f, -1e-8f, 0.5f * std::log(2.0f), -0.5f * std::log(2.0f), 1.0f, -1.0f}) x.push_back(v);
  while (x.size() % 8) x.push_back(0.0f);
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); i += 8) Exp8(&x[i], &y[i]);
  int64_t worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = static_cast<float>(std::exp(static_cast<double>(x[i])));
    ASSERT_TRUE(std::isnormal(want));
    const int64_t ulp = UlpDistance(y[i], want);
    worst = std::max(worst, ulp);
    ASSERT_LE(ulp, 2) << "exp(" << x[i] << ") = " << y[i] << ", want " << want;
  }
  RecordProperty("worst_ulp", static_cast<int>(worst));
}

TEST(ExpAvx2, EdgesUnderflowOverflowAndNan) {
  if (!CpuHasAvx2Fma()) GTEST_SKIP() << "this CPU has no AVX2 + FMA: the kernel is not used";
  const float inf = std::numeric_limits<float>::infinity();
  const float x[8] = {-inf, -1000.0f, -88.0f, 89.0f, 1000.0f, inf, std::numeric_limits<float>::quiet_NaN(), 0.0f};
  float y[8];
  Exp8(x, y);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);  // exp(-88) is subnormal: flushed
  EXPECT_EQ(y[3], inf);
  EXPECT_EQ(y[4], inf);
  EXPECT_EQ(y[5], inf);
  EXPECT_TRUE(std::isnan(y[6]));
  EXPECT_EQ(y[7], 1.0f);
}

}  // namespace
}  // namespace ds

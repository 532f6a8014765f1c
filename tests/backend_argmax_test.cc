// Backend::Argmax (greedy decoding's choice made where the logits are) against the sampler's
// Argmax on the host, on every backend: rows long and short, ties, NaNs, infinities. And
// Backend::SampleTokens (sampling where the logits are) against the host sampler's distribution.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "absl/status/status.h"
#include "backends/plugin.h"
#include "core/sampling/sampler.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

class BackendArgmax : public ::testing::TestWithParam<Target> {};

TEST_P(BackendArgmax, MatchesTheSamplersArgmax) {
  const Target target = GetParam();
  DS_SKIP_IF_NO_DEVICE(target);
  // Three threads: the CPU backend splits a long row between them (and not a short one).
  auto backend = MakeTestBackend(target, 3);
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int64_t cols : {1, 2, 31, 1025, 4099, 151936}) {
    // Row 0 random; 1: ties of the maximum at three places; 2: NaN first; 3: NaNs scattered
    // over a random row; 4: all -inf; 5: +inf twice; 6: NaNs scattered, x[0] not one.
    const int64_t rows = 7;
    std::vector<float> x(static_cast<size_t>(rows * cols));
    for (float& v : x) v = normal(rng);
    auto row = [&](int64_t r) { return x.data() + r * cols; };
    for (int64_t i : {cols / 3, cols / 2, cols - 1}) row(1)[i] = 50.0f;
    row(2)[0] = nan;
    for (int64_t i = 0; i < cols; i += 7) row(3)[i] = nan;
    std::fill(row(4), row(4) + cols, -inf);
    row(5)[cols / 2] = inf, row(5)[cols - 1] = inf;
    for (int64_t i = 1; i < cols; i += 2) row(6)[i] = nan;
    auto xt = (*backend)->Alloc(DType::kF32, rows, cols);
    auto ids = (*backend)->Alloc(DType::kI32, 1, rows);
    ASSERT_TRUE(xt.ok() && ids.ok());
    ASSERT_TRUE((*backend)->Upload(x.data(), *xt).ok());
    // The whole rows, and the rows less their last three values (a view whose width is not
    // a multiple of its stride's vector width: the CUDA kernel's tail).
    for (int64_t width : {cols, cols - 3}) {
      if (width < 1) continue;
      ASSERT_TRUE((*backend)->Argmax(xt->Cols(0, width), *ids).ok());
      std::vector<int32_t> got(rows);
      ASSERT_TRUE((*backend)->Download(*ids, got.data()).ok());
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_EQ(got[r], Argmax(row(r), width)) << "row " << r << " of " << width << " (stride " << cols << ")";
    }
  }
}

constexpr Target kArgmaxTargets[] = {kTargets[0], kTargets[1]};
INSTANTIATE_TEST_SUITE_P(Backends, BackendArgmax, ::testing::ValuesIn(kArgmaxTargets),
                         [](const ::testing::TestParamInfo<Target>& param) { return std::string(param.param.name); });

// The CPU backend leaves sampling to the host sampler (the session then samples there).
TEST(BackendSample, TheCpuSamplesOnTheHost) {
  auto backend = MakeTestBackend(kTargets[0], 1);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto logits = (*backend)->Alloc(DType::kF32, 1, 8), ids = (*backend)->Alloc(DType::kI32, 1, 1);
  ASSERT_TRUE(logits.ok() && ids.ok());
  const uint64_t draw = 1;
  EXPECT_TRUE(absl::IsUnimplemented((*backend)->SampleTokens(*logits, {}, {&draw, 1}, *ids)));
}

// CUDA's sampler against the host's: for draws spread evenly over [0, 1), each token must be the
// one the inverse CDF of the host sampler's distribution (Sampler::Probabilities: temperature,
// top-k, top-p, min-p) gives in id order, except for draws within 1e-6 of a step of that CDF
// (fixed point against double). Rows of a flat and of a peaked distribution, ties of the logit at
// the top-k boundary, NaNs and -inf, a real vocabulary's width; filters alone and together.
TEST(BackendSample, CudaDrawsFromTheHostSamplersDistribution) {
  DS_SKIP_IF_NO_DEVICE(kTargets[1]);
  auto backend = MakeTestBackend(kTargets[1], 1);
  ASSERT_TRUE(backend.ok()) << backend.status();
  Backend& b = **backend;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Row {
    const char* name;
    std::vector<float> logits;
  };
  std::vector<Row> rows;
  auto random_row = [&](int64_t n, float scale) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = scale * normal(rng);
    return v;
  };
  rows.push_back({"flat 1000", random_row(1000, 1.0f)});
  rows.push_back({"spread 1000", random_row(1000, 4.0f)});
  std::vector<float> peaked = random_row(3000, 1.0f);
  for (float& x : peaked) x -= 8.0f;
  for (int64_t i : {17, 1500, 2999}) peaked[i] = 6.0f + 0.5f * static_cast<float>(i % 3);
  rows.push_back({"peaked 3000", peaked});
  std::vector<float> ties = random_row(500, 1.0f);
  for (int64_t i = 0; i < 500; i += 25) ties[i] = 1.25f;  // 20 equal logits around the top-k boundaries
  for (int64_t i = 3; i < 500; i += 50) ties[i] = 3.0f;
  rows.push_back({"ties 500", ties});
  std::vector<float> holes = random_row(2000, 2.0f);
  for (int64_t i = 3; i < 2000; i += 11) holes[i] = -inf;
  rows.push_back({"-inf 2000", holes});
  // NaN: the host's sort has no order for it (its reference is not defined); CUDA reads it as -inf.
  std::vector<float> nans = holes;
  for (int64_t i = 0; i < 2000; i += 7) nans[i] = nan;
  rows.push_back({"nan 2000", nans});
  rows.push_back({"vocabulary 151936", random_row(151936, 2.0f)});
  const SamplingParams params[] = {
      {.temperature = 0.7f},
      {.temperature = 1.0f, .top_k = 40},
      {.temperature = 0.6f, .top_p = 0.95f},
      {.temperature = 1.3f, .top_k = 50, .top_p = 0.8f},
      {.temperature = 1.0f, .min_p = 0.05f},
      {.temperature = 0.8f, .top_k = 30, .top_p = 0.9f, .min_p = 0.1f},
      {.temperature = 1.0f, .top_k = 1},
      {.temperature = 1.0f, .top_k = 10, .top_p = 0.5f},
  };
  constexpr int64_t kDraws = 512;
  for (const Row& row : rows) {
    const int64_t n = static_cast<int64_t>(row.logits.size());
    auto logits = b.Alloc(DType::kF32, 1, n), ids = b.Alloc(DType::kI32, 1, kDraws);
    ASSERT_TRUE(logits.ok() && ids.ok());
    ASSERT_TRUE(b.Upload(row.logits.data(), *logits).ok());
    Tensor repeated = *logits;  // kDraws rows, all the same row (stride 0)
    repeated.rows = kDraws, repeated.stride = 0;
    for (const SamplingParams& p : params) {
      SCOPED_TRACE(::testing::Message() << row.name << ": T " << p.temperature << " top_k " << p.top_k << " top_p "
                                        << p.top_p << " min_p " << p.min_p);
      const bool has_nan = std::any_of(row.logits.begin(), row.logits.end(), [](float v) { return std::isnan(v); });
      std::vector<float> without_nan = row.logits;
      for (float& v : without_nan)
        if (std::isnan(v)) v = -inf;
      Sampler host(p);
      std::vector<float> probabilities;
      host.Probabilities(without_nan.data(), n, probabilities);
      std::vector<double> cdf(static_cast<size_t>(n));  // in id order
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) cdf[i] = sum += probabilities[i];
      std::vector<uint64_t> draws(kDraws);
      for (int64_t j = 0; j < kDraws; ++j) draws[j] = static_cast<uint64_t>((2 * j + 1) * (0x1.0p53 / (2 * kDraws)));
      ASSERT_TRUE(b.SampleTokens(repeated, Sampler(p).filters(), draws, *ids).ok());
      std::vector<int32_t> got(kDraws);
      ASSERT_TRUE(b.Download(*ids, got.data()).ok());
      int checked = 0;
      for (int64_t j = 0; j < kDraws; ++j) {
        const double u = static_cast<double>(draws[j]) * 0x1.0p-53 * sum;
        const int64_t want = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
        const bool near_step = (want < n && cdf[want] - u < 1e-6) || (want > 0 && u - cdf[want - 1] < 1e-6);
        ASSERT_GE(got[j], 0);
        ASSERT_LT(got[j], n);
        ASSERT_FALSE(has_nan && std::isnan(row.logits[got[j]])) << "draw " << j << " took a NaN";
        EXPECT_GT(probabilities[got[j]], 0.0f) << "draw " << j << " took token " << got[j];
        if (near_step) continue;
        ++checked;
        ASSERT_EQ(got[j], want) << "draw " << j << " (u " << u / sum << ")";
      }
      EXPECT_GT(checked, kDraws * 9 / 10);
    }
  }
}

}  // namespace
}  // namespace ds::testing

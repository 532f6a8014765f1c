// Backend::Argmax (greedy decoding's choice made where the logits are) against the sampler's
// Argmax on the host, on every backend: rows long and short, ties, NaNs, infinities.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "backends/backend.h"
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

}  // namespace
}  // namespace ds::testing

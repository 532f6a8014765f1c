// Sampling: greedy is argmax; filters keep exactly the tokens they should; a seed fixes the run.
#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "core/sampling/sampler.h"
#include "gtest/gtest.h"

namespace ds {
namespace {

TEST(Sampler, GreedyIsArgmaxWithTheFirstOnTies) {
  const std::vector<float> logits{0.5f, 2.0f, -1.0f, 2.0f};
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.Sample(logits.data(), 4), 1);
}

std::map<int32_t, int> Histogram(const SamplingParams& p, const std::vector<float>& logits, int draws) {
  Sampler s(p);
  std::map<int32_t, int> h;
  for (int i = 0; i < draws; ++i) ++h[s.Sample(logits.data(), static_cast<int64_t>(logits.size()))];
  return h;
}

// log-probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625
const std::vector<float> kLogits{std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.0625f), std::log(0.0625f)};

// Sample(logits, n) is Sample(logits, n, Draw()): a backend given the sampler's draw continues
// the same random stream (Session::NextToken samples on the backend with it).
TEST(Sampler, SamplingIsOneDrawOfTheStream) {
  for (const SamplingParams& p : {SamplingParams{.temperature = 0.9f, .seed = 3},
                                  SamplingParams{.temperature = 1.1f, .top_k = 3, .top_p = 0.9f, .seed = 4}}) {
    Sampler a(p), b(p);
    for (int i = 0; i < 200; ++i) {
      const int32_t want = a.Sample(kLogits.data(), 5);
      ASSERT_EQ(b.Sample(kLogits.data(), 5, b.Draw()), want) << "draw " << i;
    }
  }
}

TEST(Sampler, TemperatureOneFollowsTheDistribution) {
  const auto h = Histogram({.temperature = 1.0f, .seed = 7}, kLogits, 20000);
  EXPECT_NEAR(h.at(0) / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(h.at(1) / 20000.0, 0.25, 0.02);
  EXPECT_NEAR(h.at(4) / 20000.0, 0.0625, 0.01);
}

TEST(Sampler, TopKKeepsOnlyTheKBest) {
  const auto h = Histogram({.temperature = 1.0f, .top_k = 2, .seed = 1}, kLogits, 5000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_NEAR(h.at(0) / 5000.0, 2.0 / 3, 0.03);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  // 0.5 + 0.25 = 0.75 >= 0.7: tokens 0 and 1 only.
  const auto h = Histogram({.temperature = 1.0f, .top_p = 0.7f, .seed = 2}, kLogits, 5000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(0) && h.count(1));
}

// A nucleus of thousands of tokens (a flat distribution over a large vocabulary): the sampler
// sorts only a growing prefix of the candidates, and must still reach the nucleus's last tokens
// and never go past it. The nucleus is computed here from the definition, in f64.
TEST(Sampler, TopPOverALargeVocabularyReachesTheWholeNucleus) {
  const int n = 8000;
  std::vector<float> logits(n);
  for (int i = 0; i < n; ++i) logits[(i * 7919) % n] = -2.0f * i / n;  // rank i at a scattered id
  std::vector<double> w(n);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += w[i] = std::exp(-2.0 * i / n);
  int nucleus = 0;
  for (double cumulative = 0; cumulative < 0.9 * sum;) cumulative += w[nucleus++];
  ASSERT_GT(nucleus, 4096);  // past the first sorted prefixes
  Sampler s({.temperature = 1.0f, .top_p = 0.9f, .seed = 11});
  int deepest = 0;
  for (int draw = 0; draw < 600; ++draw) {
    const int32_t id = s.Sample(logits.data(), n);
    const int r = static_cast<int>(std::lround(-logits[id] * n / 2.0));
    ASSERT_LT(r, nucleus) << "sampled past the nucleus";
    deepest = std::max(deepest, r);
  }
  EXPECT_GT(deepest, nucleus * 9 / 10);
}

// Probabilities (what speculative sampling compares) against the filters' definition over a whole
// sort, in f64: every token sorted by logit (ties: lower id first), the k best, softmax at the
// temperature, the shortest prefix reaching top_p, then p >= min_p * p_max, renormalized. A random
// vocabulary with tied logits, each filter alone and together.
TEST(Sampler, ProbabilitiesFollowTheFiltersDefinition) {
  const int n = 6000;
  std::vector<float> logits(n);
  uint32_t state = 12345;
  for (float& v : logits) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(state >> 8) / static_cast<float>(1 << 24) * 6.0f - 3.0f;
  }
  for (int i = 0; i < n; i += 97) logits[i] = 2.5f;  // ties, some at the top-k boundary
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  const SamplingParams settings[] = {{.temperature = 0.8f},
                                     {.temperature = 1.0f, .top_k = 50},
                                     {.temperature = 0.7f, .top_p = 0.9f},
                                     {.temperature = 1.2f, .min_p = 0.05f},
                                     {.temperature = 0.9f, .top_k = 70, .top_p = 0.8f, .min_p = 0.1f},
                                     {.temperature = 1.0f, .top_k = 1},
                                     {.temperature = 1.0f, .top_k = 10000, .top_p = 0.95f}};  // k past n
  for (const SamplingParams& p : settings) {
    SCOPED_TRACE(::testing::Message() << "T " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
                                      << " min_p " << p.min_p);
    size_t keep = p.top_k > 0 ? std::min(static_cast<size_t>(p.top_k), order.size()) : order.size();
    std::vector<double> w(keep);
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += w[i] = std::exp((logits[order[i]] - logits[order[0]]) / p.temperature);
    if (p.top_p < 1.0f) {
      double cumulative = 0;
      size_t nucleus = 0;
      while (nucleus < keep && cumulative < p.top_p * sum) cumulative += w[nucleus++];
      keep = nucleus;
    }
    size_t above_min_p = 1;
    while (above_min_p < keep && w[above_min_p] >= p.min_p * w[0]) ++above_min_p;
    if (p.min_p > 0.0f) keep = above_min_p;
    double mass = 0;
    for (size_t i = 0; i < keep; ++i) mass += w[i];
    std::vector<double> want(n, 0.0);
    for (size_t i = 0; i < keep; ++i) want[order[i]] = w[i] / mass;
    Sampler sampler(p);
    std::vector<float> got;
    sampler.Probabilities(logits.data(), n, got);
    ASSERT_EQ(got.size(), static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[i], 1e-6 + 1e-5 * want[i]) << "token " << i;
  }
}

TEST(Sampler, MinPDropsTheUnlikely) {
  // min_p 0.2: threshold 0.1, so 0.125 stays and 0.0625 goes.
  const auto h = Histogram({.temperature = 1.0f, .min_p = 0.2f, .seed = 3}, kLogits, 5000);
  EXPECT_EQ(h.size(), 3u);
  EXPECT_FALSE(h.count(3) || h.count(4));
}

TEST(Sampler, SameSeedSameTokensOtherSeedOtherTokens) {
  auto run = [](uint64_t seed) {
    Sampler s({.temperature = 1.0f, .seed = seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.Sample(kLogits.data(), 5));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_FALSE(ValidateSamplingParams({.top_k = -1}).ok());
  EXPECT_FALSE(ValidateSamplingParams({.top_p = 0.0f}).ok());
  EXPECT_FALSE(ValidateSamplingParams({.top_p = 1.5f}).ok());
  EXPECT_FALSE(ValidateSamplingParams({.min_p = -0.1f}).ok());
  EXPECT_TRUE(ValidateSamplingParams({.temperature = 0.6f, .top_p = 0.95f}).ok());
}

}  // namespace
}  // namespace ds

// Backend::MoeRoute (DeepSeek-V3's sigmoid, group-limited top-k routing) and NormMoeRoute (the
// router before it) on every backend against a host reference written from transformers' DeepseekV3TopkRouter: the chosen experts
// in order and their weights, for V3's, V2-Lite's and smaller layouts, one to many tokens.
// Logits and biases lie on coarse grids, so equal values are exact ties (the lower index wins,
// as in torch.topk's order here) and unequal ones are far apart beside float rounding.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "backends/plugin.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

class BackendMoeRoute : public BackendOpTest {};

struct Route {
  std::vector<int32_t> ids;
  std::vector<double> weights;
};

// Indices of the k largest values, largest first, the lower index first among equals.
std::vector<int64_t> TopK(const std::vector<double>& v, int64_t k) {
  std::vector<int64_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  order.resize(static_cast<size_t>(k));
  return order;
}

Route Reference(const float* logits, const std::vector<float>& bias, const MoeRouting& r) {
  const int64_t n = static_cast<int64_t>(bias.size()), group_size = n / r.n_group;
  std::vector<double> score(n), choice(n);
  for (int64_t e = 0; e < n; ++e) {
    score[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[e])));
    choice[e] = score[e] + bias[e];
  }
  std::vector<double> group_score(r.n_group);
  for (int64_t g = 0; g < r.n_group; ++g) {
    std::vector<double> members(choice.begin() + g * group_size, choice.begin() + (g + 1) * group_size);
    for (int64_t i : TopK(members, std::min<int64_t>(2, group_size))) group_score[g] += members[i];
  }
  std::vector<bool> keep(r.n_group, false);
  for (int64_t g : TopK(group_score, r.topk_group)) keep[g] = true;
  for (int64_t e = 0; e < n; ++e)
    if (!keep[e / group_size]) choice[e] = 0.0;  // masked_fill(~mask, 0.0)
  Route route;
  double sum = 0.0;
  for (int64_t e : TopK(choice, r.top_k)) {
    route.ids.push_back(static_cast<int32_t>(e));
    route.weights.push_back(score[e]);
    sum += score[e];
  }
  for (double& w : route.weights) w = (r.norm_topk_prob ? w / (sum + 1e-20) : w) * r.routed_scaling_factor;
  return route;
}

TEST_P(BackendMoeRoute, MatchesTheReference) {
  Backend& b = *backend_;
  struct Case {
    int64_t experts;
    MoeRouting routing;
    int64_t tokens;
    float bias_shift = 0.0f;  // -1: every choice negative, so the masked groups' 0.0 wins
  };
  const Case cases[] = {
      {256, {.n_group = 8, .topk_group = 4, .top_k = 8, .norm_topk_prob = true, .routed_scaling_factor = 2.5f}, 1},
      {256, {.n_group = 8, .topk_group = 4, .top_k = 8, .norm_topk_prob = true, .routed_scaling_factor = 2.5f}, 37},
      {64, {.n_group = 1, .topk_group = 1, .top_k = 6, .norm_topk_prob = false, .routed_scaling_factor = 1.0f}, 16},
      {16, {.n_group = 4, .topk_group = 2, .top_k = 4, .norm_topk_prob = true, .routed_scaling_factor = 1.0f}, 5},
      {512, {.n_group = 64, .topk_group = 7, .top_k = 13, .norm_topk_prob = true, .routed_scaling_factor = 1.5f}, 3},
      {40, {.n_group = 40, .topk_group = 5, .top_k = 5, .norm_topk_prob = true, .routed_scaling_factor = 1.0f}, 2},
      {32, {.n_group = 8, .topk_group = 2, .top_k = 6, .norm_topk_prob = true, .routed_scaling_factor = 1.0f}, 4,
       -1.0f},
  };
  std::mt19937 rng(9);
  for (const Case& c : cases) {
    const MoeRouting& r = c.routing;
    SCOPED_TRACE(::testing::Message() << c.experts << " experts, " << r.n_group << " groups, top " << r.topk_group
                                      << " groups, top " << r.top_k << ", " << c.tokens << " tokens");
    // Logits on a grid of eighths in [-3, 3] (ties common); biases on a grid of 1/64 in
    // [-0.25, 0.25] (some choices below the masked groups' 0.0), or zero, plus the shift.
    std::uniform_int_distribution<int> logit_step(-24, 24), bias_step(-16, 16);
    std::vector<float> logits(static_cast<size_t>(c.tokens * c.experts)), bias(static_cast<size_t>(c.experts));
    for (float& v : logits) v = logit_step(rng) / 8.0f;
    for (float& v : bias) v = (r.n_group > 1 ? bias_step(rng) / 64.0f : 0.0f) + c.bias_shift;
    auto logits_t = b.Alloc(DType::kF32, c.tokens, c.experts), bias_t = b.Alloc(DType::kF32, 1, c.experts);
    auto ids_t = b.Alloc(DType::kI32, c.tokens, r.top_k), weights_t = b.Alloc(DType::kF32, c.tokens, r.top_k);
    ASSERT_TRUE(logits_t.ok() && bias_t.ok() && ids_t.ok() && weights_t.ok());
    ASSERT_TRUE(b.Upload(logits.data(), *logits_t).ok() && b.Upload(bias.data(), *bias_t).ok());
    ASSERT_TRUE(b.MoeRoute(*logits_t, *bias_t, r, *ids_t, *weights_t).ok());
    std::vector<int32_t> ids(static_cast<size_t>(c.tokens * r.top_k));
    std::vector<float> weights(ids.size());
    ASSERT_TRUE(b.Download(*ids_t, ids.data()).ok() && b.Download(*weights_t, weights.data()).ok());
    for (int64_t t = 0; t < c.tokens; ++t) {
      const Route want = Reference(logits.data() + t * c.experts, bias, r);
      for (int64_t j = 0; j < r.top_k; ++j) {
        ASSERT_EQ(ids[t * r.top_k + j], want.ids[j]) << "token " << t << " choice " << j;
        ASSERT_NEAR(weights[t * r.top_k + j], want.weights[j], 1e-6 * (1.0 + want.weights[j]))
            << "token " << t << " choice " << j;
      }
    }
  }
}

// The router and the routing in one op (a decode step's one launch on CUDA) against the two ops
// on the same backend, bit for bit, and against the host reference on the router's logits: one
// token (fused on CUDA) and several, rows of whole 16-byte pieces and not, more experts than the
// fused kernel takes. Each case runs twice, so a launch that left its counter set would show.
TEST_P(BackendMoeRoute, NormMoeRouteIsTheRouterThenTheRouting) {
  Backend& b = *backend_;
  struct Case {
    int64_t experts, hidden;
    MoeRouting routing;
    int64_t tokens;
  };
  const MoeRouting v3{.n_group = 8, .topk_group = 4, .top_k = 8, .norm_topk_prob = true, .routed_scaling_factor = 2.5f};
  const MoeRouting v2_lite{.n_group = 1, .topk_group = 1, .top_k = 6, .norm_topk_prob = false};
  const Case cases[] = {
      {64, 2048, v2_lite, 1},  {256, 7168, v3, 1}, {128, 512, v3, 1}, {64, 2048, v2_lite, 3},
      {256, 1000, v3, 1},      {256, 100, v3, 2},
      {512, 256, {.n_group = 64, .topk_group = 7, .top_k = 13, .norm_topk_prob = true}, 1},
  };
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> norm_value(0.5f, 1.5f);
  std::uniform_int_distribution<int> bias_step(-16, 16);
  for (const Case& c : cases) {
    const MoeRouting& r = c.routing;
    SCOPED_TRACE(::testing::Message() << c.experts << " experts, hidden " << c.hidden << ", " << c.tokens
                                      << " tokens");
    std::vector<float> gate(static_cast<size_t>(c.experts * c.hidden)), norm(static_cast<size_t>(c.hidden)),
        bias(static_cast<size_t>(c.experts));
    for (float& v : gate) v = normal(rng) / std::sqrt(static_cast<float>(c.hidden));
    for (float& v : norm) v = norm_value(rng);
    for (float& v : bias) v = r.n_group > 1 ? bias_step(rng) / 64.0f : 0.0f;
    auto gate_t = b.Alloc(DType::kF32, c.experts, c.hidden), norm_t = b.Alloc(DType::kF32, 1, c.hidden),
         bias_t = b.Alloc(DType::kF32, 1, c.experts), x_t = b.Alloc(DType::kF32, c.tokens, c.hidden),
         logits_t = b.Alloc(DType::kF32, c.tokens, c.experts);
    ASSERT_TRUE(gate_t.ok() && norm_t.ok() && bias_t.ok() && x_t.ok() && logits_t.ok());
    ASSERT_TRUE(b.Upload(gate.data(), *gate_t).ok() && b.Upload(norm.data(), *norm_t).ok() &&
                b.Upload(bias.data(), *bias_t).ok());
    for (int round = 0; round < 2; ++round) {
      std::vector<float> x(static_cast<size_t>(c.tokens * c.hidden));
      for (float& v : x) v = normal(rng);
      ASSERT_TRUE(b.Upload(x.data(), *x_t).ok());
      // [0]: the one op, [1]: NormMatmul then MoeRoute.
      std::vector<int32_t> ids[2];
      std::vector<float> weights[2];
      for (int way = 0; way < 2; ++way) {
        auto ids_t = b.Alloc(DType::kI32, c.tokens, r.top_k), weights_t = b.Alloc(DType::kF32, c.tokens, r.top_k);
        ASSERT_TRUE(ids_t.ok() && weights_t.ok());
        if (way == 0) {
          ASSERT_TRUE(b.NormMoeRoute(*x_t, *norm_t, 1e-6f, *gate_t, *bias_t, r, *ids_t, *weights_t).ok());
        } else {
          ASSERT_TRUE(b.NormMatmul(*x_t, *norm_t, 1e-6f, *gate_t, nullptr, *logits_t).ok());
          ASSERT_TRUE(b.MoeRoute(*logits_t, *bias_t, r, *ids_t, *weights_t).ok());
        }
        ids[way].resize(static_cast<size_t>(c.tokens * r.top_k));
        weights[way].resize(ids[way].size());
        ASSERT_TRUE(b.Download(*ids_t, ids[way].data()).ok() && b.Download(*weights_t, weights[way].data()).ok());
      }
      std::vector<float> logits(static_cast<size_t>(c.tokens * c.experts));
      ASSERT_TRUE(b.Download(*logits_t, logits.data()).ok());
      for (int64_t t = 0; t < c.tokens; ++t) {
        const Route want = Reference(logits.data() + t * c.experts, bias, r);
        for (int64_t j = 0; j < r.top_k; ++j) {
          const size_t at = static_cast<size_t>(t * r.top_k + j);
          ASSERT_EQ(ids[0][at], ids[1][at]) << "round " << round << " token " << t << " choice " << j;
          ASSERT_EQ(weights[0][at], weights[1][at]) << "round " << round << " token " << t << " choice " << j;
          ASSERT_EQ(ids[0][at], want.ids[j]) << "round " << round << " token " << t << " choice " << j;
          ASSERT_NEAR(weights[0][at], want.weights[j], 1e-6 * (1.0 + want.weights[j]));
        }
      }
    }
  }
}

constexpr Target kRouteTargets[] = {kTargets[0], kTargets[1]};
INSTANTIATE_TEST_SUITE_P(Backends, BackendMoeRoute, ::testing::ValuesIn(kRouteTargets),
                         [](const ::testing::TestParamInfo<Target>& param) { return std::string(param.param.name); });

}  // namespace
}  // namespace ds::testing

// Speculative decoding: greedy output equals plain greedy decoding (transformers' greedy_tokens)
// for every fixture, every method that applies and k = 1..8; a draft that is the target accepts
// everything; the MTP proposer sees transformers' mtp_logits; a rejection leaves the cache as if
// the rejected tokens were never seen; sampled output has the plain sampling distribution.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/session.h"
#include "core/spec/speculator.h"
#include "ds_c.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

std::vector<int32_t> Ids(const RefTensor& t) { return std::vector<int32_t>(t.i64.begin(), t.i64.end()); }

int64_t VocabOf(const std::string& fixture) {
  return nlohmann::json::parse(ReadFile(FixturePath(fixture) + "/config.json"))["vocab_size"].get<int64_t>();
}
bool HasMtp(const std::string& fixture) {
  return nlohmann::json::parse(ReadFile(FixturePath(fixture) + "/config.json")).value("num_nextn_predict_layers", 0) > 0;
}

ds_engine* Open(const std::string& fixture, const Target& target = kTargets[0]) {
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.n_threads = 1;
  eo.backend = target.backend;
  eo.compute_dtype = target.compute;
  ds_engine* e = nullptr;
  EXPECT_EQ(ds_engine_open(FixturePath(fixture).c_str(), &eo, &e), DS_OK) << ds_last_error();
  return e;
}

struct Decoded {
  std::vector<int32_t> tokens;
  ds_session_stats stats{};
};

Decoded Decode(ds_engine* target, const std::vector<int32_t>& prompt, size_t n, int method, int k, ds_engine* draft,
           float temperature = 0, uint64_t seed = 0, int top_k = 0) {
  ds_session_options so;
  ds_session_options_init(&so);
  so.speculative_method = method;
  so.draft_tokens = k;
  so.draft_engine = draft;
  so.temperature = temperature;
  so.seed = seed;
  so.top_k = top_k;
  ds_session* s = nullptr;
  Decoded run;
  if (ds_session_create(target, &so, &s) != DS_OK) {
    ADD_FAILURE() << ds_last_error();
    return run;
  }
  EXPECT_EQ(ds_session_append(s, prompt.data(), prompt.size()), DS_OK) << ds_last_error();
  for (size_t i = 0; i < n; ++i) {
    int32_t t;
    if (ds_session_next_token(s, &t) != DS_OK) {
      ADD_FAILURE() << ds_last_error();
      break;
    }
    run.tokens.push_back(t);
  }
  EXPECT_EQ(ds_session_n_tokens(s), prompt.size() + run.tokens.size());
  run.stats.struct_size = sizeof run.stats;
  EXPECT_EQ(ds_session_stats_get(s, &run.stats), DS_OK);
  ds_session_close(s);
  return run;
}

// On each backend: where it computes in f32, the tokens are transformers' greedy_tokens; in bf16
// they are the same engine's plain greedy tokens (its rounding may flip a near-tie the reference
// resolves the other way, and speculation must reproduce it, not the reference).
class Speculative : public ::testing::TestWithParam<FixtureAndTarget> {};

TEST_P(Speculative, GreedyOutputIsPlainGreedyForEveryMethodAndK) {
  const auto& [fixture, backend] = GetParam();
  DS_SKIP_IF_NO_DEVICE(backend);
  const std::vector<int32_t> prompt = Ids(LoadReference(fixture, "input_ids"));
  std::vector<int32_t> expected = Ids(LoadReference(fixture, "greedy_tokens"));
  ds_engine* target = Open(fixture, backend);
  ASSERT_NE(target, nullptr);
  if (!backend.exact_tokens) expected = Decode(target, prompt, expected.size(), DS_SPECULATIVE_NONE, 4, nullptr).tokens;
  // Drafts: the target itself, and another fixture with the same vocabulary if there is one.
  std::vector<std::pair<std::string, ds_engine*>> drafts{{fixture, target}};
  for (const auto& other : ListModelFixtures())
    if (other != fixture && VocabOf(other) == VocabOf(fixture)) {
      drafts.emplace_back(other, Open(other, backend));
      break;
    }
  for (int k = 1; k <= 8; ++k) {
    EXPECT_EQ(Decode(target, prompt, expected.size(), DS_SPECULATIVE_NGRAM, k, nullptr).tokens, expected)
        << fixture << " ngram k=" << k;
    for (const auto& [name, draft] : drafts) {
      const Decoded run = Decode(target, prompt, expected.size(), DS_SPECULATIVE_DRAFT, k, draft);
      EXPECT_EQ(run.tokens, expected) << fixture << " draft " << name << " k=" << k;
      EXPECT_GT(run.stats.target_passes, 0u);
      if (draft == target) {  // a draft that is the target is always right
        EXPECT_EQ(run.stats.accepted_tokens, run.stats.drafted_tokens) << fixture << " k=" << k;
        EXPECT_GT(run.stats.mean_accepted_length, std::min<double>(k, 2.0) - 1e-9) << fixture << " k=" << k;
      }
    }
    if (HasMtp(fixture)) {
      const Decoded run = Decode(target, prompt, expected.size(), DS_SPECULATIVE_MTP, k, nullptr);
      EXPECT_EQ(run.tokens, expected) << fixture << " mtp k=" << k;
      EXPECT_GT(run.stats.drafted_tokens, 0u);
    }
  }
  for (auto& [name, draft] : drafts)
    if (draft != target) ds_engine_close(draft);
  ds_engine_close(target);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Speculative,
                         ::testing::Combine(::testing::ValuesIn(ListModelFixtures()), ::testing::ValuesIn(kTargets)),
                         FixtureAndTargetName);

TEST(SpeculativeMtp, ProposerSeesTransformersMtpLogits) {
  const std::string fixture = "deepseek_v3_mtp";
  const RefTensor mtp_logits = LoadReference(fixture, "mtp_logits");
  ASSERT_TRUE(mtp_logits.present);
  auto engine = Engine::Open(FixturePath(fixture), EngineOptions{.n_threads = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  SessionOptions options;
  auto spec = std::make_shared<SpeculativeOptions>();
  spec->method = SpeculativeMethod::kMtp;
  spec->k = 3;
  options.speculative = spec;
  auto session = Session::Create(*engine, options);
  ASSERT_TRUE(session.ok()) << session.status();
  const std::vector<int32_t> prompt = Ids(LoadReference(fixture, "input_ids"));
  ASSERT_TRUE((*session)->Append(prompt).ok());
  ASSERT_TRUE((*session)->NextToken().ok());  // the first step feeds the whole prompt to the MTP layer
  const std::vector<float>* logits = MtpLogitsForTest((*session)->speculator()->proposer());
  ASSERT_NE(logits, nullptr);
  const int64_t V = mtp_logits.shape[1], rows = mtp_logits.shape[0];
  ASSERT_GE(static_cast<int64_t>(logits->size()), rows * V);
  for (int64_t i = 0; i < rows; ++i) {
    const double err = RelativeError(logits->data() + i * V, mtp_logits.f32.data() + i * V, V);
    EXPECT_LT(err, 1e-4) << "mtp position " << i << " relative error " << err;
  }
}

// After rejections, the session's cache is that of a session that never saw the rejected tokens:
// its next logits equal a plain session's fed the same accepted tokens. On the f32 targets (bf16
// GEMMs round differently for different row counts, so a plain prefill is not bit-comparable).
class SpeculativeRollback : public ::testing::TestWithParam<Target> {};

TEST_P(SpeculativeRollback, CacheAfterRejectionsEqualsAPlainSession) {
  DS_SKIP_IF_NO_DEVICE(GetParam());
  ds_engine* target = Open("deepseek_v3_tiny", GetParam());
  ds_engine* draft = Open("llama_tiny", GetParam());  // a different model: most drafts are rejected
  ASSERT_TRUE(target && draft);
  const std::vector<int32_t> prompt = Ids(LoadReference("deepseek_v3_tiny", "input_ids"));
  ds_session_options so;
  ds_session_options_init(&so);
  so.speculative_method = DS_SPECULATIVE_DRAFT;
  so.draft_tokens = 5;
  so.draft_engine = draft;
  ds_session* spec = nullptr;
  ds_session* plain = nullptr;
  ASSERT_EQ(ds_session_create(target, &so, &spec), DS_OK);
  ASSERT_EQ(ds_session_create(target, nullptr, &plain), DS_OK);
  ASSERT_EQ(ds_session_append(spec, prompt.data(), prompt.size()), DS_OK);
  std::vector<int32_t> all = prompt;
  for (int i = 0; i < 20; ++i) {
    int32_t t;
    ASSERT_EQ(ds_session_next_token(spec, &t), DS_OK);
    all.push_back(t);
  }
  ds_session_stats st;
  st.struct_size = sizeof st;
  ASSERT_EQ(ds_session_stats_get(spec, &st), DS_OK);
  EXPECT_LT(st.accepted_tokens, st.drafted_tokens);  // there were rejections to roll back
  // Compare at the last token handed out: truncate drops what was decided ahead.
  ASSERT_EQ(ds_session_truncate(spec, all.size()), DS_OK);
  ASSERT_EQ(ds_session_append(plain, all.data(), all.size()), DS_OK);
  const float *a = nullptr, *b = nullptr;
  size_t V = 0;
  ASSERT_EQ(ds_session_logits(spec, &a, &V), DS_OK);
  ASSERT_EQ(ds_session_logits(plain, &b, nullptr), DS_OK);
  EXPECT_LT(RelativeError(a, b, V), 1e-5);
  // And both go on the same way.
  for (int i = 0; i < 6; ++i) {
    int32_t x, y;
    ASSERT_EQ(ds_session_next_token(spec, &x), DS_OK);
    ASSERT_EQ(ds_session_next_token(plain, &y), DS_OK);
    EXPECT_EQ(x, y) << "step " << i;
  }
  ds_session_close(spec);
  ds_session_close(plain);
  ds_engine_close(draft);
  ds_engine_close(target);
}
std::string TargetName(const ::testing::TestParamInfo<Target>& info) { return info.param.name; }
INSTANTIATE_TEST_SUITE_P(F32Targets, SpeculativeRollback, ::testing::Values(kTargets[0], kTargets[1]), TargetName);

// Sampling: the distribution of the second and third sampled tokens (the first ones that depend
// on accepting or rejecting drafts) with speculation equals plain sampling's. A two-sample
// chi-square test over a fixed set of seeds; the threshold is the 0.1% critical value (the
// Wilson-Hilferty approximation), so a correct implementation fails it with probability 0.001 for
// a random seed set, and never for this fixed one.
TEST(SpeculativeSampling, DistributionMatchesPlainSampling) {
  ds_engine* target = Open("deepseek_v3_tiny");
  ds_engine* draft = Open("llama_tiny");
  const std::vector<int32_t> prompt = Ids(LoadReference("deepseek_v3_tiny", "input_ids"));
  constexpr int kRuns = 1500;
  std::map<std::pair<int32_t, int>, std::pair<int, int>> counts;  // (token, position) -> (plain, spec)
  int64_t drafted = 0, accepted = 0;
  for (int r = 0; r < kRuns; ++r) {
    const Decoded plain = Decode(target, prompt, 3, DS_SPECULATIVE_NONE, 4, nullptr, 1.0f, 1000 + r, 6);
    const Decoded spec = Decode(target, prompt, 3, DS_SPECULATIVE_DRAFT, 3, draft, 1.0f, 500000 + r, 6);
    for (int pos = 1; pos < 3; ++pos) {
      ++counts[{plain.tokens[pos], pos}].first;
      ++counts[{spec.tokens[pos], pos}].second;
    }
    drafted += spec.stats.drafted_tokens;
    accepted += spec.stats.accepted_tokens;
  }
  ASSERT_GT(accepted, 0);
  ASSERT_LT(accepted, drafted);  // both branches of the rule were taken
  // Categories with few expected counts are pooled into one.
  double chi2 = 0;
  int df = -1, pooled_a = 0, pooled_b = 0;
  for (const auto& [key, ab] : counts) {
    const auto [a, b] = ab;
    if (a + b < 10) {
      pooled_a += a;
      pooled_b += b;
      continue;
    }
    chi2 += std::pow(a - b, 2) / (a + b);  // equal sample sizes
    ++df;
  }
  if (pooled_a + pooled_b > 0) {
    chi2 += std::pow(pooled_a - pooled_b, 2) / (pooled_a + pooled_b);
    ++df;
  }
  ASSERT_GT(df, 2);
  const double z = 3.090;  // one-sided 0.1%
  const double critical = df * std::pow(1 - 2.0 / (9 * df) + z * std::sqrt(2.0 / (9 * df)), 3);
  EXPECT_LT(chi2, critical) << "chi-square " << chi2 << " with " << df << " degrees of freedom";
  std::printf("speculative sampling: chi-square %.1f, %d degrees of freedom, 0.1%% critical value %.1f; "
              "%lld of %lld drafts accepted\n", chi2, df, critical, static_cast<long long>(accepted),
              static_cast<long long>(drafted));
  ds_engine_close(draft);
  ds_engine_close(target);
}

TEST(SpeculativeOptions, BadOptionsAreClearErrors) {
  ds_engine* target = Open("deepseek_v3_tiny");
  ds_engine* other_vocab = Open("deepseek_v3_vocab_bf16");
  ds_session_options so;
  ds_session_options_init(&so);
  ds_session* s = nullptr;
  so.speculative_method = DS_SPECULATIVE_DRAFT;
  EXPECT_EQ(ds_session_create(target, &so, &s), DS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("draft engine"), std::string::npos) << ds_last_error();
  so.draft_engine = other_vocab;
  EXPECT_EQ(ds_session_create(target, &so, &s), DS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("vocabulary"), std::string::npos) << ds_last_error();
  so.speculative_method = DS_SPECULATIVE_MTP;
  EXPECT_EQ(ds_session_create(target, &so, &s), DS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("next-token-prediction"), std::string::npos) << ds_last_error();
  so.speculative_method = DS_SPECULATIVE_NGRAM;
  so.draft_tokens = 0;
  EXPECT_EQ(ds_session_create(target, &so, &s), DS_ERR_INVALID_ARGUMENT);
  so.speculative_method = 42;
  so.draft_tokens = 4;
  EXPECT_EQ(ds_session_create(target, &so, &s), DS_ERR_INVALID_ARGUMENT);
  ds_engine_close(other_vocab);
  ds_engine_close(target);
}

}  // namespace
}  // namespace ds::testing

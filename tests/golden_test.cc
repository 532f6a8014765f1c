// Golden tests: every model folder in the fixtures (discovered, not listed) against what
// Hugging Face transformers computed for it, on every backend and precision. Logits and greedy
// decoding go through the public C ABI; final hidden states and the MTP layer through the C++
// engine they expose. Where no CUDA device is present the CUDA cases skip, saying so.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <ostream>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/arch/ops.h"
#include "core/engine.h"
#include "core/sampling/sampler.h"
#include "core/session.h"
#include "ds_c.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

TEST(Fixtures, FolderHoldsModels) {
  ASSERT_TRUE(std::filesystem::is_directory(FixturesDir()))
      << "no fixtures at " << FixturesDir() << " (set DS_FIXTURES_DIR)";
  EXPECT_GE(ListModelFixtures().size(), 1u);
}

class Golden : public ::testing::TestWithParam<FixtureAndTarget> {
 protected:
  void SetUp() override {
    DS_SKIP_IF_NO_DEVICE(target_);
    input_ids_ = LoadReference(fixture_, "input_ids");
    ASSERT_TRUE(input_ids_.present) << fixture_ << ": reference has no input_ids";
    for (int64_t id : input_ids_.i64) prompt_.push_back(static_cast<int32_t>(id));
    ds_engine_options eo;
    ds_engine_options_init(&eo);
    eo.n_threads = 2;
    eo.backend = target_.backend;
    eo.compute_dtype = target_.compute;
    ASSERT_EQ(ds_engine_open(FixturePath(fixture_).c_str(), &eo, &engine_), DS_OK) << ds_last_error();
  }
  void TearDown() override {
    ds_engine_close(engine_);
    if (errors_.empty()) return;
    std::sort(errors_.begin(), errors_.end());
    EXPECT_LT(errors_[errors_.size() / 2], target_.tolerance)
        << fixture_ << ": median relative error over " << errors_.size() << " rows (max " << errors_.back() << ")";
  }

  // One row's relative error: every row within tolerance when exact, else the median (TearDown).
  void ExpectClose(const float* got, const float* want, size_t n, const std::string& what) {
    const double err = RelativeError(got, want, n);
    if (target_.exact_tokens) {
      EXPECT_LT(err, target_.tolerance) << fixture_ << " " << what << " relative error " << err;
    } else {
      errors_.push_back(err);
    }
  }

  ds_session* NewSession(bool logits_all = false) {
    ds_session_options so;
    ds_session_options_init(&so);
    so.logits_all = logits_all;
    ds_session* s = nullptr;
    EXPECT_EQ(ds_session_create(engine_, &so, &s), DS_OK) << ds_last_error();
    return s;
  }

  // Decodes greedily from the session's state, checking each step's logits and token against
  // the reference from step `first` on (in bf16, feeding the reference's token instead).
  void ExpectGreedyFrom(ds_session* s, size_t first, const char* what) {
    const RefTensor tokens = LoadReference(fixture_, "greedy_tokens");
    const RefTensor logits = LoadReference(fixture_, "greedy_logits");
    ASSERT_TRUE(tokens.present && logits.present);
    const size_t V = static_cast<size_t>(logits.shape[1]);
    for (size_t i = first; i < tokens.i64.size(); ++i) {
      const float* got = nullptr;
      size_t n_vocab = 0;
      ASSERT_EQ(ds_session_logits(s, &got, &n_vocab), DS_OK) << ds_last_error();
      ASSERT_EQ(n_vocab, V);
      ExpectClose(got, logits.f32.data() + i * V, V, absl::StrCat(what, ": greedy step ", i));
      if (target_.exact_tokens) {
        int32_t token = -1;
        ASSERT_EQ(ds_session_next_token(s, &token), DS_OK) << ds_last_error();
        ASSERT_EQ(token, tokens.i64[i]) << fixture_ << " " << what << ": greedy step " << i;
      } else {
        const int32_t token = static_cast<int32_t>(tokens.i64[i]);
        ASSERT_EQ(ds_session_append(s, &token, 1), DS_OK) << ds_last_error();
      }
    }
  }

  const std::string fixture_ = std::get<0>(GetParam());
  const Target target_ = std::get<1>(GetParam());
  ds_engine* engine_ = nullptr;
  std::vector<double> errors_;  // bf16: every row's error, judged by the median
  RefTensor input_ids_;
  std::vector<int32_t> prompt_;
};

TEST_P(Golden, PrefillLogitsMatchTransformers) {
  const RefTensor ref = LoadReference(fixture_, "prefill_logits");
  ASSERT_TRUE(ref.present);
  ds_session* s = NewSession(/*logits_all=*/true);
  ASSERT_EQ(ds_session_append(s, prompt_.data(), prompt_.size()), DS_OK) << ds_last_error();
  const float* logits = nullptr;
  size_t rows = 0, V = 0;
  ASSERT_EQ(ds_session_all_logits(s, &logits, &rows, &V), DS_OK);
  ASSERT_EQ(rows, prompt_.size());
  ASSERT_EQ(static_cast<int64_t>(V), ref.shape[1]);
  for (size_t t = 0; t < rows; ++t) {
    ExpectClose(logits + t * V, ref.f32.data() + t * V, V, absl::StrCat("prefill position ", t));
  }
  ds_session_close(s);
}

// A prompt longer than a prefill chunk (512 tokens) with logits_all runs as several passes whose
// rows are gathered (the first left on the backend until read, the rest fetched as they come): each
// row must be, bit for bit, what appending the prompt in two parts at the chunk boundary gives.
TEST_P(Golden, AllLogitsOfAPromptLongerThanAChunk) {
  constexpr size_t kChunk = 512;
  std::vector<int32_t> prompt;
  while (prompt.size() < kChunk + 40) prompt.insert(prompt.end(), prompt_.begin(), prompt_.end());
  prompt.resize(kChunk + 40);
  auto all_logits = [&](std::initializer_list<std::pair<size_t, size_t>> parts) {
    ds_session* s = NewSession(/*logits_all=*/true);
    std::vector<float> rows;
    size_t V = 0;
    for (const auto& [begin, end] : parts) {
      EXPECT_EQ(ds_session_append(s, prompt.data() + begin, end - begin), DS_OK) << ds_last_error();
      const float* logits = nullptr;
      size_t n = 0;
      EXPECT_EQ(ds_session_all_logits(s, &logits, &n, &V), DS_OK);
      EXPECT_EQ(n, end - begin);
      rows.insert(rows.end(), logits, logits + n * V);
    }
    ds_session_close(s);
    return rows;
  };
  const std::vector<float> whole = all_logits({{0, prompt.size()}});
  const std::vector<float> parts = all_logits({{0, kChunk}, {kChunk, prompt.size()}});
  ASSERT_EQ(whole.size(), parts.size());
  for (size_t i = 0; i < whole.size(); ++i) ASSERT_EQ(whole[i], parts[i]) << "element " << i;
}

// The prompt fed one token at a time goes through the cache at every position and must give
// the prefill's logits.
TEST_P(Golden, StepDecodeOverThePromptMatchesPrefill) {
  const RefTensor ref = LoadReference(fixture_, "prefill_logits");
  ds_session* s = NewSession();
  const size_t V = static_cast<size_t>(ref.shape[1]);
  for (size_t t = 0; t < prompt_.size(); ++t) {
    ASSERT_EQ(ds_session_append(s, &prompt_[t], 1), DS_OK) << ds_last_error();
    const float* logits = nullptr;
    ASSERT_EQ(ds_session_logits(s, &logits, nullptr), DS_OK);
    ExpectClose(logits, ref.f32.data() + t * V, V, absl::StrCat("step position ", t));
  }
  ds_session_close(s);
}

TEST_P(Golden, GreedyTokensMatchWithTheKvCache) {
  ds_session* s = NewSession();
  ASSERT_EQ(ds_session_append(s, prompt_.data(), prompt_.size()), DS_OK) << ds_last_error();
  ExpectGreedyFrom(s, 0, "cached decode");
  ds_session_close(s);
}

TEST_P(Golden, GreedyTokensMatchAfterTruncate) {
  const RefTensor tokens = LoadReference(fixture_, "greedy_tokens");
  const size_t n = tokens.i64.size(), half = n / 2;
  ds_session* s = NewSession();
  ASSERT_EQ(ds_session_append(s, prompt_.data(), prompt_.size()), DS_OK) << ds_last_error();
  ExpectGreedyFrom(s, 0, "first run");
  ASSERT_EQ(ds_session_n_tokens(s), prompt_.size() + n);

  // Roll back to the middle of the answer and decode the rest again.
  ASSERT_EQ(ds_session_truncate(s, prompt_.size() + half), DS_OK) << ds_last_error();
  ASSERT_EQ(ds_session_n_tokens(s), prompt_.size() + half);
  ExpectGreedyFrom(s, half, "after truncate to the middle");

  // Back to the prompt alone, and the whole answer again.
  ASSERT_EQ(ds_session_truncate(s, prompt_.size()), DS_OK) << ds_last_error();
  ExpectGreedyFrom(s, 0, "after truncate to the prompt");

  // Reset, and the session is as new.
  ASSERT_EQ(ds_session_reset(s), DS_OK);
  ASSERT_EQ(ds_session_n_tokens(s), 0u);
  ASSERT_EQ(ds_session_append(s, prompt_.data(), prompt_.size()), DS_OK) << ds_last_error();
  ExpectGreedyFrom(s, 0, "after reset");
  ds_session_close(s);
}

// Through the C++ engine: the final hidden states and, where the checkpoint has one, the MTP
// layer as a speculative proposer will call it.
class GoldenEngine : public Golden {
 protected:
  void SetUp() override { DS_SKIP_IF_NO_DEVICE(target_); }
};

TEST_P(GoldenEngine, FinalHiddenAndMtpLogitsMatchTransformers) {
  const RefTensor ids = LoadReference(fixture_, "input_ids");
  const RefTensor final_hidden = LoadReference(fixture_, "final_hidden");
  const RefTensor mtp_logits = LoadReference(fixture_, "mtp_logits");
  EngineOptions options{.backend = target_.backend == DS_BACKEND_CUDA ? BackendKind::kCuda : BackendKind::kCpu,
                        .n_threads = 2,
                        .compute = target_.compute == DS_COMPUTE_BF16 ? ComputeType::kBF16 : ComputeType::kF32};
  auto engine = Engine::Open(FixturePath(fixture_), options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto session = Session::Create(*engine, SessionOptions{});
  ASSERT_TRUE(session.ok()) << session.status();
  std::vector<int32_t> prompt(ids.i64.begin(), ids.i64.end());
  ASSERT_TRUE((*session)->Append(prompt).ok());

  const int64_t T = static_cast<int64_t>(prompt.size()), H = (*engine)->config().hidden_size;
  const std::vector<float>& hidden = (*session)->hidden();
  ASSERT_EQ(hidden.size(), static_cast<size_t>(T * H));
  if (final_hidden.present) {
    for (int64_t t = 0; t < T; ++t) {
      ExpectClose(hidden.data() + t * H, final_hidden.f32.data() + t * H, H, absl::StrCat("final_hidden position ", t));
    }
  }

  const Model& model = (*engine)->model();
  const int64_t expected_mtp = (*engine)->config().num_nextn_predict_layers > 0 ? 1 : 0;
  EXPECT_EQ(model.n_mtp_layers(), expected_mtp) << fixture_;
  if (!mtp_logits.present) return;
  ASSERT_EQ(model.n_mtp_layers(), 1);
  // mtp_logits[i] = MTP(final_hidden[i], embed(input_ids[i + 1])) over positions 0 .. T-2.
  Backend& backend = (*engine)->backend();
  Ops ops(backend);
  Tensor h = ops.New(T - 1, H);
  ASSERT_TRUE(ops.ok());
  ASSERT_TRUE(backend.Upload(hidden.data(), h).ok());
  Tensor next = ops.Tokens(prompt.data() + 1, T - 1);
  KvCache mtp_cache(backend, 1, model.CacheWidths(), T);
  ASSERT_TRUE(mtp_cache.Reserve(T - 1, 0).ok());
  Tensor logits = model.MtpForward(ops, h, next, mtp_cache, 0);
  ASSERT_TRUE(ops.ok()) << ops.status();
  const int64_t V = mtp_logits.shape[1];
  std::vector<float> got(static_cast<size_t>((T - 1) * V));
  ASSERT_TRUE(backend.Download(logits, got.data()).ok());
  for (int64_t i = 0; i < T - 1; ++i) {
    ExpectClose(got.data() + i * V, mtp_logits.f32.data() + i * V, V, absl::StrCat("mtp position ", i));
  }
}

// Sampling at a temperature, alone and with min-p (where the host's sampler walks the vocabulary
// in id order), gives the tokens the host's sampler gives on the same logits with the same
// draws, on every backend: on CUDA the token is drawn on the device (Backend::SampleTokens) and
// only its id comes back. A second session fed the same tokens holds those logits on the host.
TEST_P(GoldenEngine, SampledTokensAreTheHostSamplersOnTheSameLogits) {
  EngineOptions options{.backend = target_.backend == DS_BACKEND_CUDA ? BackendKind::kCuda : BackendKind::kCpu,
                        .n_threads = 2,
                        .compute = target_.compute == DS_COMPUTE_BF16 ? ComputeType::kBF16 : ComputeType::kF32};
  auto engine = Engine::Open(FixturePath(fixture_), options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const int64_t V = (*engine)->config().vocab_size;
  const RefTensor ids = LoadReference(fixture_, "input_ids");
  const std::vector<int32_t> prompt(ids.i64.begin(), ids.i64.end());
  for (const SamplingParams& params : {SamplingParams{.temperature = 0.9f, .seed = 11},
                                       SamplingParams{.temperature = 1.2f, .min_p = 0.05f, .seed = 12}}) {
    SessionOptions sampling_options;
    sampling_options.sampling = params;
    auto sampled = Session::Create(*engine, sampling_options), mirror = Session::Create(*engine, SessionOptions{});
    ASSERT_TRUE(sampled.ok() && mirror.ok());
    ASSERT_TRUE((*sampled)->Append(prompt).ok());
    ASSERT_TRUE((*mirror)->Append(prompt).ok());
    Sampler host(params);
    for (int i = 0; i < 12; ++i) {
      const int32_t want = host.Sample((*mirror)->logits(), V, host.Draw());
      auto token = (*sampled)->NextToken();
      ASSERT_TRUE(token.ok()) << token.status();
      ASSERT_EQ(*token, want) << fixture_ << " T " << params.temperature << " min_p " << params.min_p << " step " << i;
      ASSERT_TRUE((*mirror)->Append({&want, 1}).ok());
    }
  }
}

// Recorded passes (CUDA graphs) replay the same kernels with the tokens and the position read
// from the device: a session that records must compute, bit for bit, what one on an engine
// that does not (DS_CUDA_GRAPHS=0) computes, across replays at new positions, passes of
// several rows, the cache moving to larger storage (past 256 tokens), and a truncation.
class Recording : public ::testing::TestWithParam<FixtureAndTarget> {
 protected:
  void SetUp() override { DS_SKIP_IF_NO_DEVICE(target_); }
  std::shared_ptr<Engine> Open(bool graphs) {
    if (!graphs) setenv("DS_CUDA_GRAPHS", "0", 1);
    auto engine = Engine::Open(FixturePath(fixture_),
                               {.backend = BackendKind::kCuda,
                                .compute = target_.compute == DS_COMPUTE_BF16 ? ComputeType::kBF16 : ComputeType::kF32});
    unsetenv("DS_CUDA_GRAPHS");
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *engine : nullptr;
  }
  const std::string fixture_ = std::get<0>(GetParam());
  const Target target_ = std::get<1>(GetParam());
};

TEST_P(Recording, RecordedPassesComputeWhatPlainPassesDo) {
  std::shared_ptr<Engine> plain_engine = Open(false), recorded_engine = Open(true);
  ASSERT_TRUE(plain_engine && recorded_engine);
  ASSERT_FALSE(plain_engine->backend().CanRecord());
  ASSERT_TRUE(recorded_engine->backend().CanRecord());
  auto plain = Session::Create(plain_engine, SessionOptions{});
  auto recorded = Session::Create(recorded_engine, SessionOptions{});
  ASSERT_TRUE(plain.ok() && recorded.ok());
  const RefTensor ids = LoadReference(fixture_, "input_ids");
  std::vector<int32_t> tokens(ids.i64.begin(), ids.i64.end());
  const int64_t V = plain_engine->config().vocab_size;

  // Feeds both sessions the same tokens (the plain one's greedy choice, in passes of 1 or 3)
  // and compares every pass's logits and hidden states.
  auto step = [&](int64_t n, const std::string& what) {
    std::vector<int32_t> next;
    for (int64_t i = 0; i < n; ++i) {
      const float* logits = (*plain)->logits();
      next.push_back(static_cast<int32_t>(std::max_element(logits, logits + V) - logits + i) % V);
    }
    ASSERT_TRUE((*plain)->Append(next).ok());
    ASSERT_TRUE((*recorded)->Append(next).ok());
    ASSERT_EQ((*plain)->hidden(), (*recorded)->hidden()) << what;
    ASSERT_EQ(0, std::memcmp((*plain)->logits(), (*recorded)->logits(), static_cast<size_t>(V) * sizeof(float)))
        << what;
  };
  ASSERT_TRUE((*plain)->Append(tokens).ok());
  ASSERT_TRUE((*recorded)->Append(tokens).ok());
  int64_t n_passes = 0;
  while ((*plain)->n_tokens() < 300) {
    step((*plain)->n_tokens() % 5 == 0 ? 3 : 1, absl::StrCat("at ", (*plain)->n_tokens()));
    if (HasFatalFailure()) return;
    ++n_passes;
  }
  ASSERT_TRUE((*plain)->Truncate(200).ok());  // runs token 199 again: one pass
  ASSERT_TRUE((*recorded)->Truncate(200).ok());
  ++n_passes;
  for (int i = 0; i < 10 && !HasFatalFailure(); ++i, ++n_passes) step(1, absl::StrCat("after truncation, at ", 200 + i));

  // Passes of 1 and 3 rows, each recorded in the 256- and again in the 512-token cache, after
  // running plainly once; every other pass is a replay.
  const RecordedPasses& passes = (*recorded)->recorded_passes();
  EXPECT_EQ(passes.n_recorded(), 4);
  EXPECT_EQ(passes.n_replayed(), n_passes - 4);
  EXPECT_EQ((*plain)->recorded_passes().n_replayed(), 0);
}

constexpr Target kCudaTargets[] = {kTargets[1], kTargets[2]};
INSTANTIATE_TEST_SUITE_P(Fixtures, Recording,
                         ::testing::Combine(::testing::ValuesIn(ListModelFixtures()), ::testing::ValuesIn(kCudaTargets)),
                         FixtureAndTargetName);


INSTANTIATE_TEST_SUITE_P(Fixtures, Golden,
                         ::testing::Combine(::testing::ValuesIn(ListModelFixtures()), ::testing::ValuesIn(kTargets)),
                         FixtureAndTargetName);
INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenEngine,
                         ::testing::Combine(::testing::ValuesIn(ListModelFixtures()), ::testing::ValuesIn(kTargets)),
                         FixtureAndTargetName);

}  // namespace
}  // namespace ds::testing

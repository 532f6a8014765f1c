// One engine, many sessions on many threads at once: each gets what it gets alone. And seeded
// sampling is reproducible through the ABI.
#include <thread>
#include <vector>

#include "ds_c.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

std::vector<int32_t> Generate(ds_engine* engine, const std::vector<int32_t>& prompt, size_t n, float temperature,
                              uint64_t seed) {
  ds_session_options so;
  ds_session_options_init(&so);
  so.temperature = temperature;
  so.seed = seed;
  ds_session* s = nullptr;
  std::vector<int32_t> out;
  if (ds_session_create(engine, &so, &s) != DS_OK) return out;
  if (ds_session_append(s, prompt.data(), prompt.size()) == DS_OK) {
    for (size_t i = 0; i < n; ++i) {
      int32_t t;
      if (ds_session_next_token(s, &t) != DS_OK) break;
      out.push_back(t);
    }
  }
  ds_session_close(s);
  return out;
}

TEST(Concurrency, SessionsOnThreadsMatchTheReference) {
  const std::string fixture = "deepseek_v3_tiny";
  const RefTensor ids = LoadReference(fixture, "input_ids"), greedy = LoadReference(fixture, "greedy_tokens");
  ASSERT_TRUE(ids.present && greedy.present);
  const std::vector<int32_t> prompt(ids.i64.begin(), ids.i64.end());
  const std::vector<int32_t> expected(greedy.i64.begin(), greedy.i64.end());
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.n_threads = 1;
  ds_engine* engine = nullptr;
  ASSERT_EQ(ds_engine_open(FixturePath(fixture).c_str(), &eo, &engine), DS_OK) << ds_last_error();

  const std::vector<int32_t> sampled_alone = Generate(engine, prompt, expected.size(), 0.8f, 1234);
  ASSERT_EQ(sampled_alone.size(), expected.size());

  constexpr int kThreads = 6;
  std::vector<std::vector<int32_t>> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      // Even threads decode greedily, odd ones sample with the seed used above.
      results[i] = i % 2 == 0 ? Generate(engine, prompt, expected.size(), 0.0f, 0)
                              : Generate(engine, prompt, expected.size(), 0.8f, 1234);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) EXPECT_EQ(results[i], i % 2 == 0 ? expected : sampled_alone) << "thread " << i;
  ds_engine_close(engine);
}

TEST(Sampling, SameSeedSameTokensThroughTheAbi) {
  const std::string fixture = "qwen2_tiny";
  const RefTensor ids = LoadReference(fixture, "input_ids");
  const std::vector<int32_t> prompt(ids.i64.begin(), ids.i64.end());
  ds_engine* engine = nullptr;
  ASSERT_EQ(ds_engine_open(FixturePath(fixture).c_str(), nullptr, &engine), DS_OK) << ds_last_error();
  const auto a = Generate(engine, prompt, 24, 1.0f, 7), b = Generate(engine, prompt, 24, 1.0f, 7);
  const auto c = Generate(engine, prompt, 24, 1.0f, 8);
  EXPECT_EQ(a.size(), 24u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ds_engine_close(engine);
}

}  // namespace
}  // namespace ds::testing

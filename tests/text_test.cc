// Text in, text out through the C ABI: the chat template against transformers'
// apply_chat_template, tokenization of the fixtures' prompt_text, and ds_session_generate's
// stops, streaming and cancellation.
#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "core/generate.h"
#include "core/tokenizer/chat_template.h"
#include "core/tokenizer/stream_decoder.h"
#include "ds_c.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

// The fixture with a real vocabulary and the DeepSeek-V3 tokenizer.
constexpr const char* kTextFixture = "deepseek_v3_vocab_bf16";

class Text : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(ds_engine_open(FixturePath(kTextFixture).c_str(), nullptr, &engine_), DS_OK) << ds_last_error();
  }
  void TearDown() override { ds_engine_close(engine_); }

  std::vector<int32_t> Tokenize(const std::string& text, bool add_special) {
    size_t n = 0;
    EXPECT_EQ(ds_tokenize(engine_, text.data(), text.size(), add_special, nullptr, 0, &n),
              text.empty() && !add_special ? DS_OK : DS_ERR_BUFFER_TOO_SMALL);
    std::vector<int32_t> ids(n);
    EXPECT_EQ(ds_tokenize(engine_, text.data(), text.size(), add_special, ids.data(), ids.size(), &n), DS_OK)
        << ds_last_error();
    return ids;
  }

  ds_session* NewSession(uint32_t n_ctx = 0) {
    ds_session_options so;
    ds_session_options_init(&so);
    so.n_ctx = n_ctx;
    ds_session* s = nullptr;
    EXPECT_EQ(ds_session_create(engine_, &so, &s), DS_OK) << ds_last_error();
    return s;
  }

  ds_engine* engine_ = nullptr;
};

struct Collected {
  std::string text, reasoning;
  std::vector<int32_t> tokens;
  int stop_after = -1;  // stop once this many distinct tokens were seen
};

int Collect(void* user, const char* piece, size_t len, int32_t token, uint32_t flags) {
  auto* c = static_cast<Collected*>(user);
  (flags & DS_PIECE_REASONING ? c->reasoning : c->text).append(piece, len);
  if (c->tokens.empty() || c->tokens.back() != token) c->tokens.push_back(token);
  return c->stop_after >= 0 && static_cast<int>(c->tokens.size()) >= c->stop_after;
}

TEST_F(Text, ChatTemplateMatchesTransformers) {
  const auto cases = nlohmann::json::parse(ReadFile(FixturePath("tokenizer") + "/chat_cases.json"));
  ASSERT_GT(cases["cases"].size(), 0u);
  for (const auto& c : cases["cases"]) {
    std::vector<std::string> roles, contents;
    for (const auto& m : c["messages"]) {
      roles.push_back(m["role"]);
      contents.push_back(m["content"]);
    }
    std::vector<ds_chat_message> messages;
    for (size_t i = 0; i < roles.size(); ++i) messages.push_back({roles[i].c_str(), contents[i].c_str()});
    size_t len = 0;
    ASSERT_EQ(ds_chat_apply(engine_, messages.data(), messages.size(), c["add_generation_prompt"].get<bool>(), nullptr,
                            0, &len),
              DS_ERR_BUFFER_TOO_SMALL);
    std::string text(len, '\0');
    ASSERT_EQ(ds_chat_apply(engine_, messages.data(), messages.size(), c["add_generation_prompt"].get<bool>(),
                            text.data(), text.size(), &len),
              DS_OK)
        << ds_last_error();
    EXPECT_EQ(text, c["text"].get<std::string>());
    EXPECT_EQ(Tokenize(text, /*add_special=*/false), c["ids"].get<std::vector<int32_t>>()) << text;
  }
}

TEST(ChatTemplate, R1OpensThinkingAndDropsEarlierReasoning) {
  const ChatTemplate r1(ChatTemplate::Style::kDeepseekR1);
  auto text = r1.Apply({{"user", "2+2?"}, {"assistant", "<think>\nadd\n</think>\n\n4"}, {"user", "3+3?"}}, true);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text,
            "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜User｜>3+3?"
            "<｜Assistant｜><think>\n");
  EXPECT_FALSE(r1.Apply({{"narrator", "x"}}, false).ok());
}

// Fixtures that give their prompt as text: tokenizing it gives their input_ids, and generating
// from that text gives their greedy tokens.
TEST_F(Text, PromptTextTokenizesAndGeneratesAsTransformers) {
  const auto reference = nlohmann::json::parse(ReadFile(FixturePath(kTextFixture) + "/reference.json"));
  ASSERT_TRUE(reference["prompt_text"].is_string());
  const std::string prompt = reference["prompt_text"];
  const RefTensor ids = LoadReference(kTextFixture, "input_ids"), greedy = LoadReference(kTextFixture, "greedy_tokens");
  EXPECT_EQ(Tokenize(prompt, /*add_special=*/true), std::vector<int32_t>(ids.i64.begin(), ids.i64.end()));

  ds_session* s = NewSession();
  ds_generate_params p;
  ds_generate_params_init(&p);
  p.prompt_text = prompt.data();
  p.prompt_text_len = prompt.size();
  p.add_special = 1;
  p.max_tokens = static_cast<uint32_t>(greedy.i64.size());
  Collected c;
  ds_generate_result r;
  r.struct_size = sizeof r;
  ASSERT_EQ(ds_session_generate(s, &p, Collect, &c, &r), DS_OK) << ds_last_error();
  EXPECT_EQ(r.stop_reason, DS_STOP_MAX_TOKENS);
  EXPECT_EQ(r.n_prompt_tokens, ids.i64.size());
  EXPECT_EQ(r.n_generated_tokens, greedy.i64.size());
  EXPECT_EQ(c.tokens, std::vector<int32_t>(greedy.i64.begin(), greedy.i64.end()));
  // The streamed text is the decode of the tokens (no special tokens among them to hide).
  size_t len = 0;
  std::string decoded(4096, '\0');
  ASSERT_EQ(ds_detokenize(engine_, c.tokens.data(), c.tokens.size(), decoded.data(), decoded.size(), &len), DS_OK);
  decoded.resize(len);
  EXPECT_EQ(c.text + c.reasoning, decoded);
  ds_session_close(s);
}

// Generates `n` tokens from a fixed prompt and returns what was streamed.
Collected GenerateAll(ds_session* s, const ds_generate_params& p) {
  Collected c;
  EXPECT_EQ(ds_session_generate(s, &p, Collect, &c, nullptr), DS_OK) << ds_last_error();
  return c;
}

TEST_F(Text, StopStringIsMatchedAcrossTokensAndNotEmitted) {
  const std::string prompt = "Once upon a time";
  ds_generate_params p;
  ds_generate_params_init(&p);
  p.prompt_text = prompt.data();
  p.prompt_text_len = prompt.size();
  p.max_tokens = 24;
  ds_session* s = NewSession();
  const Collected full = GenerateAll(s, p);
  ASSERT_GE(full.text.size(), 8u);
  ds_session_close(s);

  // A stop string that starts inside one token's text and ends in a later one's.
  size_t cut = full.text.size() / 2;
  while (cut > 0 && (static_cast<uint8_t>(full.text[cut]) & 0xc0) == 0x80) --cut;
  std::string stop = full.text.substr(cut, 6);
  while (!stop.empty() && (static_cast<uint8_t>(stop.back()) & 0xc0) == 0x80) stop.pop_back();
  const char* stops[] = {stop.c_str()};
  p.stop_strings = stops;
  p.n_stop_strings = 1;
  s = NewSession();
  ds_generate_result r;
  r.struct_size = sizeof r;
  Collected c;
  ASSERT_EQ(ds_session_generate(s, &p, Collect, &c, &r), DS_OK);
  EXPECT_EQ(r.stop_reason, DS_STOP_STOP_STRING);
  EXPECT_EQ(c.text, full.text.substr(0, full.text.find(stop)));
  ds_session_close(s);
}

TEST_F(Text, CallbackStopsMaxTokensAndContextFull) {
  const std::vector<int32_t> prompt = Tokenize("Hello", true);
  ds_generate_params p;
  ds_generate_params_init(&p);
  p.prompt_ids = prompt.data();
  p.n_prompt_ids = prompt.size();
  ds_generate_result r;
  r.struct_size = sizeof r;

  ds_session* s = NewSession();
  Collected c;
  c.stop_after = 3;
  ASSERT_EQ(ds_session_generate(s, &p, Collect, &c, &r), DS_OK);
  EXPECT_EQ(r.stop_reason, DS_STOP_CALLBACK);
  EXPECT_EQ(r.n_generated_tokens, 3u);
  EXPECT_EQ(ds_session_n_tokens(s), prompt.size() + 3);
  ds_session_close(s);

  s = NewSession(static_cast<uint32_t>(prompt.size() + 5));
  ASSERT_EQ(ds_session_generate(s, &p, nullptr, nullptr, &r), DS_OK) << ds_last_error();
  EXPECT_EQ(r.stop_reason, DS_STOP_CONTEXT_FULL);
  EXPECT_EQ(r.n_generated_tokens, 5u);
  EXPECT_EQ(ds_session_n_tokens(s), prompt.size() + 5);
  ds_session_close(s);

  // Continuing a session: no prompt, just more tokens.
  s = NewSession();
  p.max_tokens = 2;
  ASSERT_EQ(ds_session_generate(s, &p, nullptr, nullptr, &r), DS_OK);
  ds_generate_params more;
  ds_generate_params_init(&more);
  more.max_tokens = 3;
  ASSERT_EQ(ds_session_generate(s, &more, nullptr, nullptr, &r), DS_OK) << ds_last_error();
  EXPECT_EQ(r.stop_reason, DS_STOP_MAX_TOKENS);
  EXPECT_EQ(ds_session_n_tokens(s), prompt.size() + 5);
  ds_session_close(s);
}

struct Slow {
  std::atomic<int> tokens{0};
};

int SlowPiece(void* user, const char*, size_t, int32_t, uint32_t) {
  ++static_cast<Slow*>(user)->tokens;
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return 0;
}

TEST_F(Text, CancelFromAnotherThread) {
  const std::vector<int32_t> prompt = Tokenize("Hello", true);
  ds_generate_params p;
  ds_generate_params_init(&p);
  p.prompt_ids = prompt.data();
  p.n_prompt_ids = prompt.size();
  p.max_tokens = 100000;
  ds_session* s = NewSession(4096);
  Slow slow;
  std::thread canceller([&] {
    while (slow.tokens < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ds_session_cancel(s);
  });
  ds_generate_result r;
  r.struct_size = sizeof r;
  ASSERT_EQ(ds_session_generate(s, &p, SlowPiece, &slow, &r), DS_OK) << ds_last_error();
  canceller.join();
  EXPECT_EQ(r.stop_reason, DS_STOP_CANCELLED);
  EXPECT_GE(r.n_generated_tokens, 3u);
  EXPECT_LT(r.n_generated_tokens, 1000u);
  // The session goes on after a cancel.
  p.n_prompt_ids = 0;
  p.max_tokens = 1;
  ASSERT_EQ(ds_session_generate(s, &p, nullptr, nullptr, &r), DS_OK);
  EXPECT_EQ(r.stop_reason, DS_STOP_MAX_TOKENS);
  ds_session_close(s);
}

TEST_F(Text, StreamingNeverSplitsACharacter) {
  // Tokens that each hold part of a character come out as whole characters only.
  const std::string text = "🐋深度求索🐋";
  const std::vector<int32_t> ids = Tokenize(text, false);
  const Tokenizer* tokenizer = nullptr;
  std::string streamed;
  {
    auto engine = Engine::Open(FixturePath(kTextFixture), {});
    ASSERT_TRUE(engine.ok());
    tokenizer = *(*engine)->tokenizer();
    StreamDecoder decoder(*tokenizer, false);
    for (int32_t id : ids) {
      auto piece = decoder.Push(id);
      ASSERT_TRUE(piece.ok());
      EXPECT_EQ(CompleteUtf8Prefix(*piece), piece->size());
      streamed += *piece;
    }
    EXPECT_EQ(decoder.Flush(), "");
  }
  EXPECT_EQ(streamed, text);
}

TEST(TextGate, HoldsPrefixesSplitsMarkersAndStops) {
  std::vector<std::pair<std::string, uint32_t>> out;
  auto emit = [&](absl::string_view s, uint32_t f) { out.emplace_back(std::string(s), f); };
  TextGate gate({"STOP"}, /*in_reasoning=*/false);
  EXPECT_FALSE(gate.Feed("ab<thi", emit));
  EXPECT_FALSE(gate.Feed("nk>why</th", emit));
  EXPECT_FALSE(gate.Feed("ink>ok ST", emit));
  EXPECT_TRUE(gate.Feed("OP never", emit));
  std::string answer, reasoning;
  for (const auto& [s, f] : out) (f & kPieceReasoning ? reasoning : answer) += s;
  EXPECT_EQ(answer, "abok ");
  EXPECT_EQ(reasoning, "<think>why</think>");

  out.clear();
  TextGate open({}, /*in_reasoning=*/true);  // R1's prompt opened the block
  EXPECT_FALSE(open.Feed("step 1</think>answer", emit));
  open.Flush(emit);
  ASSERT_GE(out.size(), 3u);
  EXPECT_EQ(out.front(), std::make_pair(std::string("step 1"), kPieceReasoning));
  EXPECT_EQ(out.back(), std::make_pair(std::string("answer"), 0u));
}

TEST(TextApi, NoTokenizerIsAClearError) {
  ds_engine* engine = nullptr;
  ASSERT_EQ(ds_engine_open(FixturePath("llama_tiny").c_str(), nullptr, &engine), DS_OK);
  size_t n = 0;
  EXPECT_EQ(ds_tokenize(engine, "hi", 2, 0, nullptr, 0, &n), DS_ERR_NOT_FOUND);
  EXPECT_NE(std::string(ds_last_error()).find("tokenizer.json"), std::string::npos) << ds_last_error();
  ds_model_info info;
  info.struct_size = sizeof info;
  ASSERT_EQ(ds_engine_info(engine, &info), DS_OK);
  EXPECT_EQ(info.has_tokenizer, 0);
  ds_engine_close(engine);
}

}  // namespace
}  // namespace ds::testing

namespace ds::testing {
namespace {

TEST(Utf8, InvalidBytesBecomeReplacementCharactersAndPartialOnesWait) {
  std::string out;
  EXPECT_EQ(AppendValidUtf8("a\x80" "b\xe4\xb8", /*final=*/false, out), 3u);  // the 2 bytes of 中 wait
  EXPECT_EQ(out, "a\xEF\xBF\xBD" "b");
  out.clear();
  EXPECT_EQ(AppendValidUtf8("\xe4\xb8\xad\xc0\xaf", /*final=*/true, out), 5u);
  EXPECT_EQ(out, "\xe4\xb8\xad\xEF\xBF\xBD\xEF\xBF\xBD");  // 中, then an overlong pair
  out.clear();
  AppendValidUtf8("\xed\xa0\x80z\xe4\xb8", /*final=*/true, out);  // a surrogate, then a cut-off sequence
  EXPECT_EQ(out, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz\xEF\xBF\xBD\xEF\xBF\xBD");
}

}  // namespace
}  // namespace ds::testing

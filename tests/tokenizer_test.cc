// The tokenizer against Hugging Face tokenizers' own output for the DeepSeek-V3 tokenizer.json:
// every case of fixtures/tokenizer/tokenizer_cases.json, ids exact and decode exact.
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

const Tokenizer& DeepseekTokenizer() {
  static const auto tokenizer = [] {
    auto t = Tokenizer::Load(FixturePath("tokenizer"));
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }();
  return *tokenizer;
}

TEST(Tokenizer, EveryFixtureCaseMatchesHuggingFace) {
  const auto cases = nlohmann::json::parse(ReadFile(FixturePath("tokenizer") + "/tokenizer_cases.json"));
  ASSERT_GT(cases["cases"].size(), 0u);
  const Tokenizer& tok = DeepseekTokenizer();
  for (const auto& c : cases["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    auto ids = tok.Encode(text, /*add_special=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, expected) << "text: " << text;
    auto decoded = tok.Decode(expected, /*keep_special=*/true);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c["decoded"].get<std::string>()) << "ids of: " << text;
  }
}

TEST(Tokenizer, SpecialTokensAndBos) {
  const Tokenizer& tok = DeepseekTokenizer();
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  auto ids = tok.Encode("<｜User｜>Hi<｜Assistant｜>", /*add_special=*/true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{0, 128803, 23166, 128804}));  // chat_cases.json
  // BOS is special and hidden; the role markers are added tokens that tokenizer.json does not
  // mark special, so Hugging Face's skip_special_tokens keeps them, and so do we.
  EXPECT_FALSE(tok.IsSpecial(128803));
  auto hidden = tok.Decode(*ids, /*keep_special=*/false);
  ASSERT_TRUE(hidden.ok());
  EXPECT_EQ(*hidden, "<｜User｜>Hi<｜Assistant｜>");
  auto shown = tok.Decode(*ids, /*keep_special=*/true);
  EXPECT_EQ(*shown, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>");
}

TEST(Tokenizer, InvalidUtf8IsAnErrorNamingTheByte) {
  const Tokenizer& tok = DeepseekTokenizer();
  for (const std::string& bad : {std::string("ab\xff"), std::string("\xc0\xaf"), std::string("x\xed\xa0\x80"),
                                std::string("\xe4\xb8")}) {
    auto ids = tok.Encode(bad, false);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(ids.status().message().find("UTF-8"), absl::string_view::npos);
  }
}

TEST(Tokenizer, TokenBytesCanEndInsideACharacter) {
  const Tokenizer& tok = DeepseekTokenizer();
  // Each token's bytes, concatenated, are the text, even where a token splits a character.
  const std::string text = "深度求索 🐋 naïve";
  auto ids = tok.Encode(text, false);
  ASSERT_TRUE(ids.ok());
  std::string joined;
  for (int32_t id : *ids) joined += *tok.TokenBytes(id);
  EXPECT_EQ(joined, text);
  EXPECT_FALSE(tok.TokenBytes(-1).ok());
  // The model's padding ids past the tokenizer decode to nothing (found by the soak test).
  EXPECT_EQ(*tok.TokenBytes(129107), "");
  EXPECT_EQ(*tok.Decode({19923, 129107, 14}, true), "Hello,");
}

TEST(Tokenizer, RejectsMalformedFiles) {
  EXPECT_EQ(Tokenizer::FromJson("[]", "t.json").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Tokenizer::FromJson(R"({"model":{"type":"Unigram"}})", "t.json").status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Tokenizer::FromJson(R"({"model":{"type":"BPE","vocab":{"a":0}}})", "t.json").status().code(),
            absl::StatusCode::kDataLoss);  // no byte-level alphabet
}

}  // namespace
}  // namespace ds::testing

namespace ds::testing {
namespace {

// A Qwen2-style tokenizer.json (NFC normalizer, its own regex, ignore_merges as Llama 3 has),
// built from the DeepSeek file: nothing about DeepSeek's file is assumed.
TEST(Tokenizer, NormalizerAndIgnoreMergesFromTheFile) {
  auto j = nlohmann::json::parse(ReadFile(FixturePath("tokenizer") + "/tokenizer.json"));
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"},
                           {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                           {"behavior", "Isolated"},
                           {"invert", false}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  auto tok = Tokenizer::FromJson(j.dump(), "qwen-like.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // NFC: "e" + combining acute is "é", one code point, so both spellings tokenize alike.
  EXPECT_EQ(*(*tok)->Encode("caf\xc3\xa9", false), *(*tok)->Encode("cafe\xcc\x81", false));
  // Digits one by one under this regex (DeepSeek's splits them in threes).
  EXPECT_EQ((*tok)->Encode("2024", false)->size(), 4u);
  EXPECT_EQ(DeepseekTokenizer().Encode("2024", false)->size(), 2u);

  j["model"]["ignore_merges"] = true;
  auto llama_like = Tokenizer::FromJson(j.dump(), "llama-like.json");
  ASSERT_TRUE(llama_like.ok());
  EXPECT_EQ(*(*llama_like)->Encode("Hello world", false), *(*tok)->Encode("Hello world", false));

  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_EQ(Tokenizer::FromJson(j.dump(), "t.json").status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace ds::testing

namespace ds::testing {
namespace {

// Found by fuzz_tokenizer_json: a Split regex that matches the empty string at the end of a
// piece made the empty-match step read past it.
TEST(Tokenizer, RegexWithEmptyMatchesIsSafe) {
  auto j = nlohmann::json::parse(ReadFile(FixturePath("tokenizer") + "/tokenizer.json"));
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "x*"}}}, {"behavior", "Isolated"}, {"invert", false}};
  auto tok = Tokenizer::FromJson(j.dump(), "empty-match.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("abxxc", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*(*tok)->Decode(*ids, true), "abxxc");
}

}  // namespace
}  // namespace ds::testing

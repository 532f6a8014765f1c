// Differential test of the tokenizer against an independent implementation (transformers.js's
// port, @lenml/tokenizers, run by node): thousands of generated strings — mixed scripts, digits,
// whitespace runs, emoji, combining marks, special tokens inside text — must tokenize to the
// same ids. Prints the first mismatches and "N passed, N failed".
//
// usage: tokenizer_diff WORK_DIR   (WORK_DIR holds encode.mjs and its node_modules)
// DS_TOKENIZER_DIFF_STRINGS (default 2000) and DS_TOKENIZER_DIFF_SEED (default 1) widen the run.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/utf8.h"
#include "nlohmann/json.hpp"
#include "tests/fixtures.h"

namespace {

using ds::AppendUtf8;
using ds::testing::ReadFile;
using ds::testing::WriteFile;

// Fragments a string is built from, by kind.
const std::vector<std::vector<std::string>> kFragments = {
    {"hello", "World", "The", "capital", "DeepSeek", "R1", "MoE", "naïve", "café", "don't", "it's", "we'll", "I'M",
     "x", "a", "ABC", "camelCase", "snake_case", "https://example.com/a?b=c", "user@mail.org", "C++", "e.g."},
    {"0", "7", "42", "123", "1234", "12345", "3.14159", "-42", "1e10", "2024-01-01", "1,000,000", "0x1F", "٣٤٥", "१२३",
     "½", "Ⅻ", "①"},
    {" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n ", "\t\t", "    \n", "\u00a0", "\u3000", "\u2003", " \u00a0 "},
    {"!", "?", ".", ",", ";", ":", "'", "\"", "(", ")", "[", "]", "{", "}", "-", "_", "/", "\\", "@", "#", "$", "%",
     "^", "&", "*", "+", "=", "<", ">", "|", "~", "`", "...", "!?", "—", "–", "«»", "“”", "¿", "¡", "、", "。", "「」",
     "！", "？"},
    {"深度求索", "中文分词", "测试", "人工智能", "ひらがな", "カタカナ", "日本語", "한국어", "привет", "Москва", "مرحبا",
     "שלום", "नमस्ते", "สวัสดี", "αβγδ", "Ελλάδα", "ქართული", "Türkçe", "Việt Nam", "ＡＢＣ１２３", "ﬁ", "∑∫√",
     "€£¥₹"},
    {"🐋", "👍", "👍🏽", "👨‍👩‍👧", "🇫🇷", "😀😃", "❤️", "✨", "🤖", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠀀", "\u200b", "\u200d"},
    {"e\u0301", "n\u0303", "a\u0308\u0304", "\u0301", "ก\u0e48", "क\u094d\u0937"},
    {"<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User", "｜>", "<think>",
     "</think>", "<｜tool▁sep｜>", "<|im_start|>"},
};

// Whether PCRE2's Unicode tables know the code point. Debian 12's PCRE2 (10.42) has Unicode 14;
// node's ICU and Hugging Face's Oniguruma know Unicode 15, whose new characters (e.g. U+1F774)
// PCRE2 sees as unassigned, so a space before one splits differently. That is a known
// limitation (README), not what this test is for: such code points are not generated.
bool KnownToPcre2(uint32_t cp) {
  static pcre2_code* unassigned = [] {
    int error;
    PCRE2_SIZE offset;
    return pcre2_compile(reinterpret_cast<PCRE2_SPTR>("^\\p{Cn}$"), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                         &error, &offset, nullptr);
  }();
  static pcre2_match_data* match = pcre2_match_data_create(4, nullptr);
  std::string s;
  AppendUtf8(cp, s);
  return pcre2_match(unassigned, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, match, nullptr) < 0;
}

// A random valid code point from the assigned-ish ranges (no surrogates, no U+0085, whose
// \s-ness JavaScript's regex and Hugging Face's disagree on: not ours to decide here).
uint32_t RandomCodePoint(std::mt19937_64& rng) {
  static const std::pair<uint32_t, uint32_t> ranges[] = {
      {0x20, 0x7e},       {0xa1, 0x2ff},     {0x370, 0x52f},     {0x590, 0x6ff},   {0x900, 0xdff},
      {0x1100, 0x11ff},   {0x2000, 0x206f},  {0x2190, 0x2bff},   {0x3000, 0x30ff}, {0x4e00, 0x9fff},
      {0xac00, 0xd7a3},   {0xff00, 0xffef},  {0x1f300, 0x1faff}, {0x20000, 0x2a6df}};
  while (true) {
    const auto& [lo, hi] = ranges[rng() % std::size(ranges)];
    const uint32_t cp = lo + static_cast<uint32_t>(rng() % (hi - lo + 1));
    if (KnownToPcre2(cp)) return cp;
  }
}

std::string RandomString(std::mt19937_64& rng) {
  std::string s;
  const int parts = 1 + static_cast<int>(rng() % 12);
  for (int i = 0; i < parts; ++i) {
    if (rng() % 6 == 0) {
      const int n = 1 + static_cast<int>(rng() % 6);
      for (int k = 0; k < n; ++k) AppendUtf8(RandomCodePoint(rng), s);
    } else {
      const auto& kind = kFragments[rng() % kFragments.size()];
      s += kind[rng() % kind.size()];
    }
    if (rng() % 3 == 0) s += ' ';
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s WORK_DIR\n", argv[0]);
    return 2;
  }
  const std::string work = argv[1];
  const char* count_env = std::getenv("DS_TOKENIZER_DIFF_STRINGS");
  const char* seed_env = std::getenv("DS_TOKENIZER_DIFF_SEED");
  const int count = count_env ? std::atoi(count_env) : 2000;
  std::mt19937_64 rng(seed_env ? std::strtoull(seed_env, nullptr, 10) : 1);

  auto tokenizer = ds::Tokenizer::Load(ds::testing::FixturePath("tokenizer"));
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "tokenizer_diff: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  std::vector<std::string> texts;
  for (int i = 0; i < count; ++i) texts.push_back(RandomString(rng));
  WriteFile(work + "/texts.json", nlohmann::json(texts).dump());
  const std::string command = "node '" + work + "/encode.mjs' '" + work + "/texts.json' '" + work + "/ids.json'";
  if (std::system(command.c_str()) != 0) {
    std::fprintf(stderr, "tokenizer_diff: '%s' failed\n", command.c_str());
    return 1;
  }
  const auto expected = nlohmann::json::parse(ReadFile(work + "/ids.json"), nullptr, false);
  if (!expected.is_array() || expected.size() != texts.size()) {
    std::fprintf(stderr, "tokenizer_diff: node wrote no usable ids\n");
    return 1;
  }
  int passed = 0, failed = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = (*tokenizer)->Encode(texts[i], /*add_special=*/false);
    const auto want = expected[i].get<std::vector<int32_t>>();
    if (ids.ok() && *ids == want) {
      ++passed;
      continue;
    }
    if (++failed <= 10) {
      std::fprintf(stderr, "MISMATCH %s\n  ds:   %s\n  peer: %s\n", nlohmann::json(texts[i]).dump().c_str(),
                   ids.ok() ? nlohmann::json(*ids).dump().c_str() : std::string(ids.status().message()).c_str(),
                   nlohmann::json(want).dump().c_str());
    }
  }
  std::printf("tokenizer_diff: %d strings against @lenml/tokenizers\n%d passed, %d failed\n", count, passed, failed);
  return failed == 0 ? 0 : 1;
}

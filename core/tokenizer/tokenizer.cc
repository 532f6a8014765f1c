#include "core/tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/model/text_file.h"
#include "core/tokenizer/stream_decoder.h"
#include "core/tokenizer/utf8.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace ds {
namespace {

using json = nlohmann::json;

// GPT-2's pattern, which ByteLevel applies itself when its use_regex is true.
constexpr const char* kByteLevelPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the rest for 256 + n.
std::vector<uint32_t> ByteLevelAlphabet() {
  std::vector<uint32_t> map(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    map[b] = printable ? b : next++;
  }
  return map;
}

// bos_token / eos_token in tokenizer_config.json: a string or an AddedToken object.
std::string TokenContent(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

struct Tokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view text, const std::string& path) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  DS_RETURN_IF_ERROR(t->Parse(text, path));
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const std::string path = (fs::path(model_dir) / "tokenizer.json").string();
  DS_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  DS_ASSIGN_OR_RETURN(auto tokenizer, FromJson(text, path));
  const std::string config_path = (fs::path(model_dir) / "tokenizer_config.json").string();
  if (auto config_text = ReadTextFile(config_path); config_text.ok()) {
    const json config = json::parse(*config_text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object())
      return FormatError(absl::StrCat(config_path, ": not a JSON object"));
    if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean())
      tokenizer->add_bos_ = config["add_bos_token"].get<bool>();
    if (config.contains("bos_token"))
      if (auto id = tokenizer->TokenId(TokenContent(config["bos_token"]))) tokenizer->bos_id_ = *id;
    if (config.contains("eos_token"))
      if (auto id = tokenizer->TokenId(TokenContent(config["eos_token"]))) tokenizer->eos_id_ = *id;
  }
  return tokenizer;
}

absl::Status Tokenizer::Parse(absl::string_view text, const std::string& path) {
  const json j = json::parse(text.data(), text.data() + text.size(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return FormatError(absl::StrCat(path, ": not a JSON object"));
  auto fail = [&path](absl::string_view why) { return FormatError(absl::StrCat(path, ": ", why)); };
  auto unsupported = [&path](absl::string_view why) {
    return absl::UnimplementedError(absl::StrCat(path, ": ", why));
  };

  // model: BPE vocab and merges
  if (!j.contains("model") || !j["model"].is_object()) return fail("missing 'model'");
  const json& model = j["model"];
  if (!model.contains("type") || model["type"] != "BPE") return unsupported("only BPE models are supported");
  if (model.contains("byte_fallback") && model["byte_fallback"].is_boolean() && model["byte_fallback"].get<bool>())
    return unsupported("byte_fallback BPE (sentencepiece style) is not supported");
  if (!model.contains("vocab") || !model["vocab"].is_object()) return fail("model.vocab must be an object");
  int64_t max_id = -1;
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_unsigned() || id.get<uint64_t>() > (1u << 24)) return fail(absl::StrCat("bad id for token '", token, "'"));
    max_id = std::max<int64_t>(max_id, id.get<int64_t>());
  }
  const json added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"] : json::array();
  for (const auto& a : added) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_unsigned() || a["id"].get<uint64_t>() > (1u << 24) ||
        !a.contains("content") || !a["content"].is_string() || a["content"].get<std::string>().empty())
      return fail("added_tokens entries need an id and a non-empty content");
    max_id = std::max<int64_t>(max_id, a["id"].get<int64_t>());
  }
  id_to_token_.assign(static_cast<size_t>(max_id + 1), "");
  special_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : model["vocab"].items()) {
    id_to_token_[id.get<size_t>()] = token;
    token_to_id_[token] = id.get<int32_t>();
  }
  for (const auto& a : added) {
    AddedToken t{a["content"].get<std::string>(), a["id"].get<int32_t>(),
                 a.contains("special") && a["special"].is_boolean() && a["special"].get<bool>()};
    id_to_token_[t.id] = t.content;
    token_to_id_[t.content] = t.id;
    special_[t.id] = t.special;
    added_.push_back(std::move(t));
  }
  std::stable_sort(added_.begin(), added_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  added_by_first_byte_.assign(256, {});
  for (const auto& a : added_) added_by_first_byte_[static_cast<uint8_t>(a.content[0])].push_back(&a);

  const std::vector<uint32_t> alphabet = ByteLevelAlphabet();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    AppendUtf8(alphabet[b], ch);
    const auto it = token_to_id_.find(ch);
    if (it == token_to_id_.end()) return fail(absl::StrCat("the vocabulary lacks the byte-level token for byte ", b));
    byte_token_[b] = it->second;
    char_to_byte_[alphabet[b]] = static_cast<uint8_t>(b);
  }

  if (model.contains("merges") && model["merges"].is_array()) {
    int32_t rank = 0;
    for (const auto& m : model["merges"]) {
      std::string left, right;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos) return fail(absl::StrCat("merge '", s, "' is not two tokens"));
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      } else {
        return fail("merges must be strings 'a b' or pairs [a, b]");
      }
      const auto l = token_to_id_.find(left), r = token_to_id_.find(right), merged = token_to_id_.find(left + right);
      if (l == token_to_id_.end() || r == token_to_id_.end() || merged == token_to_id_.end())
        return fail(absl::StrCat("merge '", left, " ", right, "' names a token outside the vocabulary"));
      const uint64_t key = (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
      merges_.emplace(key, std::make_pair(rank++, merged->second));
    }
  }

  ignore_merges_ = model.value("ignore_merges", false);

  // normalizer: none, NFC, or a Sequence of those
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    std::vector<json> normalizers{j["normalizer"]};
    if (j["normalizer"].is_object() && j["normalizer"].value("type", "") == "Sequence" &&
        j["normalizer"].contains("normalizers") && j["normalizer"]["normalizers"].is_array())
      normalizers = j["normalizer"]["normalizers"].get<std::vector<json>>();
    for (const auto& n : normalizers) {
      const std::string type = n.is_object() ? n.value("type", "?") : "?";
      if (type == "NFC") {
        nfc_ = true;
      } else {
        return unsupported(absl::StrCat("normalizer ", type, " is not supported (NFC is)"));
      }
    }
  }

  // pre_tokenizer: Split (Isolated) regexes, then ByteLevel
  std::vector<json> steps;
  if (j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object()) {
    const json& p = j["pre_tokenizer"];
    if (p.value("type", "") == "Sequence" && p.contains("pretokenizers") && p["pretokenizers"].is_array()) {
      for (const auto& s : p["pretokenizers"]) steps.push_back(s);
    } else {
      steps.push_back(p);
    }
  }
  std::vector<std::string> patterns;
  for (const auto& s : steps) {
    const std::string type = s.is_object() ? s.value("type", "") : "";
    if (type == "Split") {
      if (s.value("behavior", "") != "Isolated" || s.value("invert", false))
        return unsupported("only Split pre-tokenizers with behavior Isolated are supported");
      if (!s.contains("pattern") || !s["pattern"].is_object()) return fail("Split without a pattern");
      if (s["pattern"].contains("Regex") && s["pattern"]["Regex"].is_string()) {
        patterns.push_back(s["pattern"]["Regex"].get<std::string>());
      } else {
        return unsupported("Split with a String pattern is not supported");
      }
    } else if (type == "ByteLevel") {
      if (s.value("add_prefix_space", false)) return unsupported("ByteLevel with add_prefix_space is not supported");
      if (s.value("use_regex", true)) patterns.push_back(kByteLevelPattern);
    } else {
      return unsupported(absl::StrCat("pre-tokenizer '", type, "' is not supported (Split, ByteLevel are)"));
    }
  }
  for (const auto& pattern : patterns) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    auto regex = std::make_unique<Regex>();
    regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                &error, &offset, nullptr);
    if (!regex->code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      return fail(absl::StrCat("pre-tokenizer regex does not compile at offset ", offset, ": ",
                               reinterpret_cast<const char*>(message)));
    }
    pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
    splits_.push_back(std::move(regex));
  }
  return absl::OkStatus();
}

std::optional<int32_t> Tokenizer::TokenId(absl::string_view token) const {
  const auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
}

// Added tokens are matched in the raw text before anything else (longest first at the leftmost
// position); the text between them goes on to the pre-tokenizer. id -1 marks plain text.
void Tokenizer::SplitAdded(absl::string_view text, std::vector<std::pair<absl::string_view, int32_t>>& out) const {
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (const AddedToken* a : added_by_first_byte_[static_cast<uint8_t>(text[i])]) {
      if (text.compare(i, a->content.size(), a->content) == 0) {
        hit = a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > start) out.emplace_back(text.substr(start, i - start), -1);
    out.emplace_back(absl::string_view(), hit->id);
    i += hit->content.size();
    start = i;
  }
  if (start < text.size()) out.emplace_back(text.substr(start), -1);
}

void Tokenizer::EncodePiece(absl::string_view piece, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    std::string mapped;
    for (char c : piece) mapped += id_to_token_[byte_token_[static_cast<uint8_t>(c)]];
    if (const auto it = token_to_id_.find(mapped); it != token_to_id_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  for (char c : piece) symbols.push_back(byte_token_[static_cast<uint8_t>(c)]);
  // Merge the adjacent pair of lowest rank (the leftmost among equals) until none is left.
  while (symbols.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max(), merged = -1;
    size_t at = 0;
    for (size_t k = 0; k + 1 < symbols.size(); ++k) {
      const uint64_t key = (static_cast<uint64_t>(symbols[k]) << 32) | static_cast<uint32_t>(symbols[k + 1]);
      const auto it = merges_.find(key);
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        merged = it->second.second;
        at = k;
      }
    }
    if (merged < 0) break;
    symbols[at] = merged;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  ids.insert(ids.end(), symbols.begin(), symbols.end());
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text, bool add_special) const {
  if (const size_t bad = FindInvalidUtf8(text); bad != absl::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 at byte ", bad));
  std::vector<int32_t> ids;
  if (add_special && add_bos_ && bos_id_ >= 0) ids.push_back(bos_id_);
  std::vector<std::pair<absl::string_view, int32_t>> segments;
  SplitAdded(text, segments);

  std::vector<pcre2_match_data*> match_data;
  for (const auto& r : splits_) match_data.push_back(pcre2_match_data_create_from_pattern(r->code, nullptr));
  std::vector<absl::string_view> pieces, next;
  std::string normalized;
  for (auto [segment, id] : segments) {
    if (id >= 0) {
      ids.push_back(id);
      continue;
    }
    if (nfc_) {
      utf8proc_uint8_t* out = nullptr;
      const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(segment.data()),
                                              static_cast<utf8proc_ssize_t>(segment.size()), &out,
                                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
      if (n < 0) {
        for (auto* m : match_data) pcre2_match_data_free(m);
        return absl::InvalidArgumentError(absl::StrCat("NFC normalization failed: ", utf8proc_errmsg(n)));
      }
      normalized.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
      std::free(out);
      segment = normalized;
    }
    pieces.assign(1, segment);
    // Each Split (Isolated) cuts every piece into its matches and the gaps between them.
    for (size_t r = 0; r < splits_.size(); ++r) {
      next.clear();
      for (absl::string_view piece : pieces) {
        size_t pos = 0, search = 0;
        while (search < piece.size()) {
          const int rc = pcre2_match(splits_[r]->code, reinterpret_cast<PCRE2_SPTR>(piece.data()), piece.size(), search,
                                     PCRE2_NO_UTF_CHECK, match_data[r], nullptr);
          if (rc < 0) break;
          const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match_data[r]);
          if (ov[1] == ov[0]) {  // an empty match: step over one character
            if (ov[0] >= piece.size()) break;
            uint32_t cp;
            search = ov[0] + Utf8Next(piece, ov[0], &cp);
            continue;
          }
          if (ov[0] > pos) next.push_back(piece.substr(pos, ov[0] - pos));
          next.push_back(piece.substr(ov[0], ov[1] - ov[0]));
          pos = search = ov[1];
        }
        if (pos < piece.size()) next.push_back(piece.substr(pos));
      }
      pieces.swap(next);
    }
    for (absl::string_view piece : pieces) EncodePiece(piece, ids);
  }
  for (auto* m : match_data) pcre2_match_data_free(m);
  return ids;
}

absl::StatusOr<std::string> Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is negative"));
  // Models pad their vocabulary past the tokenizer's (DeepSeek-V3: 129280 rows, 128815 tokens);
  // such ids, and any other without a token, decode to nothing, as in Hugging Face.
  if (static_cast<size_t>(id) >= id_to_token_.size()) return std::string();
  const std::string& token = id_to_token_[id];
  // Byte-level characters map back to bytes; a token with any other character (an added token's
  // literal text) is its own UTF-8, as the ByteLevel decoder does.
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    uint32_t cp;
    i += Utf8Next(token, i, &cp);
    const auto it = char_to_byte_.find(cp);
    if (it == char_to_byte_.end()) return token;
    bytes += static_cast<char>(it->second);
  }
  return bytes;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids, bool keep_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (!keep_special && IsSpecial(id)) continue;
    DS_ASSIGN_OR_RETURN(std::string token, TokenBytes(id));
    bytes += token;
  }
  // Bytes that are not UTF-8 become U+FFFD, as Hugging Face's decode does.
  std::string out;
  AppendValidUtf8(bytes, /*final=*/true, out);
  return out;
}

}  // namespace ds

// Byte-level BPE as Hugging Face tokenizers runs it from a tokenizer.json: added/special tokens
// matched first, then the pre-tokenizer's Split regexes (PCRE2, from the file, nothing
// hard-coded), the ByteLevel byte-to-unicode map, and BPE merges by rank. Decoding maps the
// byte-level characters back to bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/tokenizer/utf8.h"

namespace ds {

class Tokenizer {
 public:
  // Reads <model_dir>/tokenizer.json and tokenizer_config.json (add_bos_token, bos/eos).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_dir);
  // Parses tokenizer.json text (tests, fuzzers); `path` names it in messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json, const std::string& path);
  ~Tokenizer();

  // Text (valid UTF-8, else InvalidArgument naming the byte) to ids; add_special prepends BOS
  // where the tokenizer config asks for it.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text, bool add_special) const;
  // Ids to text (invalid UTF-8 replaced by U+FFFD). Special tokens are dropped unless keep_special.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids, bool keep_special) const;
  // One token's bytes (may be part of a UTF-8 sequence); empty for an id the tokenizer does not
  // have (models pad their vocabulary), an error for a negative one.
  absl::StatusOr<std::string> TokenBytes(int32_t id) const;
  bool IsSpecial(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  std::optional<int32_t> TokenId(absl::string_view token) const;

 private:
  struct Regex;
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
  };
  Tokenizer();
  absl::Status Parse(absl::string_view json, const std::string& path);
  void SplitAdded(absl::string_view text, std::vector<std::pair<absl::string_view, int32_t>>& out) const;
  void EncodePiece(absl::string_view piece, std::vector<int32_t>& ids) const;

  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> special_;
  std::vector<AddedToken> added_;  // longest first
  std::vector<std::vector<const AddedToken*>> added_by_first_byte_;  // [256], longest first
  std::vector<std::unique_ptr<Regex>> splits_;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  int32_t byte_token_[256];  // id of each byte's byte-level character
  std::unordered_map<uint32_t, uint8_t> char_to_byte_;  // byte-level code point -> byte
  bool nfc_ = false;            // normalizer NFC (Qwen2)
  bool ignore_merges_ = false;  // a piece that is a whole vocabulary entry is taken as is (Llama 3)
  bool add_bos_ = false;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

}  // namespace ds

// Decoding that is safe to stream: a token that ends inside a UTF-8 sequence yields nothing
// until the sequence completes.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/tokenizer/tokenizer.h"

namespace ds {

class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool show_special) : tokenizer_(tokenizer), show_special_(show_special) {}

  // The text that token completes (possibly empty).
  absl::StatusOr<std::string> Push(int32_t id);
  // Whatever is still held (an incomplete sequence at the end), as U+FFFD per byte.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool show_special_;
  std::string pending_;
};

// Length of the longest prefix of s that ends on a UTF-8 character boundary with nothing cut.
size_t CompleteUtf8Prefix(const std::string& s);

}  // namespace ds

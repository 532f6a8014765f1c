// Decoding that is safe to stream: a token that ends inside a UTF-8 sequence yields nothing
// until the sequence completes.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/utf8.h"

namespace ds {

class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool show_special) : tokenizer_(tokenizer), show_special_(show_special) {}

  // The text that token completes (possibly empty).
  absl::StatusOr<std::string> Push(int32_t id);
  // Whatever is still held (an incomplete sequence at the end), as U+FFFD.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool show_special_;
  std::string pending_;
};


}  // namespace ds

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
  // Whatever is still held (an incomplete sequence at the end), as U+FFFD.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool show_special_;
  std::string pending_;
};

// Length of the longest prefix of s that ends on a UTF-8 character boundary with nothing cut.
size_t CompleteUtf8Prefix(const std::string& s);

// Appends bytes[0..) to out as valid UTF-8, each invalid byte becoming U+FFFD (as Hugging Face's
// lossy decode). Unless `final`, a trailing sequence that may still complete is left unread.
// Returns how many bytes were consumed.
size_t AppendValidUtf8(absl::string_view bytes, bool final, std::string& out);

}  // namespace ds

// UTF-8 helpers shared by the tokenizer, the stream decoder and the generation gate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace ds {

// The first invalid byte of s (overlong, surrogate, out of range, cut short), or npos.
size_t FindInvalidUtf8(absl::string_view s);

// Decodes the sequence at s[i] (s already validated) into *cp; returns its length.
size_t Utf8Next(absl::string_view s, size_t i, uint32_t* cp);

void AppendUtf8(uint32_t cp, std::string& out);

// Length of the longest prefix of s that ends on a UTF-8 character boundary with nothing cut.
size_t CompleteUtf8Prefix(const std::string& s);

// Appends bytes[0..) to out as valid UTF-8, each invalid byte becoming U+FFFD (as Hugging Face's
// lossy decode). Unless `final`, a trailing sequence that may still complete is left unread.
// Returns how many bytes were consumed.
size_t AppendValidUtf8(absl::string_view bytes, bool final, std::string& out);

}  // namespace ds

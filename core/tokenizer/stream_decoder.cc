#include "core/tokenizer/stream_decoder.h"

namespace ds {

size_t CompleteUtf8Prefix(const std::string& s) {
  // Look back at most 3 bytes for the start of the last sequence.
  size_t i = s.size();
  for (size_t back = 1; back <= 4 && back <= s.size(); ++back) {
    const auto b = static_cast<uint8_t>(s[s.size() - back]);
    if ((b & 0xc0) == 0x80) continue;  // a continuation byte
    const size_t need = b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 1;
    i = back >= need ? s.size() : s.size() - back;
    break;
  }
  return i;
}

absl::StatusOr<std::string> StreamDecoder::Push(int32_t id) {
  if (!show_special_ && tokenizer_.IsSpecial(id)) return std::string();
  auto bytes = tokenizer_.TokenBytes(id);
  if (!bytes.ok()) return bytes.status();
  pending_ += *bytes;
  const size_t n = CompleteUtf8Prefix(pending_);
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out;
  for (size_t i = 0; i < pending_.size(); ++i) out += "\xEF\xBF\xBD";
  pending_.clear();
  return out;
}

}  // namespace ds

#include "core/tokenizer/stream_decoder.h"

#include <cstdint>

namespace ds {

absl::StatusOr<std::string> StreamDecoder::Push(int32_t id) {
  if (!show_special_ && tokenizer_.IsSpecial(id)) return std::string();
  auto bytes = tokenizer_.TokenBytes(id);
  if (!bytes.ok()) return bytes.status();
  pending_ += *bytes;
  std::string out;
  pending_.erase(0, AppendValidUtf8(pending_, /*final=*/false, out));
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out;
  AppendValidUtf8(pending_, /*final=*/true, out);
  pending_.clear();
  return out;
}

}  // namespace ds

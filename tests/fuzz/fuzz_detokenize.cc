// Detokenize arbitrary id sequences (in and out of the vocabulary): an error for unknown ids,
// otherwise valid UTF-8, and a stream decoder that never emits a partial character.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/tokenizer/stream_decoder.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ds::Tokenizer& tokenizer = FixtureTokenizer();
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  // Mostly in range, so decoding gets exercised, with a few wild ids kept.
  for (auto& id : ids)
    if (id % 7 != 0) id = static_cast<int32_t>(static_cast<uint32_t>(id) % (tokenizer.vocab_size() + 2));
  auto text = tokenizer.Decode(ids, true);
  if (text.ok()) FUZZ_CHECK(ds::FindInvalidUtf8(*text) == std::string::npos);
  ds::StreamDecoder decoder(tokenizer, /*show_special=*/true);
  std::string streamed;
  bool ok = true;
  for (int32_t id : ids) {
    auto piece = decoder.Push(id);
    if (!piece.ok()) {
      ok = false;
      break;
    }
    FUZZ_CHECK(ds::FindInvalidUtf8(*piece) == std::string::npos);
    streamed += *piece;
  }
  if (ok) {
    streamed += decoder.Flush();
    FUZZ_CHECK(text.ok() && streamed == *text);
  }
  return 0;
}

// Tokenize arbitrary bytes with the DeepSeek tokenizer: invalid UTF-8 is an InvalidArgument
// error; valid text encodes and decodes back to itself exactly.
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ds::Tokenizer& tokenizer = FixtureTokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto ids = tokenizer.Encode(text, /*add_special=*/false);
  if (ds::FindInvalidUtf8(text) != std::string::npos) {
    FUZZ_CHECK(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(ids.ok());
  for (int32_t id : *ids) FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size());
  auto back = tokenizer.Decode(*ids, /*keep_special=*/true);
  FUZZ_CHECK(back.ok() && *back == text);
  return 0;
}

// tokenizer.json on arbitrary bytes: an error, or a tokenizer that encodes and decodes text.
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tokenizer = ds::Tokenizer::FromJson(std::string(reinterpret_cast<const char*>(data), size), "tokenizer.json");
  if (!tokenizer.ok()) return 0;
  for (const char* text : {"Hello, world! 123", "深度求索 🐋", "  \n\t x", "<｜User｜>hi"}) {
    auto ids = (*tokenizer)->Encode(text, true);
    if (!ids.ok()) continue;
    auto back = (*tokenizer)->Decode(*ids, true);
    FUZZ_CHECK(back.ok());
    FUZZ_CHECK(ds::FindInvalidUtf8(*back) == std::string::npos);
  }
  return 0;
}

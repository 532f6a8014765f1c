// model.safetensors.index.json on arbitrary bytes: an error or shard names inside the folder.
#include <cstdint>
#include <string>

#include "core/model/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto shards = ds::ParseShardIndex(std::string(reinterpret_cast<const char*>(data), size), "index.json");
  if (!shards.ok()) return 0;
  for (const auto& name : *shards) FUZZ_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "..");
  return 0;
}

// The safetensors header reader on arbitrary bytes: an error or tensors that lie inside the buffer.
#include <cstdint>

#include "core/model/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = ds::SafetensorsFile::FromBytes(data, size, "fuzz.safetensors");
  if (!file.ok()) return 0;
  for (const auto& t : (*file)->tensors()) {
    FUZZ_CHECK(t.data >= data && t.data + t.nbytes <= data + size);
    FUZZ_CHECK(static_cast<size_t>(t.numel()) * ds::StorageTypeSize(t.type) == t.nbytes);
    FUZZ_CHECK((*file)->Find(t.name) != nullptr);
  }
  return 0;
}

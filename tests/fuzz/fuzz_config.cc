// config.json on arbitrary bytes: an error, or a config whose sizes are positive and whose rope
// frequencies can be computed.
#include <cstdint>
#include <string>

#include "core/arch/rope.h"
#include "core/model/config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto c = ds::ParseModelConfig(std::string(reinterpret_cast<const char*>(data), size), "config.json");
  if (!c.ok()) return 0;
  FUZZ_CHECK(c->vocab_size > 0 && c->hidden_size > 0 && c->num_hidden_layers > 0);
  FUZZ_CHECK(c->num_key_value_heads > 0 && c->num_attention_heads % c->num_key_value_heads == 0);
  FUZZ_CHECK(c->head_dim > 0 && c->head_dim % 2 == 0);
  const auto freq = ds::ComputeRopeFrequencies(*c, c->head_dim);
  FUZZ_CHECK(freq.inv_freq.size() == static_cast<size_t>(c->head_dim / 2));
  return 0;
}

// Shared by the libFuzzer targets: the DeepSeek tokenizer from the fixtures, loaded once, and a
// check that aborts (so libFuzzer reports the input) when an invariant breaks.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "core/tokenizer/tokenizer.h"

#define FUZZ_CHECK(cond)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                       \
    }                                                                     \
  } while (0)

inline const ds::Tokenizer& FixtureTokenizer() {
  static const std::unique_ptr<ds::Tokenizer> tokenizer = [] {
    const char* env = std::getenv("DS_FIXTURES_DIR");
    const std::string dir = std::string(env && *env ? env : DS_FIXTURES_DIR) + "/tokenizer";
    auto t = ds::Tokenizer::Load(dir);
    if (!t.ok()) {
      std::fprintf(stderr, "cannot load the fixture tokenizer from %s\n", dir.c_str());
      std::abort();
    }
    return std::move(*t);
  }();
  return *tokenizer;
}

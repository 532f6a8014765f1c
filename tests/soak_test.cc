// Soak: thousands of session create/generate/close cycles on one engine, and engine open/close
// cycles, with the resident memory checked flat after a warm-up. Under AddressSanitizer (the CI's
// sanitizer build) LeakSanitizer also checks that nothing leaked at exit.
// DS_SOAK_CYCLES (default 1500) and DS_SOAK_ENGINE_CYCLES (default 40) set the length.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "ds_c.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

double ResidentMiB() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// Growth allowed after the warm-up: allocator arenas settle, nothing accumulates per cycle.
constexpr double kToleranceMiB = 8.0;

TEST(Soak, SessionCyclesKeepMemoryFlat) {
  const int cycles = EnvInt("DS_SOAK_CYCLES", 1500);
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.n_threads = 1;
  ds_engine* engine = nullptr;
  ASSERT_EQ(ds_engine_open(FixturePath("deepseek_v3_vocab_bf16").c_str(), &eo, &engine), DS_OK) << ds_last_error();
  const std::string prompt = "The capital of France is";
  const int warmup = std::min(100, cycles / 4);
  double warm = 0;
  for (int i = 0; i < cycles; ++i) {
    if (i == warmup) warm = ResidentMiB();
    ds_session_options so;
    ds_session_options_init(&so);
    so.temperature = 0.8f;
    so.seed = static_cast<uint64_t>(i);
    ds_session* s = nullptr;
    ASSERT_EQ(ds_session_create(engine, &so, &s), DS_OK);
    ds_generate_params p;
    ds_generate_params_init(&p);
    p.prompt_text = prompt.data();
    p.prompt_text_len = prompt.size();
    p.add_special = 1;
    p.max_tokens = 4;
    ASSERT_EQ(ds_session_generate(s, &p, nullptr, nullptr, nullptr), DS_OK) << ds_last_error();
    ds_session_close(s);
  }
  const double end = ResidentMiB();
  std::printf("soak: %d session cycles, resident %.1f MiB after warm-up, %.1f MiB at the end\n", cycles, warm, end);
  EXPECT_LT(end - warm, kToleranceMiB);
  ds_engine_close(engine);
}

TEST(Soak, EngineCyclesKeepMemoryFlat) {
  const int cycles = EnvInt("DS_SOAK_ENGINE_CYCLES", 40);
  const int warmup = std::min(5, cycles / 4);
  double warm = 0;
  for (int i = 0; i < cycles; ++i) {
    if (i == warmup) warm = ResidentMiB();
    ds_engine* engine = nullptr;
    ASSERT_EQ(ds_engine_open(FixturePath("deepseek_v3_tiny").c_str(), nullptr, &engine), DS_OK);
    ds_session* s = nullptr;
    ASSERT_EQ(ds_session_create(engine, nullptr, &s), DS_OK);
    const int32_t ids[] = {0, 5, 7};
    ASSERT_EQ(ds_session_append(s, ids, 3), DS_OK);
    ds_session_close(s);
    ds_engine_close(engine);
  }
  const double end = ResidentMiB();
  std::printf("soak: %d engine cycles, resident %.1f MiB after warm-up, %.1f MiB at the end\n", cycles, warm, end);
  EXPECT_LT(end - warm, kToleranceMiB);
}

}  // namespace
}  // namespace ds::testing

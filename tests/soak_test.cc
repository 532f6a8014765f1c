// Soak: thousands of session create/generate/close cycles on one engine, and engine open/close
// cycles, with the resident memory checked flat after a warm-up (8 MiB of slack for allocator
// arenas to settle). Under AddressSanitizer (the CI's
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

#if defined(__SANITIZE_ADDRESS__)
#define DS_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DS_UNDER_ASAN 1
#endif
#endif

namespace ds::testing {
namespace {

// Under AddressSanitizer the resident size includes its quarantine of freed memory (by design up
// to 256 MiB), so growth says nothing there; LeakSanitizer checks for leaks at exit instead.
void ExpectFlat(double warm, double end) {
#ifdef DS_UNDER_ASAN
  std::printf("soak: resident memory not checked under AddressSanitizer (LeakSanitizer runs at exit)\n");
#else
  EXPECT_LT(end - warm, 8.0) << "resident memory grew from " << warm << " to " << end << " MiB";
#endif
}

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
  ExpectFlat(warm, end);
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
  ExpectFlat(warm, end);
}

}  // namespace
}  // namespace ds::testing

// Speculative decoding, measured honestly (random weights cannot show real acceptance):
//  verify  TARGET               the cost of one pass over k+1 positions relative to one decode step
//  ngram   TARGET               plain vs n-gram decoding on a repetitive prompt
//  draft   TARGET DRAFT...      plain vs draft-model decoding for each draft (e.g. noisy copies)
// Each speculative figure prints beside the Leviathan et al. expected speedup
// (1 - a^(k+1)) / ((1 - a)(k c + 1)), with a the measured per-token acceptance rate and c the
// measured cost of a draft step relative to a target step. Written against ds_c.h only.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ds_c.h"

namespace {

using Clock = std::chrono::steady_clock;

void Check(ds_status s, const char* what) {
  if (s != DS_OK) {
    std::fprintf(stderr, "%s: %s: %s\n", what, ds_status_name(s), ds_last_error());
    std::exit(1);
  }
}

// $BACKEND: cpu (default) or cuda (bf16 compute).
ds_engine* Open(const char* dir, int threads) {
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.n_threads = threads;
  const char* backend = std::getenv("BACKEND");
  if (backend && std::strcmp(backend, "cuda") == 0) eo.backend = DS_BACKEND_CUDA;
  ds_engine* e = nullptr;
  Check(ds_engine_open(dir, &eo, &e), dir);
  return e;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<int32_t> RandomIds(ds_engine* e, size_t n, uint32_t seed) {
  ds_model_info info;
  info.struct_size = sizeof info;
  Check(ds_engine_info(e, &info), "info");
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % std::min<uint32_t>(info.n_vocab, 100000));
  return ids;
}

// Seconds of one pass over `n` new positions after a 512-token context, median of `reps`.
double PassSeconds(ds_session* s, const std::vector<int32_t>& context, size_t n, int reps) {
  std::vector<double> times;
  std::vector<int32_t> extra(n, context[1]);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    Check(ds_session_append(s, extra.data(), n), "append");
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    Check(ds_session_truncate(s, context.size()), "truncate");
  }
  return Median(times);
}

void Verify(const char* target_dir, int threads) {
  ds_engine* e = Open(target_dir, threads);
  ds_session_options so;
  ds_session_options_init(&so);
  so.n_ctx = 1024;
  ds_session* s = nullptr;
  Check(ds_session_create(e, &so, &s), "session");
  const std::vector<int32_t> context = RandomIds(e, 512, 1);
  Check(ds_session_append(s, context.data(), context.size()), "prefill");
  const double one = PassSeconds(s, context, 1, 5);
  std::printf("verify cost at 512 tokens of context (%s, %d threads): one decode step %.1f ms\n", target_dir, threads,
              one * 1e3);
  std::printf("  k   positions   ms/pass   relative to one step\n");
  for (int k = 1; k <= 8; ++k) {
    const double t = PassSeconds(s, context, k + 1, 5);
    std::printf("  %d   %9d   %7.1f   %.2f\n", k, k + 1, t * 1e3, t / one);
  }
  ds_session_close(s);
  ds_engine_close(e);
}

struct Outcome {
  double tokens_per_second = 0;
  ds_session_stats stats{};
};

Outcome Decode(ds_engine* target, const std::vector<int32_t>& prompt, int n, int method, int k, ds_engine* draft) {
  ds_session_options so;
  ds_session_options_init(&so);
  so.n_ctx = static_cast<uint32_t>(prompt.size() + n + 16);
  so.speculative_method = method;
  so.draft_tokens = k;
  so.draft_engine = draft;
  ds_session* s = nullptr;
  Check(ds_session_create(target, &so, &s), "session");
  Check(ds_session_append(s, prompt.data(), prompt.size()), "prefill");
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    int32_t t;
    Check(ds_session_next_token(s, &t), "decode");
  }
  Outcome o;
  o.tokens_per_second = n / std::chrono::duration<double>(Clock::now() - t0).count();
  o.stats.struct_size = sizeof o.stats;
  Check(ds_session_stats_get(s, &o.stats), "stats");
  ds_session_close(s);
  return o;
}

// Leviathan et al.: the expected speedup for acceptance rate a, k drafts, draft/target cost c.
double ExpectedSpeedup(double a, int k, double c) {
  const double tokens = a >= 1.0 ? k + 1 : (1 - std::pow(a, k + 1)) / (1 - a);
  return tokens / (k * c + 1);
}

// a from the measured mean accepted length L = (1 - a^(k+1)) / (1 - a), solved by bisection.
double AcceptanceRate(double mean_length, int k) {
  double lo = 0, hi = 1;
  for (int i = 0; i < 60; ++i) {
    const double a = (lo + hi) / 2;
    ((1 - std::pow(a, k + 1)) / (1 - a) < mean_length ? lo : hi) = a;
  }
  return (lo + hi) / 2;
}

void Report(const char* name, const Outcome& plain, const Outcome& spec, int k, double c) {
  const double length = spec.stats.mean_accepted_length;
  const double a = AcceptanceRate(length, k);
  std::printf("  %-28s %8.2f tok/s  x%.2f  (accepted length %.2f, a = %.2f, expected x%.2f at c = %.2f)\n", name,
              spec.tokens_per_second, spec.tokens_per_second / plain.tokens_per_second, length, a,
              ExpectedSpeedup(a, k, c), c);
}

void Ngram(const char* target_dir, int threads, int n, int k) {
  ds_engine* e = Open(target_dir, threads);
  // A prompt that repeats itself, as code editing does: most of the answer is in it.
  std::vector<int32_t> block = RandomIds(e, 48, 7), prompt;
  for (int i = 0; i < 4; ++i) prompt.insert(prompt.end(), block.begin(), block.end());
  const Outcome plain = Decode(e, prompt, n, DS_SPECULATIVE_NONE, k, nullptr);
  const Outcome spec = Decode(e, prompt, n, DS_SPECULATIVE_NGRAM, k, nullptr);
  std::printf("n-gram on a repetitive prompt (%s, %d tokens, k = %d): plain %.2f tok/s\n", target_dir, n, k,
              plain.tokens_per_second);
  Report("ngram", plain, spec, k, 0.0);
  ds_engine_close(e);
}

void Draft(const char* target_dir, const std::vector<const char*>& drafts, int threads, int n, int k) {
  ds_engine* e = Open(target_dir, threads);
  const std::vector<int32_t> prompt = RandomIds(e, 64, 3);
  const Outcome plain = Decode(e, prompt, n, DS_SPECULATIVE_NONE, k, nullptr);
  std::printf("draft models (%s, %d tokens, k = %d): plain %.2f tok/s\n", target_dir, n, k, plain.tokens_per_second);
  for (const char* dir : drafts) {
    ds_engine* d = Open(dir, threads);
    const Outcome alone = Decode(d, prompt, n, DS_SPECULATIVE_NONE, k, nullptr);
    const Outcome spec = Decode(e, prompt, n, DS_SPECULATIVE_DRAFT, k, d);
    Report(dir, plain, spec, k, plain.tokens_per_second / alone.tokens_per_second);
    ds_engine_close(d);
  }
  ds_engine_close(e);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s verify|ngram|draft TARGET [DRAFT...]   (env: THREADS, TOKENS, K, BACKEND=cpu|cuda)\n", argv[0]);
    return 2;
  }
  const int threads = std::getenv("THREADS") ? std::atoi(std::getenv("THREADS")) : 0;
  const int n = std::getenv("TOKENS") ? std::atoi(std::getenv("TOKENS")) : 64;
  const int k = std::getenv("K") ? std::atoi(std::getenv("K")) : 4;
  const std::string mode = argv[1];
  if (mode == "verify") Verify(argv[2], threads);
  else if (mode == "ngram") Ngram(argv[2], threads, n, k);
  else if (mode == "draft") Draft(argv[2], std::vector<const char*>(argv + 3, argv + argc), threads, n, k);
  else return 2;
  return 0;
}

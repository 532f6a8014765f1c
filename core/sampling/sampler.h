// Picks the next token from logits: greedy, or seeded sampling with temperature, top-k, top-p
// and min-p (applied in that order, as transformers' logits processors do).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "backends/backend.h"

namespace ds {

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  uint64_t seed = 0;
};

absl::Status ValidateSamplingParams(const SamplingParams& p);

// Index of the largest logit; the first one on ties (as torch.argmax).
int32_t Argmax(const float* logits, int64_t n);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  int32_t Sample(const float* logits, int64_t n);
  // Sample with the RNG's draw given: the 53-bit integer Draw returns, the uniform draw * 2^-53.
  // Sample(logits, n) is Sample(logits, n, Draw()) where it samples; a backend that samples
  // (Backend::SampleTokens) takes the same draw.
  int32_t Sample(const float* logits, int64_t n, uint64_t draw);
  uint64_t Draw() { return rng_() >> 11; }
  SamplingFilters filters() const {
    return {.temperature = params_.temperature, .top_k = params_.top_k, .top_p = params_.top_p, .min_p = params_.min_p};
  }
  // The distribution Sample draws from, after temperature, top-k, top-p and min-p (one-hot at
  // the argmax when greedy); speculative sampling compares these. And a draw from one.
  void Probabilities(const float* logits, int64_t n, std::vector<float>& p);
  int32_t SampleFrom(const std::vector<float>& p);
  double UniformDraw() { return Uniform(); }
  bool greedy() const { return params_.temperature <= 0.0f; }
  void Reseed(uint64_t seed) { rng_.seed(seed); }

 private:
  double Uniform();  // [0, 1), the same on every platform for a seed
  double UnsortedWeights(const float* logits, int64_t n);
  int32_t SampleUnsorted(const float* logits, int64_t n, double u);
  size_t SortedKept(const float* logits, int64_t n, std::vector<double>& p);
  size_t NucleusSize(const std::vector<double>& p, size_t n) const;

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
  std::vector<double> weights_;
};

}  // namespace ds

#include "core/sampling/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace ds {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (std::isnan(p.temperature)) return absl::InvalidArgumentError("temperature is NaN");
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    return absl::InvalidArgumentError(absl::StrCat("min_p must be in [0, 1], got ", p.min_p));
  return absl::OkStatus();
}

int32_t Argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

// top-p: the smallest prefix of sorted probabilities whose mass reaches top_p (at least one
// token; all n when it never does).
size_t Sampler::NucleusSize(const std::vector<double>& p, size_t n) const {
  double cumulative = 0;
  size_t n_keep = 0;
  while (n_keep < n) {
    cumulative += p[n_keep++];
    if (cumulative >= params_.top_p) break;
  }
  return n_keep;
}

double Sampler::Uniform() { return static_cast<double>(Draw()) * 0x1.0p-53; }

// Temperature (and min-p) alone need no ordering: weights_[i] = exp((logit_i - max) / T), zero
// below min-p's floor (and for NaN); returns their sum.
double Sampler::UnsortedWeights(const float* logits, int64_t n) {
  const float max_logit = logits[Argmax(logits, n)];
  // min-p keeps p_i >= min_p * p_max, that is logit_i >= max + T ln(min_p).
  const double floor = params_.min_p > 0.0f ? max_logit + params_.temperature * std::log(params_.min_p) : -INFINITY;
  weights_.resize(static_cast<size_t>(n));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    weights_[i] = logits[i] >= floor ? std::exp((logits[i] - max_logit) / params_.temperature) : 0.0;
    sum += weights_[i];
  }
  return sum;
}

// One pass for the weights, one to draw.
int32_t Sampler::SampleUnsorted(const float* logits, int64_t n, double u) {
  u *= UnsortedWeights(logits, n);
  int64_t last = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (weights_[i] == 0.0) continue;
    last = i;
    u -= weights_[i];
    if (u < 0) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);
}

// With top-k or top-p: candidates_[0, keep) are the kept tokens by logit, highest first (ties:
// lower id first, so runs are reproducible), p[i] their probabilities (over the top-k set, or
// over all n for top-p alone), after top-k, then top-p, then min-p. Only the kept prefix is sorted.
size_t Sampler::SortedKept(const float* logits, int64_t n, std::vector<double>& p) {
  const auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = static_cast<size_t>(n);
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    // The k best in one pass over the logits: a heap of k whose front is the worst kept, which
    // most logits fail to beat; then the k sorted.
    keep = static_cast<size_t>(params_.top_k);
    candidates_.clear();
    for (int64_t i = 0; i < n; ++i) {
      const std::pair<float, int32_t> c{logits[i], static_cast<int32_t>(i)};
      if (candidates_.size() < keep) {
        candidates_.push_back(c);
        std::push_heap(candidates_.begin(), candidates_.end(), by_logit);
      } else if (by_logit(c, candidates_.front())) {
        std::pop_heap(candidates_.begin(), candidates_.end(), by_logit);
        candidates_.back() = c;
        std::push_heap(candidates_.begin(), candidates_.end(), by_logit);
      }
    }
    std::sort_heap(candidates_.begin(), candidates_.end(), by_logit);
  } else {
    candidates_.resize(keep);
    for (int64_t i = 0; i < n; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
    if (params_.top_k > 0) std::sort(candidates_.begin(), candidates_.end(), by_logit);  // k >= n: all of them
  }
  if (params_.top_k > 0) {
    // Softmax of logit / temperature over the candidates.
    p.resize(keep);
    const double max_logit = candidates_[0].first;
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp((candidates_[i].first - max_logit) / params_.temperature);
    for (double& x : p) x /= sum;
    if (params_.top_p < 1.0f) keep = NucleusSize(p, keep);
  } else {
    // top-p alone: the softmax over every token, but only its nucleus sorted. Sort the best 256,
    // and four times more until the sorted prefix holds top_p of the mass (a trained model's
    // nucleus is usually small; sorting all 129280 logits took ~10 ms a token).
    const double max_logit = logits[Argmax(logits, n)];
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp((logits[i] - max_logit) / params_.temperature);
    for (size_t sorted = std::min<size_t>(256, keep);; sorted = std::min(keep, sorted * 4)) {
      std::partial_sort(candidates_.begin(), candidates_.begin() + sorted, candidates_.end(), by_logit);
      p.resize(sorted);
      double cumulative = 0;
      for (size_t i = 0; i < sorted; ++i) cumulative += p[i] = std::exp((candidates_[i].first - max_logit) / params_.temperature) / sum;
      if (cumulative >= params_.top_p || sorted == keep) {
        keep = NucleusSize(p, sorted);
        break;
      }
    }
  }
  // min-p: drop tokens less likely than min_p times the most likely one.
  if (params_.min_p > 0.0f) {
    const double threshold = params_.min_p * p[0];
    size_t n_keep = 1;
    while (n_keep < keep && p[n_keep] >= threshold) ++n_keep;
    keep = n_keep;
  }
  return keep;
}

int32_t Sampler::Sample(const float* logits, int64_t n) {
  if (params_.temperature <= 0.0f) return Argmax(logits, n);
  return Sample(logits, n, Draw());
}

int32_t Sampler::Sample(const float* logits, int64_t n, uint64_t draw) {
  if (params_.temperature <= 0.0f) return Argmax(logits, n);
  const double uniform = static_cast<double>(draw & ((uint64_t{1} << 53) - 1)) * 0x1.0p-53;
  if (params_.top_k == 0 && params_.top_p >= 1.0f) return SampleUnsorted(logits, n, uniform);
  std::vector<double> p;
  const size_t keep = SortedKept(logits, n, p);
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += p[i];
  double u = uniform * mass;
  for (size_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u < 0) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

// The same kept set and weights as Sample: a token's probability is its weight over the kept mass.
void Sampler::Probabilities(const float* logits, int64_t n, std::vector<float>& p) {
  p.assign(static_cast<size_t>(n), 0.0f);
  if (greedy()) {
    p[Argmax(logits, n)] = 1.0f;
    return;
  }
  if (params_.top_k == 0 && params_.top_p >= 1.0f) {
    const double sum = UnsortedWeights(logits, n);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(weights_[i] / sum);
    return;
  }
  std::vector<double> kept;
  const size_t keep = SortedKept(logits, n, kept);
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += kept[i];
  for (size_t i = 0; i < keep; ++i) p[candidates_[i].second] = static_cast<float>(kept[i] / mass);
}

int32_t Sampler::SampleFrom(const std::vector<float>& p) {
  double mass = 0;
  for (float x : p) mass += x;
  double u = Uniform() * mass;
  int32_t last = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0f) continue;
    last = static_cast<int32_t>(i);
    u -= p[i];
    if (u < 0) return last;
  }
  return last;
}

}  // namespace ds

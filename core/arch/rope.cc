#include "core/arch/rope.h"

#include <algorithm>
#include <cmath>

namespace ds {

double YarnMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

namespace {

// The dimension whose wavelength makes `rotations` turns over `max_positions` tokens.
double CorrectionDim(double rotations, int64_t dim, double base, double max_positions) {
  return (dim * std::log(max_positions / (rotations * 2 * M_PI))) / (2 * std::log(base));
}

void ApplyYarn(const ModelConfig& c, int64_t dim, RopeFrequencies& f) {
  const RopeScaling& r = c.rope_scaling;
  const double base = c.rope_theta;
  const double factor = r.factor;
  if (r.attention_factor) {
    f.attention_factor = static_cast<float>(*r.attention_factor);
  } else if (r.mscale != 0 && r.mscale_all_dim != 0) {
    f.attention_factor = static_cast<float>(YarnMscale(factor, r.mscale) / YarnMscale(factor, r.mscale_all_dim));
  } else {
    f.attention_factor = static_cast<float>(YarnMscale(factor, 1.0));
  }
  const double original = static_cast<double>(r.original_max_position_embeddings);
  double low = CorrectionDim(r.beta_fast, dim, base, original);
  double high = CorrectionDim(r.beta_slow, dim, base, original);
  if (r.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp
  for (size_t i = 0; i < f.inv_freq.size(); ++i) {
    const float extrapolation = f.inv_freq[i];
    const float interpolation = static_cast<float>(extrapolation / factor);
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const float extrapolation_weight = static_cast<float>(1.0 - ramp);
    f.inv_freq[i] = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight;
  }
}

void ApplyLlama3(const ModelConfig& c, RopeFrequencies& f) {
  const RopeScaling& r = c.rope_scaling;
  const double old_context = static_cast<double>(r.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / r.low_freq_factor;
  const double high_freq_wavelen = old_context / r.high_freq_factor;
  for (float& inv : f.inv_freq) {
    const double wavelen = 2 * M_PI / inv;
    if (wavelen > low_freq_wavelen) {
      inv = static_cast<float>(inv / r.factor);
    } else if (wavelen >= high_freq_wavelen) {
      const double smooth = (old_context / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      inv = static_cast<float>((1 - smooth) * inv / r.factor + smooth * inv);
    }
  }
}

}  // namespace

RopeFrequencies ComputeRopeFrequencies(const ModelConfig& c, int64_t rot_dim) {
  RopeFrequencies f;
  f.inv_freq.resize(static_cast<size_t>(rot_dim / 2));
  for (int64_t i = 0; i < rot_dim / 2; ++i) {
    // base ** (2i / dim) in float32, as torch computes it
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rot_dim);
    f.inv_freq[i] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
  }
  switch (c.rope_scaling.type) {
    case RopeScaling::Type::kNone:
      break;
    case RopeScaling::Type::kLinear:
      for (float& inv : f.inv_freq) inv = static_cast<float>(inv / c.rope_scaling.factor);
      break;
    case RopeScaling::Type::kYarn:
      ApplyYarn(c, rot_dim, f);
      break;
    case RopeScaling::Type::kLlama3:
      ApplyLlama3(c, f);
      break;
  }
  return f;
}

}  // namespace ds

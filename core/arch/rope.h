// Rotary embedding frequencies as transformers' ROPE_INIT_FUNCTIONS compute them: default,
// linear, YaRN (DeepSeek-V3) and llama3 (R1-Distill-Llama).
#pragma once

#include <vector>

#include "core/model/config.h"

namespace ds {

struct RopeFrequencies {
  std::vector<float> inv_freq;    // rot_dim / 2
  float attention_factor = 1.0f;  // scales cos and sin (YaRN)
};

RopeFrequencies ComputeRopeFrequencies(const ModelConfig& config, int64_t rot_dim);

// YaRN's mscale: 0.1 * mscale * ln(scale) + 1 for scale > 1.
double YarnMscale(double scale, double mscale);

}  // namespace ds

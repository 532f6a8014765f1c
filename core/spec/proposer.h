// Draft proposers for speculative decoding: each guesses the tokens that follow the target
// session's tokens and the next token the target already chose.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/engine.h"
#include "core/sampling/sampler.h"
#include "core/session.h"

namespace ds {

struct Draft {
  std::vector<int32_t> tokens;
  // The distribution each token was drawn from, for the acceptance rule; empty for a
  // deterministic (one-hot) draft: n-gram lookup, or any draft under greedy decoding.
  std::vector<std::vector<float>> q;
};

class Proposer {
 public:
  virtual ~Proposer() = default;
  // Up to k tokens to follow target.tokens() and then `next`, drawn with `sampler`.
  virtual absl::StatusOr<Draft> Propose(const Session& target, int32_t next, int k, Sampler& sampler) = 0;
};

// Prompt lookup: the longest earlier match of the last ngram_max..ngram_min tokens, and what
// followed it.
std::unique_ptr<Proposer> MakeNgramProposer(int ngram_min, int ngram_max);
// A smaller model with the same vocabulary runs ahead.
absl::StatusOr<std::unique_ptr<Proposer>> MakeDraftModelProposer(std::shared_ptr<const Engine> draft,
                                                                  const Engine& target, int64_t n_ctx);
// DeepSeek-V3's own next-token-prediction layer, chained for k > 1. It watches the target's
// forward passes for their hidden states.
absl::StatusOr<std::unique_ptr<Proposer>> MakeMtpProposer(Session& target);
// The MTP logits of the positions the last Propose fed (tests compare them with transformers').
const std::vector<float>* MtpLogitsForTest(const Proposer& proposer);

}  // namespace ds

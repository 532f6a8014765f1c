// Speculative decoding as a session option: a proposer drafts k tokens, the target scores them
// and the bonus position in one pass over k+1 positions, and the standard rule accepts a prefix
// (greedy: exactly the target's argmax, so the output is plain greedy decoding's; sampling:
// min(1, p/q), resampling from norm(max(0, p - q)) on rejection, so the output distribution is
// the target's).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/spec/proposer.h"

namespace ds {

enum class SpeculativeMethod { kNone, kDraft, kMtp, kNgram };

struct SpeculativeOptions {
  SpeculativeMethod method = SpeculativeMethod::kNone;
  int k = 4;              // draft tokens per step (the most, when adaptive)
  bool adaptive = false;  // grow k while whole drafts are accepted, shrink on rejections
  std::shared_ptr<const Engine> draft_engine;
  int ngram_min = 1, ngram_max = 3;
};

struct SpeculativeStats {
  int64_t target_passes = 0;
  int64_t drafted = 0;
  int64_t accepted = 0;
  int64_t emitted = 0;  // tokens produced (accepted drafts + one of the target's per pass)
  double draft_seconds = 0;
  double verify_seconds = 0;
};

class Speculator {
 public:
  static absl::StatusOr<std::unique_ptr<Speculator>> Create(Session& session, const SpeculativeOptions& options);

  // One target pass: returns the tokens it decided (1 to k+1), all appended to the session,
  // whose logits are then the last one's.
  absl::StatusOr<std::vector<int32_t>> Step(Session& session);
  const SpeculativeStats& stats() const { return stats_; }
  const Proposer& proposer() const { return *proposer_; }

 private:
  Speculator(std::unique_ptr<Proposer> proposer, const SpeculativeOptions& options)
      : proposer_(std::move(proposer)), k_max_(options.k), k_(options.k), adaptive_(options.adaptive) {}

  std::unique_ptr<Proposer> proposer_;
  int k_max_, k_;
  bool adaptive_;
  // A token already decided for the next position (drawn from the residual after a rejection),
  // valid while the session is as the last step left it.
  std::optional<int32_t> next_;
  uint64_t next_version_ = 0;
  SpeculativeStats stats_;
  std::vector<float> p_;
};

}  // namespace ds

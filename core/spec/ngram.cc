// Prompt-lookup drafting: when the text repeats itself (code edits, quotes, lists), the tokens
// after an earlier occurrence of the current suffix are a good guess. No model, no cost.
#include <algorithm>

#include "core/spec/proposer.h"

namespace ds {
namespace {

class NgramProposer final : public Proposer {
 public:
  NgramProposer(int ngram_min, int ngram_max) : min_(ngram_min), max_(ngram_max) {}

  absl::StatusOr<Draft> Propose(const Session& target, int32_t next, int k, Sampler&) override {
    context_.assign(target.tokens().begin(), target.tokens().end());
    context_.push_back(next);
    const int64_t n = static_cast<int64_t>(context_.size());
    Draft draft;
    for (int size = max_; size >= min_; --size) {
      if (size >= n) continue;
      // The most recent earlier occurrence of the last `size` tokens.
      for (int64_t start = n - size - 1; start >= 0; --start) {
        if (!std::equal(context_.begin() + start, context_.begin() + start + size, context_.end() - size)) continue;
        for (int64_t i = start + size; i < n && static_cast<int>(draft.tokens.size()) < k; ++i)
          draft.tokens.push_back(context_[i]);
        return draft;
      }
    }
    return draft;  // nothing to propose: the step decodes one token
  }

 private:
  int min_, max_;
  std::vector<int32_t> context_;
};

}  // namespace

std::unique_ptr<Proposer> MakeNgramProposer(int ngram_min, int ngram_max) {
  return std::make_unique<NgramProposer>(ngram_min, ngram_max);
}

}  // namespace ds

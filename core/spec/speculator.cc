#include "core/spec/speculator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/arch/model.h"
#include "core/status.h"

namespace ds {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

// A verification pass (the target's token and up to 64 drafts) gets every row's argmax from the
// backend: greedy acceptance reads those.
constexpr int kMaxDraftTokens = 64;
static_assert(kMaxDraftTokens + 1 <= kArgmaxRowsMax);

absl::StatusOr<std::unique_ptr<Speculator>> Speculator::Create(Session& session, const SpeculativeOptions& o) {
  if (o.k < 1 || o.k > kMaxDraftTokens)
    return absl::InvalidArgumentError(absl::StrCat("draft_tokens must be 1..", kMaxDraftTokens, ", got ", o.k));
  std::unique_ptr<Proposer> proposer;
  switch (o.method) {
    case SpeculativeMethod::kNone:
      return absl::InvalidArgumentError("no speculative method");
    case SpeculativeMethod::kNgram:
      if (o.ngram_min < 1 || o.ngram_max < o.ngram_min)
        return absl::InvalidArgumentError(absl::StrCat("n-gram sizes must satisfy 1 <= min <= max, got ", o.ngram_min,
                                                       "..", o.ngram_max));
      proposer = MakeNgramProposer(o.ngram_min, o.ngram_max);
      break;
    case SpeculativeMethod::kDraft: {
      DS_ASSIGN_OR_RETURN(proposer, MakeDraftModelProposer(o.draft_engine, session.engine(), session.n_ctx()));
      break;
    }
    case SpeculativeMethod::kMtp: {
      DS_ASSIGN_OR_RETURN(proposer, MakeMtpProposer(session));
      break;
    }
  }
  return std::unique_ptr<Speculator>(new Speculator(std::move(proposer), o));
}

absl::StatusOr<std::vector<int32_t>> Speculator::Step(Session& s) {
  if (!s.has_logits()) return absl::FailedPreconditionError("no logits yet: append a prompt first");
  Sampler& sampler = s.sampler();
  const int64_t V = s.n_vocab(), n_before = s.n_tokens();
  if (n_before >= s.n_ctx()) return ContextFullError(absl::StrCat("the session is full (n_ctx = ", s.n_ctx(), ")"));

  // The target's own next token: drawn from its logits, or decided by the last rejection.
  int32_t next;
  if (next_ && next_version_ == s.version()) {
    next = *next_;
  } else if (sampler.greedy() && !s.argmax().empty()) {
    next = s.argmax().back();  // computed on the backend: the logits need not come to the host
  } else {
    sampler.Probabilities(s.logits(), V, p_);
    next = sampler.SampleFrom(p_);
  }
  next_.reset();

  const auto draft_start = std::chrono::steady_clock::now();
  const int k = static_cast<int>(std::min<int64_t>(k_, s.n_ctx() - n_before - 1));
  Draft draft;
  if (k > 0) {
    DS_ASSIGN_OR_RETURN(draft, proposer_->Propose(s, next, k, sampler));
  }
  stats_.draft_seconds += Since(draft_start);

  // One target pass over [next, d_1 .. d_k]: row i is the distribution after d_i (row 0: after next).
  const auto verify_start = std::chrono::steady_clock::now();
  std::vector<int32_t> batch{next};
  batch.insert(batch.end(), draft.tokens.begin(), draft.tokens.end());
  DS_RETURN_IF_ERROR(s.Score(batch));
  stats_.verify_seconds += Since(verify_start);
  ++stats_.target_passes;
  stats_.drafted += static_cast<int64_t>(draft.tokens.size());

  std::vector<int32_t> emitted{next};
  size_t accepted = 0;
  if (sampler.greedy()) {
    // A draft is accepted where it is the target's choice (computed on the backend, so the
    // logits need not come to the host); the first rejected row's choice is the next token.
    const std::vector<int32_t>& choice = s.argmax();
    if (choice.size() != batch.size())
      return absl::InternalError(absl::StrCat("a verification pass of ", batch.size(), " rows has ", choice.size(),
                                              " argmax ids"));
    for (; accepted < draft.tokens.size() && draft.tokens[accepted] == choice[accepted]; ++accepted)
      emitted.push_back(draft.tokens[accepted]);
    if (accepted < draft.tokens.size()) next_ = choice[accepted];
  } else {
    for (; accepted < draft.tokens.size(); ++accepted) {
      const int32_t d = draft.tokens[accepted];
      sampler.Probabilities(s.all_logits().data() + accepted * V, V, p_);
      const float q = draft.q.empty() ? 1.0f : draft.q[accepted][d];
      if (sampler.UniformDraw() < std::min(1.0, static_cast<double>(p_[d]) / q)) {
        emitted.push_back(d);
        continue;
      }
      // Rejected: the next token comes from norm(max(0, p - q)).
      if (draft.q.empty()) {
        p_[d] = 0.0f;
      } else {
        for (int64_t i = 0; i < V; ++i) p_[i] = std::max(0.0f, p_[i] - draft.q[accepted][i]);
      }
      next_ = sampler.SampleFrom(p_);
      break;
    }
  }
  s.Commit(n_before + 1 + static_cast<int64_t>(accepted), static_cast<int64_t>(accepted));
  next_version_ = s.version();
  stats_.accepted += static_cast<int64_t>(accepted);
  stats_.emitted += static_cast<int64_t>(emitted.size());
  if (adaptive_) {
    if (accepted == draft.tokens.size() && !draft.tokens.empty()) k_ = std::min(k_max_, k_ + 1);
    else if (accepted + 1 < draft.tokens.size()) k_ = std::max(1, k_ - 1);
  }
  return emitted;
}

}  // namespace ds

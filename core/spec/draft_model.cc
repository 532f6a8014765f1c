// A draft model: a smaller engine with the same vocabulary keeps its own session in step with
// the target (rolling back what the target rejected) and runs ahead k tokens.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/spec/proposer.h"
#include "core/status.h"

namespace ds {
namespace {

class DraftModelProposer final : public Proposer {
 public:
  explicit DraftModelProposer(std::unique_ptr<Session> session) : draft_(std::move(session)) {}

  absl::StatusOr<Draft> Propose(const Session& target, int32_t next, int k, Sampler& sampler) override {
    // Catch up: keep what the draft shares with the target's tokens + next, append the rest.
    context_.assign(target.tokens().begin(), target.tokens().end());
    context_.push_back(next);
    const auto& mine = draft_->tokens();
    size_t common = std::mismatch(mine.begin(), mine.end(), context_.begin(), context_.end()).first - mine.begin();
    common = std::min(common, context_.size() - 1);  // at least `next` runs, so there are logits
    draft_->Rollback(static_cast<int64_t>(common));
    DS_RETURN_IF_ERROR(draft_->Append(absl::MakeConstSpan(context_).subspan(common)));
    Draft draft;
    k = static_cast<int>(std::min<int64_t>(k, draft_->n_ctx() - draft_->n_tokens()));
    for (int i = 0; i < k; ++i) {
      int32_t token;
      if (sampler.greedy()) {
        token = draft_->GreedyToken();
      } else {
        std::vector<float> q;
        sampler.Probabilities(draft_->logits(), draft_->n_vocab(), q);
        token = sampler.SampleFrom(q);
        draft.q.push_back(std::move(q));
      }
      draft.tokens.push_back(token);
      if (i + 1 < k) DS_RETURN_IF_ERROR(draft_->Append({&token, 1}));
    }
    return draft;
  }

 private:
  std::unique_ptr<Session> draft_;
  std::vector<int32_t> context_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Proposer>> MakeDraftModelProposer(std::shared_ptr<const Engine> draft,
                                                                  const Engine& target, int64_t n_ctx) {
  if (!draft) return absl::InvalidArgumentError("speculative DRAFT needs a draft engine");
  if (draft->config().vocab_size != target.config().vocab_size)
    return absl::InvalidArgumentError(absl::StrCat("the draft model's vocabulary (", draft->config().vocab_size,
                                                   ") differs from the target's (", target.config().vocab_size, ")"));
  auto dt = draft->tokenizer();
  auto tt = target.tokenizer();
  if (dt.ok() && tt.ok() && (*dt)->vocab_size() != (*tt)->vocab_size())
    return absl::InvalidArgumentError("the draft model's tokenizer differs from the target's");
  SessionOptions options;
  options.n_ctx = std::min<int64_t>(n_ctx, draft->config().max_position_embeddings);
  DS_ASSIGN_OR_RETURN(auto session, Session::Create(std::move(draft), options));
  return std::unique_ptr<Proposer>(new DraftModelProposer(std::move(session)));
}

}  // namespace ds

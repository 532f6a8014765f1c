// DeepSeek-V3's next-token-prediction layer as the proposer: from the target's last hidden
// state h_i and the embedding of the token that followed, it predicts the one after; chained on
// its own output hidden state for k > 1. Its one-layer KV cache holds the true (h_i, x_{i+1})
// pairs of every committed position; chained positions are overwritten after verification.
#include <algorithm>

#include "core/arch/ops.h"
#include "core/spec/proposer.h"
#include "core/status.h"

namespace ds {
namespace {

class MtpProposer final : public Proposer {
 public:
  MtpProposer(const Engine& engine, int64_t n_ctx)
      : engine_(engine), cache_(engine.backend(), 1, engine.model().CacheWidths(), n_ctx) {}

  // Every target forward pass: keep its hidden rows from the first position not yet fed.
  void Observe(int64_t pos0, const float* rows, int64_t n) {
    const int64_t H = engine_.config().hidden_size;
    if (pos0 < fed_) {  // the target went back: positions from pos0 on are to be fed again
      fed_ = pos0;
      pending_.clear();
    }
    const int64_t at = pos0 - fed_;
    if (at > static_cast<int64_t>(pending_.size()) / H) return;  // a gap (cannot happen: passes are contiguous)
    pending_.resize(static_cast<size_t>((at + n) * H));
    std::copy(rows, rows + n * H, pending_.begin() + at * H);
  }

  absl::StatusOr<Draft> Propose(const Session& target, int32_t next, int k, Sampler& sampler) override {
    const Model& model = engine_.model();
    Backend& backend = engine_.backend();
    const int64_t N = target.n_tokens(), H = engine_.config().hidden_size, V = engine_.config().vocab_size;
    const int64_t rows = N - fed_;
    if (rows <= 0 || static_cast<int64_t>(pending_.size()) < rows * H)
      return absl::InternalError("mtp: the target's hidden states of the positions to draft from are missing");
    k = static_cast<int>(std::min<int64_t>(k, cache_.max_tokens() - N));
    Draft draft;
    if (k <= 0) return draft;
    DS_RETURN_IF_ERROR(cache_.Reserve(N - 1 + k, fed_));

    // Feed positions fed_ .. N-1: (h_i, x_{i+1}), where x_N is `next`.
    std::vector<int32_t> ids(target.tokens().begin() + fed_ + 1, target.tokens().end());
    ids.push_back(next);
    Ops ops(backend);
    Tensor hidden = ops.New(rows, H);
    if (ops.ok()) DS_RETURN_IF_ERROR(backend.Upload(pending_.data(), hidden));
    Tensor block_out;
    Tensor logits = model.MtpForward(ops, hidden, ops.Tokens(ids.data(), rows), cache_, fed_, &block_out);
    DS_RETURN_IF_ERROR(ops.status());
    last_logits_.resize(static_cast<size_t>(rows * V));
    DS_RETURN_IF_ERROR(backend.Download(logits, last_logits_.data()));
    fed_ = N;
    pending_.clear();

    const float* row = last_logits_.data() + (rows - 1) * V;
    Tensor h = block_out.Rows(rows - 1, 1);
    std::vector<float> chained(static_cast<size_t>(V));
    for (int i = 0; i < k; ++i) {
      int32_t token;
      if (sampler.greedy()) {
        token = Argmax(row, V);
      } else {
        std::vector<float> q;
        sampler.Probabilities(row, V, q);
        token = sampler.SampleFrom(q);
        draft.q.push_back(std::move(q));
      }
      draft.tokens.push_back(token);
      if (i + 1 == k) break;
      // Chain: the layer's own output stands in for the target's hidden state.
      Ops step(backend);
      Tensor out;
      Tensor next_logits = model.MtpForward(step, h, step.Tokens(&token, 1), cache_, N + i, &out);
      DS_RETURN_IF_ERROR(step.status());
      DS_RETURN_IF_ERROR(backend.Download(next_logits, chained.data()));
      row = chained.data();
      h = out;
    }
    return draft;
  }

  const std::vector<float>& last_logits() const { return last_logits_; }

 private:
  const Engine& engine_;
  KvCache cache_;
  int64_t fed_ = 0;             // MTP positions 0..fed_-1 hold true (h_i, x_{i+1})
  std::vector<float> pending_;  // the target's hidden rows of positions fed_, fed_+1, ...
  std::vector<float> last_logits_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Proposer>> MakeMtpProposer(Session& target) {
  const Engine& engine = target.engine();
  if (engine.model().n_mtp_layers() == 0)
    return absl::InvalidArgumentError("speculative MTP needs a checkpoint with a next-token-prediction layer "
                                      "(num_nextn_predict_layers > 0); this model has none");
  auto proposer = std::make_unique<MtpProposer>(engine, target.n_ctx());
  MtpProposer* raw = proposer.get();
  target.SetForwardObserver([raw](int64_t pos0, const float* rows, int64_t n) { raw->Observe(pos0, rows, n); });
  return std::unique_ptr<Proposer>(std::move(proposer));
}

const std::vector<float>* MtpLogitsForTest(const Proposer& proposer) {
  const auto* mtp = dynamic_cast<const MtpProposer*>(&proposer);
  return mtp ? &mtp->last_logits() : nullptr;
}

}  // namespace ds

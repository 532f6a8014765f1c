// A Session: one conversation's mutable state on an engine: the KV cache, the position, the
// sampler and its RNG. Used by one thread at a time.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/engine.h"
#include "core/kv_cache.h"
#include "core/recorded_passes.h"
#include "core/sampling/sampler.h"

namespace ds {
class Speculator;
struct SpeculativeOptions;
struct SpeculativeStats;
}  // namespace ds

namespace ds {

struct SessionOptions {
  int64_t n_ctx = 0;  // 0: the model's max_position_embeddings
  SamplingParams sampling;
  bool logits_all = false;
  std::shared_ptr<const SpeculativeOptions> speculative;  // null: plain decoding
};

class Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> Create(std::shared_ptr<const Engine> engine,
                                                         const SessionOptions& options);

  // Prefill (or one step): runs the tokens, keeps the last position's logits (every position's
  // with logits_all) and the final hidden states. On any error the session is unchanged.
  absl::Status Append(absl::Span<const int32_t> ids);
  // Samples from the current logits, appends the token, and returns it. With speculative
  // decoding one target pass may decide several tokens: they are appended at once and returned
  // by this and the following calls.
  absl::StatusOr<int32_t> NextToken();
  // Tokens decoded ahead of what NextToken returned (speculative decoding); DropAhead rolls
  // them back (generation stopped before them).
  int64_t n_ahead() const { return static_cast<int64_t>(ahead_.size()); }
  void DropAhead();
  const SpeculativeStats* speculative_stats() const;
  const Speculator* speculator() const { return speculator_.get(); }
  absl::Status Truncate(int64_t n_tokens);
  void Reset();

  // Speculative decoding's mechanics. Score runs the tokens in one pass and keeps every
  // position's logits and hidden states; Commit then keeps the first n_tokens of the session,
  // with the logits and hidden states of row `row` of that pass as the last ones. Rollback keeps
  // n_tokens without recomputing anything (no logits until the next Append).
  absl::Status Score(absl::Span<const int32_t> ids);
  void Commit(int64_t n_tokens, int64_t row);
  void Rollback(int64_t n_tokens);
  Sampler& sampler() { return sampler_; }
  // Counts changes to the session's tokens (to tell whether a decision made earlier still holds).
  uint64_t version() const { return version_; }
  // Called after every forward pass with its first position and its hidden rows.
  using ForwardObserver = std::function<void(int64_t pos0, const float* hidden, int64_t n)>;
  void SetForwardObserver(ForwardObserver observer) { observer_ = std::move(observer); }
  ~Session();
  // Replaces the sampling parameters (and reseeds the RNG).
  absl::Status SetSampling(const SamplingParams& params);

  // Stops a running Append (between prefill chunks, leaving the session unchanged) or
  // Generate (between tokens). Safe from any thread.
  void Cancel() { cancel_.store(true, std::memory_order_relaxed); }
  void ClearCancel() { cancel_.store(false, std::memory_order_relaxed); }
  bool cancel_requested() const { return cancel_.load(std::memory_order_relaxed); }

  int64_t n_tokens() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_vocab() const { return engine_->config().vocab_size; }
  bool has_logits() const { return !logits_.host.empty(); }
  // Logits of the last appended token.
  const float* logits() const {
    FetchLogits();
    return logits_.host.data() + logits_.host.size() - n_vocab();
  }
  // With logits_all, every position of the last Append: [rows, vocab].
  const std::vector<float>& all_logits() const {
    FetchLogits();
    return logits_.host;
  }
  // The argmax of each row of logits() / all_logits() (greedy choices) where the backend computed
  // them, else empty.
  const std::vector<int32_t>& argmax() const { return logits_.argmax; }
  // The greedy choice after the last row: the backend's argmax where it has one (the logits need
  // not come to the host), else the logits' (the first on ties either way).
  int32_t GreedyToken() const { return !logits_.argmax.empty() ? logits_.argmax.back() : Argmax(logits(), n_vocab()); }
  // Final hidden states (after the model's last norm) of the last Append: [rows, hidden].
  const std::vector<float>& hidden() const { return hidden_; }
  const Engine& engine() const { return *engine_; }
  // Decode steps and verification passes recorded and replayed (CUDA graphs).
  const RecordedPasses& recorded_passes() const { return recorded_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }

 private:
  Session(std::shared_ptr<const Engine> engine, const SessionOptions& options, int64_t n_ctx);
  // One forward pass over ids at the current position; appends logits/hidden rows.
  absl::Status Forward(absl::Span<const int32_t> ids, bool keep_all_logits);
  absl::Status AppendImpl(absl::Span<const int32_t> ids, bool keep_all_logits);
  // The last Append's logits. A pass leaves its rows on the backend, with each row's argmax
  // computed there: greedy decoding (and greedy verification of drafts) needs no more, so the
  // vocabulary's worth of floats a row crosses to the host only when something reads them
  // (FetchLogits; on a failed download they read as NaN). A prompt run in several chunks with
  // every row kept downloads all but its first chunk at once.
  struct Logits {
    std::vector<float> host;  // sized; its first on_backend.rows rows filled from on_backend when that is valid
    Tensor on_backend;
    std::vector<int32_t> argmax;  // of every row, where the backend computed them all, else empty
  };
  void FetchLogits() const;
  void ClearLogits();
  // NextToken's sampled choice: on the backend where the logits are and it can
  // (Backend::SampleTokens, the same draw), else here.
  absl::StatusOr<int32_t> SampledToken();

  std::shared_ptr<const Engine> engine_;
  SessionOptions options_;
  int64_t n_ctx_;
  KvCache cache_;
  RecordedPasses recorded_;
  Sampler sampler_;
  std::vector<int32_t> tokens_;
  mutable Logits logits_;
  std::vector<float> hidden_;
  std::atomic<bool> cancel_{false};
  uint64_t version_ = 0;
  ForwardObserver observer_;
  std::unique_ptr<Speculator> speculator_;
  std::deque<int32_t> ahead_;
};

}  // namespace ds

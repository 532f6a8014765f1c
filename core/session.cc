#include "core/session.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/arch/ops.h"
#include "core/status.h"

namespace ds {
namespace {

// Prompts are run in chunks of this many tokens, which bounds the activations' memory.
constexpr int64_t kPrefillChunk = 512;

}  // namespace

absl::StatusOr<std::unique_ptr<Session>> Session::Create(std::shared_ptr<const Engine> engine,
                                                         const SessionOptions& options) {
  if (!engine) return absl::InvalidArgumentError("engine is null");
  DS_RETURN_IF_ERROR(ValidateSamplingParams(options.sampling));
  if (options.n_ctx < 0) return absl::InvalidArgumentError(absl::StrCat("n_ctx must be >= 0, got ", options.n_ctx));
  const int64_t n_ctx = options.n_ctx > 0 ? options.n_ctx : engine->config().max_position_embeddings;
  return std::unique_ptr<Session>(new Session(std::move(engine), options, n_ctx));
}

Session::Session(std::shared_ptr<const Engine> engine, const SessionOptions& options, int64_t n_ctx)
    : engine_(std::move(engine)),
      options_(options),
      n_ctx_(n_ctx),
      cache_(engine_->backend(), engine_->model().n_layers(), engine_->model().CacheWidths(), n_ctx),
      sampler_(options.sampling) {}

absl::Status Session::Forward(absl::Span<const int32_t> ids, bool keep_all_logits) {
  const Model& model = engine_->model();
  const int64_t n = static_cast<int64_t>(ids.size()), pos0 = n_tokens();
  const int64_t V = n_vocab(), H = engine_->config().hidden_size;
  DS_RETURN_IF_ERROR(cache_.Reserve(pos0 + n, pos0));
  Ops ops(engine_->backend());
  Tensor hidden = model.Forward(ops, ops.Tokens(ids.data(), n), cache_, pos0);
  Tensor logits = model.LmHead(ops, keep_all_logits || !ops.ok() ? hidden : hidden.Rows(n - 1, 1));
  DS_RETURN_IF_ERROR(ops.status());
  const size_t hidden_at = hidden_.size(), logits_at = logits_.size();
  hidden_.resize(hidden_at + static_cast<size_t>(n * H));
  logits_.resize(logits_at + static_cast<size_t>(logits.rows * V));
  DS_RETURN_IF_ERROR(engine_->backend().Download(hidden, hidden_.data() + hidden_at));
  DS_RETURN_IF_ERROR(engine_->backend().Download(logits, logits_.data() + logits_at));
  tokens_.insert(tokens_.end(), ids.begin(), ids.end());
  return absl::OkStatus();
}

absl::Status Session::Append(absl::Span<const int32_t> ids) {
  if (ids.empty()) return absl::InvalidArgumentError("no tokens to append");
  const int64_t V = n_vocab();
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= V)
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " is ", ids[i], ", outside the vocabulary [0, ", V, ")"));
  const int64_t needed = n_tokens() + static_cast<int64_t>(ids.size());
  if (needed > n_ctx_)
    return ContextFullError(absl::StrCat(ids.size(), " tokens do not fit: the session holds ", n_tokens(),
                                         " of n_ctx = ", n_ctx_));
  // Run in chunks; on failure, roll back to where we started.
  const int64_t start = n_tokens();
  std::vector<float> old_logits = std::move(logits_), old_hidden = std::move(hidden_);
  logits_.clear();
  hidden_.clear();
  for (size_t at = 0; at < ids.size(); at += kPrefillChunk) {
    const size_t n = std::min<size_t>(kPrefillChunk, ids.size() - at);
    const bool last_chunk = at + n == ids.size();
    absl::Status s = at > 0 && cancel_requested() ? absl::CancelledError("cancelled during prefill")
                                                  : Forward(ids.subspan(at, n), options_.logits_all);
    if (s.ok() && !options_.logits_all && !last_chunk) logits_.clear();  // only the final row matters
    if (!s.ok()) {
      tokens_.resize(static_cast<size_t>(start));
      logits_ = std::move(old_logits);
      hidden_ = std::move(old_hidden);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> Session::NextToken() {
  if (!has_logits()) return absl::FailedPreconditionError("no logits yet: append a prompt first");
  const int32_t token = sampler_.Sample(logits(), n_vocab());
  DS_RETURN_IF_ERROR(Append({&token, 1}));
  return token;
}

absl::Status Session::Truncate(int64_t n) {
  if (n < 0 || n > n_tokens())
    return absl::InvalidArgumentError(absl::StrCat("cannot truncate to ", n, " tokens: the session holds ", n_tokens()));
  if (n == n_tokens()) return absl::OkStatus();
  if (n == 0) {
    Reset();
    return absl::OkStatus();
  }
  // Drop the tail, then re-run token n-1 so the logits belong to the last kept token.
  const int32_t last = tokens_[static_cast<size_t>(n - 1)];
  tokens_.resize(static_cast<size_t>(n - 1));
  logits_.clear();
  hidden_.clear();
  return Append({&last, 1});
}

absl::Status Session::SetSampling(const SamplingParams& params) {
  DS_RETURN_IF_ERROR(ValidateSamplingParams(params));
  options_.sampling = params;
  sampler_ = Sampler(params);
  return absl::OkStatus();
}

void Session::Reset() {
  tokens_.clear();
  logits_.clear();
  hidden_.clear();
}

}  // namespace ds

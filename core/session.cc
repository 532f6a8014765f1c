#include "core/session.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/arch/ops.h"
#include "core/spec/speculator.h"
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
  std::unique_ptr<Session> session(new Session(std::move(engine), options, n_ctx));
  if (options.speculative && options.speculative->method != SpeculativeMethod::kNone) {
    DS_ASSIGN_OR_RETURN(session->speculator_, Speculator::Create(*session, *options.speculative));
  }
  return session;
}

Session::~Session() = default;

const SpeculativeStats* Session::speculative_stats() const {
  return speculator_ ? &speculator_->stats() : nullptr;
}

void Session::DropAhead() {
  if (ahead_.empty()) return;
  const int64_t keep = n_tokens() - static_cast<int64_t>(ahead_.size());
  ahead_.clear();
  // Back to the last token handed out, with its logits (one decode step).
  const int32_t last = tokens_[static_cast<size_t>(keep - 1)];
  Rollback(keep - 1);
  if (!AppendImpl({&last, 1}, false).ok()) Rollback(keep - 1);
}

Session::Session(std::shared_ptr<const Engine> engine, const SessionOptions& options, int64_t n_ctx)
    : engine_(std::move(engine)),
      options_(options),
      n_ctx_(n_ctx),
      cache_(engine_->backend(), engine_->model().n_layers(), engine_->model().CacheWidths(), n_ctx),
      recorded_(engine_->backend(), engine_->model()),
      sampler_(options.sampling) {}

absl::Status Session::Forward(absl::Span<const int32_t> ids, bool keep_all_logits) {
  const Model& model = engine_->model();
  const int64_t n = static_cast<int64_t>(ids.size()), pos0 = n_tokens();
  const int64_t V = n_vocab(), H = engine_->config().hidden_size;
  DS_RETURN_IF_ERROR(cache_.Reserve(pos0 + n, pos0));
  FetchLogits();  // an earlier chunk's rows, before this pass may reuse their buffers
  PassOutput out;
  if (recorded_.Takes(n)) {
    DS_ASSIGN_OR_RETURN(out, recorded_.Run(ids, pos0, cache_, keep_all_logits));
  } else {
    Ops ops(engine_->backend());
    out = model.ForwardPass(ops, ops.Tokens(ids.data(), n), cache_, pos0, keep_all_logits);
    DS_RETURN_IF_ERROR(ops.status());
  }
  const size_t hidden_at = hidden_.size(), logits_at = logits_.host.size();
  hidden_.resize(hidden_at + static_cast<size_t>(n * H));
  logits_.host.resize(logits_at + static_cast<size_t>(out.logits.rows * V));
  DS_RETURN_IF_ERROR(engine_->backend().Download(out.hidden, hidden_.data() + hidden_at));
  const size_t rows_before = logits_at / static_cast<size_t>(V);
  if (out.argmax.valid() && logits_.argmax.size() == rows_before) {
    logits_.argmax.resize(rows_before + static_cast<size_t>(out.argmax.cols));
    DS_RETURN_IF_ERROR(engine_->backend().Download(out.argmax, logits_.argmax.data() + rows_before));
  } else {
    logits_.argmax.clear();  // some row has none
  }
  if (logits_at == 0) {
    logits_.on_backend = out.logits;  // left on the backend until read
  } else {
    DS_RETURN_IF_ERROR(engine_->backend().Download(out.logits, logits_.host.data() + logits_at));
  }
  tokens_.insert(tokens_.end(), ids.begin(), ids.end());
  ++version_;
  if (observer_) observer_(pos0, hidden_.data() + hidden_at, n);
  return absl::OkStatus();
}

absl::Status Session::Append(absl::Span<const int32_t> ids) {
  DropAhead();
  return AppendImpl(ids, options_.logits_all);
}

absl::Status Session::Score(absl::Span<const int32_t> ids) { return AppendImpl(ids, /*keep_all_logits=*/true); }

void Session::FetchLogits() const {
  if (!logits_.on_backend.valid()) return;
  if (!engine_->backend().Download(logits_.on_backend, logits_.host.data()).ok())
    std::fill(logits_.host.begin(), logits_.host.end(), std::numeric_limits<float>::quiet_NaN());
  logits_.on_backend = Tensor{};
}

void Session::ClearLogits() { logits_ = Logits{}; }

void Session::Commit(int64_t n_tokens, int64_t row) {
  ++version_;
  const size_t V = static_cast<size_t>(n_vocab()), H = static_cast<size_t>(engine_->config().hidden_size);
  tokens_.resize(static_cast<size_t>(n_tokens));
  if (logits_.on_backend.valid() && row < logits_.on_backend.rows) {
    logits_.on_backend = logits_.on_backend.Rows(row, 1);  // still not needed on the host
  } else {
    FetchLogits();
    logits_.host.erase(logits_.host.begin(), logits_.host.begin() + static_cast<std::ptrdiff_t>(row * V));
  }
  logits_.host.resize(V);
  logits_.argmax = static_cast<size_t>(row) < logits_.argmax.size() ? std::vector<int32_t>{logits_.argmax[row]}
                                                                    : std::vector<int32_t>{};
  hidden_.resize(static_cast<size_t>(row + 1) * H);
}

void Session::Rollback(int64_t n_tokens) {
  ++version_;
  tokens_.resize(static_cast<size_t>(std::min<int64_t>(n_tokens, this->n_tokens())));
  ClearLogits();
  hidden_.clear();
}

absl::Status Session::AppendImpl(absl::Span<const int32_t> ids, bool keep_all_logits) {
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
  Logits old_logits = std::move(logits_);
  std::vector<float> old_hidden = std::move(hidden_);
  ClearLogits();
  hidden_.clear();
  for (size_t at = 0; at < ids.size(); at += kPrefillChunk) {
    const size_t n = std::min<size_t>(kPrefillChunk, ids.size() - at);
    const bool last_chunk = at + n == ids.size();
    absl::Status s = at > 0 && cancel_requested() ? absl::CancelledError("cancelled during prefill")
                                                  : Forward(ids.subspan(at, n), keep_all_logits);
    if (s.ok() && !keep_all_logits && !last_chunk) ClearLogits();  // only the final row matters
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
  if (speculator_) {
    if (ahead_.empty()) {
      DS_ASSIGN_OR_RETURN(std::vector<int32_t> step, speculator_->Step(*this));
      ahead_.assign(step.begin(), step.end());
    }
    const int32_t token = ahead_.front();
    ahead_.pop_front();
    return token;
  }
  if (!has_logits()) return absl::FailedPreconditionError("no logits yet: append a prompt first");
  int32_t token;
  if (sampler_.greedy()) {
    token = GreedyToken();
  } else {
    DS_ASSIGN_OR_RETURN(token, SampledToken());
  }
  DS_RETURN_IF_ERROR(Append({&token, 1}));
  return token;
}

absl::StatusOr<int32_t> Session::SampledToken() {
  const uint64_t draw = sampler_.Draw();
  if (logits_.on_backend.valid()) {  // sampled where the logits are, only the id comes back
    Backend& backend = engine_->backend();
    DS_ASSIGN_OR_RETURN(Tensor id, backend.Alloc(DType::kI32, 1, 1));
    const absl::Status s =
        backend.SampleTokens(logits_.on_backend.Rows(logits_.on_backend.rows - 1, 1), sampler_.filters(), {&draw, 1}, id);
    if (s.ok()) {
      int32_t token;
      DS_RETURN_IF_ERROR(backend.Download(id, &token));
      return token;
    }
    if (!absl::IsUnimplemented(s)) return s;
  }
  return sampler_.Sample(logits(), n_vocab(), draw);
}

absl::Status Session::Truncate(int64_t n) {
  DropAhead();
  if (n < 0 || n > n_tokens())
    return absl::InvalidArgumentError(absl::StrCat("cannot truncate to ", n, " tokens: the session holds ", n_tokens()));
  if (n == n_tokens() && has_logits()) return absl::OkStatus();
  if (n == 0) {
    Reset();
    return absl::OkStatus();
  }
  // Drop the tail, then re-run token n-1 so the logits belong to the last kept token.
  const int32_t last = tokens_[static_cast<size_t>(n - 1)];
  tokens_.resize(static_cast<size_t>(n - 1));
  ClearLogits();
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
  ahead_.clear();
  ++version_;
  tokens_.clear();
  ClearLogits();
  hidden_.clear();
}

}  // namespace ds

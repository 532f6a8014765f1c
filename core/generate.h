// Text generation on a session: decode until EOS, a stop token, a stop string (matched across
// token boundaries), max_tokens, the callback's word, a cancel, or a full context; stream the
// text as complete UTF-8 pieces, flagging the reasoning between <think> and </think>.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/sampling/sampler.h"
#include "core/session.h"
#include "core/tokenizer/tokenizer.h"

namespace ds {

enum class StopReason { kEos, kMaxTokens, kStopToken, kStopString, kCallback, kCancelled, kContextFull };

constexpr uint32_t kPieceReasoning = 1;  // the piece is part of a <think>…</think> block

struct GenerateParams {
  std::vector<int32_t> prompt;  // appended (and timed as prefill) before decoding; may be empty
  int64_t max_tokens = 0;       // 0: until another condition
  std::vector<int32_t> stop_ids;  // besides the model's EOS
  std::vector<std::string> stop_strings;
  bool show_special = false;
  std::optional<SamplingParams> sampling;  // replaces the session's for this call on
};

// Called with each piece of text (possibly empty: a token that completes no character, or a
// hidden special token), the token that produced it and kPiece* flags. Return true to stop.
using PieceFn = std::function<bool(absl::string_view text, int32_t token, uint32_t flags)>;

struct GenerateResult {
  StopReason stop_reason = StopReason::kEos;
  int64_t n_prompt = 0;
  int64_t n_generated = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

absl::StatusOr<GenerateResult> Generate(Session& session, const Tokenizer& tokenizer, const GenerateParams& params,
                                        const PieceFn& on_piece);

// Holds back text that might begin a stop string or a think marker until it is decided, splits
// at markers, and tracks whether the text is reasoning. Exposed for tests.
class TextGate {
 public:
  TextGate(std::vector<std::string> stop_strings, bool in_reasoning);
  // Feeds text; emits decided pieces through `emit` (text, flags). Returns true when a stop
  // string was reached (the text before it has been emitted, the stop string has not).
  bool Feed(absl::string_view text, const std::function<void(absl::string_view, uint32_t)>& emit);
  // Emits what is still held (at the end of generation).
  void Flush(const std::function<void(absl::string_view, uint32_t)>& emit);

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool in_reasoning_;
};

}  // namespace ds

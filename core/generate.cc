#include "core/generate.h"

#include <algorithm>
#include <chrono>
#include <string_view>

#include "core/status.h"
#include "core/tokenizer/stream_decoder.h"

namespace ds {
namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Whether the session's text ends inside an open <think> block (R1's generation prompt opens one).
bool EndsInReasoning(const Session& session, const Tokenizer& tokenizer) {
  const auto& tokens = session.tokens();
  const size_t n = std::min<size_t>(tokens.size(), 64);
  auto tail = tokenizer.Decode(std::vector<int32_t>(tokens.end() - n, tokens.end()), /*keep_special=*/false);
  if (!tail.ok()) return false;
  const size_t open = tail->rfind(kThinkOpen), close = tail->rfind(kThinkClose);
  return open != std::string::npos && (close == std::string::npos || close < open);
}

}  // namespace

TextGate::TextGate(std::vector<std::string> stop_strings, bool in_reasoning)
    : stops_(std::move(stop_strings)), in_reasoning_(in_reasoning) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

bool TextGate::Feed(absl::string_view text, const std::function<void(absl::string_view, uint32_t)>& emit) {
  held_.append(text.data(), text.size());
  while (true) {
    const uint32_t flags = in_reasoning_ ? kPieceReasoning : 0;
    // The earliest stop string or marker in the held text.
    size_t at = std::string::npos, length = 0;
    bool is_stop = false;
    for (const auto& s : stops_) {
      const size_t p = held_.find(s);
      if (p < at) at = p, length = s.size(), is_stop = true;
    }
    const std::string_view marker = in_reasoning_ ? kThinkClose : kThinkOpen;
    if (const size_t p = held_.find(marker); p < at) at = p, length = marker.size(), is_stop = false;
    if (at == std::string::npos) break;
    if (at > 0) emit(absl::string_view(held_).substr(0, at), flags);
    if (is_stop) {
      held_.clear();
      return true;
    }
    // The markers belong to the reasoning block.
    emit(View(marker), kPieceReasoning);
    in_reasoning_ = !in_reasoning_;
    held_.erase(0, at + length);
  }
  // Keep the longest tail that could still grow into a stop string or marker.
  size_t keep = 0;
  auto consider = [&](absl::string_view s) {
    for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k)
      if (absl::string_view(held_).substr(held_.size() - k) == s.substr(0, k)) {
        keep = k;
        break;
      }
  };
  for (const auto& s : stops_) consider(s);
  consider(View(in_reasoning_ ? kThinkClose : kThinkOpen));
  // Never split a UTF-8 character when releasing.
  size_t release = held_.size() - keep;
  release = CompleteUtf8Prefix(held_.substr(0, release));
  if (release > 0) {
    emit(absl::string_view(held_).substr(0, release), in_reasoning_ ? kPieceReasoning : 0);
    held_.erase(0, release);
  }
  return false;
}

void TextGate::Flush(const std::function<void(absl::string_view, uint32_t)>& emit) {
  if (!held_.empty()) emit(held_, in_reasoning_ ? kPieceReasoning : 0);
  held_.clear();
}

absl::StatusOr<GenerateResult> Generate(Session& session, const Tokenizer& tokenizer, const GenerateParams& params,
                                        const PieceFn& on_piece) {
  if (params.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  if (params.sampling) DS_RETURN_IF_ERROR(session.SetSampling(*params.sampling));
  session.ClearCancel();
  GenerateResult result;
  const auto prefill_start = std::chrono::steady_clock::now();
  if (!params.prompt.empty()) {
    absl::Status s = session.Append(params.prompt);
    if (absl::IsCancelled(s)) {
      result.stop_reason = StopReason::kCancelled;
      return result;
    }
    DS_RETURN_IF_ERROR(s);
    result.n_prompt = static_cast<int64_t>(params.prompt.size());
  }
  result.prefill_seconds = Seconds(prefill_start);
  if (!session.has_logits()) return absl::FailedPreconditionError("nothing to continue: give a prompt");

  std::vector<int32_t> eos = session.engine().config().eos_token_ids;
  if (tokenizer.eos_id() >= 0) eos.push_back(tokenizer.eos_id());
  StreamDecoder decoder(tokenizer, params.show_special);
  TextGate gate(params.stop_strings, EndsInReasoning(session, tokenizer));
  int32_t current = -1;
  bool callback_stop = false, emitted = false;
  const auto emit = [&](absl::string_view text, uint32_t flags) {
    emitted = true;
    if (!callback_stop && on_piece) callback_stop = on_piece(text, current, flags);
  };

  const auto decode_start = std::chrono::steady_clock::now();
  result.stop_reason = StopReason::kMaxTokens;
  while (params.max_tokens == 0 || result.n_generated < params.max_tokens) {
    if (session.cancel_requested()) {
      result.stop_reason = StopReason::kCancelled;
      break;
    }
    if (session.n_ahead() == 0 && session.n_tokens() >= session.n_ctx()) {
      result.stop_reason = StopReason::kContextFull;
      break;
    }
    auto token = session.NextToken();
    if (!token.ok()) return token.status();
    current = *token;
    ++result.n_generated;
    if (std::find(eos.begin(), eos.end(), current) != eos.end()) {
      result.stop_reason = StopReason::kEos;
      break;
    }
    if (std::find(params.stop_ids.begin(), params.stop_ids.end(), current) != params.stop_ids.end()) {
      result.stop_reason = StopReason::kStopToken;
      break;
    }
    DS_ASSIGN_OR_RETURN(std::string text, decoder.Push(current));
    emitted = false;
    if (gate.Feed(text, emit)) {
      result.stop_reason = StopReason::kStopString;
      break;
    }
    // Every token reaches the callback, with the text it released or none.
    if (!emitted) emit("", 0);
    if (callback_stop) {
      result.stop_reason = StopReason::kCallback;
      break;
    }
  }
  if (result.stop_reason != StopReason::kStopString && result.stop_reason != StopReason::kCallback) {
    gate.Feed(decoder.Flush(), emit);
    gate.Flush(emit);
  }
  // Speculative steps may have decided tokens past the stop: they are not part of the answer.
  session.DropAhead();
  result.decode_seconds = Seconds(decode_start);
  return result;
}

}  // namespace ds

#include "core/recorded_passes.h"

#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/arch/ops.h"
#include "core/status.h"

namespace ds {
namespace {

// Recordings kept per session (each holds its activations and logits on the device): enough
// for decode steps and the verification passes of an adaptive speculative k.
constexpr size_t kMaxPasses = 8;

}  // namespace

absl::StatusOr<PassOutput> RecordedPasses::Run(absl::Span<const int32_t> ids, int64_t pos0,
                                                           KvCache& cache, bool all_logits) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (pos0 + n > std::numeric_limits<int32_t>::max())
    return absl::InvalidArgumentError(absl::StrCat("position ", pos0 + n, " does not fit the device's int32"));
  const std::pair<int64_t, bool> shape{n, all_logits};
  if (!passes_.count(shape) && passes_.size() >= kMaxPasses) passes_.erase(passes_.begin());
  Pass& pass = passes_[shape];
  if (!pass.inputs.valid() || pass.cache_generation != cache.generation()) {
    pass = Pass{};  // a recording of the old cache storage is of no use
    pass.cache_generation = cache.generation();
    DS_ASSIGN_OR_RETURN(pass.inputs, backend_.Alloc(DType::kI32, 1, n + 1));
  }
  std::vector<int32_t> inputs(ids.begin(), ids.end());
  inputs.push_back(static_cast<int32_t>(pos0));
  DS_RETURN_IF_ERROR(backend_.Upload(inputs.data(), pass.inputs));
  const Tensor tokens = pass.inputs.Cols(0, n);
  const Position at(pos0, pass.inputs.Cols(n, 1));

  if (!pass.recording && pass.ran_once) {
    if (backend_.BeginRecording().ok()) {
      Ops ops(backend_);
      PassOutput out = model_.ForwardPass(ops, tokens, cache, at, all_logits);
      auto recording = backend_.EndRecording();
      if (ops.ok() && recording.ok()) {
        pass.recording = *std::move(recording);
        pass.output = out;
        ++n_recorded_;
      }
    }
    // What cannot be recorded runs plainly from now on.
    if (!pass.recording) failed_ = true;
  }
  if (pass.recording) {
    DS_RETURN_IF_ERROR(pass.recording->Replay());
    ++n_replayed_;
    return pass.output;
  }
  pass.ran_once = true;
  Ops ops(backend_);
  PassOutput out = model_.ForwardPass(ops, tokens, cache, at, all_logits);
  DS_RETURN_IF_ERROR(ops.status());
  return out;
}

}  // namespace ds

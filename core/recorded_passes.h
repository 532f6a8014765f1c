// A session's recorded forward passes. With the tokens and the position as device data, a pass of
// n tokens is the same sequence of ops at every position, so a backend that records
// (Backend::CanRecord: CUDA graphs) records it once per shape and replays it after: one graph
// launch per decode step instead of hundreds of kernel launches. A shape is a row count, whether
// every row's logits are kept, and the KV cache's storage (which moves when the cache grows).
// A shape is recorded the second time it runs: the first, run plainly, creates whatever the ops
// make on first use, which must not happen inside a recording.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "backends/backend.h"
#include "core/arch/model.h"
#include "core/kv_cache.h"

namespace ds {

class RecordedPasses {
 public:
  // Passes of more rows (prompts) are not recorded: their launches are few for their work.
  static constexpr int64_t kMaxRows = 16;

  RecordedPasses(Backend& backend, const Model& model) : backend_(backend), model_(model) {}

  // Whether Run takes a pass of n tokens.
  bool Takes(int64_t n) const { return backend_.CanRecord() && !failed_ && n >= 1 && n <= kMaxRows; }

  // Model::ForwardPass of ids at positions pos0.., written into the cache, which holds pos0 + n
  // rows. The tensors are the recording's: valid until its next replay.
  absl::StatusOr<PassOutput> Run(absl::Span<const int32_t> ids, int64_t pos0, KvCache& cache, bool all_logits);

  int64_t n_recorded() const { return n_recorded_; }
  int64_t n_replayed() const { return n_replayed_; }

 private:
  struct Pass {
    uint64_t cache_generation = 0;
    Tensor inputs;  // [1, n + 1] i32: the tokens, then pos0
    bool ran_once = false;
    std::unique_ptr<Backend::Recording> recording;
    PassOutput output;
  };

  Backend& backend_;
  const Model& model_;
  std::map<std::pair<int64_t, bool>, Pass> passes_;
  bool failed_ = false;  // a recording failed: this session runs its passes plainly
  int64_t n_recorded_ = 0, n_replayed_ = 0;
};

}  // namespace ds

// A session's KV cache: per layer, one or more [capacity, width] tensors on the backend
// (Llama/Qwen2: K and V per KV head; DeepSeek-V3: the MLA latent [c_kv | k_pe]). It starts
// small and grows geometrically up to the session's context, so a long n_ctx costs nothing
// until it is used. Truncation is free: rows past the session's position are simply unused.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "backends/backend.h"

namespace ds {

class KvCache {
 public:
  KvCache(Backend& backend, int64_t n_layers, std::vector<int64_t> widths, int64_t max_tokens);

  // Makes room for n_tokens rows, keeping the first n_keep.
  absl::Status Reserve(int64_t n_tokens, int64_t n_keep);

  // Tensor `index` of `layer`: capacity() rows, of which the session's tokens' are the first.
  const Tensor& Layer(int64_t layer, int index) const { return tensors_[layer][index]; }
  int64_t capacity() const { return capacity_; }
  // Changes whenever the cache moves to new storage (growth): a recorded pass that addressed
  // the old storage must be recorded again.
  uint64_t generation() const { return generation_; }
  int64_t max_tokens() const { return max_tokens_; }
  // Bytes per token over all layers.
  int64_t bytes_per_token() const;

 private:
  Backend& backend_;
  int64_t n_layers_;
  std::vector<int64_t> widths_;
  int64_t max_tokens_;
  int64_t capacity_ = 0;
  uint64_t generation_ = 0;
  std::vector<std::vector<Tensor>> tensors_;
};

}  // namespace ds

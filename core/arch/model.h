// A loaded architecture: its weights on a backend and its forward pass.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "core/arch/ops.h"
#include "core/kv_cache.h"
#include "core/model/config.h"
#include "core/model/weight_loader.h"

namespace ds {

// What a forward pass leaves on the backend: the final hidden states [n, hidden], the logits of
// every row (all_logits) or of the last one, and each logits row's argmax ([1, rows] i32: greedy
// decoding's choices, so the logits need not leave the backend; with all_logits only up to
// kArgmaxRowsMax rows, else invalid).
struct PassOutput {
  Tensor hidden, logits, argmax;
};
inline constexpr int64_t kArgmaxRowsMax = 65;  // a verification pass of 64 drafts

class Model {
 public:
  virtual ~Model() = default;

  // Per-layer cache tensors' widths (the same for every layer).
  virtual std::vector<int64_t> CacheWidths() const = 0;
  virtual int64_t n_layers() const = 0;

  // Runs the tokens `ids` ([1, n] i32) at positions pos0 .. pos0+n-1, writing their cache rows,
  // and returns the last hidden states after the final norm, [n, hidden]. The cache must hold
  // pos0 + n rows (KvCache::Reserve).
  virtual Tensor Forward(Ops& ops, const Tensor& ids, KvCache& cache, const Position& at) const = 0;
  // Logits [rows, vocab] of hidden states.
  virtual Tensor LmHead(Ops& ops, const Tensor& hidden) const = 0;
  // Forward, LmHead and the argmax (above).
  PassOutput ForwardPass(Ops& ops, const Tensor& ids, KvCache& cache, const Position& at, bool all_logits) const;

  // DeepSeek's next-token-prediction (MTP) layers; 0 where the checkpoint has none.
  virtual int64_t n_mtp_layers() const { return 0; }
  // MTP logits for positions pos0..: row i drafts the token after next_ids[i], from hidden[i]
  // (the main model's last hidden state at that position) and the embedding of next_ids[i]
  // (the token that followed it). The MTP layer has its own one-layer cache. `block_out`, if
  // given, receives the layer's output hidden states, which chain it to draft further.
  virtual Tensor MtpForward(Ops& ops, const Tensor& hidden, const Tensor& next_ids, KvCache& mtp_cache,
                            const Position& at, Tensor* block_out = nullptr) const;
};

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const ModelConfig& config, WeightLoader& loader);

// Per architecture (core/arch/<name>.cc).
absl::StatusOr<std::unique_ptr<Model>> LoadLlama(const ModelConfig& config, WeightLoader& loader);
absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3(const ModelConfig& config, WeightLoader& loader);

}  // namespace ds

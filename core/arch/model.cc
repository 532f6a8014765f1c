#include "core/arch/model.h"

namespace ds {

PassOutput Model::ForwardPass(Ops& ops, const Tensor& ids, KvCache& cache, const Position& at, bool all_logits) const {
  PassOutput out;
  out.hidden = Forward(ops, ids, cache, at);
  out.logits = LmHead(ops, all_logits || !ops.ok() ? out.hidden : out.hidden.Rows(out.hidden.rows - 1, 1));
  // Every row's argmax for a pass short enough to be a speculative verification (greedy
  // acceptance needs no more); a long prompt's, kept for logits_all, is not worth a pass.
  if (!all_logits || out.logits.rows <= kArgmaxRowsMax) out.argmax = ops.Argmax(out.logits);
  return out;
}

Tensor Model::MtpForward(Ops& ops, const Tensor&, const Tensor&, KvCache&, const Position&, Tensor*) const {
  // Callers check n_mtp_layers() first; reaching here is a bug, reported as such.
  ops.New(-1, 0);
  return {};
}

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const ModelConfig& config, WeightLoader& loader) {
  switch (config.arch) {
    case Architecture::kDeepseekV3:
      return LoadDeepseekV3(config, loader);
    case Architecture::kLlama:
    case Architecture::kQwen2:
      return LoadLlama(config, loader);
  }
  return absl::UnimplementedError("unknown architecture");
}

}  // namespace ds

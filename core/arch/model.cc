#include "core/arch/model.h"

namespace ds {

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

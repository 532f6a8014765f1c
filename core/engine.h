// An Engine: one model's weights, placed once on one backend. Immutable after Open and shared by
// any number of sessions and threads.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "core/arch/model.h"
#include "core/model/config.h"
#include "core/model/weight_loader.h"
#include "core/tokenizer/chat_template.h"
#include "core/tokenizer/tokenizer.h"

namespace ds {

enum class BackendKind { kAuto, kCpu, kCuda };
// What the matrices compute in. kAuto: f32 on the CPU, bf16 on CUDA (the tensor cores' type).
// bf16 stores the matrices as bf16 (a GEMV reads them with f32 accumulation; a GEMM rounds its
// activations to bf16 as well); everything else stays f32.
enum class ComputeType { kAuto, kF32, kBF16 };

struct EngineOptions {
  BackendKind backend = BackendKind::kCpu;
  int n_threads = 0;
  ProgressFn progress;
  ComputeType compute = ComputeType::kAuto;
  // The matrices' format: kF32, kBF16 (f32 compute on the CPU), or kQ8_0 / kQ4_0 (CPU only).
  DType weight_dtype = DType::kF32;
  int device = 0;                    // the CUDA device
  // Supplies the backend instead of `backend` (tests inject faults through it).
  std::function<absl::StatusOr<std::unique_ptr<Backend>>()> make_backend;
};

class Engine {
 public:
  static absl::StatusOr<std::shared_ptr<Engine>> Open(const std::string& model_dir, const EngineOptions& options);

  const ModelConfig& config() const { return config_; }
  Backend& backend() const { return *backend_; }
  const Model& model() const { return *model_; }
  uint64_t n_parameters() const { return n_parameters_; }
  uint64_t weight_bytes() const { return weight_bytes_; }
  // The folder's tokenizer, or why there is none (no tokenizer.json, or one we cannot read:
  // the model still runs on token ids).
  absl::StatusOr<const Tokenizer*> tokenizer() const;
  absl::StatusOr<const ChatTemplate*> chat_template() const;

 private:
  Engine() = default;

  ModelConfig config_;
  // Declared before the model so the model's tensors are released while the backend lives.
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  absl::Status tokenizer_status_;
  std::optional<ChatTemplate> chat_template_;
  absl::Status chat_template_status_;
  uint64_t n_parameters_ = 0;
  uint64_t weight_bytes_ = 0;
};

}  // namespace ds

#include "core/engine.h"

#include "absl/strings/str_cat.h"
#include "backends/plugin.h"
#include "core/model/safetensors.h"
#include "core/status.h"

namespace ds {

absl::StatusOr<std::shared_ptr<Engine>> Engine::Open(const std::string& model_dir, const EngineOptions& options) {
  std::shared_ptr<Engine> engine(new Engine());
  DS_ASSIGN_OR_RETURN(engine->config_, LoadModelConfig(model_dir));
  DType weight_dtype = options.weight_dtype;
  if (options.make_backend) {
    DS_ASSIGN_OR_RETURN(engine->backend_, options.make_backend());
  } else {
    bool on_cuda = false;
    const bool quantized = IsBlockQuantized(weight_dtype);
    if (quantized && options.backend == BackendKind::kCuda)
      return absl::UnimplementedError(absl::StrCat(DTypeName(weight_dtype), " weights run on the CPU backend only"));
    // On CUDA, compute is bf16 unless f32 is asked for (kAuto included).
    const bool cuda_bf16 = options.compute != ComputeType::kF32;
    if (options.backend != BackendKind::kCpu && !quantized) {
      auto cuda = LoadCudaBackend(PluginBackendOptions{.device = options.device, .tf32_attention = cuda_bf16});
      if (cuda.ok()) {
        engine->backend_ = *std::move(cuda);
        on_cuda = true;
      } else if (options.backend == BackendKind::kCuda) {
        return cuda.status();
      }  // kAuto: no plugin, driver or device is not an error; the CPU runs it
    }
    // bf16 compute (asked for, on the CPU): prompt matmuls with bf16 products where the CPU has
    // them, and f32 weights stored as bf16, as on CUDA.
    const bool cpu_bf16 = !on_cuda && options.compute == ComputeType::kBF16;
    if (!on_cuda) {
      DS_ASSIGN_OR_RETURN(engine->backend_,
                          MakeCpuBackend(BackendOptions{.n_threads = options.n_threads, .bf16_products = cpu_bf16}));
    }
    if ((on_cuda && cuda_bf16) || (cpu_bf16 && weight_dtype == DType::kF32)) weight_dtype = DType::kBF16;
  }
  // The checkpoint is mapped only while loading: weights are copied to the backend in its own
  // layout, so nothing points into the files afterwards (a file changed later cannot hurt us).
  DS_ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(model_dir));
  WeightLoader loader(checkpoint, engine->config_, *engine->backend_, options.progress, weight_dtype);
  DS_ASSIGN_OR_RETURN(engine->model_, LoadModel(engine->config_, loader));
  if (auto tokenizer = Tokenizer::Load(model_dir); tokenizer.ok()) {
    engine->tokenizer_ = *std::move(tokenizer);
  } else {
    engine->tokenizer_status_ = tokenizer.status();
  }
  if (auto chat = ChatTemplate::Load(model_dir); chat.ok()) {
    engine->chat_template_ = *chat;
  } else {
    engine->chat_template_status_ = chat.status();
  }
  engine->n_parameters_ = loader.n_parameters();
  engine->weight_bytes_ = loader.weight_bytes();
  return engine;
}

absl::StatusOr<const Tokenizer*> Engine::tokenizer() const {
  if (!tokenizer_) return tokenizer_status_;
  return tokenizer_.get();
}

absl::StatusOr<const ChatTemplate*> Engine::chat_template() const {
  if (!chat_template_) return chat_template_status_;
  return &*chat_template_;
}

}  // namespace ds

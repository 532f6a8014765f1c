// config.json of a Hugging Face checkpoint, with the hub's field names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace ds {

enum class Architecture { kDeepseekV3, kLlama, kQwen2 };

struct RopeScaling {
  enum class Type { kNone, kLinear, kYarn, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  // yarn
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;          // 0: absent
  double mscale_all_dim = 0.0;  // 0: absent
  std::optional<double> attention_factor;
  bool truncate = true;
  // yarn and llama3
  int64_t original_max_position_embeddings = 0;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
};

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // llama/qwen2: from config or hidden_size / heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // qwen2: always; llama: attention_bias
  bool o_bias = false;    // llama: attention_bias
  bool mlp_bias = false;
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  // deepseek_v3
  int64_t q_lora_rank = 0;  // 0: no q compression (q_proj), as DeepSeek-V2-Lite
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  int64_t num_nextn_predict_layers = 0;

  // quantization_config (DeepSeek's fp8 checkpoints)
  bool fp8_weights = false;
  int64_t weight_block_rows = 128;
  int64_t weight_block_cols = 128;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool IsMoeLayer(int64_t layer) const {
    return arch == Architecture::kDeepseekV3 && n_routed_experts > 0 &&
           layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
};

// `path` names the file in messages.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view path);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace ds

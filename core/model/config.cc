#include "core/model/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/model/text_file.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace ds {
namespace {

using json = nlohmann::json;

// Limits far above any real checkpoint; they keep products of sizes from overflowing.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxLayers = 4096;

// Reads typed fields of one JSON object, remembering the first error.
class FieldReader {
 public:
  FieldReader(const json& object, std::string where) : j_(object), where_(std::move(where)) {}

  bool Has(const char* name) const { return j_.contains(name) && !j_[name].is_null(); }

  int64_t Int(const char* name, int64_t fallback, bool required = false) {
    if (!Has(name)) {
      if (required) Fail(absl::StrCat("missing required field '", name, "'"));
      return fallback;
    }
    const json& v = j_[name];
    if (v.is_number_integer()) return v.get<int64_t>();
    // A whole float (e.g. 4096.0) is accepted; converting one outside int64 would be undefined.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && std::abs(d) < 9.0e18 && d == std::trunc(d)) return static_cast<int64_t>(d);
    }
    Fail(absl::StrCat("field '", name, "' must be an integer"));
    return fallback;
  }

  double Real(const char* name, double fallback) {
    if (!Has(name)) return fallback;
    const json& v = j_[name];
    if (v.is_number()) return v.get<double>();
    Fail(absl::StrCat("field '", name, "' must be a number"));
    return fallback;
  }

  bool Bool(const char* name, bool fallback) {
    if (!Has(name)) return fallback;
    const json& v = j_[name];
    if (v.is_boolean()) return v.get<bool>();
    Fail(absl::StrCat("field '", name, "' must be true or false"));
    return fallback;
  }

  std::string String(const char* name, const std::string& fallback) {
    if (!Has(name)) return fallback;
    const json& v = j_[name];
    if (v.is_string()) return v.get<std::string>();
    Fail(absl::StrCat("field '", name, "' must be a string"));
    return fallback;
  }

  // Checks lo <= value <= hi.
  void Range(const char* name, int64_t value, int64_t lo, int64_t hi) {
    if (value < lo || value > hi)
      Fail(absl::StrCat("field '", name, "' is ", value, ", expected ", lo, "..", hi));
  }

  void Fail(absl::string_view message) {
    if (status_.ok()) status_ = FormatError(absl::StrCat(where_, ": ", message));
  }
  const absl::Status& status() const { return status_; }

 private:
  const json& j_;
  std::string where_;
  absl::Status status_;
};

absl::Status ParseRopeScaling(const json& j, absl::string_view path, ModelConfig& c) {
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return absl::OkStatus();
  const json& rs = j["rope_scaling"];
  if (!rs.is_object()) return FormatError(absl::StrCat(path, ": 'rope_scaling' must be an object or null"));
  FieldReader f(rs, absl::StrCat(path, ": rope_scaling"));
  const std::string type = f.String("rope_type", f.String("type", "default"));
  RopeScaling& r = c.rope_scaling;
  if (type == "default") {
    r.type = RopeScaling::Type::kNone;
  } else if (type == "linear") {
    r.type = RopeScaling::Type::kLinear;
  } else if (type == "yarn") {
    r.type = RopeScaling::Type::kYarn;
  } else if (type == "llama3") {
    r.type = RopeScaling::Type::kLlama3;
  } else {
    return absl::UnimplementedError(absl::StrCat(path, ": rope_scaling type '", type, "' is not supported (default, linear, yarn, llama3 are)"));
  }
  r.factor = f.Real("factor", 1.0);
  r.beta_fast = f.Real("beta_fast", 32.0);
  r.beta_slow = f.Real("beta_slow", 1.0);
  r.mscale = f.Real("mscale", 0.0);
  r.mscale_all_dim = f.Real("mscale_all_dim", 0.0);
  if (f.Has("attention_factor")) r.attention_factor = f.Real("attention_factor", 1.0);
  r.truncate = f.Bool("truncate", true);
  r.original_max_position_embeddings =
      f.Int("original_max_position_embeddings", c.max_position_embeddings);
  r.low_freq_factor = f.Real("low_freq_factor", 1.0);
  r.high_freq_factor = f.Real("high_freq_factor", 4.0);
  // transformers 5 moved rope_theta into rope_scaling (rope_parameters); the top level wins.
  if (!j.contains("rope_theta") || j["rope_theta"].is_null()) c.rope_theta = f.Real("rope_theta", c.rope_theta);
  DS_RETURN_IF_ERROR(f.status());
  if (r.type != RopeScaling::Type::kNone && !(r.factor > 0))
    return FormatError(absl::StrCat(path, ": rope_scaling.factor must be positive"));
  if ((r.type == RopeScaling::Type::kYarn || r.type == RopeScaling::Type::kLlama3) &&
      r.original_max_position_embeddings <= 0)
    return FormatError(absl::StrCat(path, ": rope_scaling.original_max_position_embeddings must be positive"));
  if (r.type == RopeScaling::Type::kLlama3 && !(r.high_freq_factor > r.low_freq_factor))
    return FormatError(absl::StrCat(path, ": rope_scaling needs high_freq_factor > low_freq_factor"));
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const json& j, absl::string_view path, ModelConfig& c) {
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_token_id = j["bos_token_id"].get<int32_t>();
  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) {
      c.eos_token_ids.push_back(e.get<int32_t>());
    } else if (e.is_array()) {
      for (const auto& id : e) {
        if (!id.is_number_integer()) return FormatError(absl::StrCat(path, ": eos_token_id entries must be integers"));
        c.eos_token_ids.push_back(id.get<int32_t>());
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ParseQuantization(const json& j, absl::string_view path, ModelConfig& c) {
  if (!j.contains("quantization_config") || j["quantization_config"].is_null()) return absl::OkStatus();
  const json& q = j["quantization_config"];
  if (!q.is_object()) return FormatError(absl::StrCat(path, ": 'quantization_config' must be an object"));
  FieldReader f(q, absl::StrCat(path, ": quantization_config"));
  const std::string method = f.String("quant_method", "");
  if (method != "fp8")
    return absl::UnimplementedError(absl::StrCat(path, ": quant_method '", method, "' is not supported (fp8 is)"));
  const std::string fmt = f.String("fmt", "e4m3");
  if (fmt != "e4m3") return absl::UnimplementedError(absl::StrCat(path, ": fp8 format '", fmt, "' is not supported (e4m3 is)"));
  c.fp8_weights = true;
  if (q.contains("weight_block_size")) {
    const json& b = q["weight_block_size"];
    if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
        b[0].get<int64_t>() <= 0 || b[1].get<int64_t>() <= 0)
      return FormatError(absl::StrCat(path, ": weight_block_size must be two positive integers"));
    c.weight_block_rows = b[0].get<int64_t>();
    c.weight_block_cols = b[1].get<int64_t>();
  }
  return f.status();
}

absl::Status ParseDeepseek(FieldReader& f, absl::string_view path, ModelConfig& c) {
  c.q_lora_rank = f.Int("q_lora_rank", 0);
  c.kv_lora_rank = f.Int("kv_lora_rank", 0, true);
  c.qk_nope_head_dim = f.Int("qk_nope_head_dim", 0, true);
  c.qk_rope_head_dim = f.Int("qk_rope_head_dim", 0, true);
  c.v_head_dim = f.Int("v_head_dim", 0, true);
  c.n_routed_experts = f.Int("n_routed_experts", 0);
  c.n_shared_experts = f.Int("n_shared_experts", 0);
  c.num_experts_per_tok = f.Int("num_experts_per_tok", 0);
  c.moe_intermediate_size = f.Int("moe_intermediate_size", 0);
  c.first_k_dense_replace = f.Int("first_k_dense_replace", 0);
  c.moe_layer_freq = f.Int("moe_layer_freq", 1);
  c.n_group = f.Int("n_group", 1);
  c.topk_group = f.Int("topk_group", 1);
  c.norm_topk_prob = f.Bool("norm_topk_prob", true);
  c.routed_scaling_factor = f.Real("routed_scaling_factor", 1.0);
  c.num_nextn_predict_layers = f.Int("num_nextn_predict_layers", 0);
  const std::string scoring = f.String("scoring_func", "sigmoid");
  const std::string topk_method = f.String("topk_method", "noaux_tc");
  DS_RETURN_IF_ERROR(f.status());

  f.Range("q_lora_rank", c.q_lora_rank, 0, kMaxDim);
  f.Range("kv_lora_rank", c.kv_lora_rank, 1, kMaxDim);
  f.Range("qk_nope_head_dim", c.qk_nope_head_dim, 1, kMaxDim);
  f.Range("qk_rope_head_dim", c.qk_rope_head_dim, 2, kMaxDim);
  f.Range("v_head_dim", c.v_head_dim, 1, kMaxDim);
  if (c.qk_rope_head_dim % 2) f.Fail("field 'qk_rope_head_dim' must be even");
  f.Range("num_nextn_predict_layers", c.num_nextn_predict_layers, 0, 16);
  if (c.n_routed_experts > 0) {
    f.Range("n_routed_experts", c.n_routed_experts, 1, 1 << 16);
    f.Range("n_shared_experts", c.n_shared_experts, 0, 1 << 16);
    f.Range("moe_intermediate_size", c.moe_intermediate_size, 1, kMaxDim);
    f.Range("moe_layer_freq", c.moe_layer_freq, 1, kMaxLayers);
    f.Range("n_group", c.n_group, 1, c.n_routed_experts);
    // Range records a bad n_group and goes on: the modulo must not see its 0.
    if (c.n_group > 0 && c.n_routed_experts % c.n_group) f.Fail("n_routed_experts must be a multiple of n_group");
    f.Range("topk_group", c.topk_group, 1, c.n_group);
    f.Range("num_experts_per_tok", c.num_experts_per_tok, 1,
            c.topk_group * (c.n_routed_experts / std::max<int64_t>(c.n_group, 1)));
    if (scoring != "sigmoid")
      return absl::UnimplementedError(absl::StrCat(path, ": scoring_func '", scoring, "' is not supported (sigmoid is)"));
    if (topk_method != "noaux_tc")
      return absl::UnimplementedError(absl::StrCat(path, ": topk_method '", topk_method, "' is not supported (noaux_tc is)"));
  }
  return f.status();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view path) {
  const json j = json::parse(json_text.data(), json_text.data() + json_text.size(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return FormatError(absl::StrCat(path, ": not a JSON object"));
  ModelConfig c;
  FieldReader f(j, std::string(path));
  c.model_type = f.String("model_type", "");
  DS_RETURN_IF_ERROR(f.status());
  if (c.model_type == "deepseek_v3") {
    c.arch = Architecture::kDeepseekV3;
  } else if (c.model_type == "llama") {
    c.arch = Architecture::kLlama;
  } else if (c.model_type == "qwen2") {
    c.arch = Architecture::kQwen2;
  } else if (c.model_type.empty()) {
    return FormatError(absl::StrCat(path, ": missing 'model_type'"));
  } else {
    return absl::UnimplementedError(absl::StrCat(path, ": model_type '", c.model_type,
                                                 "' is not supported (deepseek_v3, qwen2, llama are)"));
  }

  c.vocab_size = f.Int("vocab_size", 0, true);
  c.hidden_size = f.Int("hidden_size", 0, true);
  c.intermediate_size = f.Int("intermediate_size", 0, true);
  c.num_hidden_layers = f.Int("num_hidden_layers", 0, true);
  c.num_attention_heads = f.Int("num_attention_heads", 0, true);
  c.num_key_value_heads = f.Int("num_key_value_heads", c.num_attention_heads);
  c.max_position_embeddings = f.Int("max_position_embeddings", 4096);
  c.rms_norm_eps = f.Real("rms_norm_eps", 1e-6);
  c.rope_theta = f.Real("rope_theta", 10000.0);
  c.tie_word_embeddings = f.Bool("tie_word_embeddings", false);
  const bool attention_bias = f.Bool("attention_bias", false);
  c.mlp_bias = f.Bool("mlp_bias", false);
  const std::string act = f.String("hidden_act", "silu");
  DS_RETURN_IF_ERROR(f.status());

  f.Range("vocab_size", c.vocab_size, 1, kMaxDim);
  f.Range("hidden_size", c.hidden_size, 1, kMaxDim);
  f.Range("intermediate_size", c.intermediate_size, 1, kMaxDim);
  f.Range("num_hidden_layers", c.num_hidden_layers, 1, kMaxLayers);
  f.Range("num_attention_heads", c.num_attention_heads, 1, 4096);
  f.Range("num_key_value_heads", c.num_key_value_heads, 1, c.num_attention_heads);
  f.Range("max_position_embeddings", c.max_position_embeddings, 1, int64_t{1} << 30);
  DS_RETURN_IF_ERROR(f.status());
  if (c.num_attention_heads % c.num_key_value_heads)
    return FormatError(absl::StrCat(path, ": num_attention_heads (", c.num_attention_heads,
                                    ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")"));
  if (!(c.rms_norm_eps >= 0)) return FormatError(absl::StrCat(path, ": rms_norm_eps must be >= 0"));
  if (!(c.rope_theta > 0)) return FormatError(absl::StrCat(path, ": rope_theta must be positive"));
  if (act != "silu")
    return absl::UnimplementedError(absl::StrCat(path, ": hidden_act '", act, "' is not supported (silu is)"));

  DS_RETURN_IF_ERROR(ParseRopeScaling(j, path, c));
  DS_RETURN_IF_ERROR(ParseTokenIds(j, path, c));
  DS_RETURN_IF_ERROR(ParseQuantization(j, path, c));

  switch (c.arch) {
    case Architecture::kDeepseekV3: {
      DS_RETURN_IF_ERROR(ParseDeepseek(f, path, c));
      // The rope of MLA covers qk_rope_head_dim only (transformers sets head_dim to it).
      c.head_dim = c.qk_rope_head_dim;
      break;
    }
    case Architecture::kQwen2:
    case Architecture::kLlama:
      c.head_dim = f.Int("head_dim", c.hidden_size / c.num_attention_heads);
      f.Range("head_dim", c.head_dim, 2, kMaxDim);
      if (c.head_dim % 2) f.Fail("field 'head_dim' must be even");
      DS_RETURN_IF_ERROR(f.status());
      c.qkv_bias = c.arch == Architecture::kQwen2 || attention_bias;
      c.o_bias = c.arch == Architecture::kLlama && attention_bias;
      break;
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec))
    return absl::NotFoundError(absl::StrCat(model_dir, ": no such model folder"));
  const std::string path = (fs::path(model_dir) / "config.json").string();
  auto text = ReadTextFile(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat(path, ": cannot open (is this a Hugging Face model folder?)"));
  return ParseModelConfig(*text, path);
}

}  // namespace ds

// Llama and Qwen2 (the DeepSeek-R1 distills), as transformers' modeling_llama.py and
// modeling_qwen2.py: pre-norm blocks, grouped-query attention with rotate-half rope, SwiGLU MLP.
// Qwen2 is Llama with biases on q/k/v.
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/arch/model.h"
#include "core/arch/rope.h"
#include "core/status.h"

namespace ds {
namespace {

struct Linear {
  Tensor weight;
  std::optional<Tensor> bias;
};

struct Attention {
  Linear qkv_proj;  // q_proj, k_proj and v_proj stacked: one matmul, q | k | v in its columns
  Linear o_proj;
};

struct Block {
  Tensor input_layernorm, post_attention_layernorm;
  Attention self_attn;
  MlpWeights mlp;
};

class Llama final : public Model {
 public:
  explicit Llama(const ModelConfig& c) : c_(c) {}

  absl::Status Load(WeightLoader& w);

  std::vector<int64_t> CacheWidths() const override {
    return {c_.num_key_value_heads * c_.head_dim, c_.num_key_value_heads * c_.head_dim};
  }
  int64_t n_layers() const override { return c_.num_hidden_layers; }

  Tensor Forward(Ops& ops, const Tensor& ids, KvCache& cache, const Position& at) const override {
    Tensor x = ops.Embedding(embed_tokens_, ids);
    // Each norm goes into the projection after it and each residual add into the one before it
    // (NormLinear, NormGateUp, LinearAdd): one pass each where the backend fuses them.
    for (int64_t i = 0; i < c_.num_hidden_layers; ++i) {
      const Block& layer = layers_[i];
      const Linear& o_proj = layer.self_attn.o_proj;
      Tensor attn = SelfAttention(ops, layer, x, cache, i, at);
      x = ops.LinearAdd(attn, o_proj.weight, o_proj.bias ? &*o_proj.bias : nullptr, x);
      Tensor h = ops.NormGateUp(x, layer.post_attention_layernorm, eps(), layer.mlp);
      x = ops.LinearAdd(h, layer.mlp.down_proj, nullptr, x);
    }
    return ops.RmsNorm(x, norm_, eps());
  }

  Tensor LmHead(Ops& ops, const Tensor& hidden) const override { return ops.Linear(hidden, lm_head_); }

 private:
  float eps() const { return static_cast<float>(c_.rms_norm_eps); }

  // The attention heads' output for input_layernorm(x), before o_proj.
  Tensor SelfAttention(Ops& ops, const Block& layer, const Tensor& x, KvCache& cache, int64_t i,
                       const Position& at) const {
    const int64_t d = c_.head_dim;
    const int64_t q_dim = c_.num_attention_heads * d, kv_dim = c_.num_key_value_heads * d;
    const Linear& qkv_proj = layer.self_attn.qkv_proj;
    Tensor qkv = ops.NormLinear(x, layer.input_layernorm, eps(), qkv_proj.weight,  // [T, q_dim + 2 * kv_dim]
                                qkv_proj.bias ? &*qkv_proj.bias : nullptr);
    Tensor q = qkv.Cols(0, q_dim), k = qkv.Cols(q_dim, kv_dim), v = qkv.Cols(q_dim + kv_dim, kv_dim);
    const Tensor &k_cache = cache.Layer(i, 0), &v_cache = cache.Layer(i, 1);
    ops.RopeAndStoreKv(q, k, v, d, d, rope_, RopeLayout::kHalf, at, k_cache, v_cache);
    const AttentionShape shape{.n_heads = c_.num_attention_heads,
                               .n_kv_heads = c_.num_key_value_heads,
                               .head_dim_qk = d,
                               .head_dim_v = d,
                               .scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))),
                               .position = at};
    return ops.Attention(q, k_cache, v_cache, shape);
  }

  ModelConfig c_;
  RopeTable rope_;
  Tensor embed_tokens_, norm_, lm_head_;
  std::vector<Block> layers_;
};

absl::StatusOr<Linear> LoadLinear(WeightLoader& w, const std::string& name, int64_t out, int64_t in, bool bias) {
  Linear l;
  DS_ASSIGN_OR_RETURN(l.weight, w.Matrix(name + ".weight", out, in));
  if (bias) {
    DS_ASSIGN_OR_RETURN(l.bias, w.Vector(name + ".bias", out));
  }
  return l;
}

absl::Status Llama::Load(WeightLoader& w) {
  if (c_.mlp_bias) return absl::UnimplementedError("mlp_bias: true is not supported");
  const int64_t H = c_.hidden_size, d = c_.head_dim;
  const int64_t q_dim = c_.num_attention_heads * d, kv_dim = c_.num_key_value_heads * d;
  const RopeFrequencies freq = ComputeRopeFrequencies(c_, d);
  DS_ASSIGN_OR_RETURN(rope_.inv_freq, w.Upload(freq.inv_freq, 1, static_cast<int64_t>(freq.inv_freq.size())));
  rope_.attention_factor = freq.attention_factor;

  DS_ASSIGN_OR_RETURN(embed_tokens_, w.Matrix("model.embed_tokens.weight", c_.vocab_size, H));
  layers_.resize(static_cast<size_t>(c_.num_hidden_layers));
  for (int64_t i = 0; i < c_.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Block& b = layers_[i];
    DS_ASSIGN_OR_RETURN(b.input_layernorm, w.Vector(p + "input_layernorm.weight", H));
    DS_ASSIGN_OR_RETURN(b.post_attention_layernorm, w.Vector(p + "post_attention_layernorm.weight", H));
    const std::string a = p + "self_attn.";
    DS_ASSIGN_OR_RETURN(b.self_attn.qkv_proj.weight,
                        w.StackedMatrix({{a + "q_proj.weight", q_dim}, {a + "k_proj.weight", kv_dim},
                                         {a + "v_proj.weight", kv_dim}},
                                        H));
    if (c_.qkv_bias) {
      DS_ASSIGN_OR_RETURN(b.self_attn.qkv_proj.bias,
                          w.StackedVector({{a + "q_proj.bias", q_dim}, {a + "k_proj.bias", kv_dim},
                                           {a + "v_proj.bias", kv_dim}}));
    }
    DS_ASSIGN_OR_RETURN(b.self_attn.o_proj, LoadLinear(w, p + "self_attn.o_proj", H, q_dim, c_.o_bias));
    DS_ASSIGN_OR_RETURN(b.mlp.gate_proj, w.Matrix(p + "mlp.gate_proj.weight", c_.intermediate_size, H));
    DS_ASSIGN_OR_RETURN(b.mlp.up_proj, w.Matrix(p + "mlp.up_proj.weight", c_.intermediate_size, H));
    DS_ASSIGN_OR_RETURN(b.mlp.down_proj, w.Matrix(p + "mlp.down_proj.weight", H, c_.intermediate_size));
  }
  DS_ASSIGN_OR_RETURN(norm_, w.Vector("model.norm.weight", H));
  if (c_.tie_word_embeddings) {
    lm_head_ = embed_tokens_;
  } else {
    DS_ASSIGN_OR_RETURN(lm_head_, w.Matrix("lm_head.weight", c_.vocab_size, H));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadLlama(const ModelConfig& config, WeightLoader& loader) {
  auto model = std::make_unique<Llama>(config);
  DS_RETURN_IF_ERROR(model->Load(loader));
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace ds

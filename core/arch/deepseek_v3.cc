// DeepSeek-V3 / R1, in the order of transformers' modeling_deepseek_v3.py and the concepts of
// DeepSeek's inference/model.py: Mla (multi-head latent attention), Router (sigmoid, noaux_tc
// group-limited top-k), MoE (routed + shared experts), Block, and the MTP layer.
//
// The KV cache holds, per layer and token, the compressed latent c_kv (kv_lora_rank) and the
// shared rope key k_pe (qk_rope_head_dim): [c_kv | k_pe]. Attention always runs over it in the
// absorbed form: W_UK folds into the query, W_UV into the output, so keys and values are never
// decompressed:
//   score(t, s) = (W_UKᵀ q_nope) · c_kv[s] + q_pe · k_pe[s]
//   out(t)      = W_UV · Σ_s p(t, s) c_kv[s]
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/arch/model.h"
#include "core/arch/rope.h"
#include "core/status.h"

namespace ds {
namespace {

struct Mla {
  // With q_lora_rank: q = q_b_proj(q_a_layernorm(q_a_proj(x))); without: q = q_proj(x).
  // q_a_proj (or q_proj) and kv_a_proj_with_mqa stacked: both read the normed input, so one
  // projection gives [q_a | c_kv | k_pe] (or [q | c_kv | k_pe]).
  Tensor q_kv_a_proj;
  std::optional<Tensor> q_a_layernorm, q_b_proj;
  Tensor kv_a_layernorm;
  Tensor w_uk_t;  // [heads * kv_lora_rank, qk_nope_head_dim]: W_UK of each head, transposed
  Tensor w_uv;    // [heads * v_head_dim, kv_lora_rank]
  Tensor o_proj;
};

struct MoE {
  Tensor gate;                     // router weight [n_routed_experts, hidden]
  Tensor e_score_correction_bias;  // [1, n_routed_experts]
  std::vector<MlpWeights> experts;
  std::optional<MlpWeights> shared_experts;
};

struct Block {
  Tensor input_layernorm, post_attention_layernorm;
  Mla self_attn;
  std::optional<MlpWeights> mlp;  // dense layers (< first_k_dense_replace)
  std::optional<MoE> moe;
};

// The next-token-prediction layer: drafts the token after next from the main model's hidden
// state and the embedding of the next token.
struct Mtp {
  Tensor embed_tokens, enorm, hnorm, eh_proj;
  Block block;
  Tensor shared_head_norm, shared_head_head;
};

class DeepseekV3 final : public Model {
 public:
  explicit DeepseekV3(const ModelConfig& c) : c_(c) {}

  absl::Status Load(WeightLoader& w);

  std::vector<int64_t> CacheWidths() const override { return {c_.kv_lora_rank + c_.qk_rope_head_dim}; }
  int64_t n_layers() const override { return c_.num_hidden_layers; }
  int64_t n_mtp_layers() const override { return mtp_ ? 1 : 0; }

  Tensor Forward(Ops& ops, const Tensor& ids, KvCache& cache, const Position& at) const override {
    Tensor x = ops.Embedding(embed_tokens_, ids);
    for (int64_t i = 0; i < c_.num_hidden_layers; ++i) x = BlockForward(ops, layers_[i], x, cache, i, at);
    return ops.RmsNorm(x, norm_, eps());
  }

  Tensor LmHead(Ops& ops, const Tensor& hidden) const override { return ops.Linear(hidden, lm_head_); }

  Tensor MtpForward(Ops& ops, const Tensor& hidden, const Tensor& next_ids, KvCache& mtp_cache,
                    const Position& at, Tensor* block_out) const override {
    const Mtp& m = *mtp_;
    const int64_t T = hidden.rows, H = c_.hidden_size;
    Tensor e = ops.RmsNorm(ops.Embedding(m.embed_tokens, next_ids), m.enorm, eps());
    Tensor h = ops.RmsNorm(hidden, m.hnorm, eps());
    Tensor eh = ops.New(T, 2 * H);  // concat(enorm(embed), hnorm(hidden))
    if (ops.ok()) {
      ops.Copy(e, eh.Cols(0, H));
      ops.Copy(h, eh.Cols(H, H));
    }
    Tensor x = ops.Linear(eh, m.eh_proj);
    x = BlockForward(ops, m.block, x, mtp_cache, 0, at);
    if (block_out) *block_out = x;
    return ops.Linear(ops.RmsNorm(x, m.shared_head_norm, eps()), m.shared_head_head);
  }

 private:
  float eps() const { return static_cast<float>(c_.rms_norm_eps); }

  // x + attention + MLP (or MoE): the residual adds happen in the output projections.
  Tensor BlockForward(Ops& ops, const Block& b, Tensor x, KvCache& cache, int64_t layer, const Position& at) const {
    x = MlaForward(ops, b.self_attn, b.input_layernorm, x, cache, layer, at);
    if (b.moe) return MoeForward(ops, *b.moe, b.post_attention_layernorm, x);
    Tensor h = ops.NormGateUp(x, b.post_attention_layernorm, eps(), *b.mlp);
    return ops.LinearAdd(h, b.mlp->down_proj, nullptr, x);
  }

  // x + o_proj(attention(norm(x))), norm being the block's input_layernorm.
  Tensor MlaForward(Ops& ops, const Mla& a, const Tensor& norm, const Tensor& x, KvCache& cache, int64_t layer,
                    const Position& at) const {
    const int64_t T = x.rows, heads = c_.num_attention_heads;
    const int64_t nope = c_.qk_nope_head_dim, rope = c_.qk_rope_head_dim, qk = c_.qk_head_dim();
    const int64_t r = c_.kv_lora_rank, v = c_.v_head_dim;

    // With q_lora_rank: q = q_b_proj(q_a_layernorm(q_a_proj(h))); without: q = q_proj(h).
    Tensor q_kv = ops.NormLinear(x, norm, eps(), a.q_kv_a_proj);
    const int64_t q_cols = a.q_b_proj ? c_.q_lora_rank : heads * qk;
    Tensor kv = q_kv.Cols(q_cols, r + rope);  // [T, r + rope]: [c_kv | k_pe]
    Tensor q = a.q_b_proj ? ops.NormLinear(q_kv.Cols(0, q_cols), *a.q_a_layernorm, eps(), *a.q_b_proj)
                          : q_kv.Cols(0, q_cols);  // [T, heads * qk]

    // Absorbed query per head: [W_UKᵀ q_nope | rope(q_pe)], scored against the cache's
    // [kv_a_layernorm(c_kv) | rope(k_pe)], this step's rows of which are written here.
    Tensor q_latent = ops.New(T, heads * (r + rope));
    if (!ops.ok()) return {};
    const Tensor& latent = cache.Layer(layer, 0);  // [c_kv | k_pe] per position
    ops.MlaRopeAndStore(q, heads, qk, nope, kv, a.kv_a_layernorm, eps(), rope, rope_, RopeLayout::kInterleaved, at,
                        q_latent, r + rope, latent, &a.w_uk_t);
    const AttentionShape shape{.n_heads = heads, .n_kv_heads = 1, .head_dim_qk = r + rope,
                               .head_dim_v = r, .scale = softmax_scale_, .position = at};
    Tensor o_latent = ops.Attention(q_latent, latent, latent.Cols(0, r), shape);  // [T, heads * r]

    Tensor o = ops.New(T, heads * v);
    if (!ops.ok()) return {};
    ops.HeadsMatmulInto(o_latent, r, a.w_uv, heads, o, v);
    return ops.LinearAdd(o, a.o_proj, nullptr, x);
  }

  // x + routed experts(h) + shared experts(h), h = rms_norm(x) * norm (post_attention_layernorm),
  // which the router and the experts apply as they read x.
  Tensor MoeForward(Ops& ops, const MoE& moe, const Tensor& norm, const Tensor& x) const {
    const auto routes = ops.NormMoeRoute(x, norm, eps(), moe.gate, moe.e_score_correction_bias, routing_);
    return ops.NormMoeAdd(x, norm, eps(), routes, moe.experts, moe.shared_experts ? &*moe.shared_experts : nullptr);
  }

  absl::StatusOr<Mla> LoadMla(WeightLoader& w, const std::string& p);
  absl::StatusOr<MlpWeights> LoadMlp(WeightLoader& w, const std::string& p, int64_t intermediate);
  absl::StatusOr<MoE> LoadMoe(WeightLoader& w, const std::string& p);
  absl::StatusOr<Block> LoadBlock(WeightLoader& w, int64_t layer);
  absl::StatusOr<Mtp> LoadMtp(WeightLoader& w, int64_t layer);

  ModelConfig c_;
  RopeTable rope_;
  float softmax_scale_ = 1.0f;
  MoeRouting routing_;
  Tensor embed_tokens_, norm_, lm_head_;
  std::vector<Block> layers_;
  std::optional<Mtp> mtp_;
};

absl::StatusOr<Mla> DeepseekV3::LoadMla(WeightLoader& w, const std::string& p) {
  const int64_t H = c_.hidden_size, heads = c_.num_attention_heads;
  const int64_t nope = c_.qk_nope_head_dim, qk = c_.qk_head_dim(), v = c_.v_head_dim, r = c_.kv_lora_rank;
  Mla a;
  const std::pair<std::string, int64_t> kv_a{p + "kv_a_proj_with_mqa.weight", r + c_.qk_rope_head_dim};
  if (c_.q_lora_rank > 0) {
    DS_ASSIGN_OR_RETURN(a.q_kv_a_proj, w.StackedMatrix({{p + "q_a_proj.weight", c_.q_lora_rank}, kv_a}, H));
    DS_ASSIGN_OR_RETURN(a.q_a_layernorm, w.Vector(p + "q_a_layernorm.weight", c_.q_lora_rank));
    DS_ASSIGN_OR_RETURN(a.q_b_proj, w.Matrix(p + "q_b_proj.weight", heads * qk, c_.q_lora_rank));
  } else {
    DS_ASSIGN_OR_RETURN(a.q_kv_a_proj, w.StackedMatrix({{p + "q_proj.weight", heads * qk}, kv_a}, H));
  }
  DS_ASSIGN_OR_RETURN(a.kv_a_layernorm, w.Vector(p + "kv_a_layernorm.weight", r));
  // kv_b_proj rows, per head: W_UK [nope, r] then W_UV [v, r]. Split them for the absorbed form.
  DS_ASSIGN_OR_RETURN(std::vector<float> kv_b, w.ReadF32(p + "kv_b_proj.weight", {heads * (nope + v), r}));
  std::vector<float> w_uk_t(static_cast<size_t>(heads * r * nope)), w_uv(static_cast<size_t>(heads * v * r));
  for (int64_t h = 0; h < heads; ++h) {
    const float* head = kv_b.data() + h * (nope + v) * r;
    for (int64_t i = 0; i < nope; ++i)
      for (int64_t j = 0; j < r; ++j) w_uk_t[(h * r + j) * nope + i] = head[i * r + j];
    std::copy(head + nope * r, head + (nope + v) * r, w_uv.begin() + h * v * r);
  }
  // Decode reads them every step as it reads the checkpoint's matrices: bf16 unless the engine
  // keeps f32 (not quantized: they act on every head's query and output).
  const DType absorbed = w.matrix_dtype() == DType::kF32 ? DType::kF32 : DType::kBF16;
  DS_ASSIGN_OR_RETURN(a.w_uk_t, w.Upload(w_uk_t, heads * r, nope, absorbed));
  DS_ASSIGN_OR_RETURN(a.w_uv, w.Upload(w_uv, heads * v, r, absorbed));
  DS_ASSIGN_OR_RETURN(a.o_proj, w.Matrix(p + "o_proj.weight", H, heads * v));
  return a;
}

absl::StatusOr<MlpWeights> DeepseekV3::LoadMlp(WeightLoader& w, const std::string& p, int64_t intermediate) {
  MlpWeights m;
  DS_ASSIGN_OR_RETURN(m.gate_proj, w.Matrix(p + "gate_proj.weight", intermediate, c_.hidden_size));
  DS_ASSIGN_OR_RETURN(m.up_proj, w.Matrix(p + "up_proj.weight", intermediate, c_.hidden_size));
  DS_ASSIGN_OR_RETURN(m.down_proj, w.Matrix(p + "down_proj.weight", c_.hidden_size, intermediate));
  return m;
}

absl::StatusOr<MoE> DeepseekV3::LoadMoe(WeightLoader& w, const std::string& p) {
  const int64_t E = c_.n_routed_experts;
  MoE moe;
  DS_ASSIGN_OR_RETURN(moe.gate, w.Matrix(p + "gate.weight", E, c_.hidden_size, WeightLoader::kKeepF32));
  if (w.Has(p + "gate.e_score_correction_bias")) {
    DS_ASSIGN_OR_RETURN(moe.e_score_correction_bias, w.Vector(p + "gate.e_score_correction_bias", E));
  } else {  // transformers' buffer default
    DS_ASSIGN_OR_RETURN(moe.e_score_correction_bias, w.Upload(std::vector<float>(E, 0.0f), 1, E));
  }
  for (int64_t e = 0; e < E; ++e) {
    DS_ASSIGN_OR_RETURN(MlpWeights expert, LoadMlp(w, absl::StrCat(p, "experts.", e, "."), c_.moe_intermediate_size));
    moe.experts.push_back(std::move(expert));
  }
  if (c_.n_shared_experts > 0) {
    DS_ASSIGN_OR_RETURN(moe.shared_experts,
                        LoadMlp(w, p + "shared_experts.", c_.moe_intermediate_size * c_.n_shared_experts));
  }
  return moe;
}

absl::StatusOr<Block> DeepseekV3::LoadBlock(WeightLoader& w, int64_t layer) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  Block b;
  DS_ASSIGN_OR_RETURN(b.input_layernorm, w.Vector(p + "input_layernorm.weight", c_.hidden_size));
  DS_ASSIGN_OR_RETURN(b.post_attention_layernorm, w.Vector(p + "post_attention_layernorm.weight", c_.hidden_size));
  DS_ASSIGN_OR_RETURN(b.self_attn, LoadMla(w, p + "self_attn."));
  if (c_.IsMoeLayer(layer)) {
    DS_ASSIGN_OR_RETURN(b.moe, LoadMoe(w, p + "mlp."));
  } else {
    DS_ASSIGN_OR_RETURN(b.mlp, LoadMlp(w, p + "mlp.", c_.intermediate_size));
  }
  return b;
}

absl::StatusOr<Mtp> DeepseekV3::LoadMtp(WeightLoader& w, int64_t layer) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  const int64_t H = c_.hidden_size;
  Mtp m;
  // DeepSeek's checkpoints carry the MTP layer's own embedding and head; fall back to the
  // main model's where a checkpoint shares them.
  if (w.Has(p + "embed_tokens.weight")) {
    DS_ASSIGN_OR_RETURN(m.embed_tokens, w.Matrix(p + "embed_tokens.weight", c_.vocab_size, H));
  } else {
    m.embed_tokens = embed_tokens_;
  }
  DS_ASSIGN_OR_RETURN(m.enorm, w.Vector(p + "enorm.weight", H));
  DS_ASSIGN_OR_RETURN(m.hnorm, w.Vector(p + "hnorm.weight", H));
  DS_ASSIGN_OR_RETURN(m.eh_proj, w.Matrix(p + "eh_proj.weight", H, 2 * H));
  DS_ASSIGN_OR_RETURN(m.block, LoadBlock(w, layer));
  DS_ASSIGN_OR_RETURN(m.shared_head_norm, w.Vector(p + "shared_head.norm.weight", H));
  if (w.Has(p + "shared_head.head.weight")) {
    DS_ASSIGN_OR_RETURN(m.shared_head_head, w.Matrix(p + "shared_head.head.weight", c_.vocab_size, H));
  } else {
    m.shared_head_head = lm_head_;
  }
  return m;
}

absl::Status DeepseekV3::Load(WeightLoader& w) {
  const RopeFrequencies freq = ComputeRopeFrequencies(c_, c_.qk_rope_head_dim);
  DS_ASSIGN_OR_RETURN(rope_.inv_freq, w.Upload(freq.inv_freq, 1, static_cast<int64_t>(freq.inv_freq.size())));
  rope_.attention_factor = freq.attention_factor;
  // softmax scale: qk_head_dim^-0.5, times mscale² under YaRN (DeepSeek's long-context fix).
  double scale = 1.0 / std::sqrt(static_cast<double>(c_.qk_head_dim()));
  if (c_.rope_scaling.type != RopeScaling::Type::kNone && c_.rope_scaling.mscale_all_dim != 0) {
    const double mscale = YarnMscale(c_.rope_scaling.factor, c_.rope_scaling.mscale_all_dim);
    scale *= mscale * mscale;
  }
  softmax_scale_ = static_cast<float>(scale);
  routing_ = MoeRouting{.n_group = c_.n_group, .topk_group = c_.topk_group, .top_k = c_.num_experts_per_tok,
                        .norm_topk_prob = c_.norm_topk_prob,
                        .routed_scaling_factor = static_cast<float>(c_.routed_scaling_factor)};

  DS_ASSIGN_OR_RETURN(embed_tokens_, w.Matrix("model.embed_tokens.weight", c_.vocab_size, c_.hidden_size));
  for (int64_t i = 0; i < c_.num_hidden_layers; ++i) {
    DS_ASSIGN_OR_RETURN(Block b, LoadBlock(w, i));
    layers_.push_back(std::move(b));
  }
  DS_ASSIGN_OR_RETURN(norm_, w.Vector("model.norm.weight", c_.hidden_size));
  if (c_.tie_word_embeddings) {
    lm_head_ = embed_tokens_;
  } else {
    DS_ASSIGN_OR_RETURN(lm_head_, w.Matrix("lm_head.weight", c_.vocab_size, c_.hidden_size));
  }
  // The first MTP layer follows the main layers (model.layers.{num_hidden_layers}); it drafts
  // one token, and chains for more.
  if (c_.num_nextn_predict_layers > 0 && w.Has(absl::StrCat("model.layers.", c_.num_hidden_layers, ".eh_proj.weight"))) {
    DS_ASSIGN_OR_RETURN(mtp_, LoadMtp(w, c_.num_hidden_layers));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3(const ModelConfig& config, WeightLoader& loader) {
  auto model = std::make_unique<DeepseekV3>(config);
  DS_RETURN_IF_ERROR(model->Load(loader));
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace ds

// config.json parsing: the hub's field names, and clear errors for what we cannot run.
#include "core/arch/rope.h"
#include "core/model/config.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds {
namespace {

TEST(Config, ReadsDeepseekFixture) {
  auto c = LoadModelConfig(testing::FixturePath("deepseek_v3_fp8"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kDeepseekV3);
  EXPECT_EQ(c->q_lora_rank, 192);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kYarn);
  EXPECT_EQ(c->rope_scaling.factor, 40);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 128);
  EXPECT_TRUE(c->fp8_weights);
  EXPECT_EQ(c->weight_block_rows, 128);
  EXPECT_TRUE(c->IsMoeLayer(1));
  EXPECT_FALSE(c->IsMoeLayer(0));
}

TEST(Config, NullQLoraRankMeansNoCompression) {
  auto c = LoadModelConfig(testing::FixturePath("deepseek_v3_noqlora"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_lora_rank, 0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
}

TEST(Config, Qwen2HasQkvBiasLlamaDoesNot) {
  auto q = LoadModelConfig(testing::FixturePath("qwen2_tiny"));
  auto l = LoadModelConfig(testing::FixturePath("llama_tiny"));
  ASSERT_TRUE(q.ok() && l.ok());
  EXPECT_TRUE(q->qkv_bias);
  EXPECT_FALSE(l->qkv_bias);
  EXPECT_EQ(l->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(l->head_dim, 16);
}

TEST(Config, EosMayBeAList) {
  auto c = ParseModelConfig(R"({"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":8,
      "num_hidden_layers":1,"num_attention_heads":2,"eos_token_id":[3,4],"bos_token_id":1})", "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 4);
}

TEST(Config, RejectsWhatItCannotRun) {
  const char* base = R"({"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,)";
  struct Case { std::string json; absl::StatusCode code; const char* mention; };
  const Case cases[] = {
      {"not json", absl::StatusCode::kDataLoss, "not a JSON object"},
      {R"({"model_type":"mamba"})", absl::StatusCode::kUnimplemented, "mamba"},
      {std::string(base) + R"("num_attention_heads":0})", absl::StatusCode::kDataLoss, "num_attention_heads"},
      {std::string(base) + R"("num_attention_heads":4,"num_key_value_heads":3})", absl::StatusCode::kDataLoss, "num_key_value_heads"},
      {std::string(base) + R"("num_attention_heads":"4"})", absl::StatusCode::kDataLoss, "integer"},
      {std::string(base) + R"("num_attention_heads":2,"hidden_act":"gelu"})", absl::StatusCode::kUnimplemented, "gelu"},
      {std::string(base) + R"("num_attention_heads":2,"rope_scaling":{"type":"dynamic","factor":2}})", absl::StatusCode::kUnimplemented, "dynamic"},
      {std::string(base) + R"("num_attention_heads":2,"quantization_config":{"quant_method":"gptq"}})", absl::StatusCode::kUnimplemented, "gptq"},
      {R"({"model_type":"llama","hidden_size":8})", absl::StatusCode::kDataLoss, "vocab_size"},
      // A bad n_group is reported, not divided by (the config fuzzer found the 0).
      {R"({"model_type":"deepseek_v3","vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
          "num_attention_heads":2,"kv_lora_rank":8,"qk_nope_head_dim":4,"qk_rope_head_dim":4,"v_head_dim":4,
          "moe_intermediate_size":8,"num_experts_per_tok":2,"n_routed_experts":8,"n_group":0})", absl::StatusCode::kDataLoss, "n_group"},
  };
  for (const auto& c : cases) {
    auto r = ParseModelConfig(c.json, "cfg.json");
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), c.code) << c.json << " -> " << r.status();
    EXPECT_NE(r.status().message().find(c.mention), absl::string_view::npos) << r.status();
    EXPECT_NE(r.status().message().find("cfg.json"), absl::string_view::npos) << r.status();
  }
}

// YaRN frequencies, checked by hand against the formulas of transformers' _compute_yarn_parameters
// for the fixture's numbers: dim 8, base 1e4, factor 40, original 128, beta 32/1.
TEST(Rope, YarnRampMatchesTheFormula) {
  ModelConfig c;
  c.rope_theta = 10000;
  c.rope_scaling.type = RopeScaling::Type::kYarn;
  c.rope_scaling.factor = 40;
  c.rope_scaling.original_max_position_embeddings = 128;
  c.rope_scaling.mscale = 1;
  c.rope_scaling.mscale_all_dim = 1;
  const RopeFrequencies f = ComputeRopeFrequencies(c, 8);
  ASSERT_EQ(f.inv_freq.size(), 4u);
  EXPECT_FLOAT_EQ(f.attention_factor, 1.0f);  // mscale / mscale_all_dim
  // low = floor(8 ln(128 / (32 * 2 pi)) / (2 ln 1e4)) = floor(-0.196) -> clamped to 0;
  // high = ceil(8 ln(128 / (1 * 2 pi)) / (2 ln 1e4)) = ceil(1.309) = 2.
  // ramp(i) = i / 2, so the extrapolation weights are 1, 1/2, 0, 0.
  const double base[4] = {1.0, 0.1, 0.01, 0.001};
  const double w[4] = {1.0, 0.5, 0.0, 0.0};
  for (int i = 0; i < 4; ++i) {
    const double expected = base[i] / 40 * (1 - w[i]) + base[i] * w[i];
    EXPECT_NEAR(f.inv_freq[i], expected, 1e-6 * base[i]) << i;
  }
}

}  // namespace
}  // namespace ds

namespace ds {
namespace {

// Found by fuzz_config: a float outside int64 in an integer field was converted (undefined).
TEST(Config, HugeFloatInAnIntegerFieldIsAnError) {
  auto c = ParseModelConfig(R"({"model_type":"llama","vocab_size":1e300,"hidden_size":8,"intermediate_size":8,
      "num_hidden_layers":1,"num_attention_heads":2})", "cfg.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("vocab_size"), absl::string_view::npos) << c.status();
  auto whole = ParseModelConfig(R"({"model_type":"llama","vocab_size":10.0,"hidden_size":8,"intermediate_size":8,
      "num_hidden_layers":1,"num_attention_heads":2})", "cfg.json");
  EXPECT_TRUE(whole.ok()) << whole.status();
}

}  // namespace
}  // namespace ds

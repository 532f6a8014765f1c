// Bad input through the C ABI: each case gets the right ds_status and a message naming the file
// or field and the reason, and never a crash.
#include <filesystem>
#include <string>
#include <vector>

#include "ds_c.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

namespace fs = std::filesystem;

// A copy of a fixture whose model.safetensors the test may rewrite.
std::string CopyFixture(const std::string& name, const std::string& tag) {
  const std::string dir = MakeTempDir(tag);
  fs::copy_file(fs::path(FixturePath(name)) / "config.json", fs::path(dir) / "config.json");
  fs::copy_file(fs::path(FixturePath(name)) / "model.safetensors", fs::path(dir) / "model.safetensors");
  return dir;
}

// Opens the folder; expects `status` and a message that mentions each of `mentions`.
void ExpectOpenFails(const std::string& dir, ds_status status, std::vector<std::string> mentions) {
  ds_engine* engine = reinterpret_cast<ds_engine*>(0x1);
  const ds_status got = ds_engine_open(dir.c_str(), nullptr, &engine);
  EXPECT_EQ(got, status) << ds_status_name(got) << ": " << ds_last_error();
  EXPECT_EQ(engine, nullptr);
  const std::string message = ds_last_error();
  for (const auto& m : mentions) EXPECT_NE(message.find(m), std::string::npos) << "'" << m << "' not in: " << message;
}

TEST(BadInput, MissingFolder) {
  ExpectOpenFails("/nonexistent/ds-model", DS_ERR_NOT_FOUND, {"/nonexistent/ds-model", "no such model folder"});
}

TEST(BadInput, FolderWithoutConfig) {
  const std::string dir = MakeTempDir("noconfig");
  ExpectOpenFails(dir, DS_ERR_NOT_FOUND, {"config.json"});
}

TEST(BadInput, FolderWithoutWeights) {
  const std::string dir = CopyFixture("llama_tiny", "noweights");
  fs::remove(fs::path(dir) / "model.safetensors");
  ExpectOpenFails(dir, DS_ERR_NOT_FOUND, {"model.safetensors"});
}

TEST(BadInput, UnknownModelType) {
  const std::string dir = CopyFixture("llama_tiny", "modeltype");
  std::string config = ReadFile(dir + "/config.json");
  config.replace(config.find("\"llama\""), 7, "\"falcon\"");
  WriteFile(dir + "/config.json", config);
  ExpectOpenFails(dir, DS_ERR_UNSUPPORTED, {"falcon", "config.json"});
}

TEST(BadInput, ConfigThatIsNotJson) {
  const std::string dir = CopyFixture("llama_tiny", "badjson");
  WriteFile(dir + "/config.json", "{\"model_type\": \"llama\", ");
  ExpectOpenFails(dir, DS_ERR_FORMAT, {"config.json", "JSON"});
}

TEST(BadInput, TruncatedSafetensors) {
  const std::string dir = CopyFixture("qwen2_tiny", "truncated");
  const fs::path weights = fs::path(dir) / "model.safetensors";
  fs::resize_file(weights, fs::file_size(weights) / 2);
  ExpectOpenFails(dir, DS_ERR_FORMAT, {"model.safetensors", "point past"});
  fs::resize_file(weights, 5);
  ExpectOpenFails(dir, DS_ERR_FORMAT, {"too small"});
}

TEST(BadInput, HeaderOffsetsPastTheFile) {
  const std::string dir = CopyFixture("qwen2_tiny", "offsets");
  auto tensors = ReadRawTensors(dir + "/model.safetensors");
  ASSERT_FALSE(tensors.empty());
  // Write a valid file, then patch one entry's end offset far past the data.
  WriteSafetensors(dir + "/model.safetensors", tensors);
  std::string bytes = ReadFile(dir + "/model.safetensors");
  const std::string needle = "\"data_offsets\":[0,";
  const size_t at = bytes.find(needle);
  ASSERT_NE(at, std::string::npos);
  const size_t num = at + needle.size();
  const size_t len = bytes.find(']', num) - num;
  std::string huge = "99999999";
  huge.resize(len, '9');  // same width keeps the header length right
  bytes.replace(num, len, huge);
  WriteFile(dir + "/model.safetensors", bytes);
  ExpectOpenFails(dir, DS_ERR_FORMAT, {"model.safetensors", "point past"});
}

TEST(BadInput, WrongDtypeForATensor) {
  const std::string dir = CopyFixture("llama_tiny", "dtype");
  auto tensors = ReadRawTensors(dir + "/model.safetensors");
  for (auto& t : tensors)
    if (t.name == "model.norm.weight") t.dtype = "I32";  // same size as F32: only the type is wrong
  WriteSafetensors(dir + "/model.safetensors", tensors);
  ExpectOpenFails(dir, DS_ERR_FORMAT, {"model.norm.weight", "I32"});
}

TEST(BadInput, WrongShapeForATensor) {
  const std::string dir = CopyFixture("llama_tiny", "shape");
  auto tensors = ReadRawTensors(dir + "/model.safetensors");
  for (auto& t : tensors)
    if (t.name == "model.layers.0.mlp.up_proj.weight") std::swap(t.shape[0], t.shape[1]);
  WriteSafetensors(dir + "/model.safetensors", tensors);
  ExpectOpenFails(dir, DS_ERR_FORMAT, {"model.layers.0.mlp.up_proj.weight", "[64, 176]", "[176, 64]"});
}

TEST(BadInput, MissingTensor) {
  const std::string dir = CopyFixture("deepseek_v3_tiny", "missing");
  auto tensors = ReadRawTensors(dir + "/model.safetensors");
  std::erase_if(tensors, [](const RawTensor& t) { return t.name == "model.layers.1.mlp.experts.3.down_proj.weight"; });
  WriteSafetensors(dir + "/model.safetensors", tensors);
  ExpectOpenFails(dir, DS_ERR_NOT_FOUND, {"model.layers.1.mlp.experts.3.down_proj.weight", "missing"});
}

TEST(BadInput, Fp8WeightWithoutItsScale) {
  const std::string dir = CopyFixture("deepseek_v3_fp8", "fp8scale");
  auto tensors = ReadRawTensors(dir + "/model.safetensors");
  std::erase_if(tensors, [](const RawTensor& t) { return t.name == "model.layers.0.self_attn.o_proj.weight_scale_inv"; });
  WriteSafetensors(dir + "/model.safetensors", tensors);
  ExpectOpenFails(dir, DS_ERR_FORMAT, {"model.layers.0.self_attn.o_proj.weight_scale_inv"});
}

TEST(BadInput, ShardIndexNamingAMissingShard) {
  const std::string dir = CopyFixture("llama_tiny", "shards");
  WriteFile(dir + "/model.safetensors.index.json", R"({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}})");
  ExpectOpenFails(dir, DS_ERR_NOT_FOUND, {"model-00001-of-00002.safetensors"});
  WriteFile(dir + "/model.safetensors.index.json", R"({"weight_map": {"model.norm.weight": "../../etc/passwd"}})");
  ExpectOpenFails(dir, DS_ERR_FORMAT, {"not a file in the model folder"});
}

TEST(BadInput, ShardedCheckpointLoads) {
  // The same weights split over two shards with an index, as the hub ships large models.
  const std::string dir = CopyFixture("llama_tiny", "sharded");
  auto tensors = ReadRawTensors(dir + "/model.safetensors");
  fs::remove(fs::path(dir) / "model.safetensors");
  const size_t half = tensors.size() / 2;
  WriteSafetensors(dir + "/model-00001-of-00002.safetensors", {tensors.begin(), tensors.begin() + half});
  WriteSafetensors(dir + "/model-00002-of-00002.safetensors", {tensors.begin() + half, tensors.end()});
  std::string index = R"({"metadata": {}, "weight_map": {)";
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (i) index += ",";
    index.append("\"").append(tensors[i].name).append("\": \"model-0000").append(i < half ? "1" : "2");
    index.append("-of-00002.safetensors\"");
  }
  WriteFile(dir + "/model.safetensors.index.json", index + "}}");
  ds_engine* engine = nullptr;
  ASSERT_EQ(ds_engine_open(dir.c_str(), nullptr, &engine), DS_OK) << ds_last_error();
  ds_engine_close(engine);
}

class SessionBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(ds_engine_open(FixturePath("qwen2_tiny").c_str(), nullptr, &engine_), DS_OK) << ds_last_error();
  }
  void TearDown() override { ds_engine_close(engine_); }
  ds_engine* engine_ = nullptr;
};

TEST_F(SessionBadInput, PromptLongerThanTheContextLeavesTheSessionUsable) {
  ds_session_options so;
  ds_session_options_init(&so);
  so.n_ctx = 8;
  ds_session* s = nullptr;
  ASSERT_EQ(ds_session_create(engine_, &so, &s), DS_OK);
  const std::vector<int32_t> prompt{1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(ds_session_append(s, prompt.data(), 9), DS_ERR_CONTEXT_FULL);
  EXPECT_NE(std::string(ds_last_error()).find("n_ctx = 8"), std::string::npos) << ds_last_error();
  EXPECT_EQ(ds_session_n_tokens(s), 0u);
  // Still usable: fill it exactly, then one more token is refused with the tokens kept.
  ASSERT_EQ(ds_session_append(s, prompt.data(), 7), DS_OK) << ds_last_error();
  int32_t token;
  ASSERT_EQ(ds_session_next_token(s, &token), DS_OK) << ds_last_error();
  EXPECT_EQ(ds_session_next_token(s, &token), DS_ERR_CONTEXT_FULL);
  EXPECT_EQ(ds_session_n_tokens(s), 8u);
  const float* logits = nullptr;
  EXPECT_EQ(ds_session_logits(s, &logits, nullptr), DS_OK);
  ds_session_close(s);
}

TEST_F(SessionBadInput, TokenOutsideTheVocabulary) {
  ds_session* s = nullptr;
  ASSERT_EQ(ds_session_create(engine_, nullptr, &s), DS_OK);
  const int32_t ids[] = {1, 512};
  EXPECT_EQ(ds_session_append(s, ids, 2), DS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("512"), std::string::npos);
  const int32_t negative = -3;
  EXPECT_EQ(ds_session_append(s, &negative, 1), DS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ds_session_n_tokens(s), 0u);
  ds_session_close(s);
}

TEST_F(SessionBadInput, CallsOutOfOrder) {
  ds_session* s = nullptr;
  ASSERT_EQ(ds_session_create(engine_, nullptr, &s), DS_OK);
  int32_t token;
  const float* logits;
  EXPECT_EQ(ds_session_next_token(s, &token), DS_ERR_INVALID_STATE);
  EXPECT_EQ(ds_session_logits(s, &logits, nullptr), DS_ERR_INVALID_STATE);
  EXPECT_EQ(ds_session_truncate(s, 1), DS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ds_session_append(s, &token, 0), DS_ERR_INVALID_ARGUMENT);
  ds_session_close(s);
}

TEST_F(SessionBadInput, NullPointersAndBadOptions) {
  ds_session* s = nullptr;
  EXPECT_EQ(ds_session_create(nullptr, nullptr, &s), DS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ds_session_create(engine_, nullptr, nullptr), DS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ds_engine_open(nullptr, nullptr, reinterpret_cast<ds_engine**>(&s)), DS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ds_session_append(nullptr, nullptr, 0), DS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ds_session_next_token(nullptr, nullptr), DS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ds_session_n_tokens(nullptr), 0u);
  ds_session_close(nullptr);
  ds_engine_close(nullptr);

  ds_session_options so;
  ds_session_options_init(&so);
  so.struct_size = 3;  // never initialised
  EXPECT_EQ(ds_session_create(engine_, &so, &s), DS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("struct_size"), std::string::npos);
  ds_session_options_init(&so);
  so.top_p = 0.0f;
  EXPECT_EQ(ds_session_create(engine_, &so, &s), DS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("top_p"), std::string::npos);

  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.backend = 77;
  ds_engine* e = nullptr;
  EXPECT_EQ(ds_engine_open(FixturePath("qwen2_tiny").c_str(), &eo, &e), DS_ERR_INVALID_ARGUMENT);
  ds_engine_options_init(&eo);
  eo.n_threads = -2;
  EXPECT_EQ(ds_engine_open(FixturePath("qwen2_tiny").c_str(), &eo, &e), DS_ERR_INVALID_ARGUMENT);
  ds_engine_options_init(&eo);
  eo.backend = DS_BACKEND_CUDA;
  eo.device = -1;
  EXPECT_EQ(ds_engine_open(FixturePath("qwen2_tiny").c_str(), &eo, &e), DS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("device must be >= 0"), std::string::npos) << ds_last_error();
  // A device past those present: no plugin, no driver, or too few devices, but never an engine.
  eo.device = 1000;
  EXPECT_NE(ds_engine_open(FixturePath("qwen2_tiny").c_str(), &eo, &e), DS_OK);
  EXPECT_EQ(e, nullptr);
}

// An older caller's smaller option struct still works: the rest keep their defaults.
TEST_F(SessionBadInput, OlderSmallerOptionStructIsAccepted) {
  ds_session_options so;
  ds_session_options_init(&so);
  so.struct_size = offsetof(ds_session_options, temperature);
  so.n_ctx = 4;
  ds_session* s = nullptr;
  ASSERT_EQ(ds_session_create(engine_, &so, &s), DS_OK) << ds_last_error();
  const int32_t ids[] = {1, 2, 3, 4, 5};
  EXPECT_EQ(ds_session_append(s, ids, 5), DS_ERR_CONTEXT_FULL);
  ds_session_close(s);
}

// Each test is its own process (ctest), so the plugin path below is the first one looked at.
TEST(CudaPlugin, MissingPluginIsUnsupportedAndAutoFallsBackToTheCpu) {
  setenv("DS_CUDA_PLUGIN", "/nonexistent/libds-cuda.so", 1);
  const std::string model = FixturePath("deepseek_v3_tiny");
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.backend = DS_BACKEND_CUDA;
  ds_engine* engine = nullptr;
  EXPECT_EQ(ds_engine_open(model.c_str(), &eo, &engine), DS_ERR_UNSUPPORTED);
  EXPECT_EQ(engine, nullptr);
  EXPECT_NE(std::string(ds_last_error()).find("/nonexistent/libds-cuda.so"), std::string::npos) << ds_last_error();

  eo.backend = DS_BACKEND_AUTO;
  ASSERT_EQ(ds_engine_open(model.c_str(), &eo, &engine), DS_OK) << ds_last_error();
  ds_model_info info;
  info.struct_size = sizeof info;
  ASSERT_EQ(ds_engine_info(engine, &info), DS_OK);
  EXPECT_STREQ(info.backend, "cpu");
  ds_engine_close(engine);

  eo.compute_dtype = DS_COMPUTE_BF16;  // on the CPU: bf16 weights and bf16 products
  ASSERT_EQ(ds_engine_open(model.c_str(), &eo, &engine), DS_OK) << ds_last_error();
  ASSERT_EQ(ds_engine_info(engine, &info), DS_OK);
  EXPECT_STREQ(info.backend, "cpu");
  ds_engine_close(engine);
  engine = nullptr;
  eo.compute_dtype = 7;
  EXPECT_EQ(ds_engine_open(model.c_str(), &eo, &engine), DS_ERR_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace ds::testing

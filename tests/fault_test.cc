// Faults a host process meets: the model file changed under a loaded engine, allocations that
// fail, a callback that stops generation at every possible point, sessions closed while another
// generates on the same engine.
#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "backends/backend.h"
#include "core/engine.h"
#include "core/session.h"
#include "ds_c.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

namespace fs = std::filesystem;

std::vector<int32_t> Ids(const RefTensor& t) { return std::vector<int32_t>(t.i64.begin(), t.i64.end()); }

// The weights are copied to the backend at load and the files unmapped, so a checkpoint that is
// truncated or rewritten afterwards cannot reach the engine (no SIGBUS, same answers).
TEST(Faults, ModelFileTruncatedAfterOpen) {
  const std::string dir = MakeTempDir("truncated-after-open");
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(fs::path(FixturePath("deepseek_v3_tiny")) / f, fs::path(dir) / f);
  ds_engine* engine = nullptr;
  ASSERT_EQ(ds_engine_open(dir.c_str(), nullptr, &engine), DS_OK) << ds_last_error();
  fs::resize_file(fs::path(dir) / "model.safetensors", 0);
  WriteFile(dir + "/config.json", "garbage");
  const std::vector<int32_t> prompt = Ids(LoadReference("deepseek_v3_tiny", "input_ids"));
  const std::vector<int32_t> expected = Ids(LoadReference("deepseek_v3_tiny", "greedy_tokens"));
  ds_session* s = nullptr;
  ASSERT_EQ(ds_session_create(engine, nullptr, &s), DS_OK);
  ASSERT_EQ(ds_session_append(s, prompt.data(), prompt.size()), DS_OK) << ds_last_error();
  for (int32_t want : expected) {
    int32_t token;
    ASSERT_EQ(ds_session_next_token(s, &token), DS_OK);
    EXPECT_EQ(token, want);
  }
  ds_session_close(s);
  ds_engine_close(engine);
}

// A backend whose allocations fail on demand, forwarding everything else to the CPU backend.
class FailingBackend final : public Backend {
 public:
  explicit FailingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  void FailAllocations(bool fail) { fail_ = fail; }

  const char* name() const override { return inner_->name(); }
  absl::StatusOr<Tensor> Alloc(DType dtype, int64_t rows, int64_t cols) override {
    if (fail_) return absl::ResourceExhaustedError("injected allocation failure");
    return inner_->Alloc(dtype, rows, cols);
  }
  absl::Status Upload(const void* host, const Tensor& dst) override { return inner_->Upload(host, dst); }
  absl::Status Download(const Tensor& src, void* host) override { return inner_->Download(src, host); }
  absl::Status Matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    return inner_->Matmul(x, w, bias, y);
  }
  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override {
    return inner_->RmsNorm(x, weight, eps, y);
  }
  absl::Status Add(const Tensor& a, const Tensor& b, const Tensor& y) override { return inner_->Add(a, b, y); }
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& y) override {
    return inner_->SiluMul(gate, up, y);
  }
  absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) override {
    return inner_->Embedding(table, ids, y);
  }
  absl::Status Copy(const Tensor& src, const Tensor& dst) override { return inner_->Copy(src, dst); }
  absl::Status Argmax(const Tensor& x, const Tensor& ids) override { return inner_->Argmax(x, ids); }
  absl::Status Rope(const Tensor& x, int64_t n_heads, int64_t head_stride, int64_t rot_dim, const RopeTable& table,
                    RopeLayout layout, const Position& at) override {
    return inner_->Rope(x, n_heads, head_stride, rot_dim, table, layout, at);
  }
  absl::Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& shape,
                         const Tensor& out) override {
    return inner_->Attention(q, k, v, shape, out);
  }
  absl::Status MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouting& routing, const Tensor& ids,
                        const Tensor& weights) override {
    return inner_->MoeRoute(logits, bias, routing, ids, weights);
  }
  absl::Status Moe(const Tensor& x, const Tensor& ids, const Tensor& weights, const std::vector<MlpWeights>& experts,
                   const Tensor& out) override {
    return inner_->Moe(x, ids, weights, experts, out);
  }

 private:
  std::unique_ptr<Backend> inner_;
  std::atomic<bool> fail_{false};
};

TEST(Faults, AllocationFailureIsOutOfMemoryAndTheSessionGoesOn) {
  FailingBackend* failing = nullptr;
  EngineOptions options;
  options.n_threads = 1;
  options.make_backend = [&failing]() -> absl::StatusOr<std::unique_ptr<Backend>> {
    auto cpu = MakeCpuBackend({.n_threads = 1});
    if (!cpu.ok()) return cpu.status();
    auto backend = std::make_unique<FailingBackend>(*std::move(cpu));
    failing = backend.get();
    return std::unique_ptr<Backend>(std::move(backend));
  };
  auto engine = Engine::Open(FixturePath("deepseek_v3_tiny"), options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto session = Session::Create(*engine, {});
  ASSERT_TRUE(session.ok());
  Session& s = **session;
  const std::vector<int32_t> prompt = Ids(LoadReference("deepseek_v3_tiny", "input_ids"));
  const std::vector<int32_t> expected = Ids(LoadReference("deepseek_v3_tiny", "greedy_tokens"));

  // The first append must grow the KV cache: it fails, and nothing is appended.
  failing->FailAllocations(true);
  absl::Status st = s.Append(prompt);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(s.n_tokens(), 0);
  failing->FailAllocations(false);
  ASSERT_TRUE(s.Append(prompt).ok());

  // Every other step fails mid-forward (activations); the session stays where it was and the
  // greedy answer is still transformers'.
  std::vector<int32_t> got;
  for (size_t i = 0; i < expected.size(); ++i) {
    failing->FailAllocations(true);
    const int64_t before = s.n_tokens();
    auto token = s.NextToken();
    EXPECT_EQ(token.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(s.n_tokens(), before);
    failing->FailAllocations(false);
    token = s.NextToken();
    ASSERT_TRUE(token.ok()) << token.status();
    got.push_back(*token);
  }
  EXPECT_EQ(got, expected);
}

struct StopAfter {
  int limit;
  std::vector<int32_t> tokens;
};

int StopAfterN(void* user, const char*, size_t, int32_t token, uint32_t) {
  auto* s = static_cast<StopAfter*>(user);
  if (s->tokens.empty() || s->tokens.back() != token) s->tokens.push_back(token);
  return static_cast<int>(s->tokens.size()) >= s->limit;
}

// Stopping at token k and continuing gives the same tokens as never stopping, for every k.
TEST(Faults, CallbackStopsAtEveryPoint) {
  const char* fixture = "deepseek_v3_vocab_bf16";
  ds_engine* engine = nullptr;
  ASSERT_EQ(ds_engine_open(FixturePath(fixture).c_str(), nullptr, &engine), DS_OK) << ds_last_error();
  const std::vector<int32_t> prompt = Ids(LoadReference(fixture, "input_ids"));
  const std::vector<int32_t> expected = Ids(LoadReference(fixture, "greedy_tokens"));
  const int n = static_cast<int>(expected.size());
  for (int k = 1; k <= n; ++k) {
    ds_session* s = nullptr;
    ASSERT_EQ(ds_session_create(engine, nullptr, &s), DS_OK);
    ds_generate_params p;
    ds_generate_params_init(&p);
    p.prompt_ids = prompt.data();
    p.n_prompt_ids = prompt.size();
    p.max_tokens = static_cast<uint32_t>(n);
    StopAfter stop{k, {}};
    ds_generate_result r;
    r.struct_size = sizeof r;
    ASSERT_EQ(ds_session_generate(s, &p, StopAfterN, &stop, &r), DS_OK) << ds_last_error();
    EXPECT_EQ(r.n_generated_tokens, static_cast<uint32_t>(k));
    EXPECT_EQ(r.stop_reason, DS_STOP_CALLBACK);
    EXPECT_EQ(ds_session_n_tokens(s), prompt.size() + k);
    ds_generate_params rest;
    ds_generate_params_init(&rest);
    rest.max_tokens = static_cast<uint32_t>(n - k);
    StopAfter all{1 << 30, {}};
    if (k < n) {
      ASSERT_EQ(ds_session_generate(s, &rest, StopAfterN, &all, &r), DS_OK) << ds_last_error();
    }
    std::vector<int32_t> tokens = stop.tokens;
    tokens.insert(tokens.end(), all.tokens.begin(), all.tokens.end());
    EXPECT_EQ(tokens, expected) << "stopped after " << k;
    ds_session_close(s);
  }
  ds_engine_close(engine);
}

TEST(Faults, ClosingSessionsWhileAnotherGenerates) {
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.n_threads = 1;
  ds_engine* engine = nullptr;
  ASSERT_EQ(ds_engine_open(FixturePath("deepseek_v3_tiny").c_str(), &eo, &engine), DS_OK);
  const std::vector<int32_t> prompt = Ids(LoadReference("deepseek_v3_tiny", "input_ids"));
  auto decode = [&](int n) {
    ds_session* s = nullptr;
    std::vector<int32_t> out;
    if (ds_session_create(engine, nullptr, &s) != DS_OK) return out;
    if (ds_session_append(s, prompt.data(), prompt.size()) == DS_OK)
      for (int i = 0; i < n; ++i) {
        int32_t t;
        if (ds_session_next_token(s, &t) != DS_OK) break;
        out.push_back(t);
      }
    ds_session_close(s);
    return out;
  };
  const std::vector<int32_t> alone = decode(48);
  std::atomic<bool> done{false};
  std::vector<int32_t> together;
  std::thread generator([&] {
    together = decode(48);
    done = true;
  });
  int churned = 0;
  while (!done) {  // sessions created, used a little, and closed on another thread meanwhile
    decode(1);
    ++churned;
  }
  generator.join();
  EXPECT_EQ(together, alone);
  EXPECT_GT(churned, 0);
  // Closing the engine handle while a session is open is allowed too: the session keeps it.
  ds_session* s = nullptr;
  ASSERT_EQ(ds_session_create(engine, nullptr, &s), DS_OK);
  ds_engine_close(engine);
  ASSERT_EQ(ds_session_append(s, prompt.data(), prompt.size()), DS_OK);
  int32_t t;
  EXPECT_EQ(ds_session_next_token(s, &t), DS_OK);
  EXPECT_EQ(t, alone[0]);
  ds_session_close(s);
}

}  // namespace
}  // namespace ds::testing

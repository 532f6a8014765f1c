// CPU backend kernels on the real models' shapes (Google Benchmark). Bandwidth-bound kernels
// report bytes/s of what they must read; compare with BM_Copy, a plain memcpy on the same
// machine (counting read + write). Threads: $DS_BENCH_THREADS (default: all cores).
//   ./build/bench/cpu_kernels_bench --benchmark_filter=Gemv
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/cpu_backend.h"
#include "core/model/dtype.h"
#include "core/model/quant.h"
#include "core/sampling/sampler.h"

namespace ds {
namespace {

int Threads() {
  const char* t = std::getenv("DS_BENCH_THREADS");
  return t ? std::atoi(t) : 0;
}

Backend& Cpu() {
  static std::unique_ptr<Backend> backend = [] {
    auto b = MakeCpuBackend({.n_threads = Threads()});
    if (!b.ok()) std::abort();
    return *std::move(b);
  }();
  return *backend;
}

std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

Tensor Must(absl::StatusOr<Tensor> t) {
  if (!t.ok()) std::abort();
  return *std::move(t);
}

// A [rows, cols] matrix of random weights in `dtype`.
Tensor Weights(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  Tensor t = Must(Cpu().Alloc(dtype, rows, cols));
  const std::vector<float> w = Random(rows * cols, seed, 0.02f);
  std::vector<char> stored(t.nbytes());
  const size_t row_bytes = RowBytes(dtype, cols);
  for (int64_t r = 0; r < rows; ++r) NarrowRow(dtype, &w[r * cols], cols, stored.data() + r * row_bytes);
  if (!Cpu().Upload(stored.data(), t).ok()) std::abort();
  return t;
}

Tensor Activations(int64_t rows, int64_t cols, uint32_t seed) {
  Tensor t = Must(Cpu().Alloc(DType::kF32, rows, cols));
  if (!Cpu().Upload(Random(rows * cols, seed).data(), t).ok()) std::abort();
  return t;
}

void BM_Copy(benchmark::State& state) {
  const size_t bytes = size_t{256} << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::DoNotOptimize(b.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * bytes);  // read + write
}
BENCHMARK(BM_Copy)->Unit(benchmark::kMillisecond)->UseRealTime();

constexpr DType kFormats[] = {DType::kF32, DType::kBF16, DType::kQ8_0, DType::kQ4_0};

// y[m, out] = x[m, in] · W[out, in]ᵀ. Args: format index, in, out, m.
void BM_Matmul(benchmark::State& state) {
  const DType dtype = kFormats[state.range(0)];
  const int64_t in = state.range(1), out = state.range(2), m = state.range(3);
  const Tensor w = Weights(dtype, out, in, 1), x = Activations(m, in, 2);
  const Tensor y = Must(Cpu().Alloc(DType::kF32, m, out));
  for (auto _ : state)
    if (!Cpu().Matmul(x, w, nullptr, y).ok()) state.SkipWithError("matmul failed");
  state.SetLabel(DTypeName(dtype));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * w.nbytes()));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * m), benchmark::Counter::kIsRate);
}
// The shapes: R1-Distill-Qwen-1.5B's MLP (1536 -> 8960), 7B's (3584 -> 18944), a DeepSeek-V3
// routed expert (7168 -> 2048), and 1.5B's attention output (1536 -> 1536), small enough that a
// call's fixed costs (waking the threads, preparing the activations) show. Decode is one row;
// prefill a 512-token chunk.
void MatmulShapes(benchmark::internal::Benchmark* b, int64_t rows) {
  for (int64_t f = 0; f < 4; ++f)
    for (auto [in, out] : {std::pair<int64_t, int64_t>{1536, 8960}, {3584, 18944}, {7168, 2048}, {1536, 1536}})
      b->Args({f, in, out, rows});
}
BENCHMARK(BM_Matmul)->Name("BM_Gemv")->Apply([](auto* b) { MatmulShapes(b, 1); })->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Matmul)->Name("BM_Gemm512")->Apply([](auto* b) { MatmulShapes(b, 512); })->Unit(benchmark::kMillisecond)->UseRealTime();

// One decode row against weights that come from memory, as in a decode step, where each
// matrix is read once per token and the model is far larger than the caches: copies of one matrix
// (at least 512 MB of them), a GEMV on the next copy each iteration. Args: format index, in, out.
void BM_GemvFromMemory(benchmark::State& state) {
  const DType dtype = kFormats[state.range(0)];
  const int64_t in = state.range(1), out = state.range(2);
  const Tensor first = Weights(dtype, out, in, 1), x = Activations(1, in, 2);
  const Tensor y = Must(Cpu().Alloc(DType::kF32, 1, out));
  const int64_t copies = std::max<int64_t>(2, (int64_t{512} << 20) / static_cast<int64_t>(first.nbytes()) + 1);
  std::vector<Tensor> w{first};
  for (int64_t c = 1; c < copies; ++c) {
    w.push_back(Must(Cpu().Alloc(dtype, out, in)));
    std::memcpy(w.back().data, first.data, first.nbytes());
  }
  size_t next = 0;
  for (auto _ : state) {
    if (!Cpu().Matmul(x, w[next], nullptr, y).ok()) state.SkipWithError("matmul failed");
    next = (next + 1) % w.size();
  }
  state.SetLabel(DTypeName(dtype));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * first.nbytes()));
}
BENCHMARK(BM_GemvFromMemory)->Apply([](auto* b) {
  for (int64_t f = 1; f < 4; ++f)
    for (auto [in, out] : {std::pair<int64_t, int64_t>{1536, 8960}, {8960, 1536}, {1536, 1536}}) b->Args({f, in, out});
})->Unit(benchmark::kMicrosecond)->UseRealTime();

// A 512-row prompt's matmul with bf16 products (`--compute bf16`), with the best kernels the CPU
// has (AMX tiles where it has them) or AVX-512 at most (oneDNN's bf16 GEMM). Args: format index
// (bf16, Q8_0, Q4_0), in, out, kernels (3 best, 2 AVX-512). Reports GFLOP/s.
void BM_GemmBf16(benchmark::State& state) {
  static std::unique_ptr<Backend> backend = [] {
    auto b = MakeCpuBackend({.n_threads = Threads(), .bf16_products = true});
    if (!b.ok()) std::abort();
    return *std::move(b);
  }();
  const DType dtype = kFormats[state.range(0)];
  const int64_t in = state.range(1), out = state.range(2), m = 512;
  const Tensor w = Weights(dtype, out, in, 1), x = Activations(m, in, 2);
  const Tensor y = Must(Cpu().Alloc(DType::kF32, m, out));
  LimitCpuKernels(static_cast<CpuKernels>(state.range(3)));
  for (auto _ : state)
    if (!backend->Matmul(x, w, nullptr, y).ok()) state.SkipWithError("matmul failed");
  LimitCpuKernels(CpuKernels::kAmx);
  state.SetLabel(std::string(DTypeName(dtype)) + (ActiveCpuKernels() == CpuKernels::kAmx && state.range(3) == 3 ? " amx" : ""));
  state.counters["GFLOP/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * 2e-9 * m * in * out, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemmBf16)->Apply([](auto* b) {
  for (int64_t f = 1; f < 4; ++f)
    for (auto [in, out] : {std::pair<int64_t, int64_t>{1536, 8960}, {8960, 1536}, {3584, 18944}, {7168, 2048}})
      for (int64_t kernels : {3, 2}) b->Args({f, in, out, kernels});
})->Unit(benchmark::kMillisecond)->UseRealTime();

// One decode step of attention over `context` cached positions: Qwen 1.5B's 12 query heads over
// 2 KV heads of 128. Reads K and V once.
void BM_AttentionDecode(benchmark::State& state) {
  const int64_t context = state.range(0), heads = 12, kv_heads = 2, dim = 128;
  const Tensor q = Activations(1, heads * dim, 1), k = Activations(context, kv_heads * dim, 2),
               v = Activations(context, kv_heads * dim, 3);
  const Tensor out = Must(Cpu().Alloc(DType::kF32, 1, heads * dim));
  AttentionShape shape{.n_heads = heads, .n_kv_heads = kv_heads, .head_dim_qk = dim, .head_dim_v = dim,
                       .scale = 0.088f, .position = context - 1};
  for (auto _ : state)
    if (!Cpu().Attention(q, k, v, shape, out).ok()) state.SkipWithError("attention failed");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (k.nbytes() + v.nbytes())));
}
BENCHMARK(BM_AttentionDecode)->Arg(512)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond)->UseRealTime();

// A prompt's attention, causal: `rows` rows from position 0, the same heads. Reports rows/s.
void BM_AttentionPrefill(benchmark::State& state) {
  const int64_t rows = state.range(0), heads = 12, kv_heads = 2, dim = 128;
  const Tensor q = Activations(rows, heads * dim, 1), k = Activations(rows, kv_heads * dim, 2),
               v = Activations(rows, kv_heads * dim, 3);
  const Tensor out = Must(Cpu().Alloc(DType::kF32, rows, heads * dim));
  AttentionShape shape{.n_heads = heads, .n_kv_heads = kv_heads, .head_dim_qk = dim, .head_dim_v = dim,
                       .scale = 0.088f, .position = 0};
  for (auto _ : state)
    if (!Cpu().Attention(q, k, v, shape, out).ok()) state.SkipWithError("attention failed");
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(rows), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionPrefill)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// One token through a DeepSeek-V2-Lite-shaped MoE layer's routed experts (hidden 2048, 64
// experts of 1408, top 6): reads the 6 chosen experts' weights only. Arg: format index.
void BM_MoeDecode(benchmark::State& state) {
  const DType dtype = kFormats[state.range(0)];
  const int64_t hidden = 2048, inter = 1408, n_experts = 64, top_k = 6;
  std::vector<MlpWeights> experts;
  for (int64_t e = 0; e < n_experts; ++e)
    experts.push_back({Weights(dtype, inter, hidden, 3 * e), Weights(dtype, inter, hidden, 3 * e + 1),
                       Weights(dtype, hidden, inter, 3 * e + 2)});
  const Tensor x = Activations(1, hidden, 7), out = Must(Cpu().Alloc(DType::kF32, 1, hidden));
  const Tensor ids = Must(Cpu().Alloc(DType::kI32, 1, top_k)), weights = Must(Cpu().Alloc(DType::kF32, 1, top_k));
  const int32_t chosen[top_k] = {3, 11, 17, 29, 42, 60};
  const float share[top_k] = {0.3f, 0.2f, 0.2f, 0.1f, 0.1f, 0.1f};
  if (!Cpu().Upload(chosen, ids).ok() || !Cpu().Upload(share, weights).ok()) std::abort();
  for (auto _ : state)
    if (!Cpu().Moe(x, ids, weights, experts, out).ok()) state.SkipWithError("moe failed");
  state.SetLabel(DTypeName(dtype));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * top_k * 3 * experts[0].gate_proj.nbytes()));
}
BENCHMARK(BM_MoeDecode)->DenseRange(0, 3)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_RmsNorm(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = 7168;
  const Tensor x = Activations(rows, cols, 1), w = Activations(1, cols, 2);
  const Tensor y = Must(Cpu().Alloc(DType::kF32, rows, cols));
  for (auto _ : state)
    if (!Cpu().RmsNorm(x, w, 1e-6f, y).ok()) state.SkipWithError("rmsnorm failed");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 2 * x.nbytes()));
}
BENCHMARK(BM_RmsNorm)->Arg(1)->Arg(512)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Sampling over DeepSeek-V3's 129280 logits: greedy, and temperature with top-k / top-p.
void BM_Sample(benchmark::State& state) {
  const std::vector<float> logits = Random(129280, 5, 3.0f);
  SamplingParams params;
  if (state.range(0) == 1) params = {.temperature = 0.7f, .top_k = 40, .top_p = 0.95f, .seed = 1};
  if (state.range(0) == 2) params = {.temperature = 0.7f, .top_p = 0.95f, .seed = 1};
  Sampler sampler(params);
  for (auto _ : state) benchmark::DoNotOptimize(sampler.Sample(logits.data(), static_cast<int64_t>(logits.size())));
  state.SetLabel(state.range(0) == 0 ? "greedy" : state.range(0) == 1 ? "top-k 40, top-p 0.95" : "top-p 0.95");
}
BENCHMARK(BM_Sample)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

// The distribution a sampled token is drawn from, over the whole vocabulary: what speculative
// sampling reads for every drafted position.
void BM_Probabilities(benchmark::State& state) {
  const std::vector<float> logits = Random(129280, 5, 3.0f);
  const SamplingParams settings[] = {{.temperature = 0.7f, .seed = 1},
                                     {.temperature = 0.7f, .top_k = 40, .top_p = 0.95f, .seed = 1},
                                     {.temperature = 0.7f, .top_p = 0.95f, .seed = 1}};
  Sampler sampler(settings[state.range(0)]);
  std::vector<float> p;
  for (auto _ : state) {
    sampler.Probabilities(logits.data(), static_cast<int64_t>(logits.size()), p);
    benchmark::DoNotOptimize(p.data());
  }
  state.SetLabel(state.range(0) == 0 ? "temperature" : state.range(0) == 1 ? "top-k 40, top-p 0.95" : "top-p 0.95");
}
BENCHMARK(BM_Probabilities)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace ds

BENCHMARK_MAIN();

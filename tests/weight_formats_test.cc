// The weight formats of the CPU backend (bf16, int8 = Q8_0, int4 = Q4_0):
// - the block formats against their definition (core/model/quant.h) and f16 rounding against
//   every f16 value;
// - each matmul kernel (the AVX2 one and the portable loop, every path: the few-row GEMV and the
//   many-row widened GEMM) against an f64 reference on random shapes with odd sizes;
// - every fixture run with each format against transformers' float32 logits, within a tolerance
//   documented per format.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/gemv.h"
#include "core/model/config.h"
#include "core/model/dtype.h"
#include "core/model/quant.h"
#include "core/model/safetensors.h"
#include "core/model/weight_loader.h"
#include "ds_c.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

TEST(F16, RoundTripsEveryF16Value) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float f = F16ToF32(static_cast<uint16_t>(bits));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f))));
      continue;
    }
    ASSERT_EQ(F32ToF16(f), bits) << "f16 bits " << bits << " = " << f;
  }
}

TEST(F16, RoundsToNearestEven) {
  const float one = 1.0f, ulp = 1.0f / 1024;
  EXPECT_EQ(F16ToF32(F32ToF16(one + ulp / 2)), one);                // halfway: to even (down)
  EXPECT_EQ(F16ToF32(F32ToF16(one + 3 * ulp / 2)), one + 2 * ulp);  // halfway: to even (up)
  EXPECT_EQ(F16ToF32(F32ToF16(one + ulp * 0.51f)), one + ulp);
  EXPECT_EQ(F16ToF32(F32ToF16(65519.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(F32ToF16(65520.0f))));
  EXPECT_EQ(F16ToF32(F32ToF16(std::ldexp(1.5f, -24))), std::ldexp(2.0f, -24));  // subnormal, to even
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
}

std::vector<float> RandomRow(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

TEST(Q8_0, BlocksFollowTheDefinition) {
  std::mt19937 rng(1);
  std::vector<float> x = RandomRow(rng, 96);
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
  std::vector<BlockQ8_0> blocks(3);
  QuantizeRowQ8_0(x.data(), 96, blocks.data());
  std::vector<float> back(96);
  DequantizeRowQ8_0(blocks.data(), 96, back.data());
  for (int64_t b = 0; b < 3; ++b) {
    double amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(static_cast<double>(x[b * 32 + i])));
    const double d = F16ToF32(blocks[b].d);
    EXPECT_NEAR(d, amax / 127, amax / 127 * 1e-3);  // the scale is f16
    for (int i = 0; i < 32; ++i) {
      EXPECT_EQ(back[b * 32 + i], static_cast<float>(d * blocks[b].q[i]));
      EXPECT_LE(std::fabs(back[b * 32 + i] - x[b * 32 + i]), d / 2 + 1e-3 * std::fabs(x[b * 32 + i]) + 1e-30);
    }
  }
}

TEST(Q4_0, BlocksFollowTheDefinition) {
  std::mt19937 rng(2);
  const std::vector<float> x = RandomRow(rng, 64);
  std::vector<BlockQ4_0> blocks(2);
  QuantizeRowQ4_0(x.data(), 64, blocks.data());
  std::vector<float> back(64);
  DequantizeRowQ4_0(blocks.data(), 64, back.data());
  for (int64_t b = 0; b < 2; ++b) {
    float extreme = 0;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(x[b * 32 + i]) > std::fabs(extreme)) extreme = x[b * 32 + i];
    const double d = F16ToF32(blocks[b].d);
    EXPECT_NEAR(d, -extreme / 8.0, std::fabs(extreme) / 8 * 1e-3);
    for (int i = 0; i < 32; ++i) {
      const int code = i < 16 ? blocks[b].q[i] & 0xf : blocks[b].q[i - 16] >> 4;
      EXPECT_EQ(back[b * 32 + i], static_cast<float>(d * (code - 8)));
      // The extreme maps onto -8 exactly; the other sign reaches only +7, so up to one step off.
      EXPECT_LE(std::fabs(back[b * 32 + i] - x[b * 32 + i]), std::fabs(d) + 1e-3 * std::fabs(x[b * 32 + i]));
    }
  }
}

// The activation rule of the int8 dot products (Q8_0's): per block of 32, scale d = amax / 127,
// codes v * (1 / d) rounded to nearest. Written here from the definition.
std::vector<double> QuantizedActivations(const float* x, int64_t k) {
  std::vector<double> out(k);
  for (int64_t b = 0; b < k / 32; ++b) {
    float amax = 0;
    for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    const float d = amax / 127.0f, inv = d != 0 ? 1.0f / d : 0.0f;
    for (int64_t i = 0; i < 32; ++i) out[b * 32 + i] = static_cast<double>(d) * std::nearbyint(x[b * 32 + i] * inv);
  }
  return out;
}

// A weight format and the most capable kernels the case may use (kAmx: the best the CPU has).
struct FormatCase {
  DType dtype;
  CpuKernels limit;
};

// A random [N, K] matrix stored in a weight format, random activations [M, K] and bias, and the
// backend's y = x · wᵀ + bias. w holds the stored weights' values.
struct NarrowProduct {
  std::vector<float> w, x, bias, y;
};
NarrowProduct RunNarrowMatmul(Backend& backend, DType dtype, int64_t M, int64_t K, int64_t N, std::mt19937& rng) {
  NarrowProduct p{std::vector<float>(N * K), RandomRow(rng, M * K), RandomRow(rng, N), std::vector<float>(M * N)};
  const std::vector<float> w_f32 = RandomRow(rng, N * K);
  std::vector<char> stored(static_cast<size_t>(N) * RowBytes(dtype, K));
  for (int64_t n = 0; n < N; ++n) {
    char* row = stored.data() + n * RowBytes(dtype, K);
    NarrowRow(dtype, &w_f32[n * K], K, row);
    WidenRow(dtype, row, K, &p.w[n * K]);
  }
  auto tw = backend.Alloc(dtype, N, K);
  auto tx = backend.Alloc(DType::kF32, M, K);
  auto tb = backend.Alloc(DType::kF32, 1, N);
  auto ty = backend.Alloc(DType::kF32, M, N);
  EXPECT_TRUE(tw.ok() && tx.ok() && tb.ok() && ty.ok());
  if (!tw.ok() || !tx.ok() || !tb.ok() || !ty.ok()) return p;
  EXPECT_TRUE(backend.Upload(stored.data(), *tw).ok() && backend.Upload(p.x.data(), *tx).ok() &&
              backend.Upload(p.bias.data(), *tb).ok());
  EXPECT_TRUE(backend.Matmul(*tx, *tw, &*tb, *ty).ok());
  EXPECT_TRUE(backend.Download(*ty, p.y.data()).ok());
  return p;
}

class NarrowMatmul : public ::testing::TestWithParam<FormatCase> {
 protected:
  void TearDown() override { LimitCpuKernels(CpuKernels::kAmx); }
};

TEST_P(NarrowMatmul, MatchesAnF64Reference) {
  const DType dtype = GetParam().dtype;
  LimitCpuKernels(GetParam().limit);
  auto backend = MakeCpuBackend({.n_threads = 2});
  ASSERT_TRUE(backend.ok());
  std::mt19937 rng(3);
  const bool quantized = IsBlockQuantized(dtype);
  const std::vector<int64_t> ks = quantized ? std::vector<int64_t>{32, 96, 128, 192, 224, 1056}
                                            : std::vector<int64_t>{1, 15, 16, 17, 100, 257};
  for (int64_t M : {1, 3, 8, 9, 40}) {
    for (int64_t K : ks) {
      for (int64_t N : {1, 7, 33}) {
        const auto [w, x, bias, y] = RunNarrowMatmul(**backend, dtype, M, K, N, rng);
        ASSERT_FALSE(::testing::Test::HasFailure());
        // Few rows on a quantized format take the int8 path: the reference quantizes the
        // activations as it does. Many rows widen the weights and multiply in f32.
        const bool int8_dot = quantized && M <= 8;
        for (int64_t m = 0; m < M; ++m) {
          std::vector<double> xm(x.begin() + m * K, x.begin() + (m + 1) * K);
          if (int8_dot) xm = QuantizedActivations(&x[m * K], K);
          for (int64_t n = 0; n < N; ++n) {
            double ref = bias[n], magnitude = std::abs(bias[n]);
            for (int64_t k = 0; k < K; ++k) {
              ref += static_cast<double>(w[n * K + k]) * xm[k];
              magnitude += std::abs(static_cast<double>(w[n * K + k]) * xm[k]);
            }
            ASSERT_NEAR(y[m * N + n], ref, 1e-5 * magnitude + 1e-6)
                << DTypeName(dtype) << " M=" << M << " K=" << K << " N=" << N;
          }
        }
      }
    }
  }
}

// Prompt rows with bf16 products (BackendOptions::bf16_products, the CPU's bf16 compute): where
// the CPU has AVX512_BF16 the reference rounds the activations and the weights' values to bf16
// and accumulates in f64, so only the summation order may differ; elsewhere the backend computes
// in f32, and so does the reference. Each format runs twice: with the best kernels (AMX tiles
// where the CPU has them) and with AVX-512 at most (oneDNN's bf16 GEMM).
class Bf16Products : public ::testing::TestWithParam<FormatCase> {
 protected:
  void TearDown() override { LimitCpuKernels(CpuKernels::kAmx); }
};

TEST_P(Bf16Products, MatchRoundedOperands) {
  const DType dtype = GetParam().dtype;
  LimitCpuKernels(GetParam().limit);
  auto backend = MakeCpuBackend({.n_threads = 2, .bf16_products = true});
  ASSERT_TRUE(backend.ok());
  const bool rounded = CpuHasAvx512Bf16();
  std::printf("%s products\n", !rounded                                  ? "f32 (no AVX512_BF16 here)"
                               : ActiveCpuKernels() == CpuKernels::kAmx ? "bf16 on AMX tiles"
                                                                        : "bf16 (AVX512_BF16, oneDNN)");
  auto round = [&](float v) { return rounded ? Bf16ToF32(F32ToBf16(v)) : v; };
  std::mt19937 rng(5);
  // Rows and weight rows around the AMX kernel's steps of 32, a depth that is no multiple of 32
  // for bf16 (which oneDNN takes then).
  const std::vector<int64_t> ks = IsBlockQuantized(dtype) ? std::vector<int64_t>{32, 96, 1056}
                                                          : std::vector<int64_t>{32, 96, 100, 1056};
  for (int64_t M : {17, 40, 64}) {
    for (int64_t K : ks) {
      for (int64_t N : {1, 7, 33, 64}) {
        const auto [w, x, bias, y] = RunNarrowMatmul(**backend, dtype, M, K, N, rng);
        ASSERT_FALSE(::testing::Test::HasFailure());
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t n = 0; n < N; ++n) {
            double ref = bias[n], magnitude = std::abs(bias[n]);
            for (int64_t k = 0; k < K; ++k) {
              const double p = static_cast<double>(round(w[n * K + k])) * round(x[m * K + k]);
              ref += p;
              magnitude += std::abs(p);
            }
            ASSERT_NEAR(y[m * N + n], ref, 1e-5 * magnitude + 1e-6)
                << DTypeName(dtype) << " M=" << M << " K=" << K << " N=" << N;
          }
        }
      }
    }
  }
}

std::string FormatCaseName(const ::testing::TestParamInfo<FormatCase>& info) {
  const CpuKernels limit = info.param.limit;
  return std::string(DTypeName(info.param.dtype)) +
         (limit == CpuKernels::kPortable ? "_portable"
          : limit == CpuKernels::kAvx2   ? "_avx2"
          : limit == CpuKernels::kAvx512 ? "_avx512"
                                         : "_best");
}
std::vector<FormatCase> FormatCases() {
  std::vector<FormatCase> cases;
  for (DType dtype : {DType::kBF16, DType::kQ8_0, DType::kQ4_0})
    for (CpuKernels limit : {CpuKernels::kAmx, CpuKernels::kAvx2, CpuKernels::kPortable}) cases.push_back({dtype, limit});
  return cases;
}
INSTANTIATE_TEST_SUITE_P(Formats, NarrowMatmul, ::testing::ValuesIn(FormatCases()), FormatCaseName);
INSTANTIATE_TEST_SUITE_P(Formats, Bf16Products,
                         ::testing::Values(FormatCase{DType::kBF16, CpuKernels::kAmx}, FormatCase{DType::kQ8_0, CpuKernels::kAmx},
                                           FormatCase{DType::kQ4_0, CpuKernels::kAmx},
                                           FormatCase{DType::kBF16, CpuKernels::kAvx512},
                                           FormatCase{DType::kQ8_0, CpuKernels::kAvx512},
                                           FormatCase{DType::kQ4_0, CpuKernels::kAvx512}),
                         FormatCaseName);

// A SwiGLU over no rows (an expert nobody chose, an empty batch) is nothing to do, on the CPU's
// one-region GEMV path for each narrow format as on the default composition.
TEST(GateUp, NoRowsIsNothingToDo) {
  auto backend = MakeCpuBackend({.n_threads = 2});
  ASSERT_TRUE(backend.ok());
  for (DType dtype : {DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
    auto gate = (*backend)->Alloc(dtype, 64, 128), up = (*backend)->Alloc(dtype, 64, 128);
    auto x = (*backend)->Alloc(DType::kF32, 0, 128), y = (*backend)->Alloc(DType::kF32, 0, 64);
    ASSERT_TRUE(gate.ok() && up.ok() && x.ok() && y.ok());
    const std::vector<char> zeros(gate->nbytes());
    ASSERT_TRUE((*backend)->Upload(zeros.data(), *gate).ok() && (*backend)->Upload(zeros.data(), *up).ok());
    EXPECT_TRUE((*backend)->GateUp(*x, *gate, *up, *y).ok()) << DTypeName(dtype);
  }
}

TEST(Bf16Weights, RoundingIsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.00390625f)), 1.0f);       // exactly halfway: to even (down)
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.01171875f)), 1.015625f);  // halfway: to even (up)
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::nanf("")))));
}

// The AVX-512 widening of a prompt's weight rows gives WidenRow's values bit for bit (and, to
// bf16, F32ToBf16 of them), for every scale an f16 holds: zero, subnormal, the largest, negative.
TEST(WidenRowAvx512, MatchesWidenRow) {
  // The kernels run where the matmul picks AVX-512 (F, BW, VL, VNNI); on other CPUs they are
  // never called, and their instructions would fault.
  if (ActiveCpuKernels() < CpuKernels::kAvx512) GTEST_SKIP() << "no AVX-512 on this CPU: the kernels never run here";
  std::mt19937 rng(11);
  const uint16_t scales[] = {0x0000, 0x0001, 0x03ff, 0x3c00, 0x7bff, 0xbc00, 0x8001, 0x2e66};
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kBF16}) {
    for (int64_t n : {32, 64, 1056, 4096}) {
      std::vector<uint8_t> row(RowBytes(dtype, n));
      for (uint8_t& byte : row) byte = static_cast<uint8_t>(rng());
      if (dtype != DType::kBF16) {  // a block's scale from the list, its codes random
        const size_t block_bytes = RowBytes(dtype, kQuantBlock);
        for (int64_t b = 0; b < n / kQuantBlock; ++b) {
          const uint16_t d = scales[b % std::size(scales)];
          std::memcpy(row.data() + b * block_bytes, &d, sizeof d);
        }
      }
      std::vector<float> want(n), got(n);
      WidenRow(dtype, row.data(), n, want.data());
      WidenRowAvx512(dtype, row.data(), n, got.data());
      std::vector<uint16_t> got_bf16(n);
      WidenRowToBf16Avx512(dtype, row.data(), n, got_bf16.data());
      for (int64_t i = 0; i < n; ++i) {
        if (std::isnan(want[i])) {  // random bf16 bits: NaN stays NaN
          EXPECT_TRUE(std::isnan(got[i]) && std::isnan(Bf16ToF32(got_bf16[i])));
          continue;
        }
        ASSERT_EQ(std::memcmp(&want[i], &got[i], sizeof(float)), 0)
            << DTypeName(dtype) << " n=" << n << " i=" << i << ": " << want[i] << " vs " << got[i];
        ASSERT_EQ(got_bf16[i], F32ToBf16(want[i])) << DTypeName(dtype) << " n=" << n << " i=" << i;
      }
    }
  }
}

// A matrix stored in the checkpoint as the backend keeps it goes up from the mapped file without
// a float32 copy; its bytes must be those of the converting path (to float32, then narrowed),
// for single and stacked matrices, and a part stored otherwise sends the stack the converting way.
TEST(WeightLoader, StoredMatricesUploadAsTheConvertingPathWould) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  auto bf16 = [&](int64_t n) {
    std::string b(static_cast<size_t>(2 * n), '\0');
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t v = F32ToBf16(normal(rng));
      std::memcpy(&b[2 * i], &v, 2);
    }
    return b;
  };
  auto f32 = [&](int64_t n) {
    std::string b(static_cast<size_t>(4 * n), '\0');
    for (int64_t i = 0; i < n; ++i) {
      const float v = normal(rng);
      std::memcpy(&b[4 * i], &v, 4);
    }
    return b;
  };
  const int64_t cols = 40;
  const std::string dir = MakeTempDir("stored-weights");
  WriteSafetensors(dir + "/model.safetensors", {{"a", "BF16", {3, cols}, bf16(3 * cols)},
                                                {"b", "BF16", {5, cols}, bf16(5 * cols)},
                                                {"c", "F32", {2, cols}, f32(2 * cols)}});
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto made = MakeCpuBackend({.n_threads = 1});
  ASSERT_TRUE(made.ok()) << made.status();
  Backend& backend = **made;
  const ModelConfig config;
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kQ8_0}) {
    SCOPED_TRACE(DTypeName(dtype));
    WeightLoader loader(*checkpoint, config, backend, nullptr, dtype);
    auto converted = [&](const std::vector<std::pair<std::string, int64_t>>& parts) {
      std::vector<float> host;
      int64_t rows = 0;
      for (const auto& [name, n] : parts) {
        auto part = loader.ReadF32(name, {n, cols});
        EXPECT_TRUE(part.ok()) << part.status();
        host.insert(host.end(), part->begin(), part->end());
        rows += n;
      }
      return *loader.Upload(host, rows, cols, dtype);
    };
    auto bytes = [&](const Tensor& t) {
      std::string b(t.nbytes(), '\0');
      EXPECT_TRUE(backend.Download(t, b.data()).ok());
      return b;
    };
    for (const auto& parts : std::vector<std::vector<std::pair<std::string, int64_t>>>{
             {{"a", 3}}, {{"c", 2}}, {{"a", 3}, {"b", 5}}, {{"b", 5}, {"c", 2}, {"a", 3}}}) {
      auto loaded = parts.size() == 1 ? loader.Matrix(parts[0].first, parts[0].second, cols)
                                      : loader.StackedMatrix(parts, cols);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      const Tensor expected = converted(parts);
      ASSERT_EQ(loaded->dtype, expected.dtype);
      ASSERT_EQ(loaded->rows, expected.rows);
      EXPECT_EQ(bytes(*loaded), bytes(expected)) << parts[0].first << " and " << parts.size() - 1 << " more";
    }
  }
}

TEST(QuantizedWeights, AreRefusedOnCuda) {
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.backend = DS_BACKEND_CUDA;
  eo.weight_format = DS_WEIGHTS_INT4;
  ds_engine* engine = nullptr;
  EXPECT_EQ(ds_engine_open(FixturePath("qwen2_tiny").c_str(), &eo, &engine), DS_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(ds_last_error()).find("CPU backend only"), std::string::npos) << ds_last_error();
  EXPECT_EQ(engine, nullptr);
}

// Opens `dir` with `format` and returns the logits of `prompt`, every position: with
// `one_at_a_time`, as decode sees them (the format's GEMV; int8 activations if quantized),
// otherwise in one prefill.
std::vector<float> Logits(const std::string& dir, ds_weight_format format, const std::vector<int32_t>& prompt,
                          bool one_at_a_time, size_t* V, ds_compute_dtype compute = DS_COMPUTE_AUTO) {
  ds_engine_options eo;
  ds_engine_options_init(&eo);
  eo.weight_format = format;
  eo.compute_dtype = compute;
  eo.n_threads = 2;
  ds_engine* engine = nullptr;
  EXPECT_EQ(ds_engine_open(dir.c_str(), &eo, &engine), DS_OK) << ds_last_error();
  if (!engine) return {};
  ds_session_options so;
  ds_session_options_init(&so);
  so.logits_all = 1;
  ds_session* s = nullptr;
  EXPECT_EQ(ds_session_create(engine, &so, &s), DS_OK);
  std::vector<float> out;
  const float* logits = nullptr;
  size_t rows = 0;
  for (size_t i = 0; i < prompt.size(); i += one_at_a_time ? 1 : prompt.size()) {
    const size_t n = one_at_a_time ? 1 : prompt.size();
    EXPECT_EQ(ds_session_append(s, prompt.data() + i, n), DS_OK) << ds_last_error();
    EXPECT_EQ(ds_session_all_logits(s, &logits, &rows, V), DS_OK);
    // A step's rows may include earlier positions: keep the n newest.
    EXPECT_GE(rows, n);
    out.insert(out.end(), logits + (rows - std::min(rows, n)) * *V, logits + rows * *V);
  }
  ds_session_close(s);
  ds_engine_close(engine);
  return out;
}

// Relative error of each position's logits against the reference's, sorted.
std::vector<double> SortedPositionErrors(const std::vector<float>& logits, const float* ref, size_t V,
                                         const char* what) {
  std::vector<double> errors;
  std::printf("  %s:", what);
  for (size_t t = 0; t * V < logits.size(); ++t) {
    errors.push_back(RelativeError(logits.data() + t * V, ref + t * V, V));
    std::printf(" %.3f", errors.back());
  }
  std::printf("\n");
  std::sort(errors.begin(), errors.end());
  return errors;
}

std::vector<int32_t> PromptOf(const std::string& fixture) {
  const RefTensor ids = LoadReference(fixture, "input_ids");
  return std::vector<int32_t>(ids.i64.begin(), ids.i64.end());
}

// Against transformers' float32 logits, as ‖Δ‖/‖ref‖ per position, on the median position: bf16
// keeps 8 bits of mantissa (~1%); int8 rounds weights to 8 bits and, in decode's dot products,
// activations too (2-6% on these random models, which amplify any perturbation: their logits
// move ~4x more than one matmul's output). A MoE layer may route a token to other experts when
// its input moves (a discontinuity of top-k, not an error of ours): such positions, and the
// ones attending to them, move more, hence the median. int4 (16 levels a block) moves these
// random models' logits by 25-100%, too much for the reference to say anything: it is checked
// against its own dequantized weights below.
struct FormatTolerance {
  ds_weight_format format;
  const char* name;
  double median;
};
constexpr FormatTolerance kAgainstReference[] = {{DS_WEIGHTS_BF16, "bf16", 3e-2}, {DS_WEIGHTS_INT8, "int8", 8e-2}};

class FormatGolden : public ::testing::TestWithParam<std::tuple<std::string, FormatTolerance>> {};

TEST_P(FormatGolden, LogitsWithinTheFormatsTolerance) {
  const auto& [fixture, format] = GetParam();
  const std::vector<int32_t> prompt = PromptOf(fixture);
  const RefTensor ref = LoadReference(fixture, "prefill_logits");
  size_t V = 0;
  std::printf("%s, %s weights, relative error per position\n", fixture.c_str(), format.name);
  const std::vector<float> prefill_logits = Logits(FixturePath(fixture), format.format, prompt, false, &V);
  const std::vector<float> decode_logits = Logits(FixturePath(fixture), format.format, prompt, true, &V);
  ASSERT_GT(V, 0u);
  const auto prefill = SortedPositionErrors(prefill_logits, ref.f32.data(), V, "prefill");
  const auto decode = SortedPositionErrors(decode_logits, ref.f32.data(), V, "decode");
  ASSERT_EQ(prefill.size(), prompt.size());
  ASSERT_EQ(decode.size(), prompt.size());
  EXPECT_LT(prefill[prefill.size() / 2], format.median) << "median prefill position";
  EXPECT_LT(decode[decode.size() / 2], format.median) << "median decode position";
}

std::string FormatGoldenName(const ::testing::TestParamInfo<std::tuple<std::string, FormatTolerance>>& info) {
  return std::get<0>(info.param) + "_" + std::get<1>(info.param).name;
}
INSTANTIATE_TEST_SUITE_P(Fixtures, FormatGolden,
                         ::testing::Combine(::testing::ValuesIn(ListModelFixtures()),
                                            ::testing::ValuesIn(kAgainstReference)),
                         FormatGoldenName);

// bf16 compute on the CPU (bf16 weights, and bf16 products in a prompt's matmuls where the CPU has
// AVX512_BF16) against the f32 engine on the fixture's prompt repeated past the decode path's
// 16 rows (so the prompt takes the GEMM), with bf16 weights' tolerance: both rounding steps
// keep 8 bits of mantissa.
class Bf16Compute : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16Compute, PrefillNearTheF32Engine) {
  const std::string& fixture = GetParam();
  const std::vector<int32_t> once = PromptOf(fixture);
  ASSERT_FALSE(once.empty());
  std::vector<int32_t> prompt;
  while (prompt.size() <= 16) prompt.insert(prompt.end(), once.begin(), once.end());
  std::printf("%s, bf16 compute (%s products), relative error per position\n", fixture.c_str(),
              CpuHasAvx512Bf16() ? "bf16" : "f32");
  size_t V = 0;
  const std::vector<float> f32 = Logits(FixturePath(fixture), DS_WEIGHTS_F32, prompt, false, &V);
  const std::vector<float> bf16 = Logits(FixturePath(fixture), DS_WEIGHTS_F32, prompt, false, &V, DS_COMPUTE_BF16);
  ASSERT_GT(V, 0u);
  ASSERT_EQ(f32.size(), bf16.size());
  const auto errors = SortedPositionErrors(bf16, f32.data(), V, "prefill");
  ASSERT_EQ(errors.size(), prompt.size());
  EXPECT_LT(errors[errors.size() / 2], 3e-2) << "median position";
}
INSTANTIATE_TEST_SUITE_P(Fixtures, Bf16Compute, ::testing::ValuesIn(ListModelFixtures()),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

// A copy of a fixture whose quantizable matrices hold their own Q8_0/Q4_0 round trip, in f32: what
// the quantized engine computes with. Quantizable: the 2-D weights the loader stores in the
// model's format, i.e. all but MoE routers (mlp.gate) and kv_b_proj (split and transposed into
// f32 per-head matrices for the absorbed MLA form), with rows of whole blocks of 32.
std::string DequantizedTwin(const std::string& fixture, DType dtype) {
  const std::string dir = MakeTempDir("twin-" + fixture);
  std::vector<RawTensor> tensors = ReadRawTensors(FixturePath(fixture) + "/model.safetensors");
  for (RawTensor& t : tensors) {
    const auto type = ParseStorageType(t.dtype);
    const bool router = t.name.size() >= 15 && t.name.compare(t.name.size() - 15, 15, ".mlp.gate.weight") == 0;
    if (t.shape.size() != 2 || !type || !IsFloatStorage(*type) || t.shape[1] % kQuantBlock != 0 ||
        t.name.find("kv_b_proj") != std::string::npos || router)
      continue;
    const int64_t rows = t.shape[0], cols = t.shape[1];
    std::vector<float> w(static_cast<size_t>(rows * cols));
    ConvertToF32(*type, t.bytes.data(), w.size(), w.data());
    std::vector<char> blocks(RowBytes(dtype, cols));
    for (int64_t r = 0; r < rows; ++r) {
      NarrowRow(dtype, &w[r * cols], cols, blocks.data());
      WidenRow(dtype, blocks.data(), cols, &w[r * cols]);
    }
    t.dtype = "F32";
    t.bytes.assign(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
  }
  WriteSafetensors(dir + "/model.safetensors", tensors);
  WriteFile(dir + "/config.json", ReadFile(FixturePath(fixture) + "/config.json"));
  return dir;
}

// The quantized engine against the f32 engine running the dequantized twin: the same weights, so
// prefill (widened weights, f32 GEMMs) differs only where few rows reach a matrix (an MoE expert
// seeing <= 8 tokens, a prompt of <= 8) and take the int8-activation dot; decode always does.
// The tolerance is what int8 activations cost: ~0.5% per matmul, amplified by these models to
// 1-5% of the logits on the median position (measured: at most 4.4%; dense prompts of more than
// 8 tokens match to 1e-3 or better in prefill).
struct QuantizedCase {
  DType dtype;
  ds_weight_format format;
  const char* name;
};
constexpr QuantizedCase kQuantized[] = {{DType::kQ8_0, DS_WEIGHTS_INT8, "int8"}, {DType::kQ4_0, DS_WEIGHTS_INT4, "int4"}};
constexpr double kInt8ActivationTolerance = 6e-2;

class QuantizedGolden : public ::testing::TestWithParam<std::tuple<std::string, QuantizedCase>> {};

TEST_P(QuantizedGolden, MatchesTheF32EngineOnItsOwnDequantizedWeights) {
  const auto& [fixture, q] = GetParam();
  const std::vector<int32_t> prompt = PromptOf(fixture);
  const std::string twin = DequantizedTwin(fixture, q.dtype);
  size_t V = 0;
  const std::vector<float> expected = Logits(twin, DS_WEIGHTS_F32, prompt, false, &V);
  ASSERT_TRUE(V > 0 && expected.size() == prompt.size() * V);
  std::printf("%s, %s weights vs the f32 engine on the dequantized twin, relative error per position\n",
              fixture.c_str(), q.name);
  const std::vector<float> prefill_logits = Logits(FixturePath(fixture), q.format, prompt, false, &V);
  const std::vector<float> decode_logits = Logits(FixturePath(fixture), q.format, prompt, true, &V);
  const auto prefill = SortedPositionErrors(prefill_logits, expected.data(), V, "prefill");
  const auto decode = SortedPositionErrors(decode_logits, expected.data(), V, "decode");
  ASSERT_EQ(prefill.size(), prompt.size());
  ASSERT_EQ(decode.size(), prompt.size());
  EXPECT_LT(prefill[prefill.size() / 2], kInt8ActivationTolerance) << "median prefill position";
  EXPECT_LT(decode[decode.size() / 2], kInt8ActivationTolerance) << "median decode position";
}

std::vector<std::string> FixturesWithFloatWeights() {
  std::vector<std::string> out;
  for (const std::string& f : ListModelFixtures())
    if (f.find("fp8") == std::string::npos) out.push_back(f);  // FP8 weights need their block scales to widen
  return out;
}
std::string QuantizedGoldenName(const ::testing::TestParamInfo<std::tuple<std::string, QuantizedCase>>& info) {
  return std::get<0>(info.param) + "_" + std::get<1>(info.param).name;
}
INSTANTIATE_TEST_SUITE_P(Fixtures, QuantizedGolden,
                         ::testing::Combine(::testing::ValuesIn(FixturesWithFloatWeights()),
                                            ::testing::ValuesIn(kQuantized)),
                         QuantizedGoldenName);

}  // namespace
}  // namespace ds::testing

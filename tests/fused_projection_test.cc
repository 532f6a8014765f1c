// The fused projections a decoder block is written in (Backend::NormMatmul, NormGateUp,
// MatmulAdd, MLA's HeadsMatmul and DeepSeekMoE's NormMoeAdd: on CUDA's decode path the norm and the
// residual add happen inside the GEMV) against
// an f64 reference on each backend: f32 and bf16 weights, with and without a bias, decode and
// verification row counts (1 to 16, the GEMV) and a prompt's (past it; f32 weights there, as
// CUDA's bf16 GEMM rounds the activations), widths in whole and partial 16-byte pieces.
#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "backends/plugin.h"
#include "core/model/dtype.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

struct Case {
  int64_t m, n, k;
  bool bf16, bias;
};

float RoundToBf16(float v) { return Bf16ToF32(F32ToBf16(v)); }

// Each test's backend: the CPU (two threads) or CUDA, the test skipped where there is no device.
class FusedProjections : public BackendOpTest {};

// A host matrix and its backend copy (bf16 weights rounded on the host first, so that the
// reference multiplies the same values).
struct Matrix {
  std::vector<float> host;
  Tensor t;
};

// Matrices of unit normals on a backend, drawn from one seeded stream, and their values back.
class RandomMatrices {
 public:
  RandomMatrices(Backend& b, unsigned seed) : b_(b), rng_(seed) {}
  Backend& backend() { return b_; }
  Matrix Make(int64_t rows, int64_t cols, bool bf16) {
    Matrix mat{std::vector<float>(rows * cols), {}};
    std::vector<uint16_t> bits(mat.host.size());
    for (size_t i = 0; i < mat.host.size(); ++i) {
      mat.host[i] = normal_(rng_);
      if (bf16) bits[i] = F32ToBf16(mat.host[i]), mat.host[i] = Bf16ToF32(bits[i]);
    }
    auto t = b_.Alloc(bf16 ? DType::kBF16 : DType::kF32, rows, cols);
    EXPECT_TRUE(t.ok() && b_.Upload(bf16 ? static_cast<const void*>(bits.data()) : mat.host.data(), *t).ok());
    if (t.ok()) mat.t = *t;
    return mat;
  }
  std::vector<float> Download(const Tensor& t) {
    std::vector<float> v(t.rows * t.cols);
    EXPECT_TRUE(b_.Download(t, v.data()).ok());
    return v;
  }

 private:
  Backend& b_;
  std::mt19937 rng_;
  std::normal_distribution<float> normal_;
};

TEST_P(FusedProjections, MatchAnF64Reference) {
  Backend& b = *backend_;
  // Row counts for each of the GEMV's activation-row templates (1, 2, 4, 8, 16) and past it.
  const Case cases[] = {{1, 1536, 1536, true, true}, {1, 300, 264, false, false}, {3, 512, 3584, true, false},
                        {16, 256, 100, false, true}, {9, 77, 72, true, false},    {20, 128, 64, false, true},
                        {12, 200, 96, true, true},   {6, 40, 8960, true, false}};
  RandomMatrices random(b, 11);
  const float eps = 1e-6f;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "m " << c.m << " n " << c.n << " k " << c.k << (c.bf16 ? " bf16" : " f32")
                                      << (c.bias ? " bias" : ""));
    const Matrix x = random.Make(c.m, c.k, false), norm = random.Make(1, c.k, false),
                 w = random.Make(c.n, c.k, c.bf16), w2 = random.Make(c.n, c.k, c.bf16),
                 bias = random.Make(1, c.n, false), hidden = random.Make(c.m, c.n, false),
                 down = random.Make(c.k, c.n, c.bf16);
    auto y = b.Alloc(DType::kF32, c.m, c.n), gate_up = b.Alloc(DType::kF32, c.m, c.n), sum = b.Alloc(DType::kF32, c.m, c.k);
    ASSERT_TRUE(y.ok() && gate_up.ok() && sum.ok());
    const Tensor* bias_t = c.bias ? &bias.t : nullptr;
    ASSERT_TRUE(b.NormMatmul(x.t, norm.t, eps, w.t, bias_t, *y).ok());
    ASSERT_TRUE(b.NormGateUp(x.t, norm.t, eps, w.t, w2.t, *gate_up).ok());
    // sum = x + hidden · downᵀ, down [k, n]: back to x's width, as down_proj adds to the residual.
    ASSERT_TRUE(b.MatmulAdd(hidden.t, down.t, nullptr, x.t, *sum).ok());
    const std::vector<float> got_y = random.Download(*y), got_gate_up = random.Download(*gate_up),
                             got_sum = random.Download(*sum);

    // f32 accumulation over k products of unit normals: errors ~ sqrt(k) * 2^-24 * |terms|.
    const double tol_k = 2e-5 * std::sqrt(static_cast<double>(c.k)), tol_n = 2e-5 * std::sqrt(static_cast<double>(c.n));
    auto dot = [](const float* u, const double* v, int64_t n) {
      double s = 0.0;
      for (int64_t i = 0; i < n; ++i) s += u[i] * v[i];
      return s;
    };
    for (int64_t r = 0; r < c.m; ++r) {
      const float* xr = x.host.data() + r * c.k;
      const double inv_rms = ReferenceInverseRms(xr, c.k, eps);
      std::vector<double> normed(c.k);
      for (int64_t i = 0; i < c.k; ++i) normed[i] = norm.host[i] * (xr[i] * inv_rms);
      for (int64_t j = 0; j < c.n; ++j) {
        const double want = dot(w.host.data() + j * c.k, normed.data(), c.k) + (c.bias ? bias.host[j] : 0.0);
        ASSERT_NEAR(got_y[r * c.n + j], want, tol_k) << "norm_matmul row " << r << " col " << j;
        const double g = dot(w.host.data() + j * c.k, normed.data(), c.k), u = dot(w2.host.data() + j * c.k, normed.data(), c.k);
        ASSERT_NEAR(got_gate_up[r * c.n + j], g / (1.0 + std::exp(-g)) * u, tol_k * (1.0 + std::fabs(u)))
            << "norm_gate_up row " << r << " col " << j;
      }
      const std::vector<double> hr(hidden.host.begin() + r * c.n, hidden.host.begin() + (r + 1) * c.n);
      for (int64_t i = 0; i < c.k; ++i)
        ASSERT_NEAR(got_sum[r * c.k + i], xr[i] + dot(down.host.data() + i * c.n, hr.data(), c.n), tol_n)
            << "matmul_add row " << r << " col " << i;
    }
  }
}

// Backend::HeadsMatmul, MLA's absorbed projections: each head's slice of x (heads x_step apart)
// through its own block of w's rows into y's head (y_step apart, gaps left as they were), against
// an f64 reference: decode, verification and prompt row counts, bf16 and f32 weights, rows per
// head that CUDA's grouped GEMV takes (multiples of 4) and that it hands back to a GEMV per head.
// With bf16 weights a backend may round x to bf16 too (CUDA's tensor-core GEMMs do, for a
// prompt's rows): such a result is held to the reference of the rounded x.
TEST_P(FusedProjections, HeadsMatmulMatchesAnF64Reference) {
  Backend& b = *backend_;
  struct HeadsCase {
    int64_t m, heads, n, k, x_step, y_step;
    bool bf16;
  };
  // The first two are V2-Lite's W_UK (q_nope of 192-wide heads into 576-wide latent queries) and
  // W_UV at a verification pass's rows.
  const HeadsCase cases[] = {{1, 16, 512, 128, 192, 576, true}, {5, 16, 128, 512, 512, 128, false},
                             {16, 3, 64, 40, 48, 70, true},     {20, 4, 32, 24, 24, 32, false},
                             {2, 5, 6, 16, 20, 9, true},        {40, 16, 64, 128, 192, 576, true},
                             {24, 3, 64, 40, 48, 70, false}};
  RandomMatrices random(b, 23);
  for (const HeadsCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "m " << c.m << " heads " << c.heads << " n " << c.n << " k " << c.k
                                      << (c.bf16 ? " bf16" : " f32"));
    const Matrix x = random.Make(c.m, (c.heads - 1) * c.x_step + c.k, false), w = random.Make(c.heads * c.n, c.k, c.bf16),
                 before = random.Make(c.m, (c.heads - 1) * c.y_step + c.n, false);
    const int64_t x_cols = x.t.cols, y_cols = before.t.cols;
    ASSERT_TRUE(b.HeadsMatmul(x.t, c.x_step, w.t, c.heads, before.t, c.y_step).ok());
    const std::vector<float> got = random.Download(before.t);
    for (int64_t r = 0; r < c.m; ++r) {
      std::vector<bool> written(y_cols, false);
      for (int64_t h = 0; h < c.heads; ++h) {
        for (int64_t j = 0; j < c.n; ++j) {
          double want = 0.0, want_rounded = 0.0;
          for (int64_t i = 0; i < c.k; ++i) {
            const float xi = x.host[r * x_cols + h * c.x_step + i];
            want += static_cast<double>(xi) * w.host[(h * c.n + j) * c.k + i];
            want_rounded += static_cast<double>(RoundToBf16(xi)) * w.host[(h * c.n + j) * c.k + i];
          }
          const int64_t col = h * c.y_step + j;
          written[col] = true;
          const double tolerance = 2e-5 * std::sqrt(static_cast<double>(c.k)), v = got[r * y_cols + col];
          if (c.bf16 && std::fabs(v - want) > tolerance) want = want_rounded;
          ASSERT_NEAR(v, want, tolerance) << "row " << r << " head " << h << " col " << j;
        }
      }
      for (int64_t col = 0; col < y_cols; ++col) {
        if (written[col]) continue;
        ASSERT_EQ(got[r * y_cols + col], before.host[r * y_cols + col]) << "gap col " << col;
      }
    }
  }
}

// A DeepSeekMoE layer after its routing (Backend::NormMoeAdd): x + the routed experts' weighted
// sum + the shared experts, all of rms_norm(x) * norm, and the routed sum alone (Backend::Moe),
// against an f64 reference, on each backend. CUDA's two decode kernels
// take up to 16 tokens (past that it composes ops); widths in whole 16-byte pieces and not,
// expert rows odd and even, with and without shared experts (in blocks of an expert's rows).
struct MoeLayer {
  std::vector<MlpWeights> experts;
  std::vector<Matrix> gate, up, down;  // the experts' matrices, host values beside
  std::optional<MlpWeights> shared;
  Matrix shared_gate, shared_up, shared_down;
};

MoeLayer MakeMoeLayer(RandomMatrices& random, int64_t n_experts, int64_t hidden, int64_t inter, int64_t n_shared,
                      bool bf16) {
  MoeLayer l;
  for (int64_t e = 0; e < n_experts; ++e) {
    l.gate.push_back(random.Make(inter, hidden, bf16));
    l.up.push_back(random.Make(inter, hidden, bf16));
    l.down.push_back(random.Make(hidden, inter, bf16));
    l.experts.push_back({l.gate.back().t, l.up.back().t, l.down.back().t});
  }
  if (n_shared > 0) {
    l.shared_gate = random.Make(n_shared * inter, hidden, bf16);
    l.shared_up = random.Make(n_shared * inter, hidden, bf16);
    l.shared_down = random.Make(hidden, n_shared * inter, bf16);
    l.shared = MlpWeights{l.shared_gate.t, l.shared_up.t, l.shared_down.t};
  }
  return l;
}

// Token t's routes: top_k distinct experts, weights in [0.1, 1).
struct Routes {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  Tensor ids_t, weights_t;
};
Routes MakeRoutes(Backend& b, int64_t T, int64_t n_experts, int64_t top_k, unsigned seed) {
  Routes r;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> weight(0.1f, 1.0f);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> order(n_experts);
    for (int64_t e = 0; e < n_experts; ++e) order[e] = static_cast<int32_t>(e);
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t j = 0; j < top_k; ++j) r.ids.push_back(order[j]), r.weights.push_back(weight(rng));
  }
  auto ids = b.Alloc(DType::kI32, T, top_k), weights = b.Alloc(DType::kF32, T, top_k);
  EXPECT_TRUE(ids.ok() && weights.ok() && b.Upload(r.ids.data(), *ids).ok() && b.Upload(r.weights.data(), *weights).ok());
  if (ids.ok() && weights.ok()) r.ids_t = *ids, r.weights_t = *weights;
  return r;
}

// The layer on the backend both ways: NormMoeAdd (the norm in, x added) into fused, Moe (x as it
// is) into plain.
void RunMoeLayer(RandomMatrices& random, const MoeLayer& l, const Routes& routes, const Matrix& x, const Matrix& norm,
                 float eps, std::vector<float>& fused, std::vector<float>& plain) {
  Backend& b = random.backend();
  auto fused_t = b.Alloc(DType::kF32, x.t.rows, x.t.cols), plain_t = b.Alloc(DType::kF32, x.t.rows, x.t.cols);
  ASSERT_TRUE(fused_t.ok() && plain_t.ok());
  ASSERT_TRUE(b.NormMoeAdd(x.t, norm.t, eps, routes.ids_t, routes.weights_t, l.experts, l.shared ? &*l.shared : nullptr,
                           *fused_t)
                  .ok());
  ASSERT_TRUE(b.Moe(x.t, routes.ids_t, routes.weights_t, l.experts, *plain_t).ok());
  fused = random.Download(*fused_t), plain = random.Download(*plain_t);
}

// Adds weight * down(silu(gate x) * up(x)) to out[hidden] and |each term| to scale, in f64; with
// round_h, silu(gate x) * up(x) rounded to bf16 first, as a bf16 GEMM takes it.
void AddMlp(const float* x, const Matrix& gate, const Matrix& up, const Matrix& down, double weight,
            std::vector<double>& out, std::vector<double>& scale, bool round_h = false) {
  const int64_t hidden = gate.t.cols, inter = down.t.cols;
  for (int64_t i = 0; i < inter; ++i) {
    double g = 0.0, u = 0.0;
    for (int64_t c = 0; c < hidden; ++c) g += gate.host[i * hidden + c] * static_cast<double>(x[c]);
    for (int64_t c = 0; c < hidden; ++c) u += up.host[i * hidden + c] * static_cast<double>(x[c]);
    const double silu_up = g / (1.0 + std::exp(-g)) * u;
    const double h = weight * (round_h ? RoundToBf16(static_cast<float>(silu_up)) : silu_up);
    for (int64_t r = 0; r < hidden; ++r) {
      out[r] += h * down.host[r * inter + i];
      scale[r] += std::fabs(h * down.host[r * inter + i]);
    }
  }
}

struct MoeCase {
  int64_t T, hidden, inter, n_experts, top_k, n_shared;
  bool bf16;
};

// Each case's layer through NormMoeAdd and Moe against the f64 reference. With rounded (a bf16
// GEMM's inputs), the reference rounds x, its rms_norm and silu(gate) * up to bf16 as the backend
// does, and the sums may differ by 1e-3 of their absolute sum (their order, and the few products
// whose bf16 rounding a last-bit difference flips, each a 2^-8 change of one of hundreds of
// terms); without, by 1e-4 (f32 sums of a few hundred terms). A term lost, doubled or weighted
// wrong is far outside either.
void ExpectMoeCases(Backend& b, RandomMatrices& random, const std::vector<MoeCase>& cases, bool rounded) {
  unsigned seed = 1;
  const double tolerance = rounded ? 1e-3 : 1e-4;
  const auto round = [rounded](float v) { return rounded ? RoundToBf16(v) : v; };
  for (const MoeCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "T " << c.T << " hidden " << c.hidden << " inter " << c.inter << " experts "
                                      << c.n_experts << " top_k " << c.top_k << " shared " << c.n_shared
                                      << (c.bf16 ? " bf16" : " f32"));
    const MoeLayer l = MakeMoeLayer(random, c.n_experts, c.hidden, c.inter, c.n_shared, c.bf16);
    const Routes routes = MakeRoutes(b, c.T, c.n_experts, c.top_k, seed++);
    const Matrix x = random.Make(c.T, c.hidden, false), norm = random.Make(1, c.hidden, false);
    const float eps = 1e-6f;
    std::vector<float> got_fused, got_plain;
    ASSERT_NO_FATAL_FAILURE(RunMoeLayer(random, l, routes, x, norm, eps, got_fused, got_plain));
    for (int64_t t = 0; t < c.T; ++t) {
      const float* xr = x.host.data() + t * c.hidden;
      const double inv_rms = ReferenceInverseRms(xr, c.hidden, eps);
      std::vector<float> normed(c.hidden), plain(c.hidden);  // f32, as the backends compute it
      for (int64_t i = 0; i < c.hidden; ++i) {
        normed[i] = round(static_cast<float>(norm.host[i] * (xr[i] * inv_rms)));
        plain[i] = round(xr[i]);
      }
      std::vector<double> want_fused(c.hidden), scale_fused(c.hidden), want_plain(c.hidden), scale_plain(c.hidden);
      for (int64_t r = 0; r < c.hidden; ++r) want_fused[r] = xr[r], scale_fused[r] = std::fabs(xr[r]);
      for (int64_t j = 0; j < c.top_k; ++j) {
        const int32_t e = routes.ids[t * c.top_k + j];
        const double w = routes.weights[t * c.top_k + j];
        AddMlp(normed.data(), l.gate[e], l.up[e], l.down[e], w, want_fused, scale_fused, rounded);
        AddMlp(plain.data(), l.gate[e], l.up[e], l.down[e], w, want_plain, scale_plain, rounded);
      }
      if (l.shared)
        AddMlp(normed.data(), l.shared_gate, l.shared_up, l.shared_down, 1.0, want_fused, scale_fused, rounded);
      for (int64_t r = 0; r < c.hidden; ++r) {
        ASSERT_NEAR(got_fused[t * c.hidden + r], want_fused[r], tolerance * scale_fused[r]) << "token " << t << " col " << r;
        ASSERT_NEAR(got_plain[t * c.hidden + r], want_plain[r], tolerance * scale_plain[r])
            << "moe token " << t << " col " << r;
      }
    }
  }
}

TEST_P(FusedProjections, NormMoeAddMatchesAnF64Reference) {
  RandomMatrices random(*backend_, 31);
  ExpectMoeCases(*backend_, random,
                 {{1, 256, 96, 8, 3, 2, true}, {3, 128, 64, 6, 2, 0, false}, {16, 64, 40, 5, 4, 1, true},
                  {20, 64, 32, 4, 2, 1, false}, {2, 36, 20, 4, 2, 1, true}, {3, 40, 21, 4, 2, 2, false},
                  {5, 72, 24, 7, 3, 2, true}, {100, 48, 24, 3, 2, 2, false}},
                 /*rounded=*/false);
}

// CUDA's MoE kernels, as its GEMV, compute a token the same way whatever other tokens the call
// has (a verification pass reproduces decode bit for bit): 16 tokens at once against each alone,
// with the input norm (NormMoeAdd) and without (Moe).
TEST(CudaMoe, ATokensResultDoesNotDependOnTheTokensBesideIt) {
  DS_SKIP_IF_NO_DEVICE(kTargets[1]);
  auto backend = LoadCudaBackend({});
  ASSERT_TRUE(backend.ok()) << backend.status();
  Backend& b = **backend;
  RandomMatrices random(b, 7);
  const int64_t T = 16, hidden = 512, inter = 96, n_experts = 8, top_k = 3;
  for (bool bf16 : {true, false}) {
    SCOPED_TRACE(bf16 ? "bf16" : "f32");
    const MoeLayer l = MakeMoeLayer(random, n_experts, hidden, inter, 2, bf16);
    const Routes routes = MakeRoutes(b, T, n_experts, top_k, 3);
    const Matrix x = random.Make(T, hidden, false), norm = random.Make(1, hidden, false);
    std::vector<float> got[2][2];  // [pass][with the norm]
    for (int pass = 0; pass < 2; ++pass) {
      auto fused = b.Alloc(DType::kF32, T, hidden), plain = b.Alloc(DType::kF32, T, hidden);
      ASSERT_TRUE(fused.ok() && plain.ok());
      const int64_t rows = pass == 0 ? T : 1;
      for (int64_t t = 0; t < T; t += rows) {
        const Tensor ids = routes.ids_t.Rows(t, rows), weights = routes.weights_t.Rows(t, rows);
        ASSERT_TRUE(
            b.NormMoeAdd(x.t.Rows(t, rows), norm.t, 1e-6f, ids, weights, l.experts, &*l.shared, fused->Rows(t, rows))
                .ok());
        ASSERT_TRUE(b.Moe(x.t.Rows(t, rows), ids, weights, l.experts, plain->Rows(t, rows)).ok());
      }
      got[pass][0] = random.Download(*plain), got[pass][1] = random.Download(*fused);
    }
    for (int fused = 0; fused < 2; ++fused)
      for (size_t i = 0; i < got[0][fused].size(); ++i)
        ASSERT_EQ(got[0][fused][i], got[1][fused][i]) << (fused ? "norm_moe_add" : "moe") << " element " << i;
  }
}

// CUDA's prompt path (past 16 tokens): the tokens sorted by expert on the device and each
// expert's rows run as grouped GEMMs; with bf16 weights they round their inputs (x, or its
// rms_norm, and silu(gate) * up) to bf16, as its bf16 GEMMs do, and the f64 reference rounds the
// same values. Shapes for the tensor-core kernel (widths in 16-byte pieces; depths past and short
// of its steps of 32; experts with more rows than its tiles of 64; outputs past its tiles of 64
// and 128) and for the kernel of plain FMAs (widths not in 16-byte pieces).
TEST(CudaMoe, APromptMatchesAReferenceRoundedAsItsGemmsRound) {
  DS_SKIP_IF_NO_DEVICE(kTargets[1]);
  auto backend = LoadCudaBackend({});
  ASSERT_TRUE(backend.ok()) << backend.status();
  RandomMatrices random(**backend, 11);
  ExpectMoeCases(**backend, random,
                 {{17, 256, 96, 8, 3, 2, true}, {150, 136, 40, 4, 2, 1, true}, {300, 64, 136, 6, 4, 0, true},
                  {40, 36, 20, 4, 2, 1, true}, {100, 72, 26, 5, 3, 2, true}},
                 /*rounded=*/true);
}

// CUDA's GEMV computes an activation row the same way whatever other rows the call has: what lets
// a speculative verification pass reproduce plain decoding bit for bit. Each row of an m-row call
// equals, bit for bit, the same row computed in a call of its own: bf16 and f32 weights, with the
// norm on the way in, the residual added, gate/up, and MLA's per-head products (HeadsMatmul: at
// one row two weight rows a warp, past it four or two), at row counts of each of its templates,
// with a few slices a row and many.
TEST(CudaGemv, ARowsResultDoesNotDependOnTheRowsBesideIt) {
  DS_SKIP_IF_NO_DEVICE(kTargets[1]);
  auto backend = LoadCudaBackend({});
  ASSERT_TRUE(backend.ok()) << backend.status();
  Backend& b = **backend;
  RandomMatrices random(b, 5);
  auto upload = [&](int64_t rows, int64_t cols, bool bf16) { return random.Make(rows, cols, bf16).t; };
  const int64_t k = 1024;
  for (const auto& [n, bf16] : {std::pair<int64_t, bool>{200, true}, {200, false}, {4096, true}}) {
    const Tensor w = upload(n, k, bf16), w2 = upload(n, k, bf16), down = upload(k, n, bf16), norm = upload(1, k, false),
                 bias = upload(1, n, false), heads_w = upload(8 * 64, k / 8, bf16);  // 8 heads: 128 -> 64
    for (int64_t m : {2, 3, 5, 9, 13, 16}) {
      SCOPED_TRACE(::testing::Message() << (bf16 ? "bf16" : "f32") << " n " << n << " m " << m);
      const Tensor x = upload(m, k, false), hidden = upload(m, n, false);
      // Each product for all m rows at once, then row by row into a second tensor.
      std::vector<float> together[4], alone[4];
      for (int pass = 0; pass < 2; ++pass) {
        auto y = b.Alloc(DType::kF32, m, n), gate_up = b.Alloc(DType::kF32, m, n), sum = b.Alloc(DType::kF32, m, k),
             heads = b.Alloc(DType::kF32, m, 8 * 64);
        ASSERT_TRUE(y.ok() && gate_up.ok() && sum.ok() && heads.ok());
        for (int64_t r = 0; r < m; r += pass == 0 ? m : 1) {
          const int64_t rows = pass == 0 ? m : 1;
          ASSERT_TRUE(b.NormMatmul(x.Rows(r, rows), norm, 1e-6f, w, &bias, y->Rows(r, rows)).ok());
          ASSERT_TRUE(b.NormGateUp(x.Rows(r, rows), norm, 1e-6f, w, w2, gate_up->Rows(r, rows)).ok());
          ASSERT_TRUE(b.MatmulAdd(hidden.Rows(r, rows), down, nullptr, x.Rows(r, rows), sum->Rows(r, rows)).ok());
          ASSERT_TRUE(b.HeadsMatmul(x.Rows(r, rows), k / 8, heads_w, 8, heads->Rows(r, rows), 64).ok());
        }
        auto& out = pass == 0 ? together : alone;
        out[0] = random.Download(*y), out[1] = random.Download(*gate_up), out[2] = random.Download(*sum);
        out[3] = random.Download(*heads);
      }
      for (int i = 0; i < 4; ++i) {
        ASSERT_EQ(together[i].size(), alone[i].size());
        for (size_t j = 0; j < together[i].size(); ++j)
          ASSERT_EQ(together[i][j], alone[i][j]) << "product " << i << " element " << j;  // bit for bit
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, FusedProjections, ::testing::Values(kTargets[0], kTargets[1]),
                         [](const ::testing::TestParamInfo<Target>& param) { return std::string(param.param.name); });

}  // namespace
}  // namespace ds::testing

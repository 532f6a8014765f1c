// Backend::RopeAndStoreKv (rope on q's and k's heads, then k and v into the KV cache; on CUDA one
// kernel) and MLA's Backend::MlaRopeAndStore (c_kv's norm and k_pe's rope into the latent cache,
// q_pe's rope into the latent query) against f64 references on each backend: q, k and v as column ranges of one qkv row
// as a layer's projection leaves them, rotate-half and interleaved layouts, partial rotation
// (rot_dim < head_dim), one and several rows, and on CUDA the position read from the device. The
// caches have rows before and after the pass's, which must keep what they held.
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/backend.h"
#include "backends/plugin.h"
#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace ds::testing {
namespace {

struct Case {
  int64_t T, pos0, q_heads, kv_heads, head_dim, rot_dim;
  RopeLayout layout;
};

// Each test's backend: the CPU (two threads) or CUDA, the test skipped where there is no device.
class RopeAndStoreKv : public ::testing::TestWithParam<TargetAndDevicePosition> {
 protected:
  void SetUp() override {
    const Target& target = std::get<0>(GetParam());
    DS_SKIP_IF_NO_DEVICE(target);
    auto backend = MakeTestBackend(target, 2);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
  }
  std::unique_ptr<Backend> backend_;
};

// The rotation's frequencies, theta 10000: inv_freq[i] = 10000^(-2i / rot_dim).
std::vector<float> RopeInvFreq(int64_t rot_dim) {
  std::vector<float> inv_freq(rot_dim / 2);
  for (int64_t i = 0; i < rot_dim / 2; ++i)
    inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * static_cast<double>(i) / rot_dim));
  return inv_freq;
}

TEST_P(RopeAndStoreKv, MatchesAnF64Reference) {
  const bool position_on_device = std::get<1>(GetParam());
  Backend& backend = *backend_;
  const Case cases[] = {{1, 7, 12, 2, 128, 128, RopeLayout::kHalf},
                        {3, 0, 4, 4, 64, 32, RopeLayout::kInterleaved},
                        {5, 100, 6, 2, 16, 16, RopeLayout::kHalf},
                        {2, 4090, 28, 4, 128, 128, RopeLayout::kHalf}};
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const float sentinel = 1234.5f, factor = 0.75f;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "T " << c.T << " pos0 " << c.pos0 << " heads " << c.q_heads << "/"
                                      << c.kv_heads << " dims " << c.head_dim << "/" << c.rot_dim);
    const int64_t q_cols = c.q_heads * c.head_dim, kv_cols = c.kv_heads * c.head_dim, cols = q_cols + 2 * kv_cols;
    const int64_t cache_rows = c.pos0 + c.T + 3, half = c.rot_dim / 2;
    std::vector<float> qkv(c.T * cols);
    for (float& f : qkv) f = normal(rng);
    const std::vector<float> inv_freq = RopeInvFreq(c.rot_dim);
    std::vector<float> cache(cache_rows * kv_cols, sentinel);
    auto t_qkv = backend.Alloc(DType::kF32, c.T, cols);
    auto t_freq = backend.Alloc(DType::kF32, 1, half);
    auto k_cache = backend.Alloc(DType::kF32, cache_rows, kv_cols);
    auto v_cache = backend.Alloc(DType::kF32, cache_rows, kv_cols);
    ASSERT_TRUE(t_qkv.ok() && t_freq.ok() && k_cache.ok() && v_cache.ok());
    ASSERT_TRUE(backend.Upload(qkv.data(), *t_qkv).ok() && backend.Upload(inv_freq.data(), *t_freq).ok() &&
                backend.Upload(cache.data(), *k_cache).ok() && backend.Upload(cache.data(), *v_cache).ok());
    const absl::StatusOr<Position> at = PassPosition(backend, c.pos0, position_on_device);
    ASSERT_TRUE(at.ok()) << at.status();
    const RopeTable table{.inv_freq = *t_freq, .attention_factor = factor};
    ASSERT_TRUE(backend
                    .RopeAndStoreKv(t_qkv->Cols(0, q_cols), t_qkv->Cols(q_cols, kv_cols),
                                     t_qkv->Cols(q_cols + kv_cols, kv_cols), c.head_dim, c.rot_dim, table, c.layout,
                                     *at, *k_cache, *v_cache)
                    .ok());

    // The reference: q's and k's heads rotated (k and v unchanged past rot_dim and for v).
    std::vector<double> want(qkv.begin(), qkv.end());
    for (int64_t t = 0; t < c.T; ++t) {
      const float pos = static_cast<float>(c.pos0 + t);
      for (int64_t h = 0; h < c.q_heads + c.kv_heads; ++h) {
        double* head = want.data() + t * cols + h * c.head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const double angle = static_cast<double>(pos * inv_freq[i]);  // a float32 angle, as transformers
          const double cs = std::cos(angle) * factor, sn = std::sin(angle) * factor;
          const int64_t a = c.layout == RopeLayout::kInterleaved ? 2 * i : i;
          const int64_t b = c.layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + half;
          const double x0 = head[a], x1 = head[b];
          head[a] = x0 * cs - x1 * sn;
          head[b] = x1 * cs + x0 * sn;
        }
      }
    }
    std::vector<float> got(c.T * cols), got_k(cache.size()), got_v(cache.size());
    ASSERT_TRUE(backend.Download(*t_qkv, got.data()).ok() && backend.Download(*k_cache, got_k.data()).ok() &&
                backend.Download(*v_cache, got_v.data()).ok());
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t j = 0; j < q_cols + kv_cols; ++j)
        ASSERT_NEAR(got[t * cols + j], want[t * cols + j], 2e-5) << "q|k row " << t << " col " << j;
    for (int64_t r = 0; r < cache_rows; ++r) {
      const bool written = r >= c.pos0 && r < c.pos0 + c.T;
      for (int64_t j = 0; j < kv_cols; ++j) {
        if (!written) {
          ASSERT_EQ(got_k[r * kv_cols + j], sentinel) << "k cache row " << r << " (not the pass's)";
          ASSERT_EQ(got_v[r * kv_cols + j], sentinel) << "v cache row " << r << " (not the pass's)";
          continue;
        }
        const int64_t t = r - c.pos0;
        ASSERT_EQ(got_k[r * kv_cols + j], got[t * cols + q_cols + j]) << "k cache row " << r << " col " << j;
        ASSERT_EQ(got_v[r * kv_cols + j], qkv[t * cols + q_cols + kv_cols + j]) << "v cache row " << r << " col " << j;
      }
    }
  }
}

// Rotates pair i of x (rot_dim values) in place in f64, as transformers: a float32 angle.
void RotateReference(double* x, int64_t i, int64_t half, RopeLayout layout, float pos, float inv_freq, float factor) {
  const double angle = static_cast<double>(pos * inv_freq);
  const double cs = std::cos(angle) * factor, sn = std::sin(angle) * factor;
  const int64_t a = layout == RopeLayout::kInterleaved ? 2 * i : i;
  const int64_t b = layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + half;
  const double x0 = x[a], x1 = x[b];
  x[a] = x0 * cs - x1 * sn;
  x[b] = x1 * cs + x0 * sn;
}

// MLA: the pass's cache rows [rms_norm(c_kv) * norm | rope(k_pe)], and rope(q_pe) of each head
// beside the latent query's first r columns, which keep what they held (as do the cache's other
// rows) or, with w_uk, get the absorbed W_UKᵀ q_nope.
TEST_P(RopeAndStoreKv, MlaMatchesAnF64Reference) {
  const bool position_on_device = std::get<1>(GetParam());
  Backend& b = *backend_;
  struct MlaCase {
    int64_t T, pos0, heads, nope, r, rope;
    RopeLayout layout;
  };
  // V2-Lite's decode step and a verification pass; the tiny fixture's shape; the other layout;
  // heads of a latent width that is not whole groups of four rows.
  const MlaCase cases[] = {{1, 7, 16, 128, 512, 64, RopeLayout::kInterleaved},
                           {5, 4090, 16, 128, 512, 64, RopeLayout::kInterleaved},
                           {3, 0, 4, 32, 64, 16, RopeLayout::kInterleaved},
                           {2, 30, 3, 8, 40, 8, RopeLayout::kHalf},
                           {1, 5, 3, 8, 42, 8, RopeLayout::kHalf}};
  std::mt19937 rng(15);
  std::normal_distribution<float> normal;
  const float sentinel = 1234.5f, factor = 0.75f, eps = 1e-6f;
  for (const bool absorb : {false, true})
  for (const MlaCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "T " << c.T << " pos0 " << c.pos0 << " heads " << c.heads << " r " << c.r
                                      << (absorb ? " with W_UK" : ""));
    const int64_t qk = c.nope + c.rope, width = c.r + c.rope, half = c.rope / 2, cache_rows = c.pos0 + c.T + 3;
    std::vector<float> q(c.T * c.heads * qk), kv(c.T * width), norm(c.r), q_latent(c.T * c.heads * width),
        cache(cache_rows * width, sentinel), w_uk(c.heads * c.r * c.nope);
    for (auto* v : {&q, &kv, &norm, &q_latent, &w_uk})
      for (float& f : *v) f = normal(rng);
    const std::vector<float> inv_freq = RopeInvFreq(c.rope);
    auto t_q = b.Alloc(DType::kF32, c.T, c.heads * qk), t_kv = b.Alloc(DType::kF32, c.T, width);
    auto t_norm = b.Alloc(DType::kF32, 1, c.r), t_freq = b.Alloc(DType::kF32, 1, half);
    auto t_latent = b.Alloc(DType::kF32, c.T, c.heads * width), t_cache = b.Alloc(DType::kF32, cache_rows, width);
    auto t_w_uk = b.Alloc(DType::kF32, c.heads * c.r, c.nope);
    ASSERT_TRUE(t_q.ok() && t_kv.ok() && t_norm.ok() && t_freq.ok() && t_latent.ok() && t_cache.ok() && t_w_uk.ok());
    ASSERT_TRUE(b.Upload(q.data(), *t_q).ok() && b.Upload(kv.data(), *t_kv).ok() &&
                b.Upload(norm.data(), *t_norm).ok() && b.Upload(inv_freq.data(), *t_freq).ok() &&
                b.Upload(q_latent.data(), *t_latent).ok() && b.Upload(cache.data(), *t_cache).ok() &&
                b.Upload(w_uk.data(), *t_w_uk).ok());
    const absl::StatusOr<Position> at = PassPosition(b, c.pos0, position_on_device);
    ASSERT_TRUE(at.ok()) << at.status();
    const RopeTable table{.inv_freq = *t_freq, .attention_factor = factor};
    ASSERT_TRUE(b.MlaRopeAndStore(*t_q, c.heads, qk, c.nope, *t_kv, *t_norm, eps, c.rope, table, c.layout, *at,
                                  *t_latent, width, *t_cache, absorb ? &*t_w_uk : nullptr)
                    .ok());
    std::vector<float> got_latent(q_latent.size()), got_cache(cache.size());
    ASSERT_TRUE(b.Download(*t_latent, got_latent.data()).ok() && b.Download(*t_cache, got_cache.data()).ok());
    for (int64_t t = 0; t < c.T; ++t) {
      const float pos = static_cast<float>(c.pos0 + t);
      for (int64_t h = 0; h < c.heads; ++h) {
        std::vector<double> pe(q.begin() + (t * c.heads + h) * qk + c.nope, q.begin() + (t * c.heads + h + 1) * qk);
        for (int64_t i = 0; i < half; ++i) RotateReference(pe.data(), i, half, c.layout, pos, inv_freq[i], factor);
        const int64_t head = (t * c.heads + h) * width;
        for (int64_t j = 0; j < c.r; ++j) {
          if (!absorb) {
            ASSERT_EQ(got_latent[head + j], q_latent[head + j]) << "row " << t << " head " << h << " latent col " << j;
            continue;
          }
          double want = 0.0, magnitude = 0.0;
          for (int64_t i = 0; i < c.nope; ++i) {
            const double term = static_cast<double>(q[(t * c.heads + h) * qk + i]) * w_uk[(h * c.r + j) * c.nope + i];
            want += term, magnitude += std::abs(term);
          }
          ASSERT_NEAR(got_latent[head + j], want, 1e-5 * (1.0 + magnitude))
              << "row " << t << " head " << h << " latent col " << j;
        }
        for (int64_t j = 0; j < c.rope; ++j)
          ASSERT_NEAR(got_latent[head + c.r + j], pe[j], 2e-5) << "row " << t << " head " << h << " q_pe " << j;
      }
      const float* x = kv.data() + t * width;
      const double inv_rms = ReferenceInverseRms(x, c.r, eps);
      std::vector<double> k_pe(x + c.r, x + width);
      for (int64_t i = 0; i < half; ++i) RotateReference(k_pe.data(), i, half, c.layout, pos, inv_freq[i], factor);
      const float* row = got_cache.data() + (c.pos0 + t) * width;
      for (int64_t i = 0; i < c.r; ++i)
        ASSERT_NEAR(row[i], norm[i] * (x[i] * inv_rms), 2e-5) << "row " << t << " c_kv " << i;
      for (int64_t i = 0; i < c.rope; ++i) ASSERT_NEAR(row[c.r + i], k_pe[i], 2e-5) << "row " << t << " k_pe " << i;
    }
    for (int64_t row = 0; row < cache_rows; ++row) {
      if (row >= c.pos0 && row < c.pos0 + c.T) continue;
      for (int64_t i = 0; i < width; ++i) ASSERT_EQ(got_cache[row * width + i], sentinel) << "cache row " << row;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, RopeAndStoreKv, KernelTestTargets(), KernelTestName);

}  // namespace
}  // namespace ds::testing

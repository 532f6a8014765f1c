// The attention kernels against an f64 reference on each backend: GQA groups (2 to 12 query heads
// a kv head: on CUDA the tile kernel's blocks of up to 8 heads, a group of 12 in two unequal
// blocks), MLA-like shapes (one kv head for all query heads, v narrower than qk or 512 wide, v the
// start of each key row as in MLA's latent cache),
// head widths that are not whole 16-byte pieces (CUDA's warp-per-key kernel), decode and
// verification rows over long contexts (the keys split into chunks, across threads or blocks, a
// CUDA split of several tiles past 4096 keys, and merged) and prompt rows. On CUDA once more with the
// position read from the device and a cache longer than the pass (as a replayed recording runs),
// whose rows past the keys hold values that would show if they were read.
#include <algorithm>
#include <cmath>
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
  int64_t T, pos0, heads, kv_heads, dqk, dv;
  bool values_in_keys = false;  // v is the first dv columns of k's rows (MLA's latent cache)
};

// Two threads, as the other tests (LLVM's OpenMP runtime keeps allocations of differently sized
// thread teams past exit, which LeakSanitizer reports): with one query row and one or two kv heads
// the keys still split into chunks, so the merge is exercised.
class Attention : public ::testing::TestWithParam<TargetAndDevicePosition> {};

TEST_P(Attention, MatchesAnF64Reference) {
  const auto [target, position_on_device] = GetParam();
  DS_SKIP_IF_NO_DEVICE(target);
  const Case cases[] = {
      {1, 0, 4, 4, 16, 16},    {1, 2999, 12, 2, 128, 128}, {3, 5000, 12, 2, 64, 64}, {1, 700, 16, 1, 40, 32},
      {8, 1000, 4, 2, 17, 9},  {40, 300, 4, 2, 32, 32},    {1, 129, 3, 1, 8, 8},     {16, 0, 2, 1, 8, 8},
      {1, 4095, 28, 4, 128, 128}, {5, 600, 32, 4, 64, 64}, {2, 300, 16, 1, 72, 512}, {9, 9000, 6, 2, 32, 32},
      {1, 2000, 24, 2, 128, 128}, {2, 63, 7, 1, 128, 100},
      // MLA: V2-Lite's 16 heads over [c_kv 512 | k_pe 64], decode and verification rows, one and
      // several tiles a split; the tiny fixture's 4 heads over [64 | 16].
      {1, 530, 16, 1, 576, 512, true}, {3, 4500, 16, 1, 576, 512, true}, {2, 40, 4, 1, 80, 64, true},
  };
  auto backend = MakeTestBackend(target, 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (const Case& c : cases) {
    // The cache: S rows of keys, and with the position on the device 37 more that must not be read.
    const int64_t S = c.pos0 + c.T, rows = position_on_device ? S + 37 : S;
    std::vector<float> q(c.T * c.heads * c.dqk), k(rows * c.kv_heads * c.dqk), v(rows * c.kv_heads * c.dv);
    for (auto* vec : {&q, &k, &v})
      for (auto& x : *vec) x = normal(rng);
    std::fill(k.begin() + S * c.kv_heads * c.dqk, k.end(), 1e4f);
    std::fill(v.begin() + S * c.kv_heads * c.dv, v.end(), 1e4f);
    auto tq = (*backend)->Alloc(DType::kF32, c.T, c.heads * c.dqk);
    auto tk = (*backend)->Alloc(DType::kF32, rows, c.kv_heads * c.dqk);
    auto tv = c.values_in_keys ? absl::StatusOr<Tensor>(tk->Cols(0, c.dv))
                               : (*backend)->Alloc(DType::kF32, rows, c.kv_heads * c.dv);
    auto to = (*backend)->Alloc(DType::kF32, c.T, c.heads * c.dv);
    ASSERT_TRUE(tq.ok() && tk.ok() && tv.ok() && to.ok());
    ASSERT_TRUE((*backend)->Upload(q.data(), *tq).ok() && (*backend)->Upload(k.data(), *tk).ok());
    if (c.values_in_keys) {
      for (int64_t j = 0; j < rows; ++j) std::copy_n(k.begin() + j * c.dqk, c.dv, v.begin() + j * c.dv);
    } else {
      ASSERT_TRUE((*backend)->Upload(v.data(), *tv).ok());
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.dqk));
    const absl::StatusOr<Position> position = PassPosition(**backend, c.pos0, position_on_device);
    ASSERT_TRUE(position.ok()) << position.status();
    const AttentionShape shape{.n_heads = c.heads, .n_kv_heads = c.kv_heads, .head_dim_qk = c.dqk,
                               .head_dim_v = c.dv, .scale = scale, .position = *position};
    ASSERT_TRUE((*backend)->Attention(*tq, *tk, *tv, shape, *to).ok());
    std::vector<float> out(c.T * c.heads * c.dv);
    ASSERT_TRUE((*backend)->Download(*to, out.data()).ok());
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t h = 0; h < c.heads; ++h) {
        const int64_t kvh = h / (c.heads / c.kv_heads), n = c.pos0 + t + 1;
        std::vector<double> score(n);
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          double d = 0;
          for (int64_t i = 0; i < c.dqk; ++i)
            d += static_cast<double>(q[(t * c.heads + h) * c.dqk + i]) * k[(j * c.kv_heads + kvh) * c.dqk + i];
          score[j] = d * scale;
          m = std::max(m, score[j]);
        }
        for (double& s : score) sum += (s = std::exp(s - m));
        for (int64_t i = 0; i < c.dv; ++i) {
          double ref = 0;
          for (int64_t j = 0; j < n; ++j) ref += score[j] / sum * v[(j * c.kv_heads + kvh) * c.dv + i];
          ASSERT_NEAR(out[(t * c.heads + h) * c.dv + i], ref, 1e-5)
              << "T=" << c.T << " pos0=" << c.pos0 << " heads=" << c.heads << "/" << c.kv_heads << " t=" << t
              << " h=" << h << " i=" << i;
        }
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Attention, KernelTestTargets(), KernelTestName);

}  // namespace
}  // namespace ds::testing

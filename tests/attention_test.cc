// The CPU attention kernel against an f64 reference: GQA groups, MLA-like shapes (one kv head
// for all query heads, v narrower than qk), decode and verification rows over long contexts
// (the keys split into chunks across threads and merged) and prompt rows (one chunk per row).
#include <cmath>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "gtest/gtest.h"

namespace ds {
namespace {

struct Case {
  int64_t T, pos0, heads, kv_heads, dqk, dv;
};

// Two threads, as the other tests (LLVM's OpenMP runtime keeps allocations of differently sized
// thread teams past exit, which LeakSanitizer reports): with one query row and one or two kv heads
// the keys still split into chunks, so the merge is exercised.
TEST(CpuAttention, MatchesAnF64Reference) {
  const Case cases[] = {
      {1, 0, 4, 4, 16, 16},    {1, 2999, 12, 2, 128, 128}, {3, 5000, 12, 2, 64, 64}, {1, 700, 16, 1, 40, 32},
      {8, 1000, 4, 2, 17, 9},  {40, 300, 4, 2, 32, 32},    {1, 129, 3, 1, 8, 8},     {16, 0, 2, 1, 8, 8},
  };
  auto backend = MakeCpuBackend({.n_threads = 2});
  ASSERT_TRUE(backend.ok());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (const Case& c : cases) {
    const int64_t S = c.pos0 + c.T;
    std::vector<float> q(c.T * c.heads * c.dqk), k(S * c.kv_heads * c.dqk), v(S * c.kv_heads * c.dv);
    for (auto* vec : {&q, &k, &v})
      for (auto& x : *vec) x = normal(rng);
    auto tq = (*backend)->Alloc(DType::kF32, c.T, c.heads * c.dqk);
    auto tk = (*backend)->Alloc(DType::kF32, S, c.kv_heads * c.dqk);
    auto tv = (*backend)->Alloc(DType::kF32, S, c.kv_heads * c.dv);
    auto to = (*backend)->Alloc(DType::kF32, c.T, c.heads * c.dv);
    ASSERT_TRUE(tq.ok() && tk.ok() && tv.ok() && to.ok());
    ASSERT_TRUE((*backend)->Upload(q.data(), *tq).ok() && (*backend)->Upload(k.data(), *tk).ok() &&
                (*backend)->Upload(v.data(), *tv).ok());
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.dqk));
    const AttentionShape shape{.n_heads = c.heads, .n_kv_heads = c.kv_heads, .head_dim_qk = c.dqk,
                               .head_dim_v = c.dv, .scale = scale, .position = c.pos0};
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

}  // namespace
}  // namespace ds

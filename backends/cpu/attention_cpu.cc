// Causal softmax attention on the CPU. Each (query row, head) pair keeps one row of scores
// (S floats per thread), never the T x S matrix.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/cpu_backend.h"

namespace ds {

absl::Status CpuBackend::Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const AttentionShape& s, const Tensor& out) {
  const int64_t T = q.rows;
  const int64_t group = s.n_heads / s.n_kv_heads;
  ScopedOmpThreads threads(n_threads_);
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(s.pos0 + T));
    std::vector<double> acc(static_cast<size_t>(s.head_dim_v));
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < s.n_heads; ++h) {
        const int64_t kv_head = h / group;
        const int64_t n_keys = s.pos0 + t + 1;
        const float* qv = q.ptr<float>() + t * q.stride + h * s.head_dim_qk;
        float max_score = -INFINITY;
        for (int64_t j = 0; j < n_keys; ++j) {
          const float* kv = k.ptr<float>() + j * k.stride + kv_head * s.head_dim_qk;
          float dot = 0;
          for (int64_t i = 0; i < s.head_dim_qk; ++i) dot += qv[i] * kv[i];
          scores[j] = dot * s.scale;
          max_score = std::max(max_score, scores[j]);
        }
        double sum = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < n_keys; ++j) {
          const double p = std::exp(static_cast<double>(scores[j] - max_score));
          sum += p;
          const float* vv = v.ptr<float>() + j * v.stride + kv_head * s.head_dim_v;
          for (int64_t i = 0; i < s.head_dim_v; ++i) acc[i] += p * vv[i];
        }
        float* o = out.ptr<float>() + t * out.stride + h * s.head_dim_v;
        for (int64_t i = 0; i < s.head_dim_v; ++i) o[i] = static_cast<float>(acc[i] / sum);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace ds

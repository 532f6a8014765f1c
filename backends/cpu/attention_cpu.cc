// Causal softmax attention on the CPU, never materializing the T x S score matrix.
//
// Work is split into (query row, kv head, chunk of keys) items. An item takes every query head
// that shares the kv head (GQA's group; MLA's absorbed form has one latent "kv head" shared by all
// heads), so each key and value row is loaded once for the group. Few query rows (decode,
// speculative verification) split the keys into chunks so all threads work on one long context
// (flash-decoding); each chunk keeps its max score, Σ exp and Σ exp·v, merged after. The scores
// (three heads by four keys at a time), the exponentials (vector_avx2.h) and the weighted value sums (accumulators
// in registers across a tile of keys) are AVX2 + FMA where the CPU has them.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/vector_avx2.h"

namespace ds {
namespace {

float DotPortable(const float* a, const float* b, int64_t n) {
  float partial[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) partial[l] += a[i + l] * b[i + l];
  float sum = 0;
  for (float p : partial) sum += p;
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y += alpha * x
void AxpyPortable(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// out[j] = scale * (q · key row j) for n_keys rows `k_stride` apart.
void ScoresPortable(const float* q, const float* k, int64_t k_stride, int64_t n_keys, int64_t dim, float scale,
                    float* out) {
  for (int64_t j = 0; j < n_keys; ++j) out[j] = DotPortable(q, k + j * k_stride, dim) * scale;
}

// acc += Σ_j p[j] · value row j, the rows in order.
void WeightedSumPortable(const float* p, const float* v, int64_t v_stride, int64_t n_keys, int64_t dim, float* acc) {
  for (int64_t j = 0; j < n_keys; ++j) AxpyPortable(p[j], v + j * v_stride, acc, dim);
}

// p[j] = exp(p[j] - max) for j < n; returns their sum.
float ExpSumPortable(float* p, int64_t n, float max) {
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    p[j] = std::exp(p[j] - max);
    sum += p[j];
  }
  return sum;
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum = std::fma(a[i], b[i], sum);
  return sum;
}

__attribute__((target("avx2,fma"))) void AxpyAvx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] = std::fma(alpha, x[i], y[i]);
}

// Four keys at a time, each with DotAvx2's arithmetic: one dot product alone is a chain of
// dependent FMAs (latency-bound); four keep eight chains in flight and share the query's loads.
__attribute__((target("avx2,fma"))) void ScoresAvx2(const float* q, const float* k, int64_t k_stride, int64_t n_keys,
                                                    int64_t dim, float scale, float* out) {
  int64_t j = 0;
  for (; j + 4 <= n_keys; j += 4) {
    const float* rows[4] = {k + j * k_stride, k + (j + 1) * k_stride, k + (j + 2) * k_stride, k + (j + 3) * k_stride};
    __m256 acc0[4], acc1[4];
    for (int r = 0; r < 4; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= dim; i += 16) {
      const __m256 qa = _mm256_loadu_ps(q + i), qb = _mm256_loadu_ps(q + i + 8);
      for (int r = 0; r < 4; ++r) {
        acc0[r] = _mm256_fmadd_ps(qa, _mm256_loadu_ps(rows[r] + i), acc0[r]);
        acc1[r] = _mm256_fmadd_ps(qb, _mm256_loadu_ps(rows[r] + i + 8), acc1[r]);
      }
    }
    for (; i + 8 <= dim; i += 8) {
      const __m256 qa = _mm256_loadu_ps(q + i);
      for (int r = 0; r < 4; ++r) acc0[r] = _mm256_fmadd_ps(qa, _mm256_loadu_ps(rows[r] + i), acc0[r]);
    }
    for (int r = 0; r < 4; ++r) {
      float sum = HorizontalSum(_mm256_add_ps(acc0[r], acc1[r]));
      for (int64_t t = i; t < dim; ++t) sum = std::fma(q[t], rows[r][t], sum);
      out[j + r] = sum * scale;
    }
  }
  for (; j < n_keys; ++j) out[j] = DotAvx2(q, k + j * k_stride, dim) * scale;
}

// Scores of several heads against the same keys (a GQA group, or MLA's heads over the latent
// rows): out[h * out_stride + j] = scale * (head h's query · key row j). Three heads by four keys
// at a time, so each load of a query or key piece feeds more than one FMA: ScoresAvx2 alone loads
// 1.25 times per FMA and is bound by the loads from L1. Every (head, key) runs ScoresAvx2's exact
// arithmetic (its two chains over alternate 8-wide pieces, added, then the tail), so the scores
// are the same bits: the chains over the first pieces run first for all twelve, kept in memory,
// then those over the second.
// acc[a][r] = Σ over the 8-wide pieces at begin, begin + 16, ... (below end) of head a's query
// times key row r, one FMA chain per (head, key): three heads by four keys.
__attribute__((target("avx2,fma"), always_inline)) inline void GroupChain(const float* const (&qh)[3],
                                                                         const float* const (&rows)[4], int64_t begin,
                                                                         int64_t end, __m256 (&acc)[3][4]) {
  for (int a = 0; a < 3; ++a)
    for (int r = 0; r < 4; ++r) acc[a][r] = _mm256_setzero_ps();
  for (int64_t i = begin; i < end; i += 16) {
    const __m256 q0 = _mm256_loadu_ps(qh[0] + i), q1 = _mm256_loadu_ps(qh[1] + i), q2 = _mm256_loadu_ps(qh[2] + i);
    for (int r = 0; r < 4; ++r) {
      const __m256 key = _mm256_loadu_ps(rows[r] + i);
      acc[0][r] = _mm256_fmadd_ps(q0, key, acc[0][r]);
      acc[1][r] = _mm256_fmadd_ps(q1, key, acc[1][r]);
      acc[2][r] = _mm256_fmadd_ps(q2, key, acc[2][r]);
    }
  }
}

__attribute__((target("avx2,fma"))) void ScoresGroupAvx2(const float* q, int64_t q_head_stride, int64_t heads,
                                                         const float* k, int64_t k_stride, int64_t n_keys,
                                                         int64_t dim, float scale, float* out, int64_t out_stride) {
  constexpr int kHeads = 3, kKeys = 4;
  const int64_t whole = dim / 16 * 16, tail8 = dim - whole >= 8 ? whole + 8 : whole;
  int64_t h = 0;
  for (; h + kHeads <= heads; h += kHeads) {
    const float* qh[kHeads] = {q + h * q_head_stride, q + (h + 1) * q_head_stride, q + (h + 2) * q_head_stride};
    int64_t j = 0;
    for (; j + kKeys <= n_keys; j += kKeys) {
      const float* rows[kKeys] = {k + j * k_stride, k + (j + 1) * k_stride, k + (j + 2) * k_stride,
                                  k + (j + 3) * k_stride};
      // The first chain: pieces 0, 2, 4, ... and, past the last whole 16, one more piece of 8;
      // the second: pieces 1, 3, 5, ...
      __m256 first[kHeads][kKeys], second[kHeads][kKeys];
      GroupChain(qh, rows, 0, tail8, first);
      alignas(32) float kept[kHeads][kKeys][8];
      for (int a = 0; a < kHeads; ++a)
        for (int r = 0; r < kKeys; ++r) _mm256_store_ps(kept[a][r], first[a][r]);
      GroupChain(qh, rows, 8, whole, second);
      for (int a = 0; a < kHeads; ++a) {
        for (int r = 0; r < kKeys; ++r) {
          float sum = HorizontalSum(_mm256_add_ps(_mm256_load_ps(kept[a][r]), second[a][r]));
          for (int64_t t = tail8; t < dim; ++t) sum = std::fma(qh[a][t], rows[r][t], sum);
          out[(h + a) * out_stride + j + r] = sum * scale;
        }
      }
    }
    for (int a = 0; a < kHeads; ++a)
      for (int64_t jj = j; jj < n_keys; ++jj) out[(h + a) * out_stride + jj] = DotAvx2(qh[a], k + jj * k_stride, dim) * scale;
  }
  for (; h < heads; ++h) ScoresAvx2(q + h * q_head_stride, k, k_stride, n_keys, dim, scale, out + h * out_stride);
}

void ScoresGroupPortable(const float* q, int64_t q_head_stride, int64_t heads, const float* k, int64_t k_stride,
                         int64_t n_keys, int64_t dim, float scale, float* out, int64_t out_stride) {
  for (int64_t h = 0; h < heads; ++h)
    ScoresPortable(q + h * q_head_stride, k, k_stride, n_keys, dim, scale, out + h * out_stride);
}

// 64 output elements at a time in eight registers across all the keys (AxpyAvx2's arithmetic per
// element, keys in order), instead of loading and storing the accumulator once per key.
__attribute__((target("avx2,fma"))) void WeightedSumAvx2(const float* p, const float* v, int64_t v_stride,
                                                         int64_t n_keys, int64_t dim, float* acc) {
  int64_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    __m256 sum[8];
    for (int u = 0; u < 8; ++u) sum[u] = _mm256_loadu_ps(acc + i + 8 * u);
    for (int64_t j = 0; j < n_keys; ++j) {
      const __m256 pj = _mm256_set1_ps(p[j]);
      const float* row = v + j * v_stride + i;
      for (int u = 0; u < 8; ++u) sum[u] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(row + 8 * u), sum[u]);
    }
    for (int u = 0; u < 8; ++u) _mm256_storeu_ps(acc + i + 8 * u, sum[u]);
  }
  for (; i + 8 <= dim; i += 8) {
    __m256 sum = _mm256_loadu_ps(acc + i);
    for (int64_t j = 0; j < n_keys; ++j)
      sum = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + j * v_stride + i), sum);
    _mm256_storeu_ps(acc + i, sum);
  }
  for (; i < dim; ++i) {
    float sum = acc[i];
    for (int64_t j = 0; j < n_keys; ++j) sum = std::fma(p[j], v[j * v_stride + i], sum);
    acc[i] = sum;
  }
}

__attribute__((target("avx2,fma"))) float ExpSumAvx2(float* p, int64_t n, float max) {
  const __m256 m = _mm256_set1_ps(max);
  __m256 sum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = ExpAvx2(_mm256_sub_ps(_mm256_loadu_ps(p + j), m));
    _mm256_storeu_ps(p + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (j < n) {  // the last few through the same function, padded with exp(-inf) = 0
    alignas(32) float last[8];
    for (int t = 0; t < 8; ++t) last[t] = j + t < n ? p[j + t] : -INFINITY;
    const __m256 e = ExpAvx2(_mm256_sub_ps(_mm256_load_ps(last), m));
    _mm256_store_ps(last, e);
    for (int64_t t = 0; j + t < n; ++t) p[j + t] = last[t];
    sum = _mm256_add_ps(sum, e);
  }
  return HorizontalSum(sum);
}

struct VectorKernels {
  float (*exp_sum)(float*, int64_t, float);
  void (*scores)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, float, float*, int64_t);
  void (*weighted_sum)(const float*, const float*, int64_t, int64_t, int64_t, float*);
  void (*axpy)(float, const float*, float*, int64_t);
};

VectorKernels PickKernels() {
  if (CpuHasAvx2Fma()) return {ExpSumAvx2, ScoresGroupAvx2, WeightedSumAvx2, AxpyAvx2};
  return {ExpSumPortable, ScoresGroupPortable, WeightedSumPortable, AxpyPortable};
}

// A chunk's softmax state for one head: max score and Σ exp(score - max) (its Σ exp(..)·v is kept
// beside it).
struct ChunkState {
  float max = -INFINITY;
  float sum = 0;
};

// Keys per tile: 32 rows of 128 floats, keys and values, are 32 KB, which stay in L1 while the
// group's heads read them (64 keys, 64 KB, came from L2 for each head: 18-23% slower).
constexpr int64_t kKeyTile = 32;

}  // namespace

absl::Status CpuBackend::Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const AttentionShape& s, const Tensor& out) {
  static const VectorKernels kernels = PickKernels();
  const int64_t T = q.rows, group = s.n_heads / s.n_kv_heads, dv = s.head_dim_v;
  const int64_t pos0 = s.position.pos0, max_keys = pos0 + T;
  // Keys per chunk: all of them when there are rows enough to keep the threads busy; otherwise
  // enough chunks for ~2 per thread, but not below 128 keys, and with the partial results
  // (T x heads x chunks x (dv + 2) floats) under ~16 MB.
  int64_t chunks = 1;
  if (T * s.n_kv_heads < 2 * n_threads_) {
    const int64_t wanted = (2 * n_threads_ + T * s.n_kv_heads - 1) / (T * s.n_kv_heads);
    const int64_t by_length = std::max<int64_t>(1, max_keys / 128);
    const int64_t by_memory = std::max<int64_t>(1, (int64_t{4} << 20) / (T * s.n_heads * (dv + 2)));
    chunks = std::min({wanted, by_length, by_memory});
  }
  const int64_t chunk_len = (max_keys + chunks - 1) / chunks;
  // Partial results, [t][h][chunk]: states and accumulators. Unused with one chunk.
  std::vector<ChunkState> states(chunks > 1 ? static_cast<size_t>(T * s.n_heads * chunks) : 0);
  std::vector<float> partial_acc(chunks > 1 ? static_cast<size_t>(T * s.n_heads * chunks * dv) : 0);

  ScopedOmpThreads threads(n_threads_);
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(group * chunk_len));
    std::vector<float> acc(static_cast<size_t>(group * dv));
    std::vector<ChunkState> st(static_cast<size_t>(group));
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t kvh = 0; kvh < s.n_kv_heads; ++kvh) {
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t n_keys = pos0 + t + 1;  // causal: row t sees keys 0..pos0+t
          const int64_t j0 = c * chunk_len, j1 = std::min(n_keys, j0 + chunk_len);
          const int64_t h0 = kvh * group;
          std::fill(acc.begin(), acc.end(), 0.0f);
          std::fill(st.begin(), st.end(), ChunkState{});
          // A tile of keys at a time, so its key and value rows stay in cache for all the group's
          // heads: scores, the chunk's max; then exp(score - max), their sum, and the weighted
          // value rows, keys in order.
          for (int64_t jt = j0; jt < j1; jt += kKeyTile) {
            const int64_t n = std::min(kKeyTile, j1 - jt);
            const float* keys = k.ptr<float>() + jt * k.stride + kvh * s.head_dim_qk;
            kernels.scores(q.ptr<float>() + t * q.stride + h0 * s.head_dim_qk, s.head_dim_qk, group, keys, k.stride, n,
                           s.head_dim_qk, s.scale, &scores[jt - j0], chunk_len);
            for (int64_t g = 0; g < group; ++g) {
              const float* sc = &scores[g * chunk_len + jt - j0];
              for (int64_t j = 0; j < n; ++j) st[g].max = std::max(st[g].max, sc[j]);
            }
          }
          for (int64_t jt = j0; jt < j1; jt += kKeyTile) {
            const int64_t n = std::min(kKeyTile, j1 - jt);
            const float* values = v.ptr<float>() + jt * v.stride + kvh * dv;
            for (int64_t g = 0; g < group; ++g) {
              float* p = &scores[g * chunk_len + jt - j0];
              st[g].sum += kernels.exp_sum(p, n, st[g].max);
              kernels.weighted_sum(p, values, v.stride, n, dv, &acc[g * dv]);
            }
          }
          for (int64_t g = 0; g < group; ++g) {
            const int64_t h = h0 + g;
            if (chunks == 1) {
              float* o = out.ptr<float>() + t * out.stride + h * dv;
              for (int64_t i = 0; i < dv; ++i) o[i] = acc[g * dv + i] / st[g].sum;
            } else {
              const int64_t slot = (t * s.n_heads + h) * chunks + c;
              states[slot] = st[g];
              std::copy(&acc[g * dv], &acc[(g + 1) * dv], &partial_acc[slot * dv]);
            }
          }
        }
      }
    }
    if (chunks > 1) {
      // Merge each (row, head)'s chunks, each rescaled to the overall max.
#pragma omp for collapse(2)
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t h = 0; h < s.n_heads; ++h) {
          const int64_t first = (t * s.n_heads + h) * chunks;
          float m = -INFINITY;
          for (int64_t c = 0; c < chunks; ++c) m = std::max(m, states[first + c].max);
          float* o = out.ptr<float>() + t * out.stride + h * dv;
          std::fill(o, o + dv, 0.0f);
          float sum = 0;
          for (int64_t c = 0; c < chunks; ++c) {
            if (states[first + c].sum == 0) continue;  // a chunk past this row's keys
            const float w = std::exp(states[first + c].max - m);
            sum += w * states[first + c].sum;
            kernels.axpy(w, &partial_acc[(first + c) * dv], o, dv);
          }
          for (int64_t i = 0; i < dv; ++i) o[i] /= sum;
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace ds

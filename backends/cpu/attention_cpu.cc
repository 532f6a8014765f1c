// Causal softmax attention on the CPU, never materializing the T x S score matrix.
//
// Work is split into (query row, kv head, chunk of keys) items. An item takes every query head
// that shares the kv head (GQA's group; MLA's absorbed form has one latent "kv head" shared by all
// heads), so each key and value row is loaded once for the group. Few query rows (decode,
// speculative verification) split the keys into chunks so all threads work on one long context
// (flash-decoding); each chunk keeps its max score, Σ exp and Σ exp·v, merged after. Dot products
// and the value accumulation are AVX2 + FMA where the CPU has them.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/cpu_backend.h"

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

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  const __m256 acc = _mm256_add_ps(acc0, acc1);
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
  float sum = _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

__attribute__((target("avx2,fma"))) void AxpyAvx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

struct VectorKernels {
  float (*dot)(const float*, const float*, int64_t);
  void (*axpy)(float, const float*, float*, int64_t);
};

VectorKernels PickKernels() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {DotAvx2, AxpyAvx2};
  return {DotPortable, AxpyPortable};
}

// A chunk's softmax state for one head: max score and Σ exp(score - max) (its Σ exp(..)·v is kept
// beside it).
struct ChunkState {
  float max = -INFINITY;
  float sum = 0;
};

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
          if (j0 < j1) {
            for (int64_t g = 0; g < group; ++g) {
              const float* qv = q.ptr<float>() + t * q.stride + (h0 + g) * s.head_dim_qk;
              float* sc = &scores[g * chunk_len];
              for (int64_t j = j0; j < j1; ++j) {
                const float* kv = k.ptr<float>() + j * k.stride + kvh * s.head_dim_qk;
                sc[j - j0] = kernels.dot(qv, kv, s.head_dim_qk) * s.scale;
                st[g].max = std::max(st[g].max, sc[j - j0]);
              }
            }
            for (int64_t j = j0; j < j1; ++j) {
              const float* vv = v.ptr<float>() + j * v.stride + kvh * dv;
              for (int64_t g = 0; g < group; ++g) {
                const float p = std::exp(scores[g * chunk_len + j - j0] - st[g].max);
                st[g].sum += p;
                kernels.axpy(p, vv, &acc[g * dv], dv);
              }
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

#include "backends/cpu/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "backends/cpu/vector_avx2.h"
#include "core/model/dtype.h"
#include "core/model/quant.h"
#include "core/sampling/sampler.h"
#include "core/status.h"

namespace ds {

ScopedOmpThreads::ScopedOmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
ScopedOmpThreads::~ScopedOmpThreads() { omp_set_num_threads(saved_); }

absl::StatusOr<std::unique_ptr<Backend>> MakeCpuBackend(const BackendOptions& options) {
  if (options.n_threads < 0)
    return absl::InvalidArgumentError(absl::StrCat("n_threads must be >= 0, got ", options.n_threads));
  int n = options.n_threads;
  if (n == 0) n = DefaultCpuThreads();
  try {
    return std::unique_ptr<Backend>(new CpuBackend(n, options.bf16_products && CpuHasAvx512Bf16()));
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN: cannot create the CPU engine: ", e.what()));
  }
}

CpuBackend::CpuBackend(int n_threads, bool bf16_products)
    : n_threads_(n_threads), bf16_products_(bf16_products), engine_(dnnl::engine::kind::cpu, 0) {}

absl::StatusOr<Tensor> CpuBackend::Alloc(DType dtype, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) return absl::InternalError("negative tensor shape");
  if (IsBlockQuantized(dtype) && cols % kQuantBlock != 0)
    return absl::InternalError(absl::StrCat("cpu: a ", DTypeName(dtype), " row of ", cols, " is not whole blocks of ", kQuantBlock));
  const size_t bytes = static_cast<size_t>(rows) * RowBytes(dtype, cols);
  // 64-byte aligned for the vector units; at least one line so an empty tensor is still valid.
  const size_t padded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, padded);
  if (!p)
    return OutOfMemoryError(absl::StrCat("cpu: cannot allocate ", bytes, " bytes for a [", rows,
                                         ", ", cols, "] tensor"));
  Tensor t;
  t.storage = std::shared_ptr<void>(p, std::free);
  t.data = p;
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  t.stride = cols;
  return t;
}

absl::Status CpuBackend::Upload(const void* host, const Tensor& dst) {
  const size_t row_bytes = RowBytes(dst.dtype, dst.cols);
  for (int64_t r = 0; r < dst.rows; ++r)
    std::memcpy(dst.Rows(r, 1).data, static_cast<const char*>(host) + r * row_bytes, row_bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::Download(const Tensor& src, void* host) {
  const size_t row_bytes = RowBytes(src.dtype, src.cols);
  for (int64_t r = 0; r < src.rows; ++r)
    std::memcpy(static_cast<char*>(host) + r * row_bytes, src.Rows(r, 1).data, row_bytes);
  return absl::OkStatus();
}

namespace {

// A prompt's rows split over the threads; a decode row (a few thousand values) stays on the
// calling thread, where a parallel region would cost more than it saves.
constexpr int64_t kParallelRows = 2;

// Whether no byte of b's rows lies among a's (neither tensor empty).
bool Disjoint(const Tensor& a, const Tensor& b) {
  const auto span = [](const Tensor& t) {
    const char* begin = t.ptr<char>();
    return std::pair{begin, begin + (t.rows - 1) * RowBytes(t.dtype, t.stride) + RowBytes(t.dtype, t.cols)};
  };
  const auto [a_begin, a_end] = span(a);
  const auto [b_begin, b_end] = span(b);
  return b_end <= a_begin || a_end <= b_begin;
}

}  // namespace

absl::Status CpuBackend::Copy(const Tensor& src, const Tensor& dst) {
  const size_t row_bytes = RowBytes(src.dtype, src.cols);
  ScopedOmpThreads threads(n_threads_);
  // Rows in any order only where no row's destination is another row's source.
  const bool parallel = src.rows >= kParallelRows && Disjoint(src, dst);
#pragma omp parallel for if (parallel)
  for (int64_t r = 0; r < src.rows; ++r) std::memmove(dst.Rows(r, 1).data, src.Rows(r, 1).data, row_bytes);
  return absl::OkStatus();
}

namespace {

// ds::Argmax's choice among x[0] and x[begin, end): the first index of the largest value, taking
// only strictly larger values from x[0] on, so a NaN never wins unless at 0, where it stays.
int64_t ArgmaxFromFirst(const float* x, int64_t begin, int64_t end) {
  int64_t best = 0;
  for (int64_t i = begin; i < end; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace

absl::Status CpuBackend::Argmax(const Tensor& x, const Tensor& ids) {
  // A vocabulary of 100k+ logits scanned on one thread is ~2% of a decode step on 16 cores: the
  // threads take pieces of the row, each from x[0] as the CUDA kernel's parts do, and their
  // choices meet in order (ties to the first index), which is what one pass picks.
  constexpr int64_t kPiece = 16384;
  const int64_t pieces = std::min<int64_t>(n_threads_, (x.cols + kPiece - 1) / kPiece);
  if (pieces <= 1) {
    for (int64_t r = 0; r < x.rows; ++r) ids.ptr<int32_t>()[r] = ds::Argmax(x.ptr<float>() + r * x.stride, x.cols);
    return absl::OkStatus();
  }
  ScopedOmpThreads threads(n_threads_);
  std::vector<int64_t> piece_best(static_cast<size_t>(pieces));
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* row = x.ptr<float>() + r * x.stride;
#pragma omp parallel for
    for (int64_t p = 0; p < pieces; ++p)
      piece_best[p] = ArgmaxFromFirst(row, x.cols * p / pieces, x.cols * (p + 1) / pieces);
    int64_t best = 0;
    for (int64_t at : piece_best)
      if (row[at] > row[best]) best = at;
    ids.ptr<int32_t>()[r] = static_cast<int32_t>(best);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) {
  const int64_t n = x.cols;
  const float* w = weight.ptr<float>();
  ScopedOmpThreads threads(n_threads_);
#pragma omp parallel for if (x.rows > 1)
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* xr = x.ptr<float>() + r * x.stride;
    float* yr = y.ptr<float>() + r * y.stride;
    double sum_sq = 0;
    for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
    const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / n + eps));
    for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv_rms);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Add(const Tensor& a, const Tensor& b, const Tensor& y) {
  ScopedOmpThreads threads(n_threads_);
#pragma omp parallel for if (a.rows >= kParallelRows)
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* ar = a.ptr<float>() + r * a.stride;
    const float* br = b.ptr<float>() + r * b.stride;
    float* yr = y.ptr<float>() + r * y.stride;
    for (int64_t i = 0; i < a.cols; ++i) yr[i] = ar[i] + br[i];
  }
  return absl::OkStatus();
}

namespace {

// y[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i].
void SiluMulPortable(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

__attribute__((target("avx2,fma"), always_inline)) inline __m256 SiluMul8(__m256 g, __m256 u) {
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), ExpAvx2(_mm256_sub_ps(_mm256_setzero_ps(), g)))), u);
}

__attribute__((target("avx2,fma"))) void SiluMulAvx2(const float* g, const float* u, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, SiluMul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
  if (i < n) {  // the last few through the same arithmetic
    alignas(32) float gl[8] = {}, ul[8] = {}, yl[8];
    for (int64_t t = 0; i + t < n; ++t) gl[t] = g[i + t], ul[t] = u[i + t];
    _mm256_store_ps(yl, SiluMul8(_mm256_load_ps(gl), _mm256_load_ps(ul)));
    for (int64_t t = 0; i + t < n; ++t) y[i + t] = yl[t];
  }
}

using SiluMulRow = void (*)(const float*, const float*, float*, int64_t);
SiluMulRow PickSiluMul() { return CpuHasAvx2Fma() ? SiluMulAvx2 : SiluMulPortable; }

}  // namespace

// In pieces of a row: a decode step's one row of 8960 or 18944 exponentials, done by one thread
// while the others wait, would be a serial part of every layer.
constexpr int64_t kSiluMulPiece = 1024;

void SiluMulPieces(const Tensor& gate, const Tensor& up, const Tensor& y) {
  static const SiluMulRow silu_mul = PickSiluMul();
  const int64_t pieces = (gate.cols + kSiluMulPiece - 1) / kSiluMulPiece;
#pragma omp for collapse(2) schedule(static)
  for (int64_t r = 0; r < gate.rows; ++r) {
    for (int64_t p = 0; p < pieces; ++p) {
      const float* g = gate.ptr<float>() + r * gate.stride;
      const float* u = up.ptr<float>() + r * up.stride;
      float* yr = y.ptr<float>() + r * y.stride;
      const int64_t begin = p * kSiluMulPiece, end = std::min(gate.cols, (p + 1) * kSiluMulPiece);
      silu_mul(g + begin, u + begin, yr + begin, end - begin);
    }
  }
}

absl::Status CpuBackend::SiluMul(const Tensor& gate, const Tensor& up, const Tensor& y) {
  ScopedOmpThreads threads(n_threads_);
#pragma omp parallel if (gate.rows * gate.cols >= 2 * kSiluMulPiece)
  SiluMulPieces(gate, up, y);
  return absl::OkStatus();
}

absl::Status CpuBackend::Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) {
  const int32_t* id = ids.ptr<int32_t>();
  for (int64_t i = 0; i < ids.cols; ++i) {
    if (id[i] < 0 || id[i] >= table.rows)
      return absl::InvalidArgumentError(absl::StrCat("token id ", id[i], " is outside the vocabulary of ", table.rows));
    WidenRow(table.dtype, table.Rows(id[i], 1).data, table.cols, y.ptr<float>() + i * y.stride);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Rope(const Tensor& x, int64_t n_heads, int64_t head_stride, int64_t rot_dim,
                              const RopeTable& table, RopeLayout layout, const Position& at) {
  const int64_t half = rot_dim / 2;
  const float* inv_freq = table.inv_freq.ptr<float>();
  ScopedOmpThreads threads(n_threads_);
#pragma omp parallel for if (x.rows >= kParallelRows)
  for (int64_t t = 0; t < x.rows; ++t) {
    thread_local std::vector<float> cos_v, sin_v;
    cos_v.resize(half);
    sin_v.resize(half);
    // As transformers: the angle is a float32 product, scaled cos/sin in float32.
    const float pos = static_cast<float>(at.pos0 + t);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_v[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * table.attention_factor;
      sin_v[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * table.attention_factor;
    }
    float* row = x.ptr<float>() + t * x.stride;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = row + h * head_stride;
      for (int64_t i = 0; i < half; ++i) {
        float* a = layout == RopeLayout::kHalf ? &v[i] : &v[2 * i];
        float* b = layout == RopeLayout::kHalf ? &v[i + half] : &v[2 * i + 1];
        const float x0 = *a, x1 = *b;
        *a = x0 * cos_v[i] - x1 * sin_v[i];
        *b = x1 * cos_v[i] + x0 * sin_v[i];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::MoeRoute(const Tensor& logits, const Tensor& bias,
                                  const MoeRouting& routing, const Tensor& ids, const Tensor& weights) {
  const int64_t n_experts = logits.cols;
  const int64_t group_size = n_experts / routing.n_group;
  const float* correction = bias.ptr<float>();
  std::vector<float> scores(n_experts), choice(n_experts), group_score(routing.n_group);
  std::vector<int64_t> order(std::max(n_experts, routing.n_group));
  // Highest first; equal values keep the lower index first.
  auto top = [&order](const std::vector<float>& v, int64_t n, int64_t k) {
    std::iota(order.begin(), order.begin() + n, 0);
    std::partial_sort(order.begin(), order.begin() + k, order.begin() + n,
                      [&v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  };
  for (int64_t t = 0; t < logits.rows; ++t) {
    const float* l = logits.ptr<float>() + t * logits.stride;
    for (int64_t e = 0; e < n_experts; ++e) {
      scores[e] = 1.0f / (1.0f + std::exp(-l[e]));
      choice[e] = scores[e] + correction[e];
    }
    // A group's score is the sum of its two best choices.
    for (int64_t g = 0; g < routing.n_group; ++g) {
      const float* c = &choice[g * group_size];
      float best = -INFINITY, second = -INFINITY;
      for (int64_t i = 0; i < group_size; ++i) {
        if (c[i] > best) {
          second = best;
          best = c[i];
        } else if (c[i] > second) {
          second = c[i];
        }
      }
      group_score[g] = group_size > 1 ? best + second : best;
    }
    top(group_score, routing.n_group, routing.topk_group);
    std::vector<bool> keep(routing.n_group, false);
    for (int64_t i = 0; i < routing.topk_group; ++i) keep[order[i]] = true;
    // transformers masks the other groups with 0.0 (not -inf), so keep that exactly.
    for (int64_t e = 0; e < n_experts; ++e)
      if (!keep[e / group_size]) choice[e] = 0.0f;
    top(choice, n_experts, routing.top_k);
    int32_t* id = ids.ptr<int32_t>() + t * ids.stride;
    float* w = weights.ptr<float>() + t * weights.stride;
    float sum = 0;
    for (int64_t j = 0; j < routing.top_k; ++j) {
      id[j] = static_cast<int32_t>(order[j]);
      w[j] = scores[order[j]];
      sum += w[j];
    }
    for (int64_t j = 0; j < routing.top_k; ++j) {
      if (routing.norm_topk_prob) w[j] /= sum + 1e-20f;
      w[j] *= routing.routed_scaling_factor;
    }
  }
  return absl::OkStatus();
}

}  // namespace ds

#include "backends/backend.h"

#include "absl/strings/str_cat.h"
#include "core/model/quant.h"

namespace ds {

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kI32: return "i32";
    case DType::kBF16: return "bf16";
    case DType::kQ8_0: return "q8_0";
    case DType::kQ4_0: return "q4_0";
  }
  return "?";
}

bool IsBlockQuantized(DType t) { return t == DType::kQ8_0 || t == DType::kQ4_0; }

size_t RowBytes(DType t, int64_t n) {
  const size_t count = static_cast<size_t>(n);
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return count * 4;
    case DType::kBF16:
      return count * 2;
    case DType::kQ8_0:
      return count / kQuantBlock * sizeof(BlockQ8_0);
    case DType::kQ4_0:
      return count / kQuantBlock * sizeof(BlockQ4_0);
  }
  return 0;
}

absl::Status Backend::GateUp(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y) {
  auto up = Alloc(DType::kF32, x.rows, up_proj.rows);
  if (!up.ok()) return up.status();
  if (absl::Status s = Matmul(x, gate_proj, nullptr, y); !s.ok()) return s;
  if (absl::Status s = Matmul(x, up_proj, nullptr, *up); !s.ok()) return s;
  return SiluMul(y, *up, y);
}

absl::Status Backend::NormMatmul(const Tensor& x, const Tensor& norm, float eps, const Tensor& w, const Tensor* bias,
                                 const Tensor& y) {
  auto normed = Alloc(DType::kF32, x.rows, x.cols);
  if (!normed.ok()) return normed.status();
  if (absl::Status s = RmsNorm(x, norm, eps, *normed); !s.ok()) return s;
  return Matmul(*normed, w, bias, y);
}

absl::Status Backend::NormGateUp(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate_proj,
                                 const Tensor& up_proj, const Tensor& y) {
  auto normed = Alloc(DType::kF32, x.rows, x.cols);
  if (!normed.ok()) return normed.status();
  if (absl::Status s = RmsNorm(x, norm, eps, *normed); !s.ok()) return s;
  return GateUp(*normed, gate_proj, up_proj, y);
}

absl::Status Backend::MatmulAdd(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                                const Tensor& y) {
  if (absl::Status s = Matmul(x, w, bias, y); !s.ok()) return s;
  return Add(residual, y, y);
}

absl::Status Backend::HeadsMatmul(const Tensor& x, int64_t x_head_stride, const Tensor& w, int64_t n_heads,
                                  const Tensor& y, int64_t y_head_stride) {
  const int64_t n = w.rows / n_heads;
  for (int64_t h = 0; h < n_heads; ++h) {
    absl::Status s = Matmul(x.Cols(h * x_head_stride, w.cols), w.Rows(h * n, n), nullptr, y.Cols(h * y_head_stride, n));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Backend::NormMoeRoute(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate,
                                   const Tensor& bias, const MoeRouting& routing, const Tensor& ids,
                                   const Tensor& weights) {
  auto logits = Alloc(DType::kF32, x.rows, gate.rows);
  if (!logits.ok()) return logits.status();
  if (absl::Status s = NormMatmul(x, norm, eps, gate, nullptr, *logits); !s.ok()) return s;
  return MoeRoute(*logits, bias, routing, ids, weights);
}

absl::Status Backend::NormMoeAdd(const Tensor& x, const Tensor& norm, float eps, const Tensor& ids,
                                 const Tensor& weights, const std::vector<MlpWeights>& experts,
                                 const MlpWeights* shared, const Tensor& out) {
  auto normed = Alloc(DType::kF32, x.rows, x.cols);
  if (!normed.ok()) return normed.status();
  if (absl::Status s = RmsNorm(x, norm, eps, *normed); !s.ok()) return s;
  // x + the routed experts goes straight to out, or first beside it where the shared experts follow.
  absl::StatusOr<Tensor> routed = shared ? Alloc(DType::kF32, x.rows, x.cols) : out;
  if (!routed.ok()) return routed.status();
  if (absl::Status s = Moe(*normed, ids, weights, experts, *routed); !s.ok()) return s;
  if (absl::Status s = Add(x, *routed, *routed); !s.ok() || !shared) return s;
  auto h = Alloc(DType::kF32, x.rows, shared->gate_proj.rows);
  if (!h.ok()) return h.status();
  if (absl::Status s = GateUp(*normed, shared->gate_proj, shared->up_proj, *h); !s.ok()) return s;
  return MatmulAdd(*h, shared->down_proj, nullptr, *routed, out);
}

absl::Status Backend::SampleTokens(const Tensor& logits, const SamplingFilters& filters,
                                   absl::Span<const uint64_t> draws, const Tensor& ids) {
  return absl::UnimplementedError(absl::StrCat(name(), ": this backend samples on the host"));
}

absl::Status Backend::WriteRows(const Tensor& src, const Tensor& dst, const Position& at) {
  return Copy(src, dst.Rows(at.pos0, src.rows));
}

absl::Status Backend::RopeAndStoreKv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t head_dim,
                                     int64_t rot_dim, const RopeTable& table, RopeLayout layout, const Position& at,
                                     const Tensor& k_cache, const Tensor& v_cache) {
  for (const Tensor* x : {&q, &k})
    if (absl::Status s = Rope(*x, x->cols / head_dim, head_dim, rot_dim, table, layout, at); !s.ok()) return s;
  if (absl::Status s = WriteRows(k, k_cache, at); !s.ok()) return s;
  return WriteRows(v, v_cache, at);
}

absl::Status Backend::MlaRopeAndStore(const Tensor& q, int64_t n_heads, int64_t q_head_dim, int64_t q_rope_at,
                                      const Tensor& kv, const Tensor& kv_norm, float eps, int64_t rot_dim,
                                      const RopeTable& table, RopeLayout layout, const Position& at,
                                      const Tensor& q_latent, int64_t q_latent_head_dim, const Tensor& latent_cache,
                                      const Tensor* w_uk) {
  const int64_t r = kv.cols - rot_dim, q_rope_to = q_latent_head_dim - rot_dim;
  if (w_uk) {
    if (absl::Status s = HeadsMatmul(q, q_head_dim, *w_uk, n_heads, q_latent, q_latent_head_dim); !s.ok()) return s;
  }
  if (absl::Status s = RmsNorm(kv.Cols(0, r), kv_norm, eps, kv.Cols(0, r)); !s.ok()) return s;
  if (absl::Status s = Rope(kv.Cols(r, rot_dim), 1, rot_dim, rot_dim, table, layout, at); !s.ok()) return s;
  if (absl::Status s = WriteRows(kv, latent_cache, at); !s.ok()) return s;
  for (int64_t h = 0; h < n_heads; ++h) {
    absl::Status s =
        Copy(q.Cols(h * q_head_dim + q_rope_at, rot_dim), q_latent.Cols(h * q_latent_head_dim + q_rope_to, rot_dim));
    if (!s.ok()) return s;
  }
  return Rope(q_latent.Cols(q_rope_to, q_latent.cols - q_rope_to), n_heads, q_latent_head_dim, rot_dim, table, layout,
              at);
}

absl::Status Backend::BeginRecording() {
  return absl::UnimplementedError(absl::StrCat(name(), ": this backend cannot record passes"));
}

absl::StatusOr<std::unique_ptr<Backend::Recording>> Backend::EndRecording() {
  return absl::UnimplementedError(absl::StrCat(name(), ": this backend cannot record passes"));
}

// A view of an invalid tensor (a failed op's output) stays invalid: no offset on its null data.
Tensor Tensor::Rows(int64_t begin, int64_t n) const {
  Tensor t = *this;
  if (data) t.data = static_cast<char*>(data) + static_cast<size_t>(begin) * RowBytes(dtype, stride);
  t.rows = n;
  return t;
}

Tensor Tensor::Cols(int64_t begin, int64_t n) const {
  Tensor t = *this;
  if (data) t.data = static_cast<char*>(data) + RowBytes(dtype, begin);
  t.cols = n;
  return t;
}

}  // namespace ds

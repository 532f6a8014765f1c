#include "core/arch/ops.h"

#include "absl/strings/str_cat.h"

namespace ds {

bool Ops::Check(bool condition, const char* what) {
  if (!status_.ok()) return false;
  if (!condition) status_ = absl::InternalError(absl::StrCat("shape mismatch in ", what));
  return status_.ok();
}

void Ops::Record(absl::Status s) {
  if (status_.ok() && !s.ok()) status_ = std::move(s);
}

Tensor Ops::New(int64_t rows, int64_t cols, DType dtype) {
  if (!status_.ok()) return {};
  auto t = backend_.Alloc(dtype, rows, cols);
  if (!t.ok()) {
    Record(t.status());
    return {};
  }
  return *std::move(t);
}

Tensor Ops::Tokens(const int32_t* ids, int64_t n) {
  Tensor t = New(1, n, DType::kI32);
  if (ok()) Record(backend_.Upload(ids, t));
  return t;
}

void Ops::HeadsMatmulInto(const Tensor& x, int64_t x_head_stride, const Tensor& w, int64_t n_heads, const Tensor& y,
                          int64_t y_head_stride) {
  if (!Check(x.valid() && w.valid() && y.valid() && n_heads > 0 && w.rows % n_heads == 0 && x_head_stride >= 0 &&
                 y_head_stride >= w.rows / n_heads && (n_heads - 1) * x_head_stride + w.cols <= x.cols &&
                 (n_heads - 1) * y_head_stride + w.rows / n_heads <= y.cols && y.rows == x.rows,
             "heads_matmul"))
    return;
  Record(backend_.HeadsMatmul(x, x_head_stride, w, n_heads, y, y_head_stride));
}

Tensor Ops::Linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  if (!Check(x.valid() && w.valid() && x.cols == w.cols && (!bias || bias->cols == w.rows), "linear")) return {};
  Tensor y = New(x.rows, w.rows);
  if (ok()) Record(backend_.Matmul(x, w, bias, y));
  return y;
}

Tensor Ops::RmsNorm(const Tensor& x, const Tensor& weight, float eps) {
  if (!Check(x.valid() && weight.cols == x.cols, "rms_norm")) return {};
  Tensor y = New(x.rows, x.cols);
  if (ok()) Record(backend_.RmsNorm(x, weight, eps, y));
  return y;
}

Tensor Ops::Add(const Tensor& a, const Tensor& b) {
  if (!Check(a.valid() && b.valid() && a.rows == b.rows && a.cols == b.cols, "add")) return {};
  Tensor y = New(a.rows, a.cols);
  if (ok()) Record(backend_.Add(a, b, y));
  return y;
}

Tensor Ops::GateUp(const Tensor& x, const MlpWeights& mlp) {
  if (!Check(x.valid() && mlp.gate_proj.cols == x.cols && mlp.up_proj.rows == mlp.gate_proj.rows &&
                 mlp.up_proj.cols == x.cols,
             "gate_up"))
    return {};
  Tensor h = New(x.rows, mlp.gate_proj.rows);
  if (ok()) Record(backend_.GateUp(x, mlp.gate_proj, mlp.up_proj, h));
  return h;
}

Tensor Ops::NormLinear(const Tensor& x, const Tensor& norm, float eps, const Tensor& w, const Tensor* bias) {
  if (!Check(x.valid() && w.valid() && norm.cols == x.cols && x.cols == w.cols && (!bias || bias->cols == w.rows),
             "norm_linear"))
    return {};
  Tensor y = New(x.rows, w.rows);
  if (ok()) Record(backend_.NormMatmul(x, norm, eps, w, bias, y));
  return y;
}

Tensor Ops::LinearAdd(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual) {
  if (!Check(x.valid() && w.valid() && residual.valid() && x.cols == w.cols && (!bias || bias->cols == w.rows) &&
                 residual.rows == x.rows && residual.cols == w.rows,
             "linear_add"))
    return {};
  Tensor y = New(x.rows, w.rows);
  if (ok()) Record(backend_.MatmulAdd(x, w, bias, residual, y));
  return y;
}

Tensor Ops::NormGateUp(const Tensor& x, const Tensor& norm, float eps, const MlpWeights& mlp) {
  if (!Check(x.valid() && norm.cols == x.cols && mlp.gate_proj.cols == x.cols &&
                 mlp.up_proj.rows == mlp.gate_proj.rows && mlp.up_proj.cols == x.cols,
             "norm_gate_up"))
    return {};
  Tensor h = New(x.rows, mlp.gate_proj.rows);
  if (ok()) Record(backend_.NormGateUp(x, norm, eps, mlp.gate_proj, mlp.up_proj, h));
  return h;
}

Tensor Ops::Embedding(const Tensor& table, const Tensor& ids) {
  if (!Check(table.valid() && ids.valid() && ids.dtype == DType::kI32 && ids.rows == 1, "embedding")) return {};
  Tensor y = New(ids.cols, table.cols);
  if (ok()) Record(backend_.Embedding(table, ids, y));
  return y;
}

void Ops::Copy(const Tensor& src, const Tensor& dst) {
  if (!Check(src.valid() && dst.valid() && src.rows == dst.rows && src.cols == dst.cols && src.dtype == dst.dtype, "copy"))
    return;
  Record(backend_.Copy(src, dst));
}

void Ops::RopeAndStoreKv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t head_dim, int64_t rot_dim,
                         const RopeTable& table, RopeLayout layout, const Position& at, const Tensor& k_cache,
                         const Tensor& v_cache) {
  if (!Check(q.valid() && k.valid() && v.valid() && k_cache.valid() && v_cache.valid() && head_dim > 0 &&
                 q.cols % head_dim == 0 && k.cols % head_dim == 0 && rot_dim % 2 == 0 && rot_dim > 0 &&
                 rot_dim <= head_dim && table.inv_freq.cols == rot_dim / 2 && k.rows == q.rows && v.rows == q.rows &&
                 k.cols == k_cache.cols && v.cols == v_cache.cols && k.dtype == k_cache.dtype &&
                 v.dtype == v_cache.dtype && at.pos0 >= 0 && at.pos0 + k.rows <= k_cache.rows &&
                 at.pos0 + v.rows <= v_cache.rows,
             "rope_and_store_kv"))
    return;
  Record(backend_.RopeAndStoreKv(q, k, v, head_dim, rot_dim, table, layout, at, k_cache, v_cache));
}

void Ops::MlaRopeAndStore(const Tensor& q, int64_t n_heads, int64_t q_head_dim, int64_t q_rope_at, const Tensor& kv,
                          const Tensor& kv_norm, float eps, int64_t rot_dim, const RopeTable& table, RopeLayout layout,
                          const Position& at, const Tensor& q_latent, int64_t q_latent_head_dim,
                          const Tensor& latent_cache, const Tensor* w_uk) {
  const bool f32 = q.dtype == DType::kF32 && kv.dtype == DType::kF32 && q_latent.dtype == DType::kF32 &&
                   latent_cache.dtype == DType::kF32;
  if (!Check(q.valid() && kv.valid() && kv_norm.valid() && q_latent.valid() && latent_cache.valid() && f32 &&
                 n_heads > 0 && rot_dim > 0 && rot_dim % 2 == 0 && table.inv_freq.cols == rot_dim / 2 &&
                 kv.cols > rot_dim && kv_norm.cols == kv.cols - rot_dim && q_rope_at >= 0 &&
                 q_rope_at + rot_dim <= q_head_dim && (n_heads - 1) * q_head_dim + q_rope_at + rot_dim <= q.cols &&
                 q_latent_head_dim >= rot_dim && n_heads * q_latent_head_dim <= q_latent.cols && kv.rows == q.rows &&
                 q_latent.rows == q.rows && latent_cache.cols == kv.cols && at.pos0 >= 0 &&
                 at.pos0 + kv.rows <= latent_cache.rows &&
                 (!w_uk || (w_uk->valid() && w_uk->rows % n_heads == 0 && w_uk->cols <= q_head_dim &&
                            w_uk->rows / n_heads <= q_latent_head_dim - rot_dim)),
             "mla_rope_and_store"))
    return;
  Record(backend_.MlaRopeAndStore(q, n_heads, q_head_dim, q_rope_at, kv, kv_norm, eps, rot_dim, table, layout, at,
                                  q_latent, q_latent_head_dim, latent_cache, w_uk));
}

Tensor Ops::Attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& s) {
  if (!Check(q.valid() && k.valid() && v.valid() && s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0 &&
                 q.cols == s.n_heads * s.head_dim_qk && k.cols == s.n_kv_heads * s.head_dim_qk &&
                 v.cols == s.n_kv_heads * s.head_dim_v && k.rows >= s.position.pos0 + q.rows && v.rows == k.rows,
             "attention"))
    return {};
  Tensor out = New(q.rows, s.n_heads * s.head_dim_v);
  if (ok()) Record(backend_.Attention(q, k, v, s, out));
  return out;
}

std::pair<Tensor, Tensor> Ops::NewRoutes(int64_t tokens, int64_t experts, const Tensor& bias, const MoeRouting& r) {
  if (!Check(bias.cols == experts && experts % r.n_group == 0 && r.topk_group <= r.n_group && r.top_k <= experts,
             "moe_route"))
    return {};
  return {New(tokens, r.top_k, DType::kI32), New(tokens, r.top_k)};
}

std::pair<Tensor, Tensor> Ops::MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouting& r) {
  if (!Check(logits.valid(), "moe_route")) return {};
  auto routes = NewRoutes(logits.rows, logits.cols, bias, r);
  if (ok()) Record(backend_.MoeRoute(logits, bias, r, routes.first, routes.second));
  return routes;
}

std::pair<Tensor, Tensor> Ops::NormMoeRoute(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate,
                                            const Tensor& bias, const MoeRouting& r) {
  if (!Check(x.valid() && gate.valid() && norm.cols == x.cols && gate.cols == x.cols, "moe_route")) return {};
  auto routes = NewRoutes(x.rows, gate.rows, bias, r);
  if (ok()) Record(backend_.NormMoeRoute(x, norm, eps, gate, bias, r, routes.first, routes.second));
  return routes;
}

Tensor Ops::NormMoeAdd(const Tensor& x, const Tensor& norm, float eps, const std::pair<Tensor, Tensor>& routes,
                       const std::vector<MlpWeights>& experts, const MlpWeights* shared) {
  const auto& [ids, weights] = routes;
  if (!Check(x.valid() && ids.valid() && weights.valid() && ids.rows == x.rows && norm.cols == x.cols &&
                 (!shared || (shared->gate_proj.cols == x.cols && shared->down_proj.rows == x.cols)),
             "moe"))
    return {};
  Tensor out = New(x.rows, x.cols);
  if (ok()) Record(backend_.NormMoeAdd(x, norm, eps, ids, weights, experts, shared, out));
  return out;
}

Tensor Ops::Argmax(const Tensor& x) {
  if (!Check(x.valid() && x.dtype == DType::kF32 && x.cols > 0, "argmax")) return {};
  Tensor ids = New(1, x.rows, DType::kI32);
  if (ok()) Record(backend_.Argmax(x, ids));
  return ids;
}

}  // namespace ds

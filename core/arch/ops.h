// The vocabulary the architectures are written in: backend ops that allocate their outputs,
// check shapes, and remember the first failure, so that a forward pass reads like the
// reference Python and its errors surface once, from status(), at the end.
#pragma once

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "backends/backend.h"

namespace ds {

class Ops {
 public:
  explicit Ops(Backend& backend) : backend_(backend) {}

  Tensor New(int64_t rows, int64_t cols, DType dtype = DType::kF32);
  Tensor Tokens(const int32_t* ids, int64_t n);  // [1, n] i32 on the backend

  Tensor Linear(const Tensor& x, const Tensor& w, const Tensor* bias = nullptr);  // x · wᵀ + b
  // Per head h: y's head h (y_head_stride apart) = x's head h (x_head_stride apart, w.cols wide)
  // · the h-th of n_heads equal blocks of w's rowsᵀ (Backend::HeadsMatmul).
  void HeadsMatmulInto(const Tensor& x, int64_t x_head_stride, const Tensor& w, int64_t n_heads, const Tensor& y,
                       int64_t y_head_stride);
  Tensor RmsNorm(const Tensor& x, const Tensor& weight, float eps);
  Tensor Add(const Tensor& a, const Tensor& b);
  Tensor NormLinear(const Tensor& x, const Tensor& norm, float eps, const Tensor& w,
                    const Tensor* bias = nullptr);  // rms_norm(x) * norm · wᵀ + b
  // residual + x · wᵀ + b
  Tensor LinearAdd(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual);
  Tensor GateUp(const Tensor& x, const MlpWeights& mlp);  // silu(gate(x)) * up(x): an MLP's first half
  // silu(gate(n)) * up(n) for n = rms_norm(x) * norm: an MLP's first half after its norm
  Tensor NormGateUp(const Tensor& x, const Tensor& norm, float eps, const MlpWeights& mlp);
  Tensor Embedding(const Tensor& table, const Tensor& ids);
  void Copy(const Tensor& src, const Tensor& dst);
  // Rope on q's and k's heads in place, then k and v into the caches' rows at the position.
  void RopeAndStoreKv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t head_dim, int64_t rot_dim,
                      const RopeTable& table, RopeLayout layout, const Position& at, const Tensor& k_cache,
                      const Tensor& v_cache);
  // MLA's cache rows and absorbed query: its rotated rope parts and, with w_uk, its W_UKᵀ q_nope
  // parts (Backend::MlaRopeAndStore).
  void MlaRopeAndStore(const Tensor& q, int64_t n_heads, int64_t q_head_dim, int64_t q_rope_at, const Tensor& kv,
                       const Tensor& kv_norm, float eps, int64_t rot_dim, const RopeTable& table, RopeLayout layout,
                       const Position& at, const Tensor& q_latent, int64_t q_latent_head_dim,
                       const Tensor& latent_cache, const Tensor* w_uk);
  Tensor Attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& shape);
  // -> (ids [T, top_k] i32, weights [T, top_k])
  std::pair<Tensor, Tensor> MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouting& routing);
  // MoeRoute(NormLinear(x, norm, eps, gate), bias, routing): Backend::NormMoeRoute.
  std::pair<Tensor, Tensor> NormMoeRoute(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate,
                                         const Tensor& bias, const MoeRouting& routing);
  // x + routed experts(h) + shared(h), h = rms_norm(x) * norm (shared may be null):
  // Backend::NormMoeAdd.
  Tensor NormMoeAdd(const Tensor& x, const Tensor& norm, float eps, const std::pair<Tensor, Tensor>& routes,
                    const std::vector<MlpWeights>& experts, const MlpWeights* shared);
  Tensor Argmax(const Tensor& x);  // [1, rows] i32

  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }
  Backend& backend() { return backend_; }

 private:
  // Records the first failure; later ops become no-ops returning empty tensors.
  bool Check(bool condition, const char* what);
  // The routing's outputs (ids [tokens, top_k] i32, weights [tokens, top_k]) for `experts`
  // experts with bias [1, experts], once the routing is checked to fit them.
  std::pair<Tensor, Tensor> NewRoutes(int64_t tokens, int64_t experts, const Tensor& bias, const MoeRouting& routing);
  void Record(absl::Status s);

  Backend& backend_;
  absl::Status status_;
};

}  // namespace ds

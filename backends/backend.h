// The interface every backend implements: memory (tensors) and the ops the architectures are
// written in. Kept small, as ggml-backend's: a new backend implements this file and nothing in
// core/ changes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace ds {

// kBF16, kQ8_0 and kQ4_0 are weight formats (activations are f32). kQ8_0 and kQ4_0 are blocks of
// 32 weights along a row (core/model/quant.h): their tensors' cols, strides and column offsets are
// multiples of 32.
enum class DType : uint8_t { kF32, kI32, kBF16, kQ8_0, kQ4_0 };
const char* DTypeName(DType t);
bool IsBlockQuantized(DType t);
// Bytes of `n` consecutive elements of a row.
size_t RowBytes(DType t, int64_t n);

// A 2-D view of backend memory: `rows` x `cols` elements, rows `stride` elements apart.
// Column ranges of a tensor are views too, which is how heads and the parts of a fused
// projection ([c_kv | k_pe]) are addressed without copies. `storage` keeps the allocation alive.
struct Tensor {
  std::shared_ptr<void> storage;
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;

  bool valid() const { return data != nullptr; }
  bool contiguous() const { return stride == cols; }
  size_t nbytes() const { return static_cast<size_t>(rows) * RowBytes(dtype, cols); }
  Tensor Rows(int64_t begin, int64_t n) const;
  Tensor Cols(int64_t begin, int64_t n) const;
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// A position-wise rotary embedding: rot_dim/2 inverse frequencies and the scale YaRN puts on
// cos and sin (transformers' attention_scaling).
struct RopeTable {
  Tensor inv_freq;  // [1, rot_dim / 2] f32
  float attention_factor = 1.0f;
};

// Where a pass's rows sit in the sequence: row t is at position pos0 + t. `device`, when valid, is
// a [1, 1] i32 tensor on the backend that holds pos0 when the pass runs: a recorded pass (see
// Recording) reads its position from there, so one recording serves every position.
struct Position {
  Position(int64_t pos0_ = 0, Tensor device_ = {}) : pos0(pos0_), device(std::move(device_)) {}  // NOLINT: implicit
  int64_t pos0;
  Tensor device;
};

enum class RopeLayout {
  kHalf,        // pairs (x[i], x[i + d/2]): Llama, Qwen2 (rotate_half)
  kInterleaved  // pairs (x[2i], x[2i+1]): DeepSeek-V3 (transformers' rope_interleave)
};

struct AttentionShape {
  int64_t n_heads = 0;     // query heads; head h reads kv head h / (n_heads / n_kv_heads)
  int64_t n_kv_heads = 0;
  int64_t head_dim_qk = 0;
  int64_t head_dim_v = 0;
  float scale = 1.0f;
  Position position;  // of query row 0; row t attends to key rows 0..pos0+t (k and v may hold more)
};

struct MoeRouting {
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t top_k = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
};

// The filters of sampling (core/sampling's SamplingParams without the seed): temperature > 0,
// top_k 0 for off, top_p 1 for off, min_p 0 for off.
struct SamplingFilters {
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
};

// SwiGLU MLP weights (an expert, a shared expert, a dense layer's MLP).
struct MlpWeights {
  Tensor gate_proj, up_proj, down_proj;  // [inter, hidden], [inter, hidden], [hidden, inter]
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Memory. Allocation failure is DS_ERR_OUT_OF_MEMORY naming the size.
  virtual absl::StatusOr<Tensor> Alloc(DType dtype, int64_t rows, int64_t cols) = 0;
  // Host <-> tensor, host side contiguous rows x cols.
  virtual absl::Status Upload(const void* host, const Tensor& dst) = 0;
  virtual absl::Status Download(const Tensor& src, void* host) = 0;

  // Ops. Shapes are the caller's contract (core/arch/ops.cc checks them); an op reports a device
  // or library failure through its status.
  // y = x · wᵀ (+ bias): x [m, k], w [n, k] (f32, or a weight format), bias [1, n] or null, y [m, n]
  virtual absl::Status Matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) = 0;
  // y = x / rms(x) * weight, per row; weight [1, cols]
  virtual absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) = 0;
  virtual absl::Status Add(const Tensor& a, const Tensor& b, const Tensor& y) = 0;
  // y = silu(gate) * up
  virtual absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& y) = 0;

  // Fused forms of common pairs. The defaults compose the ops above; a backend overrides them
  // where fusing saves launches or passes over memory.
  // y = silu(x · gate_projᵀ) * (x · up_projᵀ): the first half of a SwiGLU MLP.
  virtual absl::Status GateUp(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y);
  // y = rms_norm(x) * norm · wᵀ (+ bias): the norm before a projection.
  virtual absl::Status NormMatmul(const Tensor& x, const Tensor& norm, float eps, const Tensor& w, const Tensor* bias,
                                  const Tensor& y);
  // y = GateUp(rms_norm(x) * norm): the norm before a SwiGLU MLP.
  virtual absl::Status NormGateUp(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate_proj,
                                  const Tensor& up_proj, const Tensor& y);
  // y = residual + (x · wᵀ + bias): a projection added back into the residual stream.
  virtual absl::Status MatmulAdd(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                                 const Tensor& y);
  // Per-head products, MLA's absorbed projections: w's rows are n_heads blocks of n = w.rows /
  // n_heads, and for each head h, y[:, h * y_head_stride + j] = x[:, h * x_head_stride + i] ·
  // w[h * n + j, i] for j < n, i < w.cols. The default runs a Matmul per head.
  virtual absl::Status HeadsMatmul(const Tensor& x, int64_t x_head_stride, const Tensor& w, int64_t n_heads,
                                   const Tensor& y, int64_t y_head_stride);
  // y[i] = table[ids[i]]: ids [1, n] i32, y [n, cols] (table f32 or bf16)
  virtual absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) = 0;
  virtual absl::Status Copy(const Tensor& src, const Tensor& dst) = 0;
  // dst's rows pos0 .. pos0 + src.rows - 1 = src (a pass's rows into the KV cache).
  virtual absl::Status WriteRows(const Tensor& src, const Tensor& dst, const Position& at);
  // Rotates, in place, rot_dim values of each of n_heads heads that start head_stride apart in
  // every row of x; row t is at position pos0 + t.
  virtual absl::Status Rope(const Tensor& x, int64_t n_heads, int64_t head_stride, int64_t rot_dim,
                            const RopeTable& table, RopeLayout layout, const Position& at) = 0;
  // The step between a layer's q, k, v projection and its attention, one pass where a backend
  // fuses it: Rope (layout, rot_dim of each head) on q's and k's heads, head_dim apart, in
  // place; then WriteRows of k and v into k_cache and v_cache at the pass's position.
  virtual absl::Status RopeAndStoreKv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t head_dim,
                                      int64_t rot_dim, const RopeTable& table, RopeLayout layout, const Position& at,
                                      const Tensor& k_cache, const Tensor& v_cache);
  // MLA's step between its projections and its attention, one pass where a backend fuses it.
  // kv [T, r + rot_dim] is the pass's [c_kv | k_pe]: rms_norm(c_kv) * kv_norm (eps) and the
  // rotated k_pe go into latent_cache's rows at the position (kv itself may be overwritten).
  // q's n_heads heads (q_head_dim apart) have their rope part at columns [q_rope_at, q_rope_at +
  // rot_dim): rotated, it goes into the last rot_dim columns of each q_latent head
  // (q_latent_head_dim apart), beside the absorbed W_UKᵀ q_nope: with w_uk (not null), each head's
  // first w_uk.rows / n_heads columns are HeadsMatmul(q, q_head_dim, *w_uk, n_heads, q_latent,
  // q_latent_head_dim) (q's heads' first w_uk.cols values, their nope part), else they are left
  // as they are. The default runs HeadsMatmul and the ops above.
  virtual absl::Status MlaRopeAndStore(const Tensor& q, int64_t n_heads, int64_t q_head_dim, int64_t q_rope_at,
                                       const Tensor& kv, const Tensor& kv_norm, float eps, int64_t rot_dim,
                                       const RopeTable& table, RopeLayout layout, const Position& at,
                                       const Tensor& q_latent, int64_t q_latent_head_dim, const Tensor& latent_cache,
                                       const Tensor* w_uk);
  // Causal softmax attention. q [T, n_heads * head_dim_qk], k [S, n_kv_heads * head_dim_qk],
  // v [S, n_kv_heads * head_dim_v], out [T, n_heads * head_dim_v], S >= pos0 + T.
  virtual absl::Status Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                 const AttentionShape& shape, const Tensor& out) = 0;
  // DeepSeek-V3 routing: sigmoid scores, e_score_correction_bias for the choice only,
  // group-limited top-k (noaux_tc), weights from the plain scores.
  // logits [T, E], bias [1, E] -> ids [T, top_k] i32, weights [T, top_k] f32.
  virtual absl::Status MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouting& routing,
                                const Tensor& ids, const Tensor& weights) = 0;
  // MoeRoute of the router's logits rms_norm(x) * norm (eps) · gateᵀ (gate [E, hidden]): the
  // router and the routing, one pass where a backend fuses them. The default composes NormMatmul
  // and MoeRoute.
  virtual absl::Status NormMoeRoute(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate,
                                    const Tensor& bias, const MoeRouting& routing, const Tensor& ids,
                                    const Tensor& weights);
  // out[t] = sum_j weights[t, j] * expert[ids[t, j]](x[t]); out [T, hidden] is overwritten.
  virtual absl::Status Moe(const Tensor& x, const Tensor& ids, const Tensor& weights,
                           const std::vector<MlpWeights>& experts, const Tensor& out) = 0;
  // out = x + Moe(h, ids, weights, experts) + shared(h), h = rms_norm(x) * norm (eps) and shared
  // a SwiGLU MLP (null where the layer has none): a DeepSeekMoE layer after its routing, one pass
  // where a backend fuses it. The default composes RmsNorm, Moe, Add, GateUp and MatmulAdd.
  virtual absl::Status NormMoeAdd(const Tensor& x, const Tensor& norm, float eps, const Tensor& ids,
                                  const Tensor& weights, const std::vector<MlpWeights>& experts,
                                  const MlpWeights* shared, const Tensor& out);
  // ids [1, x.rows] i32: per row of x [rows, cols], the index of its largest value, the first on
  // ties, NaN never chosen past index 0 (as core/sampling's Argmax): greedy decoding's choice
  // without the logits leaving the backend.
  virtual absl::Status Argmax(const Tensor& x, const Tensor& ids) = 0;
  // ids [1, logits.rows] i32: row r of logits [rows, vocab] sampled with the uniform draw
  // u = draws[r] * 2^-53 (53-bit integers), from the distribution core/sampling's Sampler draws
  // from (temperature, then top-k, top-p and min-p), without the logits leaving the backend.
  // Unimplemented by default: the caller then samples on the host.
  virtual absl::Status SampleTokens(const Tensor& logits, const SamplingFilters& filters,
                                    absl::Span<const uint64_t> draws, const Tensor& ids);

  // Recording (CUDA graphs). Between BeginRecording and EndRecording the ops that the calling
  // thread issues are recorded instead of run, and the recording replays them, in the order of
  // the backend's other work, as often as wanted: a decode step's hundreds of launches become
  // one. Tensors allocated while recording belong to the recording (a replay writes them), so
  // they outlive their handles until the recording is destroyed. A pass that reads its position
  // from Position::device replays at any position. Other threads' ops run as usual meanwhile.
  class Recording {
   public:
    virtual ~Recording() = default;
    virtual absl::Status Replay() = 0;
  };
  virtual bool CanRecord() const { return false; }
  virtual absl::Status BeginRecording();
  // Ends what BeginRecording began, whether or not the ops in between succeeded.
  virtual absl::StatusOr<std::unique_ptr<Recording>> EndRecording();
};

struct BackendOptions {
  int n_threads = 0;  // 0: the machine's cores
  // Matmuls of many rows (a prompt's) with bf16 products, f32 accumulation, where the CPU has
  // AVX512_BF16 (twice f32's rate): activations and weights rounded to bf16, as CUDA's bf16
  // compute does. Elsewhere f32, as without it. Decode's GEMVs are unchanged.
  bool bf16_products = false;
};

absl::StatusOr<std::unique_ptr<Backend>> MakeCpuBackend(const BackendOptions& options);

}  // namespace ds

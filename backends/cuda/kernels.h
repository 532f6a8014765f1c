// The CUDA backend's kernels, as launch functions over raw device pointers. Matrices are
// row-major with a row stride in elements, as backends/backend.h's Tensor. Each launch returns
// the launch's error (cudaGetLastError) so the caller can turn it into a status. Compiled by
// nvcc without absl; the host side (cuda_backend.cc and friends) is plain C++.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ds::cuda {

// y = x / rms(x) * w, per row.
cudaError_t LaunchRmsNorm(const float* x, int64_t x_stride, const float* w, float eps, float* y, int64_t y_stride,
                          int64_t rows, int64_t cols, cudaStream_t stream);
// y = a + b; b_stride 0 broadcasts b's one row over every row of a (a bias).
cudaError_t LaunchAdd(const float* a, int64_t a_stride, const float* b, int64_t b_stride, float* y, int64_t y_stride,
                      int64_t rows, int64_t cols, cudaStream_t stream);
// y = silu(gate) * up
cudaError_t LaunchSiluMul(const float* gate, int64_t gate_stride, const float* up, int64_t up_stride, float* y,
                          int64_t y_stride, int64_t rows, int64_t cols, cudaStream_t stream);
// y[i] = table[ids[i]] (table f32 or bf16); an id outside [0, vocab) gives a row of zeros
// (the session checks ids before they reach the device).
cudaError_t LaunchEmbedding(const void* table, bool table_bf16, int64_t table_stride, int64_t vocab,
                            const int32_t* ids, int64_t n, float* y, int64_t y_stride, int64_t cols,
                            cudaStream_t stream);
// Kernels that take a position read it from pos0_device when that is not null (a recorded pass
// replays at other positions), else use pos0.

// In-place rotary embedding of rot_dim values in each of n_heads heads, row t at pos0 + t.
cudaError_t LaunchRope(float* x, int64_t x_stride, int64_t rows, int64_t n_heads, int64_t head_stride,
                       int64_t rot_dim, const float* inv_freq, float attention_factor, bool interleaved,
                       int64_t pos0, const int32_t* pos0_device, cudaStream_t stream);
// The rotation of a pass's rows: rot_dim values a head, row r at position pos0 + r (pos0 read
// from pos0_device where that is not null).
struct RopeArgs {
  int64_t rot_dim;
  const float* inv_freq;
  float attention_factor;
  bool interleaved;
  int64_t pos0;
  const int32_t* pos0_device;
};
// LaunchRope on q's q_heads and k's kv_heads heads (head_dim apart), then k's and v's rows into
// the caches at pos0 + r, rows past cache_rows left out (Backend::RopeAndStoreKv).
struct RopeAndStoreKvArgs {
  float* q;
  int64_t q_stride, q_heads;
  float* k;
  int64_t k_stride, kv_heads;
  const float* v;
  int64_t v_stride, v_cols;
  int64_t head_dim;
  RopeArgs rope;
  float* k_cache;
  int64_t k_cache_stride;
  float* v_cache;
  int64_t v_cache_stride, cache_rows;
};
cudaError_t LaunchRopeAndStoreKv(const RopeAndStoreKvArgs& args, int64_t rows, cudaStream_t stream);
// Backend::MlaRopeAndStore, a block per row: kv's c_kv (kv_lora values) normalized and its k_pe
// (rot_dim values) rotated into the cache row at pos0 + r (rows past cache_rows left out), and
// each of q's heads' rope part rotated into q_latent's head.
struct MlaRopeAndStoreArgs {
  const float* q;
  int64_t q_stride, n_heads, q_head_dim, q_rope_at;
  const float* kv;
  int64_t kv_stride, kv_lora;
  const float* kv_norm;
  float eps;
  RopeArgs rope;
  float* q_latent;
  int64_t q_latent_stride, q_latent_head_dim;
  float* cache;
  int64_t cache_stride, cache_rows;
};
cudaError_t LaunchMlaRopeAndStore(const MlaRopeAndStoreArgs& args, int64_t rows, cudaStream_t stream);
// One row's (a decode step's) LaunchMlaRopeAndStore and, in the same launch, the W_UK product of
// the head's first k values of q into the first n / n_heads columns of each q_latent head
// (w_uk [n, k], f32 or bf16), as LaunchGemv's grouped form computes it (so n / n_heads is a
// multiple of kGemvGroupRowMultiple).
cudaError_t LaunchMlaQueryAndStore(const MlaRopeAndStoreArgs& args, const void* w_uk, bool w_bf16, int64_t w_stride,
                                   int64_t n, int64_t k, int sm_count, cudaStream_t stream);
// y[pos0 + r] = x[r] for rows r < rows, with pos0 read from the device; rows past y_rows are
// left out.
cudaError_t LaunchWriteRows(const float* x, int64_t x_stride, int64_t rows, int64_t cols, float* y, int64_t y_stride,
                            int64_t y_rows, const int32_t* pos0_device, cudaStream_t stream);
// ids[r] = the index of row r's largest value, the first on ties (Backend::Argmax). A row is
// read in ArgmaxParts(cols) parts by as many blocks; with more than one, part_best and part_at
// ([rows, parts] scratch) hold each part's best for a second kernel.
int64_t ArgmaxParts(int64_t cols);
cudaError_t LaunchArgmax(const float* x, int64_t x_stride, int64_t rows, int64_t cols, int32_t* ids,
                         float* part_best, int32_t* part_at, cudaStream_t stream);
// y (contiguous [rows, cols] bf16) = x rounded to nearest even.
cudaError_t LaunchToBf16(const float* x, int64_t x_stride, int64_t rows, int64_t cols, uint16_t* y,
                         cudaStream_t stream);

// y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) for m <= kGemvMaxRows: one pass over the weights,
// the memory-bound decode path. w is f32 or bf16; accumulation is f32. A row's result does not
// depend on m, so a speculative verification pass (up to 16 rows: 15 drafts and the bonus
// position) computes each position exactly as a decode step would.
constexpr int64_t kGemvMaxRows = 16;
// What a GEMV may do besides the product, so that the small kernels around a projection need not
// run: with norm, x's rows are taken as rms_norm(x) * norm (eps), the RMSNorm before a
// projection (each block finds the rows' rms itself); with residual, y = residual + (x · wᵀ + b),
// the add back into the residual stream (LaunchGemv only). With groups > 1, w's rows are that
// many equal blocks, and block g reads x's columns from g * x_group_step and writes y's from
// g * y_group_step (Backend::HeadsMatmul's heads; LaunchGemv only, without norm, residual, bias).
struct GemvOptions {
  const float* norm = nullptr;  // [k]
  float eps = 0.0f;
  const float* residual = nullptr;  // [m, n]
  int64_t residual_stride = 0;
  int64_t groups = 1;
  int64_t x_group_step = 0, y_group_step = 0;
};
// Rows in each group of a grouped GEMV must be a multiple of this (a warp's rows share a group).
constexpr int64_t kGemvGroupRowMultiple = 4;
cudaError_t LaunchGemv(const float* x, int64_t x_stride, int64_t m, const void* w, bool w_bf16, int64_t w_stride,
                       int64_t n, int64_t k, const float* bias, float* y, int64_t y_stride, const GemvOptions& options,
                       int sm_count, cudaStream_t stream);

// y[m, n] = silu(x · gateᵀ) * (x · upᵀ) for m <= kGemvMaxRows, gate and up [n, k] with one stride.
cudaError_t LaunchGateUp(const float* x, int64_t x_stride, int64_t m, const void* gate, const void* up, bool w_bf16,
                         int64_t w_stride, int64_t n, int64_t k, float* y, int64_t y_stride,
                         const GemvOptions& options, int sm_count, cudaStream_t stream);

// Routed experts for a few tokens, without leaving the device: expert e's matrices are
// gate[e], up[e] ([inter, hidden]) and down[e] ([hidden, inter]), all with the same strides.
// The shared experts (shared_gate null where there are none) are one SwiGLU MLP of n_shared *
// inter rows, run as n_shared more experts of weight 1: token t's segments are its top_k experts
// and then the shared ones. h is scratch [T * (top_k + n_shared), inter]; out [T, hidden] is
// overwritten (MoeInput says with what).
struct ExpertTable {
  const void* const* gate;
  const void* const* up;
  const void* const* down;
  int64_t n_experts;
  bool bf16;
  int64_t gate_up_stride, down_stride;  // row strides, elements
  int64_t inter, hidden;
  const void* shared_gate = nullptr;
  const void* shared_up = nullptr;
  const void* shared_down = nullptr;
  int64_t n_shared = 0;
  int64_t shared_gate_up_stride = 0, shared_down_stride = 0;
  bool aligned = false;  // every matrix above starts 16-byte aligned
};
// Segments (top_k + n_shared) a token may have.
constexpr int64_t kMoeMaxSegments = 64;
// The experts' input, x's T rows. Without norm, out = the experts' sum (Backend::Moe); with it
// they read rms_norm(x) * norm (eps) and out = x + their sum (Backend::NormMoeAdd).
struct MoeInput {
  const float* x;
  int64_t x_stride;
  const float* norm = nullptr;
  float eps = 0.0f;
};
cudaError_t LaunchMoeDecode(const MoeInput& input, int64_t T, const int32_t* ids, int64_t ids_stride,
                            const float* weights, int64_t weights_stride, int64_t top_k, const ExpertTable& experts,
                            float* h, float* out, int64_t out_stride, int sm_count, cudaStream_t stream);

// Routed experts for a prompt, without leaving the device: LaunchMoeDecode's experts, input and
// output for any number of tokens, as grouped GEMMs (moe_grouped.cu). scratch holds
// MoeGroupedScratchBytes; expert ids out of range add nothing.
int64_t MoeGroupedScratchBytes(int64_t T, int64_t top_k, const ExpertTable& experts);
cudaError_t LaunchMoeGrouped(const MoeInput& input, int64_t T, const int32_t* ids, int64_t ids_stride,
                             const float* weights, int64_t weights_stride, int64_t top_k, const ExpertTable& experts,
                             void* scratch, float* out, int64_t out_stride, cudaStream_t stream);

// Sampled token ids (sampling.cu): row r of logits [rows, n] through temperature, top-k (0: off),
// top-p (1: off) and min-p (0: off) as core/sampling's Sampler filters them, drawn with the uniform
// draws.draw[r] * 2^-53 by the inverse CDF in id order, into ids[r]. scratch holds
// SampleScratchBytes(rows). temperature > 0, n <= kMaxSampleVocab, rows <= kMaxSampleRows.
constexpr int64_t kMaxSampleRows = 64, kMaxSampleVocab = int64_t{1} << 20;
struct SampleFilters {
  float temperature;
  int64_t top_k;
  float top_p, min_p;
};
struct SampleDraws {
  uint64_t draw[kMaxSampleRows];
};
int64_t SampleScratchBytes(int64_t rows);
cudaError_t LaunchSampleTokens(const float* logits, int64_t stride, int64_t rows, int64_t n, const SampleFilters& filters,
                               const SampleDraws& draws, void* scratch, int32_t* ids, cudaStream_t stream);

// DeepSeek-V3 routing (sigmoid, correction bias for the choice, group-limited top-k), a warp
// per token, of n_experts <= kMaxExperts in n_group <= kMaxGroups groups (else
// cudaErrorInvalidValue); ids [T, top_k] and weights [T, top_k] are its outputs.
constexpr int64_t kMaxExperts = 512;
constexpr int64_t kMaxGroups = 64;
struct MoeRouteArgs {
  int64_t n_experts;
  const float* correction;  // [n_experts]
  int64_t n_group, topk_group, top_k;
  bool norm_topk_prob;
  float routed_scaling_factor;
  int32_t* ids;
  int64_t ids_stride;
  float* weights;
  int64_t weights_stride;
};
cudaError_t LaunchMoeRoute(const float* logits, int64_t logits_stride, int64_t T, const MoeRouteArgs& routing,
                           cudaStream_t stream);
// One token's (a decode step's) router and routing in one launch: logits [1, n_experts]
// (scratch) = rms_norm(x) * norm · gateᵀ (f32 gate [n_experts, hidden]) as LaunchGemv computes
// them, then, in the launch's last block, LaunchMoeRoute's routing of them. counter is an int,
// zero, that the launch leaves zero. Where NormMoeRouteInOneLaunch says no, run the two.
bool NormMoeRouteInOneLaunch(const float* x, int64_t x_stride, int64_t T, int64_t hidden, const float* norm,
                             const float* gate, int64_t gate_stride, int64_t n_experts);
cudaError_t LaunchNormMoeRoute(const float* x, int64_t x_stride, int64_t hidden, const float* norm, float eps,
                               const float* gate, int64_t gate_stride, float* logits, int* counter,
                               const MoeRouteArgs& routing, int sm_count, cudaStream_t stream);

// Causal attention for few query rows over a long cache, flash-decoding style: the keys are
// split into chunks that blocks process in parallel (online softmax), then combined.
// partials needs AttentionSplitScratch floats. head_dim_v <= kMaxHeadDimV.
constexpr int64_t kMaxHeadDimV = 512;
struct AttentionArgs {
  const float* q;
  int64_t q_stride;
  const float* k;
  int64_t k_stride;
  const float* v;
  int64_t v_stride;
  float* out;
  int64_t out_stride;
  int64_t T, n_heads, n_kv_heads, head_dim_qk, head_dim_v, pos0;
  const int32_t* pos0_device;  // or null
  int64_t key_rows;            // rows of k and v: with pos0_device, pos0 + T is at most this
  float scale;
};
// The launch's splits: those of pos0 + T keys, or with pos0_device the most any pos0 can need.
int64_t AttentionSplits(const AttentionArgs& a);
int64_t AttentionSplitScratch(const AttentionArgs& a, int64_t splits);
// counters: n_counters ints, zero, that the launch leaves zero; with T * n_heads of them the
// blocks merge their results themselves, else a second kernel does.
cudaError_t LaunchAttentionSplit(const AttentionArgs& a, int64_t splits, float* partials, int* counters,
                                 int64_t n_counters, cudaStream_t stream);

// In place over scores [n_heads * T, S] (head-major, T rows each): scores -> softmax over the
// keys row t may see (pos0 + t0 + t + 1 of them), zeros after.
cudaError_t LaunchCausalSoftmax(float* scores, int64_t n_heads, int64_t T, int64_t S, int64_t pos0, int64_t t0,
                                cudaStream_t stream);

}  // namespace ds::cuda

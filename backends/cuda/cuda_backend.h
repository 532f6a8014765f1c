// The CUDA backend: tensors in device memory, cuBLASLt for the GEMMs, our kernels (kernels.h)
// for the rest. Everything runs in order on one stream; Download synchronizes it. A thread that
// records (CUDA graphs, recording_cuda.cc) issues its ops to a capture stream of its own. Built
// into the plugin libds-cuda.so, which libds loads at run time (backends/plugin.h).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/kernels.h"

namespace ds::cuda {

// Device blocks waiting to be reused, by size class; safe across threads.
class FreeBlocks {
 public:
  void* Pop(size_t size_class);  // null when there is none of that class
  void Push(void* p, size_t size_class);
  void FreeAll();  // cudaFree on every block held

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> blocks_;
};

// Device memory by size class, kept for reuse: a forward pass allocates the same sizes every
// step, and cudaMalloc/cudaFree synchronize the device. Blocks go back to the pool when their
// last tensor is released; stream order makes the reuse safe (all work is on one stream).
class DevicePool {
 public:
  explicit DevicePool(int device) : device_(device) {}
  ~DevicePool() { free_.FreeAll(); }
  // A block of at least `bytes`, back to the pool when the last pointer to it goes.
  absl::StatusOr<std::shared_ptr<void>> Get(size_t bytes);

  // Blocks by hand: the rounded size Take and Give deal in, a block of it, and its return.
  static size_t SizeClass(size_t bytes);
  absl::StatusOr<void*> Take(size_t size_class);
  void Give(void* p, size_t size_class) { free_.Push(p, size_class); }

 private:
  int device_;
  FreeBlocks free_;
};

// A GEMM as cuBLASLt sees it (column-major): C[m, n] = alpha · op(A)[m, k] · B[k, n] + beta · C,
// batched with element strides between the batch's matrices (0: the same matrix for all).
struct GemmCall {
  bool a_bf16 = false;  // A and B both bf16 (else both f32); C is always f32
  bool tf32 = false;    // f32 A and B multiplied as TF32 on the tensor cores
  bool transpose_a = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  float* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  float alpha = 1.0f;
};

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(int device, bool tf32_attention);
  ~CudaBackend() override;
  const char* name() const override { return "cuda"; }

  absl::StatusOr<Tensor> Alloc(DType dtype, int64_t rows, int64_t cols) override;
  absl::Status Upload(const void* host, const Tensor& dst) override;
  absl::Status Download(const Tensor& src, void* host) override;

  absl::Status Matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override;
  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override;
  absl::Status Add(const Tensor& a, const Tensor& b, const Tensor& y) override;
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& y) override;
  absl::Status GateUp(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y) override;
  absl::Status NormMatmul(const Tensor& x, const Tensor& norm, float eps, const Tensor& w, const Tensor* bias,
                          const Tensor& y) override;
  absl::Status NormGateUp(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate_proj,
                          const Tensor& up_proj, const Tensor& y) override;
  absl::Status MatmulAdd(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                         const Tensor& y) override;
  absl::Status HeadsMatmul(const Tensor& x, int64_t x_head_stride, const Tensor& w, int64_t n_heads, const Tensor& y,
                           int64_t y_head_stride) override;
  absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) override;
  absl::Status Copy(const Tensor& src, const Tensor& dst) override;
  absl::Status Argmax(const Tensor& x, const Tensor& ids) override;
  absl::Status SampleTokens(const Tensor& logits, const SamplingFilters& filters, absl::Span<const uint64_t> draws,
                            const Tensor& ids) override;
  absl::Status WriteRows(const Tensor& src, const Tensor& dst, const Position& at) override;
  absl::Status Rope(const Tensor& x, int64_t n_heads, int64_t head_stride, int64_t rot_dim,
                    const RopeTable& table, RopeLayout layout, const Position& at) override;
  absl::Status RopeAndStoreKv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t head_dim, int64_t rot_dim,
                              const RopeTable& table, RopeLayout layout, const Position& at, const Tensor& k_cache,
                              const Tensor& v_cache) override;
  absl::Status MlaRopeAndStore(const Tensor& q, int64_t n_heads, int64_t q_head_dim, int64_t q_rope_at,
                               const Tensor& kv, const Tensor& kv_norm, float eps, int64_t rot_dim,
                               const RopeTable& table, RopeLayout layout, const Position& at, const Tensor& q_latent,
                               int64_t q_latent_head_dim, const Tensor& latent_cache, const Tensor* w_uk) override;
  absl::Status Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionShape& shape, const Tensor& out) override;
  absl::Status MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouting& routing,
                        const Tensor& ids, const Tensor& weights) override;
  absl::Status NormMoeRoute(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate, const Tensor& bias,
                            const MoeRouting& routing, const Tensor& ids, const Tensor& weights) override;
  absl::Status Moe(const Tensor& x, const Tensor& ids, const Tensor& weights,
                   const std::vector<MlpWeights>& experts, const Tensor& out) override;
  absl::Status NormMoeAdd(const Tensor& x, const Tensor& norm, float eps, const Tensor& ids, const Tensor& weights,
                          const std::vector<MlpWeights>& experts, const MlpWeights* shared,
                          const Tensor& out) override;

  // Recording as CUDA graphs (recording_cuda.cc). Off where DS_CUDA_GRAPHS=0 in the environment
  // when the backend is made.
  bool CanRecord() const override { return graphs_enabled_; }
  absl::Status BeginRecording() override;
  absl::StatusOr<std::unique_ptr<Recording>> EndRecording() override;

  // A CUDA runtime result as a status naming the operation (DS_ERR_BACKEND).
  static absl::Status Check(cudaError_t err, const char* what);

 private:
  CudaBackend(int device, int sm_count) : device_(device), sm_count_(sm_count), pool_(device) {}
  friend class CudaRecording;
  // The stream the calling thread's ops go to, and where its tensors' memory comes from: the
  // capture stream and the recording's arena while it records, else the stream and the pool.
  cudaStream_t stream() const;
  absl::StatusOr<std::shared_ptr<void>> Allocate(size_t bytes);
  absl::Status Gemm(const GemmCall& call);
  // call with x's rows as B (x rounded to bf16 first for bf16 weights).
  absl::Status GemmOfRows(GemmCall call, const Tensor& x);
  // The decode path (x.rows <= kGemvMaxRows) of Matmul and GateUp, with the GEMV's options.
  absl::Status Gemv(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y, const GemvOptions& options);
  bool GateUpOnGemv(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj) const;
  absl::Status GateUpGemv(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y,
                          const GemvOptions& options);
  // A layer's experts as the device's kernels take them: pointer tables made on the first call and
  // kept, with what the layouts allow.
  struct ExpertPointers {
    Tensor gate, up, down;  // [1, n_experts] of pointers, as i32 pairs
    bool usable = false;    // one dtype (bf16 or f32), equal shapes and strides
    bool aligned = false;   // every matrix 16-byte aligned
  };
  absl::StatusOr<const ExpertPointers*> ExpertsOnDevice(const std::vector<MlpWeights>& experts);
  // With norm (not null), x is taken as rms_norm(x) * norm and added to the output.
  absl::Status MoeOnDevice(const Tensor& x, const Tensor* norm, float eps, const Tensor& ids, const Tensor& weights,
                           const std::vector<MlpWeights>& experts, const MlpWeights* shared, const Tensor& out);
  absl::Status AttentionByGemm(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& shape,
                               const Tensor& out);

  int device_;
  int sm_count_;
  bool tf32_attention_ = false;  // PluginBackendOptions::tf32_attention
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  DevicePool pool_;
  Tensor attention_counters_;  // zero between attention launches (LaunchAttentionSplit)
  Tensor route_counter_;       // zero between routing launches (LaunchNormMoeRoute)

  // Recording: one thread at a time, on its own stream, its allocations from the recording's arena.
  bool graphs_enabled_ = true;
  std::mutex record_mutex_;
  cudaStream_t capture_stream_ = nullptr;
  std::shared_ptr<class RecordingArena> arena_;  // of the recording under way

  struct GemmPlan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // The plan for a shape: descriptors and the heuristic's algorithm, made once. The key holds
  // every GemmCall field but the pointers, plus the pointers' alignments (algorithms need them).
  using GemmKey = std::tuple<bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int, int, int>;
  std::mutex gemm_mutex_;
  std::map<GemmKey, GemmPlan> gemm_plans_;

  // Device arrays of the experts' matrix pointers, per expert list (keyed by its first matrix).
  std::mutex experts_mutex_;
  std::map<const void*, ExpertPointers> expert_pointers_;
};

}  // namespace ds::cuda

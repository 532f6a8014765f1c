// The CPU backend: float32 compute, oneDNN for matmul, OpenMP threads for the rest.
#pragma once

#include <map>
#include <mutex>
#include <tuple>

#include "backends/backend.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace ds {

class CpuBackend final : public Backend {
 public:
  CpuBackend(int n_threads, bool bf16_products);
  const char* name() const override { return "cpu"; }
  int n_threads() const { return n_threads_; }

  absl::StatusOr<Tensor> Alloc(DType dtype, int64_t rows, int64_t cols) override;
  absl::Status Upload(const void* host, const Tensor& dst) override;
  absl::Status Download(const Tensor& src, void* host) override;

  absl::Status Matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override;
  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override;
  absl::Status Add(const Tensor& a, const Tensor& b, const Tensor& y) override;
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& y) override;
  // A decode step's gate and up GEMVs and their SiluMul in one parallel region (matmul_narrow_cpu.cc).
  absl::Status GateUp(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y) override;
  absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) override;
  absl::Status Copy(const Tensor& src, const Tensor& dst) override;
  absl::Status Argmax(const Tensor& x, const Tensor& ids) override;
  absl::Status Rope(const Tensor& x, int64_t n_heads, int64_t head_stride, int64_t rot_dim,
                    const RopeTable& table, RopeLayout layout, const Position& at) override;
  absl::Status Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionShape& shape, const Tensor& out) override;
  absl::Status MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouting& routing,
                        const Tensor& ids, const Tensor& weights) override;
  absl::Status Moe(const Tensor& x, const Tensor& ids, const Tensor& weights,
                   const std::vector<MlpWeights>& experts, const Tensor& out) override;

 private:
  // (m, k, n, x stride, w stride, y stride, bias, x and w in bf16): one oneDNN primitive per
  // shape, made once.
  using MatmulKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool>;
  // Weights in bf16, Q8_0 or Q4_0 (matmul_narrow_cpu.cc).
  absl::Status MatmulNarrow(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y);
  struct MatmulEntry {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul primitive;
  };
  absl::StatusOr<MatmulEntry> MatmulPrimitive(const MatmulKey& key);
  // y (f32) = x · wᵀ (+ bias) with the key's shape and types.
  absl::Status RunMatmul(const MatmulKey& key, const void* x, const void* w, const Tensor* bias, void* y);

  int n_threads_;
  bool bf16_products_;  // BackendOptions::bf16_products, on a CPU with AVX512_BF16
  dnnl::engine engine_;
  std::mutex matmul_mutex_;
  std::map<MatmulKey, MatmulEntry> matmuls_;
};

// y = silu(gate) * up, rows split in pieces over the threads of the enclosing parallel region (a
// worksharing loop: every thread of the team must call it).
void SiluMulPieces(const Tensor& gate, const Tensor& up, const Tensor& y);

// The default thread count: the physical cores among the CPUs this process may run on
// (cpu_topology.cc).
int DefaultCpuThreads();

// The CPU matmul kernels: portable loops, AVX2 (+FMA, F16C), AVX-512 (F, BW, VL, VNNI), and
// AVX-512 with a prompt's bf16 products on AMX tiles (AMX-BF16 and AVX512_BF16 too). The best the
// CPU has runs, at most the limit; tests and measurements of what the vector kernels gain lower
// the limit.
enum class CpuKernels { kPortable, kAvx2, kAvx512, kAmx };
void LimitCpuKernels(CpuKernels limit);
// The kernels that run: the best the CPU has, at most the limit.
CpuKernels ActiveCpuKernels();
// Whether the CPU (and the OS) run AVX512_BF16's instructions: what bf16 products need.
bool CpuHasAvx512Bf16();
// Whether the CPU has AMX tiles with bf16 products besides the AVX-512 kernels' subsets, and Linux
// lets this process use the tiles' state (asked once, for the whole process).
bool CpuHasAmxBf16();
// Whether the CPU runs AVX2 and FMA: what the AVX2 kernels (and vector_avx2.h's helpers) need.
bool CpuHasAvx2Fma();

// Runs the calling thread's OpenMP regions (ours and oneDNN's) on n threads, and restores the
// caller's setting after: the host program's threads are not ours to reconfigure.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n);
  ~ScopedOmpThreads();

 private:
  int saved_;
};

}  // namespace ds

// y = x · wᵀ (+ bias) on the device. A few rows (decode, a speculative verify) go through our
// GEMV, one pass over the weights at memory speed; more rows through cuBLASLt: f32 weights as
// an f32 GEMM (no TF32, so results stay within float32 rounding of the reference), bf16 weights
// on the tensor cores with x rounded to bf16 and f32 accumulation. (The prompt path's attention
// products may ask for TF32: GemmCall::tf32.)
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/kernels.h"
#include "core/status.h"

namespace ds::cuda {
namespace {

// The largest power of two (at most 256) that divides the address: cuBLASLt picks kernels by
// the alignment it is promised.
int Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

absl::Status LtCheck(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("cuBLASLt: ", what, ": status ", static_cast<int>(s)));
}

absl::Status MakeLayout(cublasLtMatrixLayout_t* layout, cudaDataType type, int64_t rows, int64_t cols, int64_t ld,
                        int64_t batch, int64_t stride) {
  DS_RETURN_IF_ERROR(LtCheck(cublasLtMatrixLayoutCreate(layout, type, rows, cols, ld), "matrix layout"));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    DS_RETURN_IF_ERROR(LtCheck(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                                sizeof(count)),
                               "batch count"));
    DS_RETURN_IF_ERROR(LtCheck(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                                &stride, sizeof(stride)),
                               "batch stride"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaBackend::Gemm(const GemmCall& g) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return absl::OkStatus();
  const int align_a = Alignment(g.a), align_b = Alignment(g.b), align_c = Alignment(g.c);
  const GemmKey key{g.a_bf16, g.tf32, g.transpose_a, g.m, g.n, g.k, g.lda, g.stride_a, g.ldb, g.stride_b, g.ldc, g.stride_c,
                    g.batch, align_a, align_b, align_c};
  GemmPlan plan;
  {
    std::lock_guard<std::mutex> lock(gemm_mutex_);
    if (auto it = gemm_plans_.find(key); it != gemm_plans_.end()) {
      plan = it->second;
    } else {
      const cudaDataType ab = g.a_bf16 ? CUDA_R_16BF : CUDA_R_32F;
      DS_RETURN_IF_ERROR(LtCheck(cublasLtMatmulDescCreate(
                                     &plan.op, g.tf32 && !g.a_bf16 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                                     CUDA_R_32F), "matmul desc"));
      const cublasOperation_t trans_a = g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
      DS_RETURN_IF_ERROR(LtCheck(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                                sizeof(trans_a)),
                                 "transa"));
      DS_RETURN_IF_ERROR(MakeLayout(&plan.a, ab, g.transpose_a ? g.k : g.m, g.transpose_a ? g.m : g.k, g.lda, g.batch,
                                    g.stride_a));
      DS_RETURN_IF_ERROR(MakeLayout(&plan.b, ab, g.k, g.n, g.ldb, g.batch, g.stride_b));
      DS_RETURN_IF_ERROR(MakeLayout(&plan.c, CUDA_R_32F, g.m, g.n, g.ldc, g.batch, g.stride_c));
      cublasLtMatmulPreference_t pref;
      DS_RETURN_IF_ERROR(LtCheck(cublasLtMatmulPreferenceCreate(&pref), "preference"));
      const uint32_t aligns[3] = {static_cast<uint32_t>(align_a), static_cast<uint32_t>(align_b),
                                  static_cast<uint32_t>(align_c)};
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                           sizeof(workspace_bytes_));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aligns[0], sizeof(uint32_t));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &aligns[1], sizeof(uint32_t));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &aligns[2], sizeof(uint32_t));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &aligns[2], sizeof(uint32_t));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      const cublasStatus_t s =
          cublasLtMatmulAlgoGetHeuristic(lt_, plan.op, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
      cublasLtMatmulPreferenceDestroy(pref);
      if (s != CUBLAS_STATUS_SUCCESS || found == 0) {
        cublasLtMatrixLayoutDestroy(plan.a);
        cublasLtMatrixLayoutDestroy(plan.b);
        cublasLtMatrixLayoutDestroy(plan.c);
        cublasLtMatmulDescDestroy(plan.op);
        return absl::UnavailableError(absl::StrCat("cuBLASLt: no algorithm for a ", g.m, "x", g.n, "x", g.k,
                                                   g.a_bf16 ? " bf16" : " f32", " GEMM (status ", static_cast<int>(s),
                                                   ")"));
      }
      plan.algo = result.algo;
      gemm_plans_.emplace(key, plan);
    }
  }
  const float beta = 0.0f;
  return LtCheck(cublasLtMatmul(lt_, plan.op, &g.alpha, g.a, plan.a, g.b, plan.b, &beta, g.c, plan.c, g.c, plan.c,
                                &plan.algo, workspace_, workspace_bytes_, stream()),
                 "matmul");
}

// g with x's rows as its B (column-major: xᵀ), rounded to bf16 first where the weights are bf16
// (one conversion however many batch entries read x).
absl::Status CudaBackend::GemmOfRows(GemmCall g, const Tensor& x) {
  g.b = x.data;
  g.ldb = x.stride;
  Tensor x_bf16;
  if (g.a_bf16) {
    DS_ASSIGN_OR_RETURN(x_bf16, Alloc(DType::kBF16, x.rows, x.cols));
    DS_RETURN_IF_ERROR(Check(LaunchToBf16(x.ptr<float>(), x.stride, x.rows, x.cols, x_bf16.ptr<uint16_t>(), stream()),
                             "to_bf16"));
    g.b = x_bf16.data;
    g.ldb = x.cols;
  }
  return Gemm(g);
}

absl::Status CudaBackend::Matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  const bool bf16 = w.dtype == DType::kBF16;
  if (x.rows <= kGemvMaxRows) return Gemv(x, w, bias, y, {});
  // Column-major view: yᵀ [n, m] = w [n, k] (stored as k x n, transposed) · xᵀ [k, m].
  DS_RETURN_IF_ERROR(GemmOfRows({.a_bf16 = bf16, .transpose_a = true, .m = w.rows, .n = x.rows, .k = w.cols, .a = w.data,
                                 .lda = w.stride, .c = y.ptr<float>(), .ldc = y.stride},
                                x));
  if (!bias) return absl::OkStatus();
  return Check(LaunchAdd(y.ptr<float>(), y.stride, bias->ptr<float>(), 0, y.ptr<float>(), y.stride, y.rows, y.cols,
                         stream()),
               "bias");
}

absl::Status CudaBackend::Gemv(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y,
                               const GemvOptions& options) {
  return Check(LaunchGemv(x.ptr<float>(), x.stride, x.rows, w.data, w.dtype == DType::kBF16, w.stride, w.rows, w.cols,
                          bias ? bias->ptr<float>() : nullptr, y.ptr<float>(), y.stride, options, sm_count_, stream()),
               "gemv");
}

bool CudaBackend::GateUpOnGemv(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj) const {
  return x.rows <= kGemvMaxRows && gate_proj.dtype == up_proj.dtype && gate_proj.stride == up_proj.stride;
}

absl::Status CudaBackend::GateUpGemv(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y,
                                     const GemvOptions& options) {
  return Check(LaunchGateUp(x.ptr<float>(), x.stride, x.rows, gate_proj.data, up_proj.data,
                            gate_proj.dtype == DType::kBF16, gate_proj.stride, gate_proj.rows, gate_proj.cols,
                            y.ptr<float>(), y.stride, options, sm_count_, stream()),
               "gate_up");
}

absl::Status CudaBackend::GateUp(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y) {
  if (!GateUpOnGemv(x, gate_proj, up_proj)) return Backend::GateUp(x, gate_proj, up_proj, y);
  return GateUpGemv(x, gate_proj, up_proj, y, {});
}

// The decode forms of the norm before a projection and the add after one: in the GEMV itself.
absl::Status CudaBackend::NormMatmul(const Tensor& x, const Tensor& norm, float eps, const Tensor& w,
                                     const Tensor* bias, const Tensor& y) {
  if (x.rows > kGemvMaxRows) return Backend::NormMatmul(x, norm, eps, w, bias, y);
  return Gemv(x, w, bias, y, {.norm = norm.ptr<float>(), .eps = eps});
}

absl::Status CudaBackend::NormGateUp(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate_proj,
                                     const Tensor& up_proj, const Tensor& y) {
  if (!GateUpOnGemv(x, gate_proj, up_proj)) return Backend::NormGateUp(x, norm, eps, gate_proj, up_proj, y);
  return GateUpGemv(x, gate_proj, up_proj, y, {.norm = norm.ptr<float>(), .eps = eps});
}

absl::Status CudaBackend::MatmulAdd(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                                    const Tensor& y) {
  if (x.rows > kGemvMaxRows) return Backend::MatmulAdd(x, w, bias, residual, y);
  return Gemv(x, w, bias, y, {.residual = residual.ptr<float>(), .residual_stride = residual.stride});
}

// Every head in one launch: for decode a GEMV (a block of rows per head), for a prompt a batched
// GEMM (a batch entry per head), x rounded to bf16 once for bf16 weights.
absl::Status CudaBackend::HeadsMatmul(const Tensor& x, int64_t x_head_stride, const Tensor& w, int64_t n_heads,
                                      const Tensor& y, int64_t y_head_stride) {
  const int64_t n = w.rows / n_heads;
  if (x.rows > kGemvMaxRows) {
    return GemmOfRows({.a_bf16 = w.dtype == DType::kBF16, .transpose_a = true, .m = n, .n = x.rows, .k = w.cols,
                       .a = w.data, .lda = w.stride, .stride_a = n * w.stride, .stride_b = x_head_stride,
                       .c = y.ptr<float>(), .ldc = y.stride, .stride_c = y_head_stride, .batch = n_heads},
                      x);
  }
  if (n % kGemvGroupRowMultiple != 0) return Backend::HeadsMatmul(x, x_head_stride, w, n_heads, y, y_head_stride);
  return Gemv(x, w, nullptr, y, {.groups = n_heads, .x_group_step = x_head_stride, .y_group_step = y_head_stride});
}

}  // namespace ds::cuda

#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "backends/cuda/kernels.h"
#include "backends/plugin.h"
#include "core/status.h"

namespace ds::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's scratch (Hopper kernels want 32 MiB)

// Sizes are rounded to classes so that blocks are reused across steps whose shapes differ a
// little (the cache grows, prompts vary): 256 B steps below 1 MiB, then 1/8 of a power of two.
}  // namespace

size_t DevicePool::SizeClass(size_t bytes) {
  bytes = std::max<size_t>(bytes, 256);
  if (bytes < (1u << 20)) return (bytes + 255) / 256 * 256;
  size_t power = 1u << 20;
  while (power * 2 < bytes) power *= 2;
  const size_t step = power / 8;
  return (bytes + step - 1) / step * step;
}

namespace {

std::string MiB(size_t bytes) { return absl::StrCat(bytes >> 20, " MiB"); }

// A pass's rotation in the kernels' terms.
RopeArgs RopeArgsFor(int64_t rot_dim, const RopeTable& table, RopeLayout layout, const Position& at) {
  return {.rot_dim = rot_dim,
          .inv_freq = table.inv_freq.ptr<float>(),
          .attention_factor = table.attention_factor,
          .interleaved = layout == RopeLayout::kInterleaved,
          .pos0 = at.pos0,
          .pos0_device = at.device.valid() ? at.device.ptr<int32_t>() : nullptr};
}

}  // namespace

absl::Status CudaBackend::Check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("cuda: ", what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

// --- memory -----------------------------------------------------------------------------------

void* FreeBlocks::Pop(size_t size_class) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = blocks_.find(size_class);
  if (it == blocks_.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  return p;
}

void FreeBlocks::Push(void* p, size_t size_class) {
  std::lock_guard<std::mutex> lock(mutex_);
  blocks_[size_class].push_back(p);
}

void FreeBlocks::FreeAll() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, blocks] : blocks_)
    for (void* p : blocks) cudaFree(p);
  blocks_.clear();
}

absl::StatusOr<std::shared_ptr<void>> DevicePool::Get(size_t bytes) {
  const size_t size_class = SizeClass(bytes);
  DS_ASSIGN_OR_RETURN(void* p, Take(size_class));
  return std::shared_ptr<void>(p, [this, size_class](void* q) { Give(q, size_class); });
}

absl::StatusOr<void*> DevicePool::Take(size_t size_class) {
  void* p = free_.Pop(size_class);
  if (!p) {
    cudaSetDevice(device_);
    if (cudaMalloc(&p, size_class) != cudaSuccess) {
      cudaGetLastError();  // clear it: an allocation failure is not sticky
      // Give back what the pool holds and try once more.
      cudaDeviceSynchronize();
      free_.FreeAll();
      if (cudaMalloc(&p, size_class) != cudaSuccess) {
        cudaGetLastError();
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        return OutOfMemoryError(absl::StrCat("cuda: cannot allocate ", size_class, " bytes (", MiB(size_class),
                                             ") on device ", device_, ": ", MiB(free_bytes), " free of ",
                                             MiB(total_bytes)));
      }
    }
  }
  return p;
}

absl::StatusOr<Tensor> CudaBackend::Alloc(DType dtype, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) return absl::InternalError("negative tensor shape");
  if (IsBlockQuantized(dtype))
    return absl::UnimplementedError(absl::StrCat("cuda: ", DTypeName(dtype), " weights run on the CPU backend only"));
  const size_t bytes = static_cast<size_t>(rows) * RowBytes(dtype, cols);
  auto storage = Allocate(bytes);
  if (!storage.ok())
    return absl::Status(storage.status().code(),
                        absl::StrCat(storage.status().message(), " for a [", rows, ", ", cols, "] tensor"));
  Tensor t;
  t.data = storage->get();
  t.storage = *std::move(storage);
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  t.stride = cols;
  return t;
}

absl::Status CudaBackend::Upload(const void* host, const Tensor& dst) {
  if (dst.rows == 0 || dst.cols == 0) return absl::OkStatus();
  const size_t row_bytes = RowBytes(dst.dtype, dst.cols);
  DS_RETURN_IF_ERROR(Check(cudaMemcpy2DAsync(dst.data, RowBytes(dst.dtype, dst.stride), host, row_bytes, row_bytes,
                                             dst.rows, cudaMemcpyHostToDevice, stream()),
                           "upload"));
  // The host buffer is the caller's again when we return.
  return Check(cudaStreamSynchronize(stream()), "upload");
}

absl::Status CudaBackend::Download(const Tensor& src, void* host) {
  if (src.rows == 0 || src.cols == 0) return absl::OkStatus();
  const size_t row_bytes = RowBytes(src.dtype, src.cols);
  DS_RETURN_IF_ERROR(Check(cudaMemcpy2DAsync(host, row_bytes, src.data, RowBytes(src.dtype, src.stride), row_bytes,
                                             src.rows, cudaMemcpyDeviceToHost, stream()),
                           "download"));
  return Check(cudaStreamSynchronize(stream()), "download");
}

absl::Status CudaBackend::WriteRows(const Tensor& src, const Tensor& dst, const Position& at) {
  if (!at.device.valid()) return Backend::WriteRows(src, dst, at);
  if (src.dtype != DType::kF32 || dst.dtype != DType::kF32) return absl::InternalError("cuda: write_rows of f32 only");
  return Check(LaunchWriteRows(src.ptr<float>(), src.stride, src.rows, src.cols, dst.ptr<float>(), dst.stride, dst.rows,
                               at.device.ptr<int32_t>(), stream()),
               "write_rows");
}

absl::Status CudaBackend::Argmax(const Tensor& x, const Tensor& ids) {
  if (x.rows == 0 || x.cols == 0) return absl::OkStatus();
  const int64_t parts = ArgmaxParts(x.cols);
  DS_ASSIGN_OR_RETURN(Tensor part_best, Alloc(DType::kF32, x.rows, parts));
  DS_ASSIGN_OR_RETURN(Tensor part_at, Alloc(DType::kI32, x.rows, parts));
  return Check(LaunchArgmax(x.ptr<float>(), x.stride, x.rows, x.cols, ids.ptr<int32_t>(), part_best.ptr<float>(),
                            part_at.ptr<int32_t>(), stream()),
               "argmax");
}

absl::Status CudaBackend::SampleTokens(const Tensor& logits, const SamplingFilters& filters,
                                       absl::Span<const uint64_t> draws, const Tensor& ids) {
  if (static_cast<int64_t>(draws.size()) != logits.rows || ids.cols != logits.rows)
    return absl::InternalError("sample: a draw and an id for each row of logits");
  if (!(filters.temperature > 0.0f)) return absl::InternalError("sample: temperature must be > 0");
  // DS_CUDA_SAMPLING=0 leaves sampling to the host, to measure what this brings.
  static const bool enabled = [] {
    const char* v = std::getenv("DS_CUDA_SAMPLING");
    return !(v && std::string(v) == "0");
  }();
  if (!enabled) return absl::UnimplementedError("sample: DS_CUDA_SAMPLING=0");
  if (logits.cols > kMaxSampleVocab)
    return absl::UnimplementedError(absl::StrCat("sample: a vocabulary past ", kMaxSampleVocab, " is sampled on the host"));
  for (int64_t r0 = 0; r0 < logits.rows; r0 += kMaxSampleRows) {
    const int64_t rows = std::min(kMaxSampleRows, logits.rows - r0);
    SampleDraws d{};
    for (int64_t r = 0; r < rows; ++r) d.draw[r] = draws[r0 + r] & ((uint64_t{1} << 53) - 1);
    DS_ASSIGN_OR_RETURN(Tensor scratch, Alloc(DType::kI32, 1, (SampleScratchBytes(rows) + 3) / 4));
    const Tensor part = logits.Rows(r0, rows);
    DS_RETURN_IF_ERROR(Check(LaunchSampleTokens(part.ptr<float>(), part.stride, rows, part.cols,
                                                {.temperature = filters.temperature, .top_k = filters.top_k,
                                                 .top_p = filters.top_p, .min_p = filters.min_p},
                                                d, scratch.data, ids.ptr<int32_t>() + r0, stream()),
                             "sample"));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Copy(const Tensor& src, const Tensor& dst) {
  if (src.rows == 0 || src.cols == 0) return absl::OkStatus();
  return Check(cudaMemcpy2DAsync(dst.data, RowBytes(dst.dtype, dst.stride), src.data, RowBytes(src.dtype, src.stride),
                                 RowBytes(src.dtype, src.cols), src.rows,
                                 cudaMemcpyDeviceToDevice, stream()),
               "copy");
}

// --- element-wise ops ----------------------------------------------------------------------------

absl::Status CudaBackend::RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) {
  return Check(LaunchRmsNorm(x.ptr<float>(), x.stride, weight.ptr<float>(), eps, y.ptr<float>(), y.stride, x.rows,
                             x.cols, stream()),
               "rms_norm");
}

absl::Status CudaBackend::Add(const Tensor& a, const Tensor& b, const Tensor& y) {
  return Check(LaunchAdd(a.ptr<float>(), a.stride, b.ptr<float>(), b.stride, y.ptr<float>(), y.stride, a.rows, a.cols,
                         stream()),
               "add");
}

absl::Status CudaBackend::SiluMul(const Tensor& gate, const Tensor& up, const Tensor& y) {
  return Check(LaunchSiluMul(gate.ptr<float>(), gate.stride, up.ptr<float>(), up.stride, y.ptr<float>(), y.stride,
                             gate.rows, gate.cols, stream()),
               "silu_mul");
}

absl::Status CudaBackend::Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) {
  return Check(LaunchEmbedding(table.data, table.dtype == DType::kBF16, table.stride, table.rows, ids.ptr<int32_t>(),
                               ids.cols, y.ptr<float>(), y.stride, table.cols, stream()),
               "embedding");
}

absl::Status CudaBackend::Rope(const Tensor& x, int64_t n_heads, int64_t head_stride, int64_t rot_dim,
                               const RopeTable& table, RopeLayout layout, const Position& at) {
  return Check(LaunchRope(x.ptr<float>(), x.stride, x.rows, n_heads, head_stride, rot_dim, table.inv_freq.ptr<float>(),
                          table.attention_factor, layout == RopeLayout::kInterleaved, at.pos0,
                          at.device.valid() ? at.device.ptr<int32_t>() : nullptr, stream()),
               "rope");
}

absl::Status CudaBackend::RopeAndStoreKv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t head_dim,
                                         int64_t rot_dim, const RopeTable& table, RopeLayout layout,
                                         const Position& at, const Tensor& k_cache, const Tensor& v_cache) {
  for (const Tensor* x : {&q, &k, &v, &k_cache, &v_cache})
    if (x->dtype != DType::kF32) return absl::InternalError("cuda: rope_and_store_kv of f32 only");
  // One cache row index for both caches: they have the same rows (a layer's k and v cache).
  if (k_cache.rows != v_cache.rows)
    return Backend::RopeAndStoreKv(q, k, v, head_dim, rot_dim, table, layout, at, k_cache, v_cache);
  const RopeAndStoreKvArgs args{.q = q.ptr<float>(),
                                .q_stride = q.stride,
                                .q_heads = q.cols / head_dim,
                                .k = k.ptr<float>(),
                                .k_stride = k.stride,
                                .kv_heads = k.cols / head_dim,
                                .v = v.ptr<float>(),
                                .v_stride = v.stride,
                                .v_cols = v.cols,
                                .head_dim = head_dim,
                                .rope = RopeArgsFor(rot_dim, table, layout, at),
                                .k_cache = k_cache.ptr<float>(),
                                .k_cache_stride = k_cache.stride,
                                .v_cache = v_cache.ptr<float>(),
                                .v_cache_stride = v_cache.stride,
                                .cache_rows = k_cache.rows};
  return Check(LaunchRopeAndStoreKv(args, q.rows, stream()), "rope_and_store_kv");
}

absl::Status CudaBackend::MlaRopeAndStore(const Tensor& q, int64_t n_heads, int64_t q_head_dim, int64_t q_rope_at,
                                          const Tensor& kv, const Tensor& kv_norm, float eps, int64_t rot_dim,
                                          const RopeTable& table, RopeLayout layout, const Position& at,
                                          const Tensor& q_latent, int64_t q_latent_head_dim,
                                          const Tensor& latent_cache, const Tensor* w_uk) {
  // One row (a decode step) is one launch; otherwise the W_UK products are HeadsMatmul's (a
  // grouped GEMV for a verification pass, GEMMs for a prompt) and the rope and cache write a
  // launch of their own.
  if (w_uk && (q.rows != 1 || (w_uk->rows / n_heads) % kGemvGroupRowMultiple != 0)) {
    DS_RETURN_IF_ERROR(HeadsMatmul(q, q_head_dim, *w_uk, n_heads, q_latent, q_latent_head_dim));
    w_uk = nullptr;
  }
  const MlaRopeAndStoreArgs args{.q = q.ptr<float>(),
                                 .q_stride = q.stride,
                                 .n_heads = n_heads,
                                 .q_head_dim = q_head_dim,
                                 .q_rope_at = q_rope_at,
                                 .kv = kv.ptr<float>(),
                                 .kv_stride = kv.stride,
                                 .kv_lora = kv.cols - rot_dim,
                                 .kv_norm = kv_norm.ptr<float>(),
                                 .eps = eps,
                                 .rope = RopeArgsFor(rot_dim, table, layout, at),
                                 .q_latent = q_latent.ptr<float>(),
                                 .q_latent_stride = q_latent.stride,
                                 .q_latent_head_dim = q_latent_head_dim,
                                 .cache = latent_cache.ptr<float>(),
                                 .cache_stride = latent_cache.stride,
                                 .cache_rows = latent_cache.rows};
  if (!w_uk) return Check(LaunchMlaRopeAndStore(args, q.rows, stream()), "mla_rope_and_store");
  return Check(LaunchMlaQueryAndStore(args, w_uk->data, w_uk->dtype == DType::kBF16, w_uk->stride, w_uk->rows,
                                      w_uk->cols, sm_count_, stream()),
               "mla_rope_and_store");
}

namespace {

// The device routing's limits, as a status.
absl::Status CheckRouting(int64_t n_experts, const MoeRouting& routing) {
  if (n_experts > kMaxExperts || routing.n_group > kMaxGroups)
    return absl::UnimplementedError(absl::StrCat("cuda: routing over ", n_experts, " experts in ", routing.n_group,
                                                 " groups (at most ", kMaxExperts, " in ", kMaxGroups, ")"));
  return absl::OkStatus();
}

MoeRouteArgs RouteArgs(int64_t n_experts, const Tensor& bias, const MoeRouting& r, const Tensor& ids,
                       const Tensor& weights) {
  return {.n_experts = n_experts,
          .correction = bias.ptr<float>(),
          .n_group = r.n_group,
          .topk_group = r.topk_group,
          .top_k = r.top_k,
          .norm_topk_prob = r.norm_topk_prob,
          .routed_scaling_factor = r.routed_scaling_factor,
          .ids = ids.ptr<int32_t>(),
          .ids_stride = ids.stride,
          .weights = weights.ptr<float>(),
          .weights_stride = weights.stride};
}

}  // namespace

absl::Status CudaBackend::MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouting& routing,
                                   const Tensor& ids, const Tensor& weights) {
  DS_RETURN_IF_ERROR(CheckRouting(logits.cols, routing));
  return Check(LaunchMoeRoute(logits.ptr<float>(), logits.stride, logits.rows,
                              RouteArgs(logits.cols, bias, routing, ids, weights), stream()),
               "moe_route");
}

// A decode step's router and routing in one launch (LaunchNormMoeRoute); otherwise the two ops
// (a GEMV and the routing for a verification pass, a GEMM for a prompt's router).
absl::Status CudaBackend::NormMoeRoute(const Tensor& x, const Tensor& norm, float eps, const Tensor& gate,
                                       const Tensor& bias, const MoeRouting& routing, const Tensor& ids,
                                       const Tensor& weights) {
  if (gate.dtype != DType::kF32 || !NormMoeRouteInOneLaunch(x.ptr<float>(), x.stride, x.rows, x.cols, norm.ptr<float>(),
                                                            gate.ptr<float>(), gate.stride, gate.rows))
    return Backend::NormMoeRoute(x, norm, eps, gate, bias, routing, ids, weights);
  DS_RETURN_IF_ERROR(CheckRouting(gate.rows, routing));
  DS_ASSIGN_OR_RETURN(Tensor logits, Alloc(DType::kF32, 1, gate.rows));
  return Check(LaunchNormMoeRoute(x.ptr<float>(), x.stride, x.cols, norm.ptr<float>(), eps, gate.ptr<float>(),
                                  gate.stride, logits.ptr<float>(), route_counter_.ptr<int>(),
                                  RouteArgs(gate.rows, bias, routing, ids, weights), sm_count_, stream()),
               "moe_route");
}

// --- lifetime ---------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Backend>> CudaBackend::Create(int device, bool tf32_attention) {
  int count = 0;
  if (cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(absl::StrCat("cuda: no usable driver or device: ", cudaGetErrorString(err)));
  }
  if (device < 0 || device >= count)
    return absl::UnavailableError(absl::StrCat("cuda: device ", device, " asked, ", count, " present"));
  DS_RETURN_IF_ERROR(Check(cudaSetDevice(device), "set device"));
  cudaDeviceProp prop;
  DS_RETURN_IF_ERROR(Check(cudaGetDeviceProperties(&prop, device), "device properties"));
  if (prop.major < 8)
    return absl::UnimplementedError(absl::StrCat("cuda: ", prop.name, " is compute capability ", prop.major, ".",
                                                 prop.minor, "; ds needs 8.0 (Ampere) or newer"));
  std::unique_ptr<CudaBackend> backend(new CudaBackend(device, prop.multiProcessorCount));
  backend->tf32_attention_ = tf32_attention;
  DS_RETURN_IF_ERROR(Check(cudaStreamCreateWithFlags(&backend->stream_, cudaStreamNonBlocking), "stream"));
  DS_RETURN_IF_ERROR(Check(cudaStreamCreateWithFlags(&backend->capture_stream_, cudaStreamNonBlocking), "stream"));
  const char* graphs = std::getenv("DS_CUDA_GRAPHS");
  backend->graphs_enabled_ = !(graphs && std::string(graphs) == "0");
  if (cublasLtCreate(&backend->lt_) != CUBLAS_STATUS_SUCCESS) return absl::UnavailableError("cuda: cublasLtCreate failed");
  if (cudaMalloc(&backend->workspace_, kWorkspaceBytes) != cudaSuccess) {
    cudaGetLastError();
    return OutOfMemoryError(absl::StrCat("cuda: cannot allocate the ", MiB(kWorkspaceBytes), " cuBLASLt workspace"));
  }
  backend->workspace_bytes_ = kWorkspaceBytes;
  // Enough for 16 query rows of 1024 heads.
  DS_ASSIGN_OR_RETURN(backend->attention_counters_, backend->Alloc(DType::kI32, 1, 16 * 1024));
  DS_RETURN_IF_ERROR(Check(cudaMemset(backend->attention_counters_.data, 0, backend->attention_counters_.nbytes()),
                           "attention counters"));
  DS_ASSIGN_OR_RETURN(backend->route_counter_, backend->Alloc(DType::kI32, 1, 1));
  DS_RETURN_IF_ERROR(Check(cudaMemset(backend->route_counter_.data, 0, backend->route_counter_.nbytes()), "route counter"));
  return std::unique_ptr<Backend>(std::move(backend));
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& [key, plan] : gemm_plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.op);
  }
  expert_pointers_.clear();
  if (workspace_) cudaFree(workspace_);
  if (lt_) cublasLtDestroy(lt_);
  if (stream_) cudaStreamDestroy(stream_);
  if (capture_stream_) cudaStreamDestroy(capture_stream_);
}

}  // namespace ds::cuda

namespace {

absl::StatusOr<std::unique_ptr<ds::Backend>> CreateCudaBackend(const ds::PluginBackendOptions& options) {
  return ds::cuda::CudaBackend::Create(options.device, options.tf32_attention);
}

const ds::BackendPlugin kCudaPlugin{DS_BUILD_ID, &CreateCudaBackend};

}  // namespace

extern "C" __attribute__((visibility("default"))) const ds::BackendPlugin* ds_backend_plugin_v1() { return &kCudaPlugin; }

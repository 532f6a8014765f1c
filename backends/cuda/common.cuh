// Device helpers shared by the kernel files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace ds::cuda {

// --- programmatic dependent launch -------------------------------------------------------------
// On Hopper and newer, Launch lets a kernel's blocks start while the kernel ahead of it on the
// stream drains, so the gaps between the ~300 small kernels of a decode step shrink and a GEMV's
// weight stream starts during the previous kernel. Every kernel launched by Launch calls
// WaitForPreviousKernels before it reads anything an earlier kernel wrote or writes anything;
// before that it may read only what no kernel writes (weights, tables, the pass's position) and
// what only kernels two or more ahead wrote, all finished by then (the KV-cache rows below the
// pass's position, which earlier passes wrote: decode attention's first keys).
// Once a block is past the wait, the next kernel may start launching: at most one kernel runs
// ahead, and it holds its blocks at its own wait.
__device__ __forceinline__ void WaitForPreviousKernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether launches on the current device may overlap (compute capability 9.0 or newer, and
// DS_CUDA_PDL is not "0": that switch is there to measure what it brings).
inline bool OverlappedLaunchAllowed() {
  static const bool enabled = [] {
    const char* v = std::getenv("DS_CUDA_PDL");
    return !(v && std::string_view(v) == "0");
  }();
  static std::atomic<int> capable[64] = {};  // per device: 0 not asked yet, 1 no, 2 yes
  int device = 0;
  if (!enabled || cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return false;
  int known = capable[device].load(std::memory_order_relaxed);
  if (known == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) major = 0;
    known = major >= 9 ? 2 : 1;
    capable[device].store(known, std::memory_order_relaxed);
  }
  return known == 2;
}

// kernel<<<grid, block, smem, stream>>>(args...), allowed to overlap the kernel ahead (above);
// returns the launch's error.
template <typename... Params, typename... Args>
cudaError_t Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args... args) {
  cudaLaunchAttribute overlap;
  overlap.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &overlap;
  config.numAttrs = OverlappedLaunchAllowed() ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
  const cudaError_t last = cudaGetLastError();  // clears the launch's error, as <<<>>> + cudaGetLastError did
  return err != cudaSuccess ? err : last;
}

// Asks L2 for the 128-byte line at p ahead of its load.
__device__ __forceinline__ void PrefetchL2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// 16 bytes from global to shared memory without passing through registers (sm_80+); the copies
// a thread started are complete and visible to it after WaitAsyncCopies (a barrier then shares
// them with the block).
__device__ __forceinline__ void CopyAsync16(void* shared, const void* global) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(address), "l"(global) : "memory");
}
__device__ __forceinline__ void WaitAsyncCopies() {
  asm volatile("cp.async.commit_group;\n\tcp.async.wait_group 0;" ::: "memory");
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float Bf16ToFloat(uint16_t bits) { return __uint_as_float(static_cast<uint32_t>(bits) << 16); }

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

// Eight consecutive elements as floats, in one or two 16-byte loads (p 16-byte aligned).
__device__ __forceinline__ void Load8(const float* p, float (&f)[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void Load8(const __nv_bfloat16* p, float (&f)[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// Load8 for weights streamed once: not kept in L1 (the activations live there), and L2 asked
// for 256 bytes at a time.
__device__ __forceinline__ void LoadStream8(const __nv_bfloat16* p, float (&f)[8]) {
  uint32_t w[4];
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
      : "l"(p));
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void LoadStream8(const float* p, float (&f)[8]) {
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.f32 {%0, %1, %2, %3}, [%4];"
      : "=f"(f[0]), "=f"(f[1]), "=f"(f[2]), "=f"(f[3])
      : "l"(p));
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.f32 {%0, %1, %2, %3}, [%4];"
      : "=f"(f[4]), "=f"(f[5]), "=f"(f[6]), "=f"(f[7])
      : "l"(p + 4));
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float BlockSum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  v = WarpSum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
    s = WarpSum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

__device__ __forceinline__ float BlockMax(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  v = WarpMax(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : -INFINITY;
    s = WarpMax(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

inline unsigned Blocks(int64_t n, int64_t per_block, int64_t cap = 65535) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > cap ? cap : b));
}

}  // namespace ds::cuda

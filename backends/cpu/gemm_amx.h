// A prompt's matmul with bf16 products on AMX tiles (Intel Xeon, Sapphire Rapids and newer).
// gemm_amx.cc is compiled for AMX and AVX-512; call it only where CpuHasAmxBf16() (cpu_backend.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "backends/backend.h"

namespace ds {

// y[m, n] = sum_k x[m, k] w[n, k] (+ bias[n]) for m < M, n < N, with bf16 products and f32 sums:
// x (f32, rows x_stride apart) rounded to bf16 as RoundToBf16Avx512 does, and the weight rows
// (bf16, Q8_0 or Q4_0, row_bytes apart) as WidenRowToBf16Avx512 gives them. K must be a multiple
// of 32. Runs on the calling thread's OpenMP team. The products are exact; AMX treats subnormal
// inputs as zero and flushes subnormal results.
void GemmAmxBf16(const float* x, int64_t x_stride, int64_t M, int64_t K, DType w_dtype, const void* w,
                 size_t row_bytes, int64_t N, const float* bias, float* y, int64_t y_stride);

}  // namespace ds

// What the decode GEMV kernels (few activation rows, bound by reading the weights) share: the
// activation rows prepared once per call, the kernel signature and the dispatch on the row count.
// The AVX2 kernels are in matmul_narrow_cpu.cc; the AVX-512 ones in gemv_avx512.cc, a file
// compiled for AVX-512 and called only on CPUs that have it. The inline code here is therefore
// kept to internal linkage: a copy compiled for AVX-512 must never be the one the linker keeps
// for the rest of the program.
#pragma once

#include <cstdint>

#include "backends/backend.h"

namespace ds {

constexpr int64_t kMaxGemvRows = 8;

// The activation rows, prepared once per call for the weight format's kernel:
//   Q8_0 / Q4_0: q [rows, k] int8 codes and d [rows, k / 32] scales, for the integer dot;
//   bf16: split [rows, k] f32, each group of the kernel's split group (kAvx2SplitGroup or
//   kAvx512SplitGroup) stored as its even then its odd elements, so the kernel widens bf16 pairs
//   with a shift and a mask instead of shuffles.
//   Q4_0 also: offsets [rows, k / 32, 8], 8 times the sums of each 4 consecutive codes: the
//   kernels multiply the stored nibbles (code + 8, unsigned) and take these off again.
//   Q4_0 for the AVX-512 kernel also: quad_q [rows, k], the codes of each whole group of four
//   blocks reordered as its blocks' first halves then their second halves (kQ4Quad below), and
//   quad_offsets [rows, k / 128, 16], minus 8 times the sums of the codes each of the kernel's
//   16 lanes multiplies.
struct PreparedRows {
  const int8_t* q;
  const float* d;
  const float* split;
  int64_t k;
  const int32_t* q4_offsets = nullptr;
  const int8_t* quad_q = nullptr;
  const int32_t* quad_offsets = nullptr;
};

// The AVX-512 Q4_0 kernel takes a row four blocks (128 weights, 72 bytes) at a time: one 64-byte
// load and one 8-byte load, and a word permute that gathers the four blocks' 64 nibble bytes.
// Their low nibbles (each block's elements 0..15) and high nibbles (16..31) then meet the codes
// in this order: byte 16 i + j of a group's first 64 is block i's element j, of its second 64
// element 16 + j. A row's last blocks short of a group take the pair and single-block path on
// PreparedRows::q and q4_offsets.
constexpr int64_t kQ4Quad = 4 * 32;

// out[m] = w_row · x[m] for m < rows.
using DotRow = void (*)(const void* w_row, const float* x, int64_t x_stride, const PreparedRows& xq,
                        int64_t rows, int64_t k, float* out);

// The bf16 kernels' split groups (PreparedRows::split).
constexpr int64_t kAvx2SplitGroup = 16, kAvx512SplitGroup = 32;

// The AVX-512 kernel (F, BW, VL, VNNI) for a weight format, or null. Call only where the CPU has
// those (matmul_narrow_cpu.cc checks).
DotRow PickDotRowAvx512(DType dtype);
// Whether PickDotRowAvx512's kernel for `dtype` reads PreparedRows::quad_q / quad_offsets.
bool Avx512ReadsQuads(DType dtype);
// y[i] = x[i] rounded to bf16 (to nearest even, NaN kept quiet: F32ToBf16), n values, 16 at a
// time. AVX-512 F and BW, as PickDotRowAvx512.
void RoundToBf16Avx512(const float* x, int64_t n, uint16_t* y);
// A weight row's n values, as WidenRow gives them, with AVX-512 F and BW; ToBf16: then rounded
// as RoundToBf16Avx512 (Q8_0 / Q4_0 blocks straight to bf16, never stored as f32). A prompt's
// GEMM widens every weight of the layer this way, so it runs 16 or 32 values at a time.
void WidenRowAvx512(DType dtype, const void* row, int64_t n, float* out);
void WidenRowToBf16Avx512(DType dtype, const void* row, int64_t n, uint16_t* out);

namespace {

// Independent accumulators per activation row: one FMA chain per row would wait on the FMA's
// latency (4-5 cycles) every step, well below what memory delivers when rows are few.
constexpr int ChainsFor(int rows) { return rows == 1 ? 4 : rows <= 4 ? 2 : 1; }

// The kernel for `rows` activation rows (1..kMaxGemvRows), from one instantiated per count.
template <template <int> class Kernel>
void DispatchRows(const void* w_row, const float* x, int64_t x_stride, const PreparedRows& xq, int64_t rows,
                  int64_t k, float* out) {
  static_assert(kMaxGemvRows == 8);
  switch (rows) {
    case 1: return Kernel<1>::Run(w_row, x, x_stride, xq, out);
    case 2: return Kernel<2>::Run(w_row, x, x_stride, xq, out);
    case 3: return Kernel<3>::Run(w_row, x, x_stride, xq, out);
    case 4: return Kernel<4>::Run(w_row, x, x_stride, xq, out);
    case 5: return Kernel<5>::Run(w_row, x, x_stride, xq, out);
    case 6: return Kernel<6>::Run(w_row, x, x_stride, xq, out);
    case 7: return Kernel<7>::Run(w_row, x, x_stride, xq, out);
    default: return Kernel<8>::Run(w_row, x, x_stride, xq, out);
  }
}

}  // namespace
}  // namespace ds

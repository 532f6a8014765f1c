// y = x · wᵀ with weights stored narrower than f32 (bf16, Q8_0, Q4_0), computed in f32.
//
// Decode and speculative verification (a few rows) are bound by reading the weights: each weight
// row is streamed once and dotted with every activation row, all threads on disjoint rows.
//   bf16: widened to f32 in registers.
//   Q8_0 / Q4_0: the activation rows are first quantized to int8 blocks of 32 with an f32 scale
//   each (as llama.cpp does), so a block's dot product runs in 8-bit integer instructions and one
//   multiply by the two scales. The kernels are picked at run time: AVX-512 (F, BW, VL, VNNI;
//   gemv_avx512.cc), else AVX2 (+FMA, F16C), else a portable loop with the same arithmetic.
// Prefill (many rows) is bound by arithmetic: blocks of weight rows are widened to f32 into a
// buffer and multiplied by oneDNN's f32 GEMM, or with bf16 products rounded to bf16 for its bf16
// GEMM.
#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/gemm_amx.h"
#include "backends/cpu/gemv.h"
#include "backends/cpu/vector_avx2.h"
#include "core/model/dtype.h"
#include "core/model/quant.h"
#include "core/status.h"

namespace ds {
namespace {

// n elements of `buffer` starting on a 64-byte boundary: the kernels' vector loads of the
// prepared activations then never straddle two cache lines (rows of the usual widths are whole
// lines too).
template <typename T>
T* CacheLineAligned(std::vector<T>& buffer, int64_t n) {
  buffer.resize(static_cast<size_t>(n) + 64 / sizeof(T));
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<T*>((address + 63) / 64 * 64);
}

// Group g of row m as its even then its odd elements (PreparedRows::split).
void SplitEvenOddGroup(const float* x, int64_t x_stride, int64_t k, int64_t group, int64_t m, int64_t g, float* out) {
  const float* in = x + m * x_stride + g * group;
  float* even = out + m * k + g * group;
  for (int64_t i = 0; i < group / 2; ++i) {
    even[i] = in[2 * i];
    even[group / 2 + i] = in[2 * i + 1];
  }
}

// Block b of activation row m as int8 codes and a scale (PreparedRows::q, d), and what the Q4_0
// kernels read besides:
// - q4_offsets: they multiply the stored nibbles n = code + 8 (unsigned, as maddubs and vpdpbusd
//   want) and take 8 * (the activation codes' sum) off again: sum (n - 8) x = sum n x - 8 sum x,
//   exact in integers. Lane j of a block's offsets covers codes 4j .. 4j + 3, as 32-bit lane j of
//   maddubs + madd or vpdpbusd.
// - quad_q / quad_offsets, for the AVX-512 kernel (gemv.h): a block of a whole group of four
//   puts its first 16 codes in the group's first 64 bytes and its last 16 in the second 64, and
//   its four lanes' offsets there, negated (the kernel starts its integer sums from them).
// A block's work depends on no other block's, so the blocks of a call are prepared in parallel.
// The buffers are PreparedRows' (null where the kernel does not read them).
struct BlockBuffers {
  int8_t* q;
  float* d;
  int32_t* q4_offsets;
  int8_t* quad_q;
  int32_t* quad_offsets;
};
void PrepareBlock(const float* x, int64_t x_stride, int64_t k, int64_t m, int64_t b, const BlockBuffers& out) {
  const int64_t blocks = k / kQuantBlock;
  int8_t* codes = out.q + m * k + b * kQuantBlock;
  out.d[m * blocks + b] = QuantizeBlockInt8(x + m * x_stride + b * kQuantBlock, codes);
  const auto sum4 = [&](int64_t i) { return codes[i] + codes[i + 1] + codes[i + 2] + codes[i + 3]; };
  if (out.q4_offsets) {
    int32_t* offsets = out.q4_offsets + (m * blocks + b) * 8;
    for (int64_t j = 0; j < 8; ++j) offsets[j] = 8 * sum4(4 * j);
  }
  const int64_t quads = k / kQ4Quad, g = b / 4, i = b % 4;
  if (out.quad_q && g < quads) {
    int8_t* group = out.quad_q + m * k + g * kQ4Quad;
    std::memcpy(group + 16 * i, codes, 16);
    std::memcpy(group + 64 + 16 * i, codes + 16, 16);
    int32_t* offsets = out.quad_offsets + (m * quads + g) * 16 + 4 * i;
    for (int64_t t = 0; t < 4; ++t) offsets[t] = -8 * (sum4(4 * t) + sum4(16 + 4 * t));
  }
}

// --- portable kernels: out[m] = w_row · x[m] for m < rows ------------------------------------

void DotBf16Portable(const void* w_row, const float* x, int64_t x_stride, const PreparedRows&, int64_t rows,
                     int64_t k, float* out) {
  const uint16_t* w = static_cast<const uint16_t*>(w_row);
  for (int64_t m = 0; m < rows; ++m) {
    float acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += Bf16ToF32(w[i]) * x[m * x_stride + i];
    out[m] = acc;
  }
}

// The integer dot of one block's 32 weight codes (already signed) with the activation codes.
int32_t DotCodes(const int8_t* w, const int8_t* x) {
  int32_t sum = 0;
  for (int64_t i = 0; i < kQuantBlock; ++i) sum += w[i] * x[i];
  return sum;
}

void DotQ8Portable(const void* w_row, const float*, int64_t, const PreparedRows& x, int64_t rows, int64_t k,
                   float* out) {
  const BlockQ8_0* w = static_cast<const BlockQ8_0*>(w_row);
  const int64_t blocks = k / kQuantBlock;
  for (int64_t m = 0; m < rows; ++m) {
    float acc = 0;
    for (int64_t b = 0; b < blocks; ++b)
      acc += F16ToF32(w[b].d) * x.d[m * blocks + b] * static_cast<float>(DotCodes(w[b].q, x.q + m * k + b * kQuantBlock));
    out[m] = acc;
  }
}

void DotQ4Portable(const void* w_row, const float*, int64_t, const PreparedRows& x, int64_t rows, int64_t k,
                   float* out) {
  const BlockQ4_0* w = static_cast<const BlockQ4_0*>(w_row);
  const int64_t blocks = k / kQuantBlock;
  for (int64_t m = 0; m < rows; ++m) out[m] = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    int8_t codes[kQuantBlock];
    for (int64_t i = 0; i < kQuantBlock / 2; ++i) {
      codes[i] = static_cast<int8_t>((w[b].q[i] & 0xf) - 8);
      codes[i + kQuantBlock / 2] = static_cast<int8_t>((w[b].q[i] >> 4) - 8);
    }
    const float wd = F16ToF32(w[b].d);
    for (int64_t m = 0; m < rows; ++m)
      out[m] += wd * x.d[m * blocks + b] * static_cast<float>(DotCodes(codes, x.q + m * k + b * kQuantBlock));
  }
}

// --- AVX2 kernels ------------------------------------------------------------------------------

// a[m] += the 16 bf16 weights at w · the 16 activations of row m at x (split even/odd).
// 32-bit word j of the weights holds elements 2j (low half) and 2j + 1 (high half); a bf16 is the
// top half of an f32, so the even ones shift into place and the odd ones are masked.
template <int Rows>
__attribute__((target("avx2,fma"), always_inline)) inline void Bf16Group(const uint16_t* w, const float* x,
                                                                        int64_t k, __m256* a) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
  const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u))));
  for (int m = 0; m < Rows; ++m) {
    a[m] = _mm256_fmadd_ps(even, _mm256_loadu_ps(x + m * k), a[m]);
    a[m] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(x + m * k + 8), a[m]);
  }
}

template <int Rows>
__attribute__((target("avx2,fma"))) void DotBf16Avx2(const void* w_row, const float* x, int64_t x_stride,
                                                      const PreparedRows& prepared, float* out) {
  constexpr int kChains = ChainsFor(Rows);
  const uint16_t* w = static_cast<const uint16_t*>(w_row);
  const int64_t k = prepared.k;
  __m256 acc[kChains][Rows];
  for (int c = 0; c < kChains; ++c)
    for (int m = 0; m < Rows; ++m) acc[c][m] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 * kChains <= k; i += 16 * kChains)
    for (int c = 0; c < kChains; ++c) Bf16Group<Rows>(w + i + 16 * c, prepared.split + i + 16 * c, k, acc[c]);
  for (; i + 16 <= k; i += 16) Bf16Group<Rows>(w + i, prepared.split + i, k, acc[0]);
  for (int m = 0; m < Rows; ++m) {
    for (int c = 1; c < kChains; ++c) acc[0][m] = _mm256_add_ps(acc[0][m], acc[c][m]);
    float sum = HorizontalSum(acc[0][m]);
    for (int64_t j = i; j < k; ++j) sum += Bf16ToF32(w[j]) * x[m * x_stride + j];
    out[m] = sum;
  }
}

// acc[m] += (w_codes · x_codes of block b of row m) * scale. maddubs multiplies unsigned by signed
// bytes: signed weight codes in [-127, 127] move their signs onto the activations; Q4_0's
// unsigned nibbles (Block::kNibbles) go in as they are and lose the offset after (PrepareBlock).
// Either way the integer dot is exact. Rows is a template parameter so the accumulators live in
// registers.
template <int Rows, bool kNibbles>
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void AccumulateBlock(__m256i w_codes, float w_scale,
                                                                                  const PreparedRows& x, int64_t b,
                                                                                  __m256* acc) {
  const int64_t blocks = x.k / kQuantBlock;
  const __m256i w_abs = kNibbles ? w_codes : _mm256_sign_epi8(w_codes, w_codes);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int m = 0; m < Rows; ++m) {
    const __m256i x_codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + m * x.k + b * kQuantBlock));
    // |products| <= 2 * 127 * 127 per pair of bytes: no int16 saturation.
    __m256i dot;
    if constexpr (kNibbles) {
      const __m256i offset =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q4_offsets + (m * blocks + b) * 8));
      dot = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, x_codes), ones), offset);
    } else {
      dot = _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x_codes, w_codes)), ones);
    }
    acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(w_scale * x.d[m * blocks + b]), acc[m]);
  }
}

// Sums a row's blocks with kChains accumulator sets, block b into set b % kChains.
template <int Rows, typename Block>
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void SumBlocks(const void* w, const PreparedRows& x,
                                                                              float* out) {
  constexpr int kChains = ChainsFor(Rows);
  __m256 acc[kChains][Rows];
  for (int c = 0; c < kChains; ++c)
    for (int m = 0; m < Rows; ++m) acc[c][m] = _mm256_setzero_ps();
  const int64_t blocks = x.k / kQuantBlock;
  int64_t b = 0;
  for (; b + kChains <= blocks; b += kChains)
    for (int c = 0; c < kChains; ++c) {
      float scale;
      const __m256i codes = Block::Load(w, b + c, &scale);
      AccumulateBlock<Rows, Block::kNibbles>(codes, scale, x, b + c, acc[c]);
    }
  for (; b < blocks; ++b) {
    float scale;
    const __m256i codes = Block::Load(w, b, &scale);
    AccumulateBlock<Rows, Block::kNibbles>(codes, scale, x, b, acc[0]);
  }
  for (int m = 0; m < Rows; ++m) {
    for (int c = 1; c < kChains; ++c) acc[0][m] = _mm256_add_ps(acc[0][m], acc[c][m]);
    out[m] = HorizontalSum(acc[0][m]);
  }
}

// A block's codes (signed, or Q4_0's unsigned nibbles) and scale.
struct Q8Block {
  static constexpr bool kNibbles = false;
  __attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256i Load(const void* w_row, int64_t b,
                                                                                     float* scale) {
    const BlockQ8_0& block = static_cast<const BlockQ8_0*>(w_row)[b];
    *scale = _cvtsh_ss(block.d);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block.q));
  }
};
struct Q4Block {
  static constexpr bool kNibbles = true;
  __attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256i Load(const void* w_row, int64_t b,
                                                                                     float* scale) {
    const BlockQ4_0& block = static_cast<const BlockQ4_0*>(w_row)[b];
    *scale = _cvtsh_ss(block.d);
    // Elements 0..15 are the low nibbles, 16..31 the high ones (codes stored + 8): the 16 bytes
    // in both halves, the upper half shifted down by 4.
    const __m256i packed = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block.q)));
    return _mm256_and_si256(_mm256_srlv_epi64(packed, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0f));
  }
};

template <int Rows>
__attribute__((target("avx2,fma,f16c"))) void DotQ8Avx2(const void* w_row, const PreparedRows& x, float* out) {
  SumBlocks<Rows, Q8Block>(w_row, x, out);
}

template <int Rows>
__attribute__((target("avx2,fma,f16c"))) void DotQ4Avx2(const void* w_row, const PreparedRows& x, float* out) {
  SumBlocks<Rows, Q4Block>(w_row, x, out);
}

template <int Rows>
struct Bf16Kernel {
  static void Run(const void* w, const float* x, int64_t x_stride, const PreparedRows& prepared, float* out) {
    DotBf16Avx2<Rows>(w, x, x_stride, prepared, out);
  }
};
template <int Rows>
struct Q8Kernel {
  static void Run(const void* w, const float*, int64_t, const PreparedRows& xq, float* out) {
    DotQ8Avx2<Rows>(w, xq, out);
  }
};
template <int Rows>
struct Q4Kernel {
  static void Run(const void* w, const float*, int64_t, const PreparedRows& xq, float* out) {
    DotQ4Avx2<Rows>(w, xq, out);
  }
};
// The best kernels this CPU runs: AVX2 needs FMA and F16C; AVX-512 needs F, BW, VL and VNNI
// (Ice Lake and newer Xeons, Zen 4 and newer EPYCs), with the OS saving the registers.
CpuKernels DetectCpuKernels() {
  __builtin_cpu_init();
  // F16C and the AVX-512 subsets by cpuid: not every compiler's __builtin_cpu_supports knows them
  // (clang 14 does not know F16C); avx512f's check includes the OS's.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  if (!(CpuHasAvx2Fma() && f16c)) return CpuKernels::kPortable;
  const bool leaf7 = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx);
  const bool avx512 = leaf7 && __builtin_cpu_supports("avx512f") && (ebx & bit_AVX512BW) && (ebx & bit_AVX512VL) &&
                      (ecx & bit_AVX512VNNI);
  return avx512 ? CpuKernels::kAvx512 : CpuKernels::kAvx2;
}

std::atomic<CpuKernels> kernel_limit{CpuKernels::kAmx};

DotRow PickDotRow(DType dtype, CpuKernels kernels) {
  if (kernels >= CpuKernels::kAvx512) return PickDotRowAvx512(dtype);
  const bool avx2 = kernels == CpuKernels::kAvx2;
  switch (dtype) {
    case DType::kBF16: return avx2 ? DispatchRows<Bf16Kernel> : DotBf16Portable;
    case DType::kQ8_0: return avx2 ? DispatchRows<Q8Kernel> : DotQ8Portable;
    case DType::kQ4_0: return avx2 ? DispatchRows<Q4Kernel> : DotQ4Portable;
    default: return nullptr;
  }
}

// Decode and verification rows (M <= kMaxGemvRows): y = x · wᵀ (+ bias) for one or two weight
// matrices of one format and depth, in one parallel region. The activations are prepared once
// (int8 codes for the quantized formats, the even/odd split for bf16), by all threads before they
// take their weight rows: done by one, it would be a serial part that grows with the threads'
// count. Then each thread streams its share of all the matrices' rows. `more`, unless NoMore, runs
// on every thread of the region once every row is done (a worksharing loop over the outputs):
// each region costs a few microseconds to start and end on 16 threads, a decode token ~150 of them.
struct GemvOutput {
  const Tensor* w;
  const float* bias;
  float* y;
  int64_t y_stride;
};
struct NoMore {
  void operator()() const {}
};

constexpr size_t kPrefetchAhead = 4096;

template <typename More>
absl::Status GemvRegion(const Tensor& x, const GemvOutput* outputs, int n_outputs, const More& more) {
  const Tensor& w0 = *outputs[0].w;
  const int64_t M = x.rows, N = w0.rows, K = w0.cols;
  // No rows, nothing to do: the kernels' row count starts at 1 (DispatchRows).
  if (M == 0) return absl::OkStatus();
  const CpuKernels kernels = ActiveCpuKernels();
  const DotRow dot_row = PickDotRow(w0.dtype, kernels);
  if (!dot_row) return absl::InternalError(absl::StrCat("cpu matmul: ", DTypeName(w0.dtype), " is not a weight format"));
  thread_local std::vector<int8_t> codes_buffer, quad_codes_buffer;
  thread_local std::vector<float> x_scales, split_buffer;
  thread_local std::vector<int32_t> offsets_buffer, quad_offsets_buffer;
  BlockBuffers blocks{};
  float* split = nullptr;
  const bool quantized = IsBlockQuantized(w0.dtype);
  const int64_t split_group = kernels >= CpuKernels::kAvx512 ? kAvx512SplitGroup : kAvx2SplitGroup;
  if (quantized) {
    blocks.q = CacheLineAligned(codes_buffer, M * K);
    x_scales.resize(static_cast<size_t>(M * K / kQuantBlock));
    blocks.d = x_scales.data();
    if (w0.dtype == DType::kQ4_0) blocks.q4_offsets = CacheLineAligned(offsets_buffer, M * K / 4);
    if (kernels >= CpuKernels::kAvx512 && Avx512ReadsQuads(w0.dtype)) {
      blocks.quad_q = CacheLineAligned(quad_codes_buffer, M * K);
      blocks.quad_offsets = CacheLineAligned(quad_offsets_buffer, M * (K / kQ4Quad) * 16);
    }
  } else {
    split = CacheLineAligned(split_buffer, M * K);
  }
  const PreparedRows xq{blocks.q, blocks.d, split, K, blocks.q4_offsets, blocks.quad_q, blocks.quad_offsets};
  const int64_t pieces = quantized ? K / kQuantBlock : K / split_group;
  const size_t row_bytes = RowBytes(w0.dtype, w0.stride);
  constexpr bool kMore = !std::is_same_v<More, NoMore>;
  // Rows in chunks handed out as threads come free (on a shared machine some thread is always
  // late, and with fixed shares every other one waited for it), about four per thread so that each
  // still streams long runs of consecutive rows, which the prefetchers want: chunks of 16 rows
  // took the 2-core EPYC's GEMV from ~38 to ~25 GB/s.
  const int64_t rows_per_chunk = std::max<int64_t>(16, n_outputs * N / (4 * omp_get_max_threads()));
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < M * pieces; ++i) {
      if (quantized) {
        PrepareBlock(x.ptr<float>(), x.stride, K, i / pieces, i % pieces, blocks);
      } else {
        SplitEvenOddGroup(x.ptr<float>(), x.stride, K, split_group, i / pieces, i % pieces, split);
      }
    }
    const auto row = [&](int64_t i) {
      const GemvOutput& o = outputs[i / N];
      const int64_t j = i % N;
      const char* w_row = o.w->ptr<char>() + j * row_bytes;
      // The hardware prefetchers stop at each 4 KB page, so every page would start with misses to
      // memory; asking for the rows 4 KB ahead keeps the stream going (a prefetch never faults,
      // past the matrix's end included). Rows longer than a page are left to the hardware: on the
      // EPYC asking for them too cost 20% on 8960-wide int8 rows.
      if (row_bytes < kPrefetchAhead)
        for (size_t line = 0; line < row_bytes; line += 64) _mm_prefetch(w_row + kPrefetchAhead + line, _MM_HINT_T0);
      float out[kMaxGemvRows];
      dot_row(w_row, x.ptr<float>(), x.stride, xq, M, K, out);
      for (int64_t m = 0; m < M; ++m) o.y[m * o.y_stride + j] = out[m] + (o.bias ? o.bias[j] : 0.0f);
    };
    if constexpr (kMore) {
#pragma omp for schedule(dynamic, rows_per_chunk)
      for (int64_t i = 0; i < n_outputs * N; ++i) row(i);
      more();
    } else {  // the region's own end is then the only wait the rows need
#pragma omp for schedule(dynamic, rows_per_chunk) nowait
      for (int64_t i = 0; i < n_outputs * N; ++i) row(i);
    }
  }
  return absl::OkStatus();
}

}  // namespace

void LimitCpuKernels(CpuKernels limit) { kernel_limit = limit; }

CpuKernels ActiveCpuKernels() {
  static const CpuKernels detected = [] {
    const CpuKernels vector = DetectCpuKernels();
    return vector == CpuKernels::kAvx512 && CpuHasAvx512Bf16() && CpuHasAmxBf16() ? CpuKernels::kAmx : vector;
  }();
  return std::min(detected, kernel_limit.load(std::memory_order_relaxed));
}

bool CpuHasAvx2Fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

bool CpuHasAmxBf16() {
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (DetectCpuKernels() != CpuKernels::kAvx512 || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    if (!(edx & (1u << 24)) || !(edx & (1u << 22))) return false;  // AMX-TILE, AMX-BF16
    // Linux gives a process the tiles' 8 KB of state only when asked (ARCH_REQ_XCOMP_PERM for
    // XFEATURE_XTILEDATA); without it the first tile instruction faults.
    constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return has;
}

bool CpuHasAvx512Bf16() {
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return DetectCpuKernels() == CpuKernels::kAvx512 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) &&
           (eax & (1u << 5)) != 0;  // CPUID.(EAX=7, ECX=1):EAX[5] = AVX512_BF16
  }();
  return has;
}

absl::Status CpuBackend::MatmulNarrow(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  const int64_t M = x.rows, N = w.rows, K = w.cols;
  const float* b = bias ? bias->ptr<float>() : nullptr;
  ScopedOmpThreads threads(n_threads_);
  if (M <= kMaxGemvRows) {
    const GemvOutput out{&w, b, y.ptr<float>(), y.stride};
    return GemvRegion(x, &out, 1, NoMore{});
  }
  // Prefill: ~4M weights at a time widened and multiplied with oneDNN, in f32; or, with bf16
  // products (BackendOptions::bf16_products), the activations rounded to bf16 once, bf16 weights
  // read where they are, Q8_0 / Q4_0 rows widened and rounded to bf16 (the product of a code and
  // its f16 scale keeps up to 15 significant bits: rounding it is a relative 2^-9, below the
  // quantization's own error), and oneDNN's bf16 GEMM, f32 accumulate.
  const bool bf16 = bf16_products_;
  if (bf16 && K % 32 == 0 && ActiveCpuKernels() == CpuKernels::kAmx) {
    GemmAmxBf16(x.ptr<float>(), x.stride, M, K, w.dtype, w.data, RowBytes(w.dtype, w.stride), N, b, y.ptr<float>(),
                y.stride);
    return absl::OkStatus();
  }
  thread_local std::vector<uint16_t> x_bf16;
  const void* x_in = x.data;
  int64_t x_in_stride = x.stride;
  if (bf16) {
    x_bf16.resize(static_cast<size_t>(M * K));
    uint16_t* const xb = x_bf16.data();
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) RoundToBf16Avx512(x.ptr<float>() + m * x.stride, K, xb + m * K);
    x_in = xb;
    x_in_stride = K;
    if (w.dtype == DType::kBF16)
      return RunMatmul({M, K, N, K, w.stride, y.stride, bias != nullptr, true}, x_in, w.data, bias, y.data);
  }
  const int64_t block = std::max<int64_t>(64, (int64_t{4} << 20) / std::max<int64_t>(K, 1));
  const size_t block_elements = static_cast<size_t>(std::min(block, N) * K);
  // This thread's block of widened (f32) or rounded (bf16) rows: the workers below write into it.
  thread_local std::vector<float> widened;
  thread_local std::vector<uint16_t> rounded;
  if (bf16) {
    rounded.resize(block_elements);
  } else {
    widened.resize(block_elements);
  }
  float* const wf = widened.data();
  uint16_t* const wb = rounded.data();
  const bool avx512 = ActiveCpuKernels() >= CpuKernels::kAvx512;  // bf16 products imply it
  const size_t row_bytes = RowBytes(w.dtype, w.stride);
  for (int64_t j0 = 0; j0 < N; j0 += block) {
    const int64_t n = std::min(block, N - j0);
    const char* const rows = w.Rows(j0, n).ptr<char>();
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      if (bf16) {
        WidenRowToBf16Avx512(w.dtype, rows + j * row_bytes, K, wb + j * K);
      } else if (avx512) {
        WidenRowAvx512(w.dtype, rows + j * row_bytes, K, wf + j * K);
      } else {
        WidenRow(w.dtype, rows + j * row_bytes, K, wf + j * K);
      }
    }
    const Tensor bias_block = bias ? bias->Cols(j0, n) : Tensor{};
    DS_RETURN_IF_ERROR(RunMatmul({M, K, n, x_in_stride, K, y.stride, bias != nullptr, bf16}, x_in,
                                 bf16 ? static_cast<const void*>(wb) : wf, bias ? &bias_block : nullptr,
                                 y.ptr<float>() + j0));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::GateUp(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y) {
  const bool one_region = x.rows <= kMaxGemvRows && gate_proj.dtype != DType::kF32 &&
                          gate_proj.dtype == up_proj.dtype && gate_proj.rows == up_proj.rows &&
                          gate_proj.cols == up_proj.cols && gate_proj.stride == up_proj.stride;
  if (!one_region) return Backend::GateUp(x, gate_proj, up_proj, y);
  auto up = Alloc(DType::kF32, x.rows, up_proj.rows);
  if (!up.ok()) return up.status();
  const GemvOutput outputs[2] = {{&gate_proj, nullptr, y.ptr<float>(), y.stride}, {&up_proj, nullptr, up->ptr<float>(), up->stride}};
  ScopedOmpThreads threads(n_threads_);
  return GemvRegion(x, outputs, 2, [&] { SiluMulPieces(y, *up, y); });
}

}  // namespace ds

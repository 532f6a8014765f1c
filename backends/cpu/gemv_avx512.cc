// The decode GEMV kernels for AVX-512 (F, BW, VL, VNNI): the AVX2 kernels' work
// (matmul_narrow_cpu.cc) at twice the width, and Q8_0 / Q4_0's integer dot of a block in one
// vpdpbusd instead of maddubs + madd. The integer dots are the same exact integers as the AVX2
// kernels'; the float sums run in a different order.
//
// This file is compiled for AVX-512 (CMakeLists.txt) and its kernels run only on CPUs that have
// it. So it must not use inline functions of other headers with external linkage: the linker could
// keep this file's AVX-512 copy of one for every caller. The few helpers it needs are its own or,
// like vector_avx2.h's, of internal linkage.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "backends/cpu/gemv.h"
#include "backends/cpu/vector_avx2.h"
#include "core/model/dtype.h"
#include "core/model/quant.h"

namespace ds {
namespace {

float Bf16Bits(uint16_t h) {
  const uint32_t u = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// a[m] += the 32 bf16 weights at w · the 32 activations of row m at x (split even/odd in groups
// of 32): 32-bit word j holds elements 2j (low half) and 2j + 1 (high half).
template <int Rows>
inline void Bf16Group(const uint16_t* w, const float* x, int64_t k, __m512* a) {
  const __m512i raw = _mm512_loadu_si512(w);
  const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
  const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u))));
  for (int m = 0; m < Rows; ++m) {
    a[m] = _mm512_fmadd_ps(even, _mm512_loadu_ps(x + m * k), a[m]);
    a[m] = _mm512_fmadd_ps(odd, _mm512_loadu_ps(x + m * k + 16), a[m]);
  }
}

template <int Rows>
struct Bf16Kernel {
  static void Run(const void* w_row, const float* x, int64_t x_stride, const PreparedRows& prepared, float* out) {
    constexpr int kChains = ChainsFor(Rows);
    const uint16_t* w = static_cast<const uint16_t*>(w_row);
    const int64_t k = prepared.k;
    __m512 acc[kChains][Rows];
    for (int c = 0; c < kChains; ++c)
      for (int m = 0; m < Rows; ++m) acc[c][m] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 * kChains <= k; i += 32 * kChains)
      for (int c = 0; c < kChains; ++c) Bf16Group<Rows>(w + i + 32 * c, prepared.split + i + 32 * c, k, acc[c]);
    for (; i + 32 <= k; i += 32) Bf16Group<Rows>(w + i, prepared.split + i, k, acc[0]);
    for (int m = 0; m < Rows; ++m) {
      for (int c = 1; c < kChains; ++c) acc[0][m] = _mm512_add_ps(acc[0][m], acc[c][m]);
      float sum = _mm512_reduce_add_ps(acc[0][m]);
      for (int64_t j = i; j < k; ++j) sum += Bf16Bits(w[j]) * x[m * x_stride + j];
      out[m] = sum;
    }
  }
};

// The block formats: the integer dots of two consecutive blocks (b, b + 1) with an activation
// row's codes, as 16 int32 lanes (8 per block), or of one block as 8 lanes. Lane j of a block sums
// its codes 4j .. 4j + 3.
struct Q8Blocks {
  // vpdpbusd multiplies unsigned by signed bytes: the weights' signs move onto the activations.
  struct Pair {
    __m512i w_abs;
    __mmask64 negative;
    Pair(const void* w_row, int64_t b) {
      const BlockQ8_0* blocks = static_cast<const BlockQ8_0*>(w_row);
      const __m512i w = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks[b].q))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks[b + 1].q)), 1);
      w_abs = _mm512_abs_epi8(w);
      negative = _mm512_movepi8_mask(w);
    }
    __m512i Dot(const PreparedRows&, const __m512i x, int64_t, int64_t) const {
      return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w_abs,
                                 _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x));
    }
  };
  static __m256i DotOne(const void* w_row, int64_t b, const PreparedRows&, __m256i x, int64_t, int64_t) {
    const __m256i w =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const BlockQ8_0*>(w_row)[b].q));
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
  }
  static uint16_t ScaleBits(const void* w_row, int64_t b) { return static_cast<const BlockQ8_0*>(w_row)[b].d; }
};

struct Q4Blocks {
  // The stored nibbles (code + 8) go in as they are; 8 x the activation codes' sums come off after
  // (PreparedRows::q4_offsets). A block's elements 0..15 are its bytes' low nibbles, 16..31 the high.
  struct Pair {
    __m512i nibbles;
    Pair(const void* w_row, int64_t b) {
      const BlockQ4_0* blocks = static_cast<const BlockQ4_0*>(w_row);
      const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[b].q)));
      const __m256i hi =
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[b + 1].q)));
      const __m512i packed = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      nibbles = _mm512_and_si512(_mm512_srlv_epi64(packed, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0)),
                                 _mm512_set1_epi8(0x0f));
    }
    __m512i Dot(const PreparedRows& x, const __m512i codes, int64_t m, int64_t b) const {
      const int64_t blocks = x.k / kQuantBlock;
      const __m512i offsets = _mm512_loadu_si512(x.q4_offsets + (m * blocks + b) * 8);
      return _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), nibbles, codes), offsets);
    }
  };
  static __m256i DotOne(const void* w_row, int64_t b, const PreparedRows& x, __m256i codes, int64_t m,
                        int64_t blocks) {
    const __m256i packed = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const BlockQ4_0*>(w_row)[b].q)));
    const __m256i nibbles =
        _mm256_and_si256(_mm256_srlv_epi64(packed, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0f));
    const __m256i offsets = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q4_offsets + (m * blocks + b) * 8));
    return _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles, codes), offsets);
  }
  static uint16_t ScaleBits(const void* w_row, int64_t b) { return static_cast<const BlockQ4_0*>(w_row)[b].d; }
};

// acc[m] += blocks b and b + 1 of row m, each block's 8 lanes times its two scales.
template <int Rows, typename Blocks>
inline void AccumulatePair(const void* w_row, const PreparedRows& x, int64_t b, __m512* acc) {
  const int64_t blocks = x.k / kQuantBlock;
  const typename Blocks::Pair pair(w_row, b);
  // The two weight scales in one conversion, [s0, s1, 0, 0]; per row, times the activation
  // scales [d0, d1] and spread over the blocks' lanes (0-7: s0 d0, 8-15: s1 d1).
  const __m128 w_scales = _mm_cvtph_ps(
      _mm_cvtsi32_si128(static_cast<int>(Blocks::ScaleBits(w_row, b) | (uint32_t{Blocks::ScaleBits(w_row, b + 1)} << 16))));
  const __m512i lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int m = 0; m < Rows; ++m) {
    const __m512i codes = _mm512_loadu_si512(x.q + m * x.k + b * kQuantBlock);
    const __m128 x_scales = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x.d + m * blocks + b)));
    const __m512 scale = _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(_mm_mul_ps(w_scales, x_scales)));
    acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pair.Dot(x, codes, m, b)), scale, acc[m]);
  }
}

template <typename Blocks>
struct BlockKernel {
  template <int Rows>
  struct Kernel {
    static void Run(const void* w_row, const float*, int64_t, const PreparedRows& x, float* out) {
      constexpr int kChains = ChainsFor(Rows);
      const int64_t blocks = x.k / kQuantBlock;
      __m512 acc[kChains][Rows];
      for (int c = 0; c < kChains; ++c)
        for (int m = 0; m < Rows; ++m) acc[c][m] = _mm512_setzero_ps();
      int64_t b = 0;
      for (; b + 2 * kChains <= blocks; b += 2 * kChains)
        for (int c = 0; c < kChains; ++c) AccumulatePair<Rows, Blocks>(w_row, x, b + 2 * c, acc[c]);
      for (; b + 2 <= blocks; b += 2) AccumulatePair<Rows, Blocks>(w_row, x, b, acc[0]);
      for (int m = 0; m < Rows; ++m) {
        for (int c = 1; c < kChains; ++c) acc[0][m] = _mm512_add_ps(acc[0][m], acc[c][m]);
        float sum = _mm512_reduce_add_ps(acc[0][m]);
        if (b < blocks) {  // an odd block count's last block
          const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + m * x.k + b * kQuantBlock));
          const __m256i dot = Blocks::DotOne(w_row, b, x, codes, m, blocks);
          const float scale = _cvtsh_ss(Blocks::ScaleBits(w_row, b)) * x.d[m * blocks + b];
          sum += HorizontalSum(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale)));
        }
        out[m] = sum;
      }
    }
  };
};

template <int Rows>
using Q8Kernel = BlockKernel<Q8Blocks>::Kernel<Rows>;

// Q4_0 four blocks at a time (gemv.h, kQ4Quad): the 72 bytes of four blocks in two loads; one
// word permute gathers their 64 nibble bytes (a block's 16 start at word 9 i + 1), another their
// four f16 scales (words 0, 9, 18, 27). Half the instructions per block of the pair path, whose
// nibble unpacking and scale assembly kept this kernel bound by arithmetic where the others
// stream at memory speed.
struct Q4Quad {
  __m512i low, high;  // the four blocks' elements 0..15 and 16..31, as unsigned nibbles
  __m128 scales;
  explicit Q4Quad(const char* group) {
    alignas(64) static constexpr uint16_t kNibbleWords[32] = {1,  2,  3,  4,  5,  6,  7,  8,  10, 11, 12,
                                                              13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 24,
                                                              25, 26, 28, 29, 30, 31, 32, 33, 34, 35};
    alignas(64) static constexpr uint16_t kScaleWords[32] = {0, 9, 18, 27};
    const __m512i first = _mm512_loadu_si512(group);
    const __m512i last = _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(group + 64)));
    const __m512i nibbles = _mm512_permutex2var_epi16(first, _mm512_load_si512(kNibbleWords), last);
    const __m512i mask = _mm512_set1_epi8(0x0f);
    low = _mm512_and_si512(nibbles, mask);
    high = _mm512_and_si512(_mm512_srli_epi16(nibbles, 4), mask);
    scales = _mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutex2var_epi16(first, _mm512_load_si512(kScaleWords), last)));
  }
  // acc += the group's four blocks · row m's codes (group g), each block's 4 lanes times its scales.
  void Accumulate(const PreparedRows& x, int64_t m, int64_t g, __m512& acc) const {
    const int64_t blocks = x.k / kQuantBlock, quads = x.k / kQ4Quad;
    const int8_t* codes = x.quad_q + m * x.k + g * kQ4Quad;
    __m512i dot = _mm512_loadu_si512(x.quad_offsets + (m * quads + g) * 16);
    dot = _mm512_dpbusd_epi32(dot, low, _mm512_loadu_si512(codes));
    dot = _mm512_dpbusd_epi32(dot, high, _mm512_loadu_si512(codes + 64));
    const __m128 block_scales = _mm_mul_ps(scales, _mm_loadu_ps(x.d + m * blocks + 4 * g));
    const __m512i lanes = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(block_scales)),
                          acc);
  }
};

template <int Rows>
struct Q4QuadKernel {
  static void Run(const void* w_row, const float*, int64_t, const PreparedRows& x, float* out) {
    constexpr int kChains = ChainsFor(Rows);
    const char* w = static_cast<const char*>(w_row);
    const int64_t blocks = x.k / kQuantBlock, quads = x.k / kQ4Quad;
    constexpr int64_t kQuadBytes = 4 * sizeof(BlockQ4_0);
    __m512 acc[kChains][Rows];
    for (int c = 0; c < kChains; ++c)
      for (int m = 0; m < Rows; ++m) acc[c][m] = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + kChains <= quads; g += kChains)
      for (int c = 0; c < kChains; ++c) {
        const Q4Quad quad(w + (g + c) * kQuadBytes);
        for (int m = 0; m < Rows; ++m) quad.Accumulate(x, m, g + c, acc[c][m]);
      }
    for (; g < quads; ++g) {
      const Q4Quad quad(w + g * kQuadBytes);
      for (int m = 0; m < Rows; ++m) quad.Accumulate(x, m, g, acc[0][m]);
    }
    // The last blocks short of a group: a pair, then one.
    int64_t b = 4 * quads;
    if (b + 2 <= blocks) {
      AccumulatePair<Rows, Q4Blocks>(w_row, x, b, acc[0]);
      b += 2;
    }
    for (int m = 0; m < Rows; ++m) {
      for (int c = 1; c < kChains; ++c) acc[0][m] = _mm512_add_ps(acc[0][m], acc[c][m]);
      float sum = _mm512_reduce_add_ps(acc[0][m]);
      if (b < blocks) {
        const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + m * x.k + b * kQuantBlock));
        const __m256i dot = Q4Blocks::DotOne(w_row, b, x, codes, m, blocks);
        sum += HorizontalSum(_mm256_mul_ps(_mm256_cvtepi32_ps(dot),
                                  _mm256_set1_ps(_cvtsh_ss(Q4Blocks::ScaleBits(w_row, b)) * x.d[m * blocks + b])));
      }
      out[m] = sum;
    }
  }
};

// 16 floats rounded to bf16 as F32ToBf16 rounds them (to nearest even, NaN kept quiet).
__m256i RoundToBf16x16(__m512 v) {
  const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff), quiet = _mm512_set1_epi32(0x40);
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(half, lsb)), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(bits, 16), quiet);
  return _mm512_cvtepi32_epi16(r);
}

// A quantized block's 32 values, d * code, in two vectors (elements 0..15, 16..31): the same
// exact products DequantizeRowQ8_0 / Q4_0 compute (an 8-bit code times an f16 scale fits f32).
void BlockValues(const BlockQ8_0& b, __m512& lo, __m512& hi) {
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(b.d));
  const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.q));
  lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(codes))));
  hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(codes, 1))));
}
void BlockValues(const BlockQ4_0& b, __m512& lo, __m512& hi) {
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(b.d));
  const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.q)));
  const __m512i eight = _mm512_set1_epi32(8);
  lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(bytes, _mm512_set1_epi32(0xf)), eight)));
  hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(bytes, 4), eight)));
}

// 16 values stored as floats, or rounded to bf16.
void Store16(float* out, __m512 v) { _mm512_storeu_ps(out, v); }
void Store16(uint16_t* out, __m512 v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), RoundToBf16x16(v)); }

template <typename Block, typename Out>
void WidenBlocks(const void* row, int64_t n, Out* out) {
  const Block* blocks = static_cast<const Block*>(row);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    __m512 lo, hi;
    BlockValues(blocks[b], lo, hi);
    Store16(out + b * kQuantBlock, lo);
    Store16(out + b * kQuantBlock + 16, hi);
  }
}

}  // namespace

void RoundToBf16Avx512(const float* x, int64_t n, uint16_t* y) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), RoundToBf16x16(_mm512_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = F32ToBf16(x[i]);
}

void WidenRowAvx512(DType dtype, const void* row, int64_t n, float* out) {
  switch (dtype) {
    case DType::kQ8_0: return WidenBlocks<BlockQ8_0>(row, n, out);
    case DType::kQ4_0: return WidenBlocks<BlockQ4_0>(row, n, out);
    case DType::kBF16: {
      const uint16_t* w = static_cast<const uint16_t*>(row);
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
        _mm512_storeu_ps(out + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
      }
      for (; i < n; ++i) out[i] = Bf16Bits(w[i]);
      return;
    }
    default: return WidenRow(dtype, row, n, out);
  }
}

void WidenRowToBf16Avx512(DType dtype, const void* row, int64_t n, uint16_t* out) {
  switch (dtype) {
    case DType::kQ8_0: return WidenBlocks<BlockQ8_0>(row, n, out);
    case DType::kQ4_0: return WidenBlocks<BlockQ4_0>(row, n, out);
    default: break;
  }
  // Other formats through f32 a piece at a time (bf16 weights are multiplied where they lie).
  constexpr int64_t kPiece = 256;
  float piece[kPiece];
  for (int64_t i = 0; i < n; i += kPiece) {
    const int64_t len = n - i < kPiece ? n - i : kPiece;
    WidenRowAvx512(dtype, static_cast<const char*>(row) + RowBytes(dtype, i), len, piece);
    RoundToBf16Avx512(piece, len, out + i);
  }
}

DotRow PickDotRowAvx512(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return DispatchRows<Bf16Kernel>;
    case DType::kQ8_0: return DispatchRows<Q8Kernel>;
    case DType::kQ4_0: return DispatchRows<Q4QuadKernel>;
    default: return nullptr;
  }
}

bool Avx512ReadsQuads(DType dtype) { return dtype == DType::kQ4_0; }

}  // namespace ds

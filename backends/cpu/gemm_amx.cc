// A prompt's matmul on AMX tiles: y = x · wᵀ with bf16 products and f32 sums.
//
// A tile holds 16 rows of 64 bytes; TDPBF16PS adds to a 16 x 16 f32 tile C the products of a
// 16 x 32 bf16 tile A (rows as they lie in memory) and a tile B whose row p holds, for each of 16
// columns, the pair of bf16 values at depth 2p and 2p + 1. The weight rows are the A side: they
// load as they lie (bf16) or as Q8_0 / Q4_0 rows widened once per call, 32 rows at a time, into
// a buffer that stays in L2 while every activation row streams past. The activations are the B
// side: rounded to bf16 once per call and laid out in pairs (PackActivations). C then holds
// 16 weight rows x 16 activation rows, and is written to y transposed.
//
// One step of the kernel: two A tiles (32 weight rows), two B tiles (32 activation rows), four
// products into four C tiles (32 x 32 outputs): 64 K flops per 4 KB loaded.
//
// This file is compiled for AMX and AVX-512 (CMakeLists.txt) and runs only on CPUs that have
// them; like gemv_avx512.cc it uses no inline functions of other headers with external linkage.
#include "backends/cpu/gemm_amx.h"

#include <immintrin.h>

#include <cstring>
#include <vector>

#include "backends/cpu/gemv.h"

namespace ds {
namespace {

constexpr int64_t kTileRows = 16;
constexpr int64_t kTileDepth = 32;        // bf16 values in a row of an A tile
constexpr int64_t kSlab = 2 * kTileRows;  // weight rows per kernel step
constexpr int64_t kStrip = 2 * kTileRows; // activation rows per kernel step

// The tiles' shapes (LDTILECFG's 64-byte operand, palette 1): all eight 16 rows x 64 bytes.
// Tiles 0-3: C; 4, 5: A (weight rows 0-15, 16-31 of the slab); 6, 7: B (activation rows 0-15,
// 16-31 of the strip).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};
TileConfig AllTilesFull() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = kTileRows;
  }
  return config;
}

// x [M, K] f32 -> packed bf16 for the B tiles: block b holds activation rows 16 b .. 16 b + 15
// as K / 2 rows of 32 values, row p being (x[m, 2p], x[m, 2p + 1]) for its 16 m; rows from M to
// the padded count are zeros. The B tile of rows 16 b.. at depth k0 is then 16 consecutive
// 64-byte rows from packed + b * 16 K + 16 k0. One piece is one block's 32 depths.
void PackPiece(const float* x, int64_t x_stride, int64_t M, int64_t K, int64_t block, int64_t k0, uint16_t* packed) {
  uint32_t* tile = reinterpret_cast<uint32_t*>(packed + block * kTileRows * K + kTileRows * k0);
  // Pair j of a row goes to the tile's row j: 16 pairs, 64 bytes apart.
  const __m512i rows_apart = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi32(kTileRows));
  alignas(64) uint16_t rounded[kTileDepth];
  for (int64_t r = 0; r < kTileRows; ++r) {
    const int64_t m = block * kTileRows + r;
    __m512i pairs = _mm512_setzero_si512();
    if (m < M) {
      RoundToBf16Avx512(x + m * x_stride + k0, kTileDepth, rounded);
      pairs = _mm512_load_si512(rounded);
    }
    _mm512_i32scatter_epi32(tile + r, rows_apart, pairs, 4);
  }
}

// y rows s .. s + 31 (those below M), columns n0 .. n0 + valid_n - 1, from c [32 n][32 m].
void WriteTransposed(const float* c, int64_t s, int64_t M, int64_t n0, int64_t valid_n, const float* bias, float* y,
                     int64_t y_stride) {
  const __m512i column = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(kStrip));
  const __mmask16 low = valid_n >= 16 ? 0xffff : static_cast<__mmask16>((1u << valid_n) - 1);
  const __mmask16 high = valid_n >= 32 ? 0xffff : valid_n <= 16 ? 0 : static_cast<__mmask16>((1u << (valid_n - 16)) - 1);
  const __m512 bias_low = bias ? _mm512_maskz_loadu_ps(low, bias + n0) : _mm512_setzero_ps();
  const __m512 bias_high = bias ? _mm512_maskz_loadu_ps(high, bias + n0 + 16) : _mm512_setzero_ps();
  for (int64_t i = 0; i < kStrip && s + i < M; ++i) {
    float* out = y + (s + i) * y_stride + n0;
    const __m512 first = _mm512_i32gather_ps(column, c + i, 4);
    const __m512 second = _mm512_i32gather_ps(column, c + kTileRows * kStrip + i, 4);
    _mm512_mask_storeu_ps(out, low, _mm512_add_ps(first, bias_low));
    if (high) _mm512_mask_storeu_ps(out + 16, high, _mm512_add_ps(second, bias_high));
  }
}

// The 32 x Mp outputs of one slab of weight rows (a: 32 bf16 rows, lda values apart) against every
// strip of the packed activations.
void SlabTimesActivations(const uint16_t* a, int64_t lda, const uint16_t* packed, int64_t M, int64_t Mp, int64_t K,
                          int64_t n0, int64_t valid_n, const float* bias, float* y, int64_t y_stride) {
  alignas(64) float c[kSlab * kStrip];
  const int64_t a_bytes = lda * 2;
  for (int64_t s = 0; s < Mp; s += kStrip) {
    const uint16_t* b0 = packed + s * K;
    const uint16_t* b1 = packed + (s + kTileRows) * K;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t k = 0; k < K; k += kTileDepth) {
      _tile_loadd(4, a + k, a_bytes);
      _tile_loadd(5, a + kTileRows * lda + k, a_bytes);
      _tile_loadd(6, b0 + kTileRows * k, 64);
      _tile_loadd(7, b1 + kTileRows * k, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    // c[n][m]: C tiles 0, 1 hold weight rows 0-15 against activation rows 0-15, 16-31; 2, 3 rows 16-31.
    _tile_stored(0, c, kStrip * 4);
    _tile_stored(1, c + kTileRows, kStrip * 4);
    _tile_stored(2, c + kTileRows * kStrip, kStrip * 4);
    _tile_stored(3, c + kTileRows * kStrip + kTileRows, kStrip * 4);
    WriteTransposed(c, s, M, n0, valid_n, bias, y, y_stride);
  }
}

}  // namespace

void GemmAmxBf16(const float* x, int64_t x_stride, int64_t M, int64_t K, DType w_dtype, const void* w,
                 size_t row_bytes, int64_t N, const float* bias, float* y, int64_t y_stride) {
  const int64_t Mp = (M + kStrip - 1) / kStrip * kStrip;
  const int64_t blocks = Mp / kTileRows, depths = K / kTileDepth, slabs = (N + kSlab - 1) / kSlab;
  thread_local std::vector<uint16_t> packed_buffer;
  packed_buffer.resize(static_cast<size_t>(Mp * K) + 32);
  uint16_t* const packed = reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(packed_buffer.data()) + 63) / 64 * 64);
  const char* const weights = static_cast<const char*>(w);
  const bool in_place = w_dtype == DType::kBF16;
#pragma omp parallel
  {
    static const TileConfig config = AllTilesFull();
    _tile_loadconfig(&config);
#pragma omp for schedule(static)
    for (int64_t piece = 0; piece < blocks * depths; ++piece)
      PackPiece(x, x_stride, M, K, piece / depths, piece % depths * kTileDepth, packed);
    thread_local std::vector<uint16_t> slab_buffer;
    slab_buffer.resize(static_cast<size_t>(kSlab * K) + 32);
    uint16_t* const slab = reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(slab_buffer.data()) + 63) / 64 * 64);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < slabs; ++i) {
      const int64_t n0 = i * kSlab, valid_n = N - n0 < kSlab ? N - n0 : kSlab;
      const uint16_t* a = slab;
      int64_t lda = K;
      if (in_place && valid_n == kSlab) {
        a = reinterpret_cast<const uint16_t*>(weights + n0 * row_bytes);
        lda = static_cast<int64_t>(row_bytes / 2);
      } else {
        for (int64_t r = 0; r < valid_n; ++r) {
          const char* row = weights + (n0 + r) * row_bytes;
          if (w_dtype == DType::kBF16) {
            std::memcpy(slab + r * K, row, static_cast<size_t>(K) * 2);
          } else {
            WidenRowToBf16Avx512(w_dtype, row, K, slab + r * K);
          }
        }
        std::memset(slab + valid_n * K, 0, static_cast<size_t>((kSlab - valid_n) * K) * 2);
      }
      SlabTimesActivations(a, lda, packed, M, Mp, K, n0, valid_n, bias, y, y_stride);
    }
    _tile_release();
  }
}

}  // namespace ds

// The integer path of the packed kernels (packed.h, QActs) with AVX-512 VNNI, on the stored row-major
// codes: vpdpbusd multiplies 64 unsigned codes by 64 int8 activations into 16 int32 lanes.
//   U8: one 64-byte load per 64 columns.
//   U4: the 32 bytes of 64 columns are broadcast to both halves of a register; a variable 16-bit
//       shift (0 in the low half, 4 in the high half) and a mask leave the low nibbles (even
//       columns) in the low half and the high nibbles (odd columns) in the high half, the order
//       quantize_acts(nibble_order) gives the activations.
// Row tails load masked (no byte past the row is touched; the activations there are zero). Each
// block's int32 lanes are scaled by its activation scale into float lanes, those by the group's
// weight scale at the group's end, and reduced once per row; the zero and offset terms are scalars.
// Tiles: 4 rows x 4 tokens (prefill) or 4 rows x 1 token (decode); tokens are the outer loop so a
// work item's rows stay in cache while activations stream. Compiled with its own ISA flags.
#include <immintrin.h>

#include <algorithm>

#include "lowbit/kernels/packed.h"

namespace lowbit {

namespace {

bool supports_q8(const PackedMatrix& w) {
  return w.int_zero >= 0 && (w.group >= w.cols || (w.group > 0 && w.group % 64 == 0));
}

template <bool U4>
inline __m512i load_codes(const uint8_t* row, int64_t k, int64_t cols) {
  const int64_t left = cols - 64 * k;  // columns from this chunk to the end of the row
  if constexpr (U4) {
    const __m512i shifts = _mm512_set_epi64(0x0004000400040004ll, 0x0004000400040004ll, 0x0004000400040004ll,
                                            0x0004000400040004ll, 0, 0, 0, 0);
    const uint8_t* p = row + 32 * k;
    __m256i bytes;
    if (left >= 64) {
      bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    } else {
      const int64_t nb = (left + 1) / 2;
      bytes = _mm256_maskz_loadu_epi8(__mmask32((uint64_t(1) << nb) - 1), p);
    }
    const __m512i both = _mm512_broadcast_i64x4(bytes);
    return _mm512_and_si512(_mm512_srlv_epi16(both, shifts), _mm512_set1_epi8(0x0F));
  } else {
    const uint8_t* p = row + 64 * k;
    if (left >= 64) return _mm512_loadu_si512(p);
    return _mm512_maskz_loadu_epi8(left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1, p);
  }
}

template <bool U4, int R, int T>
void tile(const PackedMatrix& w, const QActs& a, int64_t r, size_t i, float* y, size_t ldy, int64_t r0,
          bool accumulate) {
  const int64_t G = a.group, groups = w.groups(), ag_n = a.groups;
  constexpr int64_t kBytes = U4 ? 32 : 64;  // bytes of one row per 64-column step
  const uint8_t* rows[R];
  for (int j = 0; j < R; ++j) rows[j] = w.data + size_t(r + j) * w.row_bytes;
  const int8_t* xs[T];
  const float* xscale[T];
  for (int t = 0; t < T; ++t) {
    xs[t] = a.q.data() + (i + size_t(t)) * size_t(a.stride);
    xscale[t] = a.scale.data() + (i + size_t(t)) * size_t(a.blocks);
  }
  __m512 facc[R][T];
  float corr[R][T];
  for (int j = 0; j < R; ++j)
    for (int t = 0; t < T; ++t) facc[j][t] = _mm512_setzero_ps(), corr[j][t] = 0;
  for (int64_t g = 0; g < ag_n; ++g) {
    const int64_t k0 = (g * G) / 64, k1 = (std::min((g + 1) * G, w.cols) + 63) / 64;
    __m512 gacc[R][T];  // Σ over the group's blocks of scale_k · (int32 lanes of the block)
    for (int j = 0; j < R; ++j)
      for (int t = 0; t < T; ++t) gacc[j][t] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k1; ++k) {
      __m512i wv[R];
      for (int j = 0; j < R; ++j) {
        // The next tile's rows (R rows further: rows are contiguous), at the same column: the
        // hardware prefetcher follows one stream per row poorly when R rows are read interleaved.
        if constexpr (T == 1) _mm_prefetch(reinterpret_cast<const char*>(rows[j] + kBytes * k + R * w.row_bytes), _MM_HINT_T0);
        wv[j] = load_codes<U4>(rows[j], k, w.cols);
      }
      for (int t = 0; t < T; ++t) {
        const __m512i xv = _mm512_loadu_si512(xs[t] + 64 * k);
        const __m512 sx = _mm512_set1_ps(xscale[t][k]);
        for (int j = 0; j < R; ++j) {
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[j], xv);
          gacc[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sx, gacc[j][t]);
        }
      }
    }
    for (int j = 0; j < R; ++j) {
      const size_t wg = size_t((r + j) * groups + g);
      const float s = w.scale[wg], off = w.offset ? w.offset[wg] : 0.0f;
      for (int t = 0; t < T; ++t) {
        const size_t agi = (i + size_t(t)) * size_t(ag_n) + size_t(g);
        facc[j][t] = _mm512_fmadd_ps(gacc[j][t], _mm512_set1_ps(s), facc[j][t]);
        corr[j][t] += -float(w.int_zero) * s * a.zsum[agi] + off * a.sum_x[agi];
      }
    }
  }
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < R; ++j) {
      const float v = _mm512_reduce_add_ps(facc[j][t]) + corr[j][t];
      float& o = y[(i + size_t(t)) * ldy + size_t(r + j - r0)];
      o = accumulate ? o + v : v;
    }
}

template <bool U4>
void matmul(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy, bool accumulate) {
  size_t i = 0;
  for (; i + 4 <= a.m; i += 4) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) tile<U4, 4, 4>(w, a, r, i, y, ldy, r0, accumulate);
    for (; r < r1; ++r) tile<U4, 1, 4>(w, a, r, i, y, ldy, r0, accumulate);
  }
  for (; i < a.m; ++i) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) tile<U4, 4, 1>(w, a, r, i, y, ldy, r0, accumulate);
    for (; r < r1; ++r) tile<U4, 1, 1>(w, a, r, i, y, ldy, r0, accumulate);
  }
}

void matmul_q8(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy, bool accumulate) {
  if (w.kind == PackedKind::U4) return matmul<true>(w, a, r0, r1, y, ldy, accumulate);
  matmul<false>(w, a, r0, r1, y, ldy, accumulate);
}

}  // namespace

const PackedKernels& packed_kernels_avx512vnni() {
  static const PackedKernels k = [] {
    PackedKernels v = packed_kernels_avx512();
    v.name = "avx512vnni";
    v.supports_q8 = supports_q8;
    v.matmul_q8 = matmul_q8;
    return v;
  }();
  return k;
}

}  // namespace lowbit

// The integer path of the packed kernels (packed.h, QActs) with AVX-512 VNNI, on the stored row-major
// codes: vpdpbusd multiplies 64 unsigned codes by 64 int8 activations into 16 int32 lanes.
//   U8: one 64-byte load per 64 columns.
//   U4: one 64-byte load per 128 columns; a mask leaves the low nibbles (the even columns), a
//       16-bit shift and the mask the high ones (the odd columns), and two vpdpbusd against the
//       chunk's even and odd activations (quantize_acts' nibble_order) leave the sums of the
//       chunk's first 64 columns in lanes 0-7 and of its last 64 in lanes 8-15, so each half gets
//       its own activation-block and weight-group scale. Three vector operations per 64 weights
//       besides the dot products (the broadcast of 32 bytes to both halves that this replaced
//       took six per 64).
// Row tails load masked (no byte past the row is touched; the activations there are zero). The
// int32 lanes are scaled into float lanes and reduced once per row; the zero and offset terms are
// scalars. Tiles: 4 rows x 4 tokens (prefill) or 4 rows x 1 token (decode), the next tile's bytes
// prefetched in address order; tokens are the outer loop so a work item's rows stay in cache while
// activations stream. Compiled with its own ISA flags.
#include "intrinsics.h"
#include "lanes_avx512.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lowbit/kernels/packed.h"

namespace lowbit {

namespace {

// Integer tables in either layout; code books in the lanes layout (wide activations).
bool supports_q8(const PackedMatrix& w) {
  return (w.int_zero >= 0 && (w.group >= w.cols || (w.group > 0 && w.group % 64 == 0))) || (w.lanes && is_code_book(w));
}

// A group's scale or offset, float32 or float16 (PackedMatrix).
inline float param_at(const float* f32, const uint16_t* f16, size_t i) { return f16 ? _cvtsh_ss(f16[i]) : f32[i]; }

inline __m512i load_u8(const uint8_t* row, int64_t k, int64_t cols) {
  const int64_t left = cols - 64 * k;  // columns from this chunk to the end of the row
  const uint8_t* p = row + 64 * k;
  if (left >= 64) return _mm512_loadu_si512(p);
  return _mm512_maskz_loadu_epi8((__mmask64(1) << left) - 1, p);
}

// The next tile (R rows further: rows are contiguous), `bytes` per step in address order, so that
// its R·row_bytes are in cache when it starts: the hardware prefetcher follows R rows read
// interleaved poorly, and DRAM serves one ascending stream best (+5 % decode over prefetching
// each row at its own column).
template <int R, int Hint>
inline void prefetch_next_tile(const uint8_t* tile, size_t row_bytes, int64_t step, int64_t bytes) {
  const char* next = reinterpret_cast<const char*>(tile + R * row_bytes) + step * bytes;
  for (int64_t line = 0; line < bytes; line += 64) _mm_prefetch(next + line, static_cast<decltype(_MM_HINT_T0)>(Hint));
}

template <int R, int T>
void tile_u8(const PackedMatrix& w, const QActs& a, int64_t r, size_t i, float* y, size_t ldy, int64_t r0,
          bool accumulate) {
  const int64_t G = a.group, groups = w.groups(), ag_n = a.groups;
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
        if constexpr (T == 1) _mm_prefetch(reinterpret_cast<const char*>(rows[j] + 64 * k + R * w.row_bytes), _MM_HINT_T0);
        wv[j] = load_u8(rows[j], k, w.cols);
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
      const float s = param_at(w.scale, w.scale_f16, wg), off = w.has_offset() ? param_at(w.offset, w.offset_f16, wg) : 0.0f;
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

// Σ over the groups of a row of the terms −z·s_g·zsum_g + offset_g·sum_x_g, 16 groups at a time
// (a scalar loop here took ~10 % of an int4 decode step at group 128).
inline float group_terms(const PackedMatrix& w, const QActs& a, int64_t r, size_t i) {
  const int64_t n = a.groups;
  const size_t w0 = size_t(r * w.groups());
  const float* zsum = a.zsum.data() + i * size_t(n);
  const float* sum_x = a.sum_x.data() + i * size_t(n);
  __m512 zs = _mm512_setzero_ps(), os = _mm512_setzero_ps();
  for (int64_t g = 0; g < n; g += 16) {
    const __mmask16 m = n - g >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - g)) - 1);
    zs = _mm512_fmadd_ps(params16(w.scale, w.scale_f16, w0 + size_t(g), m), _mm512_maskz_loadu_ps(m, zsum + g), zs);
    if (w.has_offset())
      os = _mm512_fmadd_ps(params16(w.offset, w.offset_f16, w0 + size_t(g), m), _mm512_maskz_loadu_ps(m, sum_x + g), os);
  }
  return -float(w.int_zero) * _mm512_reduce_add_ps(zs) + _mm512_reduce_add_ps(os);
}

template <int R, int T>
void tile_u4(const PackedMatrix& w, const QActs& a, int64_t r, size_t i, float* y, size_t ldy, int64_t r0,
             bool accumulate) {
  constexpr int64_t C = QActs::kChunk;
  const int64_t G = a.group, groups = w.groups(), chunks = (w.cols + C - 1) / C;
  const uint8_t* rows[R];
  size_t wg0[R];  // the row's first group
  for (int j = 0; j < R; ++j) {
    rows[j] = w.data + size_t(r + j) * w.row_bytes;
    wg0[j] = size_t(r + j) * size_t(groups);
  }
  const int8_t* xs[T];
  const float* xscale[T];
  for (int t = 0; t < T; ++t) {
    xs[t] = a.q.data() + (i + size_t(t)) * size_t(a.stride);
    xscale[t] = a.scale.data() + (i + size_t(t)) * size_t(a.blocks);  // padded to whole chunks
  }
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  constexpr __mmask16 kHigh = 0xFF00;  // lanes 8-15: the chunk's second 64 columns
  __m512 acc[R][T];
  for (int j = 0; j < R; ++j)
    for (int t = 0; t < T; ++t) acc[j][t] = _mm512_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    if constexpr (T == 1) prefetch_next_tile<R, _MM_HINT_T1>(rows[0], w.row_bytes, c, R * 64);
    const int64_t left = w.cols - C * c;
    const __mmask64 mask = left >= C ? ~__mmask64(0) : (__mmask64(1) << ((left + 1) / 2)) - 1;
    // Weight groups of the two halves (groups are whole 64-column blocks, or a whole row).
    const int64_t g0 = (C * c) / G, g1 = C * c + 64 < w.cols ? (C * c + 64) / G : g0;
    __m512i lo[R], hi[R];
    __m512 sw[R];
    for (int j = 0; j < R; ++j) {
      const __m512i v = _mm512_maskz_loadu_epi8(mask, rows[j] + 64 * c);
      lo[j] = _mm512_and_si512(v, low4);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      sw[j] = _mm512_set1_ps(param_at(w.scale, w.scale_f16, wg0[j] + size_t(g0)));
      if (g1 != g0) sw[j] = _mm512_mask_blend_ps(kHigh, sw[j], _mm512_set1_ps(param_at(w.scale, w.scale_f16, wg0[j] + size_t(g1))));
    }
    for (int t = 0; t < T; ++t) {
      const __m512i xe = _mm512_loadu_si512(xs[t] + C * c), xo = _mm512_loadu_si512(xs[t] + C * c + 64);
      const __m512 sx = _mm512_mask_blend_ps(kHigh, _mm512_set1_ps(xscale[t][2 * c]), _mm512_set1_ps(xscale[t][2 * c + 1]));
      for (int j = 0; j < R; ++j) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[j], xe), hi[j], xo);
        acc[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(sx, sw[j]), acc[j][t]);
      }
    }
  }
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < R; ++j) {
      const float v = _mm512_reduce_add_ps(acc[j][t]) + group_terms(w, a, r + j, i + size_t(t));
      float& o = y[(i + size_t(t)) * ldy + size_t(r + j - r0)];
      o = accumulate ? o + v : v;
    }
}

template <bool U4, int R, int T>
inline void tile(const PackedMatrix& w, const QActs& a, int64_t r, size_t i, float* y, size_t ldy, int64_t r0,
                 bool accumulate) {
  if constexpr (U4) {
    tile_u4<R, T>(w, a, r, i, y, ldy, r0, accumulate);
  } else {
    tile_u8<R, T>(w, a, r, i, y, ldy, r0, accumulate);
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

// One token's activations to int8 per 64-column block, as the reference (packed_ref.cpp) does it
// element for element (v = x·(127/absmax), then v ± 0.5 truncated, clamped to ±127), 16 lanes at a
// time; U4's nibble order is made at the int32 stage by gathering the even and the odd lanes.
// sum_x is summed in 16 lanes (the reference: one column after another).
void quantize_token(const float* x, int64_t cols, QActs& a, size_t i) {
  constexpr int64_t B = QActs::kBlock, C = QActs::kChunk;
  int8_t* q = a.q.data() + i * size_t(a.stride);
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __m512 gsum = _mm512_setzero_ps();
  for (int64_t k = 0; k * B < cols; ++k) {
    const int64_t c0 = k * B;
    __m512 v[4];
    const float absmax = load_block64(x + c0, std::min(B, cols - c0), v, gsum);
    const __m512 vinv = _mm512_set1_ps(absmax > 0 ? 127.0f / absmax : 0.0f);
    __m512i qi[4], qsum = _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) {
      qi[p] = round_away_clamped(v[p], vinv, 127);
      qsum = _mm512_add_epi32(qsum, qi[p]);
    }
    if (a.nibble_order) {  // even columns to the chunk's first half, odd ones to its second
      int8_t* base = q + (c0 / C) * C + ((c0 % C) / B) * (B / 2);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(base), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(qi[0], even, qi[1])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(base + 16), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(qi[2], even, qi[3])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(base + C / 2), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(qi[0], odd, qi[1])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(base + C / 2 + 16), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(qi[2], odd, qi[3])));
    } else {
      for (int p = 0; p < 4; ++p) _mm_storeu_si128(reinterpret_cast<__m128i*>(q + c0 + 16 * p), _mm512_cvtsepi32_epi8(qi[p]));
    }
    const float scale = absmax / 127.0f;
    a.scale[i * size_t(a.blocks) + size_t(k)] = scale;
    const size_t g = i * size_t(a.groups) + size_t(c0 / a.group);
    a.zsum[g] += scale * float(_mm512_reduce_add_epi32(qsum));
    if (c0 + B >= cols || (c0 + B) % a.group == 0) {  // the group ends with this block
      a.sum_x[g] = _mm512_reduce_add_ps(gsum);
      gsum = _mm512_setzero_ps();
    }
  }
}

void quantize_acts_vnni(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, bool nibble_order, QActs& a) {
  prepare_acts(m, cols, group, nibble_order, a);
  for (size_t i = 0; i < m; ++i) quantize_token(x + i * ldx, cols, a, i);
}

// ---- The lanes layout (PackedMatrix::lanes): 16 rows in the 16 lanes of a register. ----
// Per 64-byte unit: U8 holds 4 columns of 16 rows (one vpdpbusd against a broadcast of 4 activation
// bytes); U4 holds 8, its low nibbles columns 0-3 and its high ones 4-7 (two). Four accumulators
// keep the dot products' latency hidden. Activations are in natural order. Prefetching: see
// lanes_avx512.h.

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The int32 sums of 64 columns (activation block k) of the 16 rows whose units start at p;
// advances p past them.
template <bool U4>
inline __m512i lanes_dot64(const uint8_t*& p, const int8_t* xk) {
  __m512i d0 = _mm512_setzero_si512(), d1 = d0, d2 = d0, d3 = d0;
  for (int u = 0; u < 4; ++u, xk += 16) {  // 16 columns: two U4 units or four U8 ones
    for (int64_t line = 0; line < (U4 ? 128 : 256); line += 64) prefetch_stream(reinterpret_cast<const char*>(p) + line);
    if constexpr (U4) {
      const __m512i low4 = _mm512_set1_epi8(0x0F);
      const __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 64);
      d0 = _mm512_dpbusd_epi32(d0, _mm512_and_si512(v0, low4), broadcast4(xk));
      d1 = _mm512_dpbusd_epi32(d1, _mm512_and_si512(_mm512_srli_epi16(v0, 4), low4), broadcast4(xk + 4));
      d2 = _mm512_dpbusd_epi32(d2, _mm512_and_si512(v1, low4), broadcast4(xk + 8));
      d3 = _mm512_dpbusd_epi32(d3, _mm512_and_si512(_mm512_srli_epi16(v1, 4), low4), broadcast4(xk + 12));
      p += 128;
    } else {
      d0 = _mm512_dpbusd_epi32(d0, _mm512_loadu_si512(p), broadcast4(xk));
      d1 = _mm512_dpbusd_epi32(d1, _mm512_loadu_si512(p + 64), broadcast4(xk + 4));
      d2 = _mm512_dpbusd_epi32(d2, _mm512_loadu_si512(p + 128), broadcast4(xk + 8));
      d3 = _mm512_dpbusd_epi32(d3, _mm512_loadu_si512(p + 192), broadcast4(xk + 12));
      p += 256;
    }
  }
  return _mm512_add_epi32(_mm512_add_epi32(d0, d1), _mm512_add_epi32(d2, d3));
}

// How a lanes block's group parameters are read: any form, tested per group (U8, float32
// parameters), or one of the two int4 forms fixed at compile time: float16 scale and offset
// (asymmetric) or float16 scale and an integer zero (symmetric). The fixed forms leave the group's
// epilogue without branches or reloads of the matrix's fields; in a decode step's int4 matrices the
// generic form's epilogue streamed ~15 % slower (bench/NOTES.md, 14th session).
enum class LanesParams { kAny, kF16Offset, kF16Zero };

inline LanesParams lanes_params_of(const PackedMatrix& w) {
  if (w.kind == PackedKind::U4 && w.scale_f16) {
    if (w.int_zero == 0 && w.offset_f16 == w.scale_f16 + 16 && w.lanes_pstride == 32) return LanesParams::kF16Offset;
    if (w.int_zero != 0 && !w.has_offset()) return LanesParams::kF16Zero;
  }
  return LanesParams::kAny;
}

// The 16 rows of block b against token i: Σ over groups of s_g·Σ_k scale_k·dot_k − z·s_g·zsum_g
// + offset_g·sum_x_g, one row per lane.
template <bool U4, LanesParams P>
inline __m512 lanes_block(const PackedMatrix& w, const QActs& a, int64_t b, size_t i) {
  const int64_t G = a.group, groups = w.groups();
  const uint8_t* p = w.data + size_t(b * w.cols / w.unit_cols()) * 64;
  const int8_t* x = a.q.data() + i * size_t(a.stride);
  const float* xs = a.scale.data() + i * size_t(a.blocks);
  const float* zsum = a.zsum.data() + i * size_t(a.groups);
  const float* sum_x = a.sum_x.data() + i * size_t(a.groups);
  // The fixed forms' parameters of group 0 (no pointer arithmetic on the generic form's null f16).
  const uint16_t* par = P == LanesParams::kAny ? nullptr : w.scale_f16 + size_t(b * groups * w.lanes_pstride);
  const int64_t pstride = w.lanes_pstride;
  const __m512 neg_zero = _mm512_set1_ps(-float(w.int_zero));
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 gacc = _mm512_setzero_ps();
    const int64_t k1 = std::min((g + 1) * G, w.cols) / 64;
    for (int64_t k = g * G / 64; k < k1; ++k)
      gacc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes_dot64<U4>(p, x + 64 * k)), _mm512_set1_ps(xs[k]), gacc);
    if constexpr (P == LanesParams::kF16Offset) {  // offsets 16 after the scales (lanes_pstride 32)
      acc = _mm512_fmadd_ps(gacc, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(par))), acc);
      acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(par + 16))), _mm512_set1_ps(sum_x[g]), acc);
      par += pstride;
    } else if constexpr (P == LanesParams::kF16Zero) {
      const __m512 sw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(par)));
      acc = _mm512_fmadd_ps(gacc, sw, acc);
      acc = _mm512_fmadd_ps(sw, _mm512_mul_ps(neg_zero, _mm512_set1_ps(zsum[g])), acc);
      par += pstride;
    } else {
      const size_t pi = size_t((b * groups + g) * w.lanes_pstride);
      const __m512 sw = params16(w.scale, w.scale_f16, pi, 0xFFFF);
      acc = _mm512_fmadd_ps(gacc, sw, acc);
      if (w.int_zero != 0) acc = _mm512_fmadd_ps(sw, _mm512_set1_ps(-float(w.int_zero) * zsum[g]), acc);
      if (w.has_offset()) acc = _mm512_fmadd_ps(params16(w.offset, w.offset_f16, pi, 0xFFFF), _mm512_set1_ps(sum_x[g]), acc);
    }
  }
  return acc;
}

template <bool U4, LanesParams P>
void lanes_rows(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy, bool accumulate) {
  for (size_t i = 0; i < a.m; ++i)
    for (int64_t b = r0 / 16; b * 16 < r1; ++b)
      store_lanes(lanes_block<U4, P>(w, a, b, i), 16 * b, std::max(r0, 16 * b), std::min(r1, 16 * b + 16), r0, y + i * ldy, accumulate);
}

void matmul_lanes(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy, bool accumulate) {
  // Activations in another order: the reference, which reads any (QActs::at).
  if (a.nibble_order) return packed_kernels_ref().matmul_q8(w, a, r0, r1, y, ldy, accumulate);
  if (a.wide || is_code_book(w)) return matmul_lanes_wide(w, a, r0, r1, y, ldy, accumulate);
  prefetch_item_start(w, r0);
  if (w.kind != PackedKind::U4) return lanes_rows<false, LanesParams::kAny>(w, a, r0, r1, y, ldy, accumulate);
  switch (lanes_params_of(w)) {
    case LanesParams::kF16Offset: return lanes_rows<true, LanesParams::kF16Offset>(w, a, r0, r1, y, ldy, accumulate);
    case LanesParams::kF16Zero: return lanes_rows<true, LanesParams::kF16Zero>(w, a, r0, r1, y, ldy, accumulate);
    case LanesParams::kAny: return lanes_rows<true, LanesParams::kAny>(w, a, r0, r1, y, ldy, accumulate);
  }
}

// Columns of row r from c0 (U4: 128, U8: 64; fewer at the row's end) as float32 into out: the
// row's 4 bytes of 16 units gathered into one register; U4's nibbles split and interleaved back
// into column order (unpack within 128-bit lanes: lane q of the lo / hi unpack holds columns
// 32q..32q+15 / 32q+16..32q+31). Values as the reference rounds them: lut[code] (U4) or code − z
// (U8), ·scale, + offset.
inline int64_t lanes_chunk_cols(const PackedMatrix& w) { return 16 * w.unit_cols(); }
inline void lanes_chunk(const PackedMatrix& w, int64_t r, int64_t c0, float* out) {
  const int64_t uc = w.unit_cols(), units = w.cols / uc, G = std::min(w.group, w.cols);
  const int64_t left = std::min<int64_t>(16, units - c0 / uc);  // a multiple of 64 / uc
  const uint8_t* base = w.data + size_t(((r / 16) * units + c0 / uc) * 64 + (r % 16) * 4);
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(16));
  const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), __mmask16((1u << left) - 1), idx, base, 4);
  alignas(64) uint8_t ul[64], uh[64];
  const uint8_t* piece[8];  // 16 columns each, in column order
  if (w.kind == PackedKind::U4) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), low4);
    _mm512_store_si512(ul, _mm512_unpacklo_epi32(lo, hi));
    _mm512_store_si512(uh, _mm512_unpackhi_epi32(lo, hi));
    for (int n = 0; n < 8; ++n) piece[n] = (n % 2 == 0 ? ul : uh) + 16 * (n / 2);
  } else {
    _mm512_store_si512(ul, v);
    for (int n = 0; n < 4; ++n) piece[n] = ul + 16 * n;
  }
  const __m512i z = _mm512_set1_epi32(w.int_zero);
  const __m512 lut = _mm512_loadu_ps(w.lut);
  for (int64_t n = 0; n < left * uc / 16; ++n) {
    const int64_t c = c0 + 16 * n;
    const size_t pi = w.param_index(r, c / G);
    const __m512i codes = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(piece[n])));
    // U4: the table (lut[c] = c − z for integer ones, exactly); U8: code − zero.
    const __m512 f = w.kind == PackedKind::U4 ? _mm512_permutexvar_ps(codes, lut) : _mm512_cvtepi32_ps(_mm512_sub_epi32(codes, z));
    const __m512 off = _mm512_set1_ps(w.has_offset() ? param_at(w.offset, w.offset_f16, pi) : 0.0f);
    _mm512_storeu_ps(out + (c - c0), _mm512_add_ps(_mm512_mul_ps(f, _mm512_set1_ps(param_at(w.scale, w.scale_f16, pi))), off));
  }
}

void dequant_lanes(const PackedMatrix& w, int64_t r0, int64_t r1, float* out) {
  const int64_t step = lanes_chunk_cols(w);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c0 = 0; c0 < w.cols; c0 += step) lanes_chunk(w, r, c0, out + size_t((r - r0) * w.cols + c0));
}

// One token of float activations against the 16 rows of U4 block b (any table: NF4 / FP4 code
// books, or integer ones when the integer path is off): Σ_g s_g ⊙ Σ_{c∈g} lut[code_c]·x_c
// (+ offset_g·Σ_{c∈g} x_c), one row per lane. vpermps looks the table up for 16 rows at once, and
// reads only the low 4 bits of each lane, so a unit shifted by 4·k needs no mask: shifts 0, 8, 16,
// 24 are the unit's columns 0-3 (low nibbles), 4, 12, 20, 28 its columns 4-7. One stream per
// block, prefetched as the integer kernel's.
inline __m512 lanes_block_f32(const PackedMatrix& w, int64_t b, const float* x, const float* group_sums) {
  const int64_t units = w.cols / 8, G = std::min(w.group, w.cols), groups = w.groups();
  const __m512 lut = _mm512_loadu_ps(w.lut);
  const uint8_t* p = w.data + size_t(b * units) * 64;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const int64_t u1 = std::min((g + 1) * G, w.cols) / 8;
    for (int64_t u = g * G / 8; u < u1; ++u, p += 64) {
      prefetch_stream(reinterpret_cast<const char*>(p));
      const __m512i v = _mm512_loadu_si512(p);
      const float* xc = x + 8 * u;
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, lut), _mm512_set1_ps(xc[0]), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 8), lut), _mm512_set1_ps(xc[1]), a1);
      a2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 16), lut), _mm512_set1_ps(xc[2]), a2);
      a3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 24), lut), _mm512_set1_ps(xc[3]), a3);
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut), _mm512_set1_ps(xc[4]), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 12), lut), _mm512_set1_ps(xc[5]), a1);
      a2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 20), lut), _mm512_set1_ps(xc[6]), a2);
      a3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 28), lut), _mm512_set1_ps(xc[7]), a3);
    }
    const size_t pi = size_t((b * groups + g) * w.lanes_pstride);
    acc = _mm512_fmadd_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), params16(w.scale, w.scale_f16, pi, 0xFFFF), acc);
    if (w.has_offset()) acc = _mm512_fmadd_ps(params16(w.offset, w.offset_f16, pi, 0xFFFF), _mm512_set1_ps(group_sums[g]), acc);
  }
  return acc;
}

// Float activations (few tokens, or a caller that asks). A single U4 token: lanes_block_f32 per
// block. Otherwise each row dequantized a chunk at a time and multiplied by up to 8 tokens while
// the chunk is in registers' reach.
void matvec_lanes(const PackedMatrix& w, const float* x, size_t m, size_t ldx, int64_t r0, int64_t r1, float* y,
                  size_t ldy, bool accumulate) {
  if (m == 1 && w.kind == PackedKind::U4) {
    const int64_t G = std::min(w.group, w.cols), groups = w.groups();
    thread_local std::vector<float> sums;  // Σ x over each group (offsets only; kept: no allocation per call)
    sums.assign(w.has_offset() ? size_t(groups) : 0, 0.0f);
    for (size_t g = 0; g < sums.size(); ++g)
      for (int64_t c = int64_t(g) * G; c < std::min(int64_t(g + 1) * G, w.cols); ++c) sums[g] += x[c];
    prefetch_item_start(w, r0);
    for (int64_t b = r0 / 16; b * 16 < r1; ++b)
      store_lanes(lanes_block_f32(w, b, x, sums.data()), 16 * b, std::max(r0, 16 * b), std::min(r1, 16 * b + 16), r0, y, accumulate);
    return;
  }
  alignas(64) float chunk[128];
  for (size_t i0 = 0; i0 < m; i0 += 8) {
    const size_t n = std::min<size_t>(8, m - i0);
    for (int64_t r = r0; r < r1; ++r) {
      __m512 acc[8];
      for (size_t t = 0; t < n; ++t) acc[t] = _mm512_setzero_ps();
      for (int64_t c0 = 0; c0 < w.cols; c0 += lanes_chunk_cols(w)) {
        lanes_chunk(w, r, c0, chunk);
        const int64_t len = std::min<int64_t>(lanes_chunk_cols(w), w.cols - c0);
        for (int64_t c = 0; c < len; c += 16)
          for (size_t t = 0; t < n; ++t)
            acc[t] = _mm512_fmadd_ps(_mm512_load_ps(chunk + c), _mm512_loadu_ps(x + (i0 + t) * ldx + size_t(c0 + c)), acc[t]);
      }
      for (size_t t = 0; t < n; ++t) {
        float& o = y[(i0 + t) * ldy + size_t(r - r0)];
        const float v = _mm512_reduce_add_ps(acc[t]);
        o = accumulate ? o + v : v;
      }
    }
  }
}

void matmul_q8(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy, bool accumulate) {
  if (w.lanes) return matmul_lanes(w, a, r0, r1, y, ldy, accumulate);
  if (w.kind == PackedKind::U4) return matmul<true>(w, a, r0, r1, y, ldy, accumulate);
  matmul<false>(w, a, r0, r1, y, ldy, accumulate);
}

bool vnni_supports(const PackedMatrix& w) { return w.lanes || packed_kernels_avx512().supports(w); }

void vnni_matvec(const PackedMatrix& w, const float* x, size_t m, size_t ldx, int64_t r0, int64_t r1, float* y,
                 size_t ldy, bool accumulate) {
  if (w.lanes) return matvec_lanes(w, x, m, ldx, r0, r1, y, ldy, accumulate);
  packed_kernels_avx512().matvec(w, x, m, ldx, r0, r1, y, ldy, accumulate);
}

void vnni_dequant(const PackedMatrix& w, int64_t r0, int64_t r1, float* out) {
  if (w.lanes) return dequant_lanes(w, r0, r1, out);
  packed_kernels_avx512().dequant(w, r0, r1, out);
}

}  // namespace

const PackedKernels& packed_kernels_avx512vnni() {
  static const PackedKernels k = [] {
    PackedKernels v = packed_kernels_avx512();
    v.name = "avx512vnni";
    v.supports = vnni_supports;
    v.matvec = vnni_matvec;
    v.dequant = vnni_dequant;
    v.takes_lanes = true;
    v.supports_q8 = supports_q8;
    v.matmul_q8 = matmul_q8;
    v.quantize_acts = quantize_acts_vnni;
    v.quantize_acts_wide = quantize_acts_wide_avx512;
    return v;
  }();
  return k;
}

}  // namespace lowbit

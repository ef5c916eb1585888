// U4 code books (NF4, FP4: tables no integer reproduces) in the lanes layout against int16
// activations (QActs::wide), for one token at a time (decode). The float kernel this replaces
// (lanes_block_f32: per 64-byte unit 8 vpermps table look-ups of 16 rows, 7 shifts, 8 FMAs in four
// chains) was compute-bound at 25 GB/s per core with its matrix in cache. Here the table is int16 in
// a register, entries 16-31 repeating 0-15, and vpermw looks up 32 codes at once, reading each
// 16-bit half's low 5 bits, so a half shifted right by 0, 4, 8 or 12 needs no mask: per unit 3
// shifts, 4 look-ups and 4 vpdpwssd (each multiplies a lane's two looked-up codes by a broadcast
// pair of activations, QActs' pair order). A scratch harness: 37 GB/s per core in cache, 34 from
// memory (the float kernel: 25 / 21). Compiled with its own ISA flags (AVX-512 BW for vpermw, VNNI
// for vpdpwssd), apart from packed_q8_avx512vnni.cpp, whose int4 loop is sensitive to its layout.
#include <cstring>

#include "lanes_avx512.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {

inline __m512i broadcast_pair(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The 16 rows of block b against token i (see QActs: Σ_g s_g·Σ_k (scale_k·f)·(int32 sum of block k)
// + offset_g·sum_x_g), one row per lane.
inline __m512 wide_block(const PackedMatrix& w, const QActs& a, int64_t b, size_t i, __m512i table, float f) {
  const int64_t G = a.group, groups = w.groups();
  const uint8_t* p = w.data + size_t(b * (w.cols / 8)) * 64;
  const int16_t* x = a.q16.data() + i * size_t(a.stride);
  const float* xs = a.scale.data() + i * size_t(a.blocks);
  const float* sum_x = a.sum_x.data() + i * size_t(a.groups);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 gacc = _mm512_setzero_ps();
    const int64_t k1 = std::min((g + 1) * G, w.cols) / 64;
    for (int64_t k = g * G / 64; k < k1; ++k) {
      __m512i d0 = _mm512_setzero_si512(), d1 = d0, d2 = d0, d3 = d0;
      const int16_t* xk = x + 64 * k;
      for (int u = 0; u < 8; ++u, p += 64, xk += 8) {
        prefetch_stream(reinterpret_cast<const char*>(p));
        const __m512i v = _mm512_loadu_si512(p);
        d0 = _mm512_dpwssd_epi32(d0, _mm512_permutexvar_epi16(v, table), broadcast_pair(xk));
        d1 = _mm512_dpwssd_epi32(d1, _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), table), broadcast_pair(xk + 2));
        d2 = _mm512_dpwssd_epi32(d2, _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 8), table), broadcast_pair(xk + 4));
        d3 = _mm512_dpwssd_epi32(d3, _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 12), table), broadcast_pair(xk + 6));
      }
      const __m512i s = _mm512_add_epi32(_mm512_add_epi32(d0, d1), _mm512_add_epi32(d2, d3));
      gacc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(xs[k] * f), gacc);
    }
    const size_t pi = size_t((b * groups + g) * w.lanes_pstride);
    acc = _mm512_fmadd_ps(gacc, params16(w.scale, w.scale_f16, pi, 0xFFFF), acc);
    if (w.has_offset()) acc = _mm512_fmadd_ps(params16(w.offset, w.offset_f16, pi, 0xFFFF), _mm512_set1_ps(sum_x[g]), acc);
  }
  return acc;
}

}  // namespace

void matmul_lanes_wide(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy, bool accumulate) {
  if (!a.wide || !is_code_book(w) || !w.lanes)
    fail("matmul_q8: wide activations need a U4 code book in the lanes layout ({} activations, {} matrix)",
         a.wide ? "wide" : "int8", packed_kind_name(w.kind));
  // The table as int16 (the reference's rounding), kept while the code book stays the same.
  thread_local float last[16] = {};
  alignas(64) thread_local int16_t lut[32] = {};
  thread_local float f = 0;
  thread_local bool have = false;
  if (!have || std::memcmp(last, w.lut, sizeof last) != 0) {
    f = code_book_i16(w, lut);
    std::memcpy(lut + 16, lut, 16 * sizeof(int16_t));
    std::memcpy(last, w.lut, sizeof last);
    have = true;
  }
  const __m512i table = _mm512_load_si512(lut);
  prefetch_item_start(w, r0);
  for (size_t i = 0; i < a.m; ++i)
    for (int64_t b = r0 / 16; b * 16 < r1; ++b)
      store_lanes(wide_block(w, a, b, i, table, f), 16 * b, std::max(r0, 16 * b), std::min(r1, 16 * b + 16), r0,
                  y + i * ldy, accumulate);
}

// As the reference: per block of 64 columns absmax / 4095, x·(4095 / absmax) rounded half away from
// zero (± 0.5 with the value's sign, truncated), clamped; stored in pair order.
void quantize_acts_wide_avx512(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, QActs& a) {
  constexpr int64_t B = QActs::kBlock;
  prepare_acts_wide(m, cols, group, a);
  const __m512i pairs = _mm512_set_epi32(15, 13, 11, 9, 14, 12, 10, 8, 7, 5, 3, 1, 6, 4, 2, 0);  // 0 2 4 6 1 3 5 7 per 8
  for (size_t i = 0; i < m; ++i) {
    const float* xi = x + i * ldx;
    int16_t* q = a.q16.data() + i * size_t(a.stride);
    __m512 gsum = _mm512_setzero_ps();
    for (int64_t k = 0; k * B < cols; ++k) {
      const int64_t c0 = k * B;
      __m512 v[4];
      const float absmax = load_block64(xi + c0, std::min(B, cols - c0), v, gsum);
      const __m512 inv = _mm512_set1_ps(absmax > 0 ? float(QActs::kWideMax) / absmax : 0.0f);
      for (int p = 0; p < 4; ++p) {
        const __m512i r = round_away_clamped(v[p], inv, QActs::kWideMax);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + c0 + 16 * p), _mm512_cvtepi32_epi16(_mm512_permutexvar_epi32(pairs, r)));
      }
      a.scale[i * size_t(a.blocks) + size_t(k)] = absmax / float(QActs::kWideMax);
      if (c0 + B >= cols || (c0 + B) % a.group == 0) {  // the group ends with this block
        a.sum_x[i * size_t(a.groups) + size_t(c0 / a.group)] = _mm512_reduce_add_ps(gsum);
        gsum = _mm512_setzero_ps();
      }
    }
  }
}

}  // namespace lowbit

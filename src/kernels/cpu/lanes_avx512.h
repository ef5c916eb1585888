#pragma once
// Pieces the AVX-512 kernels on the lanes layout (PackedMatrix::lanes: 16 rows in the 16 lanes of a
// register) share: packed_q8_avx512vnni.cpp (int8 activations) and packed_wide_avx512vnni.cpp (int16
// activations for code books). Included by files compiled with at least -mavx512f -mavx512bw
// -mf16c; internal linkage, so each file keeps its own copy.
#include "intrinsics.h"

#include <algorithm>
#include <cstdint>

#include "lowbit/kernels/packed.h"

namespace lowbit {
namespace {

// A group's 16 scales or offsets from i (masked), float32 or float16 (PackedMatrix), as float32 lanes.
inline __m512 params16(const float* f32, const uint16_t* f16, size_t i, __mmask16 m) {
  return f16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, f16 + i)) : _mm512_maskz_loadu_ps(m, f32 + i);
}

// The activations of block c0.. (n ≤ 64 of them; the rest of the 64 lanes zero) into v[4], added to
// gsum; returns their largest magnitude. (The int8 and the wide quantizers.)
inline float load_block64(const float* x, int64_t n, __m512 v[4], __m512& gsum) {
  __m512 amax = _mm512_setzero_ps();
  for (int p = 0; p < 4; ++p) {
    const int64_t left = std::clamp<int64_t>(n - 16 * p, 0, 16);
    v[p] = _mm512_maskz_loadu_ps(__mmask16((1u << left) - 1), x + 16 * p);
    gsum = _mm512_add_ps(gsum, v[p]);
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v[p]));
  }
  return _mm512_reduce_max_ps(amax);
}

// v·inv rounded half away from zero (± 0.5 with the sign of v·inv, truncated), clamped to ±limit:
// the references' rounding.
inline __m512i round_away_clamped(__m512 v, __m512 inv, int limit) {
  const __m512 s = _mm512_mul_ps(v, inv);
  const __m512i sign = _mm512_set1_epi32(int(0x80000000u)), half = _mm512_castps_si512(_mm512_set1_ps(0.5f));
  const __m512 pm_half = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(s), sign), half));
  const __m512i r = _mm512_cvttps_epi32(_mm512_add_ps(s, pm_half));
  return _mm512_min_epi32(_mm512_max_epi32(r, _mm512_set1_epi32(-limit)), _mm512_set1_epi32(limit));
}

// Prefetch: each line into L2 4 KB ahead, and, when that line starts a 4 KB page, the first line of
// the page 12 KB ahead too: the hardware's L2 stream prefetcher stops at 4 KB page boundaries (on
// 2 MB pages too) and restarts only after misses in the new page; touching each page early keeps it
// streaming. Interleaved A/B of a decode step's 89 matrices against a read pass in one process
// (bench/NOTES.md, 11th session): per-line prefetch alone (NTA or T1, 4-8 KB) streamed at 57-74 %
// of the read, with the page touch 76-82 % (a plain sum through the same work items: 84-93 %).
// Prefetches go into L1 (T0): against a copy of this kernel in the same process (14th session), T1
// stalled on the prefetch instructions themselves in some code layouts (2/3 of the samples on one
// prefetcht1; 46 % of the read against 82 % for the same loop laid out otherwise), T0 did not in any
// (81-87 %). The int4 loop is that sensitive to how the compiler lays this file out: keeping T1 for U8
// alone (a template on the hint) took the library's int4 kernel from 0.97 to 0.83 of the copy; check
// any change here with that harness (bench/NOTES.md).
constexpr int64_t kLanesAhead = 4096, kPageAhead = 12288;

inline void prefetch_stream(const char* line) {
  _mm_prefetch(line + kLanesAhead, _MM_HINT_T0);
  touch_page_ahead(line + kLanesAhead, kPageAhead - kLanesAhead);
}

// Lanes [lo, hi) of v (rows 16b + lane) into y[(row - r0)] (= or +=).
inline void store_lanes(__m512 v, int64_t base, int64_t lo, int64_t hi, int64_t r0, float* y, bool accumulate) {
  if (lo == base && hi == base + 16) {
    float* o = y + (base - r0);
    _mm512_storeu_ps(o, accumulate ? _mm512_add_ps(_mm512_loadu_ps(o), v) : v);
    return;
  }
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  for (int64_t r = lo; r < hi; ++r) y[r - r0] = accumulate ? y[r - r0] + t[r - base] : t[r - base];
}

// The first bytes of the stream of the block holding row r0, which no earlier step prefetched (a
// work item starts a new stream), and its pages up to kPageAhead.
inline void prefetch_item_start(const PackedMatrix& w, int64_t r0) {
  const char* first = reinterpret_cast<const char*>(w.data + size_t((r0 / 16) * (w.cols / w.unit_cols())) * 64);
  for (int64_t line = 0; line < kLanesAhead; line += 64) _mm_prefetch(first + line, _MM_HINT_T0);
  const char* page = first - (reinterpret_cast<uintptr_t>(first) & 4095);
  for (int64_t at = 4096; at < kPageAhead; at += 4096) _mm_prefetch(page + at, _MM_HINT_T1);
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
// packed_wide_avx512vnni.cpp: the wide form (QActs::wide) for U4 code books in the lanes layout,
// for the VNNI variant's matmul_q8 and quantize_acts_wide.
void matmul_lanes_wide(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy, bool accumulate);
void quantize_acts_wide_avx512(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, QActs& a);
}  // namespace lowbit

// attention.h's decode attention with AVX-512, over a KV head's cache (float or f16 elements).
// Scores: a block's 16 keys are stored dimension-major, so the 16 scores of a query head are 16-wide
// FMAs of the head's broadcast values against the block's rows (no horizontal sums), each key row
// loaded (and converted from f16) once for all heads of the pass; 8 accumulators per block (8 heads,
// or fewer heads with their dimensions split into independent chains).
// Softmax: exp on 16 scores at a time (exp_le0). Values: each value row loaded once and added into
// the heads' sums, held in registers for head sizes 16/32/64/128.
// Each stream asks for its lines 16 KB (keys) / 8 KB (values) ahead of its loads, one prefetch per
// line, as the loop reaches it: the loop alone left the hardware prefetcher too little lead, and a
// head's time from memory was ~ its time from cache plus its bytes at the stream rate (one after the
// other). A head of 576 positions (hd 64, f16) from memory: 8 query heads 10.8-11.5 -> 10.2-10.6 µs,
// 4 query heads 7.6 -> 6.3-6.9 (cached: 7.4 / 3.8). Nearer prefetches (2-4 KB ahead) gained less; all
// of a head's lines asked for at once (at its start) made it slower, as did the earlier row-major
// kernel's block-ahead prefetches (bench/NOTES.md). The prefetches stop at the head's last position.
#include "exp_avx512.h"
#include "intrinsics.h"

#include <algorithm>
#include <cmath>

#include "lowbit/kernels/attention.h"

namespace lowbit {

namespace {

constexpr size_t kKeysAhead = 16384, kValuesAhead = 8192;  // bytes

inline __mmask16 tail_mask(int left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Scores of H query heads (q: H heads of hd values) for key blocks [b0, b1): s[h * sl + (p - 16·b0)]
// = scale · q_h·k_p for the visible positions p in [lo, end) (the others are not written).
template <int H, class T>
void scores_pass(const float* q, int hd, const T* k, int b0, int b1, int lo, int end, float scale, float* s,
                 size_t sl) {
  constexpr int C = 8 / H;  // independent chains per head
  const __m512 vscale = _mm512_set1_ps(scale);
  const char* const stop = reinterpret_cast<const char*>(k + size_t(b1) * size_t(kKVBlock) * size_t(hd));
  for (int b = b0; b < b1; ++b) {
    const T* blk = k + size_t(b) * size_t(kKVBlock) * size_t(hd);
    __m512 acc[8];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int d = 0; d < hd; d += C) {
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const T* row = blk + size_t(d + c) * kKVBlock;
        const __m512 kd = load16(row);
        if ((size_t(d + c) * kKVBlock * sizeof(T)) % 64 == 0) {  // (a new line)
          const uintptr_t ahead = reinterpret_cast<uintptr_t>(row) + kKeysAhead;
          if (ahead < reinterpret_cast<uintptr_t>(stop)) _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
        }
#pragma GCC unroll 8
        for (int h = 0; h < H; ++h)
          acc[h * C + c] = _mm512_fmadd_ps(_mm512_set1_ps(q[size_t(h) * size_t(hd) + size_t(d + c)]), kd, acc[h * C + c]);
      }
    }
    const int p0 = b * kKVBlock, first = std::max(lo, p0) - p0, last = std::min(end, p0 + kKVBlock) - p0;
    const __mmask16 m = __mmask16(((1u << last) - 1) & ~((1u << first) - 1));
#pragma GCC unroll 8
    for (int h = 0; h < H; ++h) {
      __m512 r = acc[h * C];
      for (int c = 1; c < C; ++c) r = _mm512_add_ps(r, acc[h * C + c]);
      _mm512_mask_storeu_ps(s + size_t(h) * sl + size_t(p0 - b0 * kKVBlock), m, _mm512_mul_ps(r, vscale));
    }
  }
}

// out[h] = Σ_j p[h][j]·v_{lo+j} for heads [0, hcount) (hcount <= HC) with NV registers per head
// (hd = 16·NV), the sums in registers (each value row loaded once per HC heads); p[h] at p + h*sl.
template <int NV, int HC, class T>
void weighted_values(const float* p, size_t sl, int lo, int len, const T* v, int hcount, float* out) {
  __m512 acc[HC][NV];
  for (int h = 0; h < HC; ++h)
    for (int d = 0; d < NV; ++d) acc[h][d] = _mm512_setzero_ps();
  constexpr size_t row_bytes = 16 * NV * sizeof(T);
  constexpr int ahead = int(kValuesAhead / row_bytes);
  for (int j = 0; j < len; ++j) {
    const T* vj = v + size_t(lo + j) * size_t(16 * NV);
    if (j + ahead < len)
      for (size_t o = 0; o < row_bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(vj) + ahead * row_bytes + o, _MM_HINT_T0);
    __m512 vd[NV];
    for (int d = 0; d < NV; ++d) vd[d] = load16(vj + 16 * d);
    for (int h = 0; h < HC; ++h) {
      if (h >= hcount) break;
      const __m512 ph = _mm512_set1_ps(p[size_t(h) * sl + size_t(j)]);
      for (int d = 0; d < NV; ++d) acc[h][d] = _mm512_fmadd_ps(ph, vd[d], acc[h][d]);
    }
  }
  for (int h = 0; h < std::min(HC, hcount); ++h)
    for (int d = 0; d < NV; ++d) _mm512_storeu_ps(out + size_t(h) * size_t(16 * NV) + size_t(16 * d), acc[h][d]);
}

template <int NV, class T>
void all_values(const float* p, size_t sl, int g, int lo, int len, const T* v, float* out) {
  constexpr int HC = 16 / NV;  // 16 accumulators
  for (int h = 0; h < g; h += HC)
    weighted_values<NV, HC>(p + size_t(h) * sl, sl, lo, len, v, g - h, out + size_t(h) * size_t(16 * NV));
}

}  // namespace

template <class T>
void attend_avx512(const float* q, int g, int hd, const T* k, const T* v, int lo, int len, float scale,
                   float* scores, float* out) {
  const int end = lo + len, b0 = lo / kKVBlock, b1 = (end + kKVBlock - 1) / kKVBlock;
  const size_t sl = size_t(b1 - b0) * kKVBlock;  // <= len + 30: attend_scratch's row
  for (int h = 0; h < g;) {
    const float* qh = q + size_t(h) * size_t(hd);
    float* sh = scores + size_t(h) * sl;
    const int rest = g - h;
    if (rest >= 8) {
      scores_pass<8>(qh, hd, k, b0, b1, lo, end, scale, sh, sl);
      h += 8;
    } else if (rest >= 4) {
      scores_pass<4>(qh, hd, k, b0, b1, lo, end, scale, sh, sl);
      h += 4;
    } else if (rest >= 2) {
      scores_pass<2>(qh, hd, k, b0, b1, lo, end, scale, sh, sl);
      h += 2;
    } else {
      scores_pass<1>(qh, hd, k, b0, b1, lo, end, scale, sh, sl);
      h += 1;
    }
  }
  // Softmax per head over its len visible scores, 16 at a time.
  float* const visible = scores + size_t(lo - b0 * kKVBlock);
  for (int h = 0; h < g; ++h) {
    float* s = visible + size_t(h) * sl;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < len; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask(len - j), s + j));
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < len; j += 16) {
      const __mmask16 t = tail_mask(len - j);
      const __m512 e = exp_le0(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, s + j), m));
      sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(t, e));
      _mm512_mask_storeu_ps(s + j, t, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int j = 0; j < len; j += 16) {
      const __mmask16 t = tail_mask(len - j);
      _mm512_mask_storeu_ps(s + j, t, _mm512_mul_ps(_mm512_maskz_loadu_ps(t, s + j), inv));
    }
  }
  // Values: sums in registers for the usual head sizes, through memory (L1) for the others.
  switch (hd) {
    case 16: return all_values<1>(visible, sl, g, lo, len, v, out);
    case 32: return all_values<2>(visible, sl, g, lo, len, v, out);
    case 64: return all_values<4>(visible, sl, g, lo, len, v, out);
    case 128: return all_values<8>(visible, sl, g, lo, len, v, out);
    default: break;
  }
  for (int i = 0; i < g * hd; i += 16) _mm512_storeu_ps(out + i, _mm512_setzero_ps());
  for (int j = 0; j < len; ++j) {
    const T* vj = v + size_t(lo + j) * size_t(hd);
    for (int d = 0; d < hd; d += 16) {
      const __m512 vd = load16(vj + d);
      for (int h = 0; h < g; ++h) {
        float* o = out + size_t(h) * size_t(hd) + size_t(d);
        _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_set1_ps(visible[size_t(h) * sl + size_t(j)]), vd, _mm512_loadu_ps(o)));
      }
    }
  }
}

template void attend_avx512<float>(const float*, int, int, const float*, const float*, int, int, float, float*,
                                   float*);
template void attend_avx512<uint16_t>(const float*, int, int, const uint16_t*, const uint16_t*, int, int, float,
                                      float*, float*);

}  // namespace lowbit

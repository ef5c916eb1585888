// activation.h's SiLU(gate) · up on 16 lanes: e^-|g| (<= 1, so exp_le0's range) gives both signs
// without overflow: SiLU(g) = g / (1 + e^-g) = g·t / (1 + t) for g < 0 with t = e^g = e^-|g|, and
// g / (1 + t) for g >= 0 with t = e^-g = e^-|g|. And RMSNorm on 8 double / 16 float lanes.
#include <cmath>

#include "exp_avx512.h"

#include "lowbit/kernels/activation.h"

namespace lowbit {

void silu_mul_avx512(const float* gate, const float* up, float* out, size_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (size_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + j), u = _mm512_maskz_loadu_ps(m, up + j);
    const __m512 t = exp_le0(_mm512_or_ps(g, sign));  // e^-|g|
    const __mmask16 negative = _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 num = _mm512_mask_mul_ps(g, negative, g, t);  // g, or g·t where g < 0
    _mm512_mask_storeu_ps(out + j, m, _mm512_mul_ps(_mm512_div_ps(num, _mm512_add_ps(one, t)), u));
  }
}

void rms_norm_avx512(const float* x, const float* weight, float* out, int n, float eps) {
  // Lane j of `part` is the reference's part[j]: elements i + j for i = 0, 8, 16, ... in order.
  __m512d part = _mm512_setzero_pd();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    part = _mm512_fmadd_pd(v, v, part);  // (v² exact: one rounding, as the reference's add)
  }
  alignas(64) double p[8];
  _mm512_store_pd(p, part);
  for (; i < n; ++i) p[0] += double(x[i]) * double(x[i]);
  const double ss = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
  const float scale = float(1.0 / std::sqrt(ss / n + double(eps)));
  const __m512 s = _mm512_set1_ps(scale);
  for (i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), s);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, weight + i), v));
  }
}

int64_t argmax_avx512(const float* x, int64_t n) {
  if (n >= (int64_t(1) << 31)) return argmax_ref(x, n);  // (int32 lanes of indices)
  if (n <= 1 || x[0] != x[0]) return 0;  // (a NaN first is never beaten)
  // Per lane, the largest value so far and where it first occurred (strictly greater replaces, so
  // the first of equal values stays; NaN compares false and never enters). Then, among the lanes
  // holding the overall maximum, the smallest index: the first occurrence overall.
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  __m512 best = neg_inf;
  __m512i at = _mm512_setzero_si512();
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (int64_t i = 0; i < n; i += 16, idx = _mm512_add_epi32(idx, step)) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_mask_loadu_ps(neg_inf, m, x + i);
    const __mmask16 gt = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
    best = _mm512_mask_blend_ps(gt, best, v);
    at = _mm512_mask_blend_epi32(gt, at, idx);
  }
  const float top = _mm512_reduce_max_ps(best);
  if (top == -INFINITY) return 0;  // every element -inf or NaN: nothing beats x[0]
  const __mmask16 holders = _mm512_cmp_ps_mask(best, _mm512_set1_ps(top), _CMP_EQ_OQ);
  return _mm512_mask_reduce_min_epi32(holders, at);
}

}  // namespace lowbit

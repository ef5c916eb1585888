#pragma once
// e^x on 16 lanes for the AVX-512 kernels (include from a file compiled with -mavx512f/dq).
#include "intrinsics.h"

namespace lowbit {

// e^x for x <= 0 (softmax after subtracting the maximum), 16 lanes: x = n·ln2 + r with n integer and
// |r| <= ln2/2 (ln2 split in two parts so n·ln2_hi is exact), e^r by its Taylor series to r^7 (the
// remainder r^8/8! < 6e-9 relative), then scaled by 2^n with vscalefps, which goes to 0 smoothly for
// large negative n. (Cody & Waite's range reduction; any numerical-methods text.)
inline __m512 exp_le0(__m512 x) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 ln2_hi = _mm512_set1_ps(0.693145751953125f), ln2_lo = _mm512_set1_ps(1.428606765330187e-06f);
  // Below -104, e^x < 2^-149: the result is 0 anyway. (vmaxps returns its second operand when either
  // is NaN, so a NaN score stays NaN, as in the reference.)
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
  r = _mm512_fnmadd_ps(n, ln2_lo, r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace lowbit

// activation.h's SiLU(gate) · up on 16 lanes: e^-|g| (<= 1, so exp_le0's range) gives both signs
// without overflow: SiLU(g) = g / (1 + e^-g) = g·t / (1 + t) for g < 0 with t = e^g = e^-|g|, and
// g / (1 + t) for g >= 0 with t = e^-g = e^-|g|.
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

}  // namespace lowbit

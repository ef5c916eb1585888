// gemm_q8_dyn with AVX-512 VNNI: vpdpbusd multiplies 64 unsigned activation bytes by 64 signed weight
// bytes and adds the products in groups of four into 16 int32 lanes. Four weight rows share each
// activation load; the row tail is a masked load (zeros contribute nothing). Compiled with its own
// ISA flags (CMakeLists.txt) and only called when the CPU has them (gemm_q8_dyn_best).
#include <immintrin.h>

#include "lowbit/kernels/linear.h"

namespace lowbit {

void gemm_q8_dyn_avx512vnni(const uint8_t* u8, size_t m, const int8_t* q8, size_t rows, size_t k, size_t r0,
                            size_t r1, int32_t* acc) {
  const size_t full = k / 64 * 64;
  const __mmask64 tail = k % 64 ? (~0ull >> (64 - k % 64)) : 0;
  size_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const int8_t* w0 = q8 + r * k;
    const int8_t* w1 = w0 + k;
    const int8_t* w2 = w1 + k;
    const int8_t* w3 = w2 + k;
    for (size_t i = 0; i < m; ++i) {
      const uint8_t* a = u8 + i * k;
      __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
      for (size_t c = 0; c < full; c += 64) {
        const __m512i va = _mm512_loadu_si512(a + c);
        s0 = _mm512_dpbusd_epi32(s0, va, _mm512_loadu_si512(w0 + c));
        s1 = _mm512_dpbusd_epi32(s1, va, _mm512_loadu_si512(w1 + c));
        s2 = _mm512_dpbusd_epi32(s2, va, _mm512_loadu_si512(w2 + c));
        s3 = _mm512_dpbusd_epi32(s3, va, _mm512_loadu_si512(w3 + c));
      }
      if (tail) {
        const __m512i va = _mm512_maskz_loadu_epi8(tail, a + full);
        s0 = _mm512_dpbusd_epi32(s0, va, _mm512_maskz_loadu_epi8(tail, w0 + full));
        s1 = _mm512_dpbusd_epi32(s1, va, _mm512_maskz_loadu_epi8(tail, w1 + full));
        s2 = _mm512_dpbusd_epi32(s2, va, _mm512_maskz_loadu_epi8(tail, w2 + full));
        s3 = _mm512_dpbusd_epi32(s3, va, _mm512_maskz_loadu_epi8(tail, w3 + full));
      }
      int32_t* out = acc + i * rows + r;
      out[0] = _mm512_reduce_add_epi32(s0);
      out[1] = _mm512_reduce_add_epi32(s1);
      out[2] = _mm512_reduce_add_epi32(s2);
      out[3] = _mm512_reduce_add_epi32(s3);
    }
  }
  for (; r < r1; ++r) {  // leftover rows, one at a time
    const int8_t* w0 = q8 + r * k;
    for (size_t i = 0; i < m; ++i) {
      const uint8_t* a = u8 + i * k;
      __m512i s0 = _mm512_setzero_si512();
      for (size_t c = 0; c < full; c += 64)
        s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(a + c), _mm512_loadu_si512(w0 + c));
      if (tail) s0 = _mm512_dpbusd_epi32(s0, _mm512_maskz_loadu_epi8(tail, a + full), _mm512_maskz_loadu_epi8(tail, w0 + full));
      acc[i * rows + r] = _mm512_reduce_add_epi32(s0);
    }
  }
}

}  // namespace lowbit

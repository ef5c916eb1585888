// gemm_q8_dyn with AVX-512 VNNI on an int8 segment (LinearWeights::int8_acts, the lanes layout: codes
// q8 + 128): one register holds 4 inputs of 16 output rows, so vpdpbusd of those unsigned codes
// against a broadcast of 4 signed activation bytes adds 16 rows' partial sums at once, with no
// horizontal reduction. A tile of 4 activation rows x 32 output rows
// keeps 8 accumulators; tails take 1 row / 16 outputs. The output tail (rows not a multiple of 16)
// is computed on the zero-padded weights and stored masked. Compiled with its own ISA flags
// (CMakeLists.txt) and only called when the CPU has them (gemm_q8_dyn_best).
#include "intrinsics.h"

#include <cstring>

#include "lowbit/kernels/linear.h"

namespace lowbit {

namespace {

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

}  // namespace

void gemm_q8_dyn_avx512vnni(const int8_t* xq, size_t m, size_t lda, const PackedMatrix& w, size_t r0, size_t r1,
                            int32_t* acc, size_t ldc) {
  const size_t kq = (size_t(w.cols) + 3) / 4;
  const uint8_t* packed = w.data;
  auto block_ptr = [&](size_t row) { return packed + (row / 16) * kq * 64; };
  auto store = [&](int32_t* dst, size_t row, __m512i v) {
    const size_t valid = std::min<size_t>(16, r1 - row);
    _mm512_mask_storeu_epi32(dst, __mmask16((1u << valid) - 1), v);
  };
  size_t r = r0;
  for (; r + 32 <= r1; r += 32) {  // two blocks of 16 rows
    const uint8_t* b0 = block_ptr(r);
    const uint8_t* b1 = block_ptr(r + 16);
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
      __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
              c31 = c00;
      const int8_t* a = xq + i * lda;
      for (size_t q = 0; q < kq; ++q) {
        const __m512i w0 = _mm512_loadu_si512(b0 + q * 64), w1 = _mm512_loadu_si512(b1 + q * 64);
        __m512i x = broadcast4(a + 4 * q);
        c00 = _mm512_dpbusd_epi32(c00, w0, x);
        c01 = _mm512_dpbusd_epi32(c01, w1, x);
        x = broadcast4(a + lda + 4 * q);
        c10 = _mm512_dpbusd_epi32(c10, w0, x);
        c11 = _mm512_dpbusd_epi32(c11, w1, x);
        x = broadcast4(a + 2 * lda + 4 * q);
        c20 = _mm512_dpbusd_epi32(c20, w0, x);
        c21 = _mm512_dpbusd_epi32(c21, w1, x);
        x = broadcast4(a + 3 * lda + 4 * q);
        c30 = _mm512_dpbusd_epi32(c30, w0, x);
        c31 = _mm512_dpbusd_epi32(c31, w1, x);
      }
      int32_t* o = acc + i * ldc + r;
      _mm512_storeu_si512(o, c00);
      _mm512_storeu_si512(o + 16, c01);
      _mm512_storeu_si512(o + ldc, c10);
      _mm512_storeu_si512(o + ldc + 16, c11);
      _mm512_storeu_si512(o + 2 * ldc, c20);
      _mm512_storeu_si512(o + 2 * ldc + 16, c21);
      _mm512_storeu_si512(o + 3 * ldc, c30);
      _mm512_storeu_si512(o + 3 * ldc + 16, c31);
    }
    for (; i < m; ++i) {
      __m512i c0 = _mm512_setzero_si512(), c1 = c0;
      const int8_t* a = xq + i * lda;
      for (size_t q = 0; q < kq; ++q) {
        const __m512i x = broadcast4(a + 4 * q);
        c0 = _mm512_dpbusd_epi32(c0, _mm512_loadu_si512(b0 + q * 64), x);
        c1 = _mm512_dpbusd_epi32(c1, _mm512_loadu_si512(b1 + q * 64), x);
      }
      _mm512_storeu_si512(acc + i * ldc + r, c0);
      _mm512_storeu_si512(acc + i * ldc + r + 16, c1);
    }
  }
  for (; r < r1; r += 16) {  // one block of 16 (the last may be partial)
    const uint8_t* b0 = block_ptr(r);
    for (size_t i = 0; i < m; ++i) {
      __m512i c0 = _mm512_setzero_si512();
      const int8_t* a = xq + i * lda;
      for (size_t q = 0; q < kq; ++q) c0 = _mm512_dpbusd_epi32(c0, _mm512_loadu_si512(b0 + q * 64), broadcast4(a + 4 * q));
      store(acc + i * ldc + r, r, c0);
    }
  }
}

}  // namespace lowbit

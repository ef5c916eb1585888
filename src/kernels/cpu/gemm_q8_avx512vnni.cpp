// gemm_q8_dyn with AVX-512 VNNI on the re-laid weights (LinearWeights::q8_vnni): one register holds
// 4 inputs of 16 output rows, so vpdpbusd against a broadcast of 4 activation bytes adds 16 rows'
// partial sums at once, with no horizontal reduction. A tile of 4 activation rows x 32 output rows
// keeps 8 accumulators; tails take 1 row / 16 outputs. The output tail (rows not a multiple of 16)
// is computed on the zero-padded weights and stored masked. Compiled with its own ISA flags
// (CMakeLists.txt) and only called when the CPU has them (gemm_q8_dyn_best).
#include "intrinsics.h"

#include <cstring>

#include "lowbit/kernels/linear.h"

namespace lowbit {

namespace {

inline __m512i broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

}  // namespace

void gemm_q8_dyn_avx512vnni(const uint8_t* u8, size_t m, const LinearWeights& w, size_t r0, size_t r1, int32_t* acc) {
  const size_t kq = size_t(w.cols_padded()) / 4, lda = size_t(w.cols_padded()), ldc = size_t(w.rows_padded());
  const int8_t* packed = w.q8_vnni.data();
  auto block_ptr = [&](size_t row) { return packed + (row / 16) * kq * 64; };
  auto store = [&](int32_t* dst, size_t row, __m512i v) {
    const size_t valid = std::min<size_t>(16, r1 - row);
    _mm512_mask_storeu_epi32(dst, __mmask16((1u << valid) - 1), v);
  };
  size_t r = r0;
  for (; r + 32 <= r1; r += 32) {  // two blocks of 16 rows
    const int8_t* b0 = block_ptr(r);
    const int8_t* b1 = block_ptr(r + 16);
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
      __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
              c31 = c00;
      const uint8_t* a = u8 + i * lda;
      for (size_t q = 0; q < kq; ++q) {
        const __m512i w0 = _mm512_loadu_si512(b0 + q * 64), w1 = _mm512_loadu_si512(b1 + q * 64);
        __m512i x = broadcast4(a + 4 * q);
        c00 = _mm512_dpbusd_epi32(c00, x, w0);
        c01 = _mm512_dpbusd_epi32(c01, x, w1);
        x = broadcast4(a + lda + 4 * q);
        c10 = _mm512_dpbusd_epi32(c10, x, w0);
        c11 = _mm512_dpbusd_epi32(c11, x, w1);
        x = broadcast4(a + 2 * lda + 4 * q);
        c20 = _mm512_dpbusd_epi32(c20, x, w0);
        c21 = _mm512_dpbusd_epi32(c21, x, w1);
        x = broadcast4(a + 3 * lda + 4 * q);
        c30 = _mm512_dpbusd_epi32(c30, x, w0);
        c31 = _mm512_dpbusd_epi32(c31, x, w1);
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
      const uint8_t* a = u8 + i * lda;
      for (size_t q = 0; q < kq; ++q) {
        const __m512i x = broadcast4(a + 4 * q);
        c0 = _mm512_dpbusd_epi32(c0, x, _mm512_loadu_si512(b0 + q * 64));
        c1 = _mm512_dpbusd_epi32(c1, x, _mm512_loadu_si512(b1 + q * 64));
      }
      _mm512_storeu_si512(acc + i * ldc + r, c0);
      _mm512_storeu_si512(acc + i * ldc + r + 16, c1);
    }
  }
  for (; r < r1; r += 16) {  // one block of 16 (the last may be partial)
    const int8_t* b0 = block_ptr(r);
    for (size_t i = 0; i < m; ++i) {
      __m512i c0 = _mm512_setzero_si512();
      const uint8_t* a = u8 + i * lda;
      for (size_t q = 0; q < kq; ++q) c0 = _mm512_dpbusd_epi32(c0, broadcast4(a + 4 * q), _mm512_loadu_si512(b0 + q * 64));
      store(acc + i * ldc + r, r, c0);
    }
  }
}

}  // namespace lowbit

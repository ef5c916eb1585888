// Packed-weight kernels for AVX-512 (F + BW + VL, F16C, FMA): steps of 32 inputs, two zmm registers.
// U4: 16 bytes widen to 16 int32 lanes; the low nibbles are the even columns and the high nibbles the
// odd ones, each looked up in the 16-entry code table with one vpermps. U8: 2 x 16 bytes widened,
// minus the zero code. F16: vcvtph2ps; BF16: widen and shift left 16. Compiled with its own ISA flags
// (CMakeLists.txt) and only called when the CPU has them (packed_kernels_best).
#include "intrinsics.h"

#include "packed_impl.h"

namespace lowbit {

namespace {

struct Avx512 {
  using vec = __m512;
  static constexpr int64_t kLanes = 16;

  struct Ctx {
    explicit Ctx(const PackedMatrix& w) : lut(_mm512_loadu_ps(w.lut)), zero(_mm512_set1_epi32(w.zero)) {}
    __m512 lut;
    __m512i zero;
  };

  static vec zero() { return _mm512_setzero_ps(); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static vec fmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static vec set1(float v) { return _mm512_set1_ps(v); }
  static float reduce(vec v) { return _mm512_reduce_add_ps(v); }

  template <PackedKind K>
  static void decode(const Ctx& ctx, const uint8_t* row, int64_t k, vec& a, vec& b) {
    if constexpr (K == PackedKind::U4) {
      const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * k)));
      a = _mm512_permutexvar_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(15)), ctx.lut);
      b = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), ctx.lut);
    } else if constexpr (K == PackedKind::U8) {
      const uint8_t* p = row + 32 * k;
      a = _mm512_cvtepi32_ps(
          _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), ctx.zero));
      b = _mm512_cvtepi32_ps(
          _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))), ctx.zero));
    } else if constexpr (K == PackedKind::F16) {
      const __m256i* p = reinterpret_cast<const __m256i*>(row + 64 * k);
      a = _mm512_cvtph_ps(_mm256_loadu_si256(p));
      b = _mm512_cvtph_ps(_mm256_loadu_si256(p + 1));
    } else if constexpr (K == PackedKind::BF16) {
      const __m256i* p = reinterpret_cast<const __m256i*>(row + 64 * k);
      a = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p)), 16));
      b = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p + 1)), 16));
    } else {
      const float* p = reinterpret_cast<const float*>(row) + 32 * k;
      a = _mm512_loadu_ps(p);
      b = _mm512_loadu_ps(p + 16);
    }
  }

  // even columns in a, odd in b -> 32 floats in column order.
  static void interleave(vec a, vec b, float* out) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    _mm512_storeu_ps(out, _mm512_permutex2var_ps(a, lo, b));
    _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(a, hi, b));
  }
};

using Impl = PackedImpl<Avx512>;

}  // namespace

const PackedKernels& packed_kernels_avx512() {
  static const PackedKernels k{"avx512", Impl::supports, Impl::matvec, Impl::dequant};
  return k;
}

}  // namespace lowbit

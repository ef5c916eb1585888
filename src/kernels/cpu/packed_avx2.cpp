// Packed-weight kernels for AVX2 + FMA + F16C: steps of 16 inputs, two ymm registers. U4: 8 bytes
// widen to 8 int32 lanes (low nibbles = even columns, high = odd); the 16-entry code table is two
// vpermps over its halves and a blend on bit 3 of the code. Compiled with its own ISA flags
// (CMakeLists.txt) and only called when the CPU has them (packed_kernels_best).
#include "intrinsics.h"

#include "packed_impl.h"

namespace lowbit {

namespace {

struct Avx2 {
  using vec = __m256;
  static constexpr int64_t kLanes = 8;

  struct Ctx {
    explicit Ctx(const PackedMatrix& w)
        : lut_lo(_mm256_loadu_ps(w.lut)), lut_hi(_mm256_loadu_ps(w.lut + 8)), zero(_mm256_set1_epi32(w.zero)) {}
    __m256 lut_lo, lut_hi;
    __m256i zero;
    __m256 lookup(__m256i code) const {
      const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(code, 28));  // sign bit = code >= 8
      return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut_lo, code), _mm256_permutevar8x32_ps(lut_hi, code), bit3);
    }
  };

  static vec zero() { return _mm256_setzero_ps(); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec fmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static vec set1(float v) { return _mm256_set1_ps(v); }
  static float reduce(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  static __m256i widen8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }

  template <PackedKind K>
  static void decode(const Ctx& ctx, const uint8_t* row, int64_t k, vec& a, vec& b) {
    if constexpr (K == PackedKind::U4) {
      const __m256i bytes = widen8(row + 8 * k);
      a = ctx.lookup(_mm256_and_si256(bytes, _mm256_set1_epi32(15)));
      b = ctx.lookup(_mm256_srli_epi32(bytes, 4));
    } else if constexpr (K == PackedKind::U8) {
      a = _mm256_cvtepi32_ps(_mm256_sub_epi32(widen8(row + 16 * k), ctx.zero));
      b = _mm256_cvtepi32_ps(_mm256_sub_epi32(widen8(row + 16 * k + 8), ctx.zero));
    } else if constexpr (K == PackedKind::F16) {
      const __m128i* p = reinterpret_cast<const __m128i*>(row + 32 * k);
      a = _mm256_cvtph_ps(_mm_loadu_si128(p));
      b = _mm256_cvtph_ps(_mm_loadu_si128(p + 1));
    } else if constexpr (K == PackedKind::BF16) {
      const __m128i* p = reinterpret_cast<const __m128i*>(row + 32 * k);
      a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p)), 16));
      b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p + 1)), 16));
    } else {
      const float* p = reinterpret_cast<const float*>(row) + 16 * k;
      a = _mm256_loadu_ps(p);
      b = _mm256_loadu_ps(p + 8);
    }
  }

  // even columns in a, odd in b -> 16 floats in column order.
  static void interleave(vec a, vec b, float* out) {
    const __m256 lo = _mm256_unpacklo_ps(a, b), hi = _mm256_unpackhi_ps(a, b);  // e0 o0 e1 o1 | e4 o4 e5 o5 ...
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  }
};

using Impl = PackedImpl<Avx2>;

}  // namespace

const PackedKernels& packed_kernels_avx2() {
  static const PackedKernels k{"avx2", Impl::supports, Impl::matvec, Impl::dequant};
  return k;
}

}  // namespace lowbit

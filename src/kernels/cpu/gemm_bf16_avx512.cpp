// The bf16 prefill operands (bf16_gemm.h: activations and weights packed as bf16 tiles) and the
// AVX-512 BF16 GEMM on them. Tile (rb, kc) of the weights holds rows 16rb..16rb+15 and inputs
// 32kc..32kc+31 as 16 pairs x 16 rows: one 64-byte row per input pair, the 16 weight rows in its 16
// 32-bit lanes, which is what VDPBF16PS takes as its vector operand; the activation pair is the
// broadcast one. A block of T tokens x 32 weight rows keeps 2T accumulators in registers (T = 12:
// 24 of the 32 zmm) and runs down the inputs: per input pair two weight loads, T broadcasts, 2T
// VDPBF16PS. Rows outer (a 32-row stripe of weights, 64 bytes per input, stays in L2 while the
// token blocks stream past it). Compiled with its own ISA flags, called only when the CPU has
// AVX-512 BF16 (bf16_gemm_best).
#include "intrinsics.h"

#include <algorithm>
#include <cstring>

#include "lowbit/core/dtype.h"
#include "lowbit/kernels/bf16_gemm.h"

namespace lowbit {

namespace {

// 16 floats -> 16 bf16 (round to nearest even), as f32_to_bf16 does for finite values.
inline __m256i to_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i rounding = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_add_epi32(u, rounding), 16));
}

// to_bf16 kept in 32-bit lanes (the bf16 in the low half).
inline __m512i to_bf16_32(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i rounding = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
  return _mm512_srli_epi32(_mm512_add_epi32(u, rounding), 16);
}

// acc[t][h] = Σ_c a[t][c] · w[16h + lane][c] for T tokens (rows of kp bf16) and the 32 weight rows
// whose tiles start at b0 (rows 0-15) and b1 (rows 16-31).
template <int T>
inline void block(const uint16_t* a, size_t kp, const uint16_t* b0, const uint16_t* b1, size_t kc_n, __m512 (&acc)[T][2]) {
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  for (size_t kc = 0; kc < kc_n; ++kc) {
    const uint16_t* w0 = b0 + kc * 512;
    const uint16_t* w1 = b1 + kc * 512;
    const uint16_t* x = a + kc * 32;
    for (int p = 0; p < 16; ++p) {
      const __m512bh v0 = (__m512bh)_mm512_loadu_si512(w0 + p * 32);
      const __m512bh v1 = (__m512bh)_mm512_loadu_si512(w1 + p * 32);
      for (int t = 0; t < T; ++t) {
        int32_t pair;
        std::memcpy(&pair, x + size_t(t) * kp + 2 * p, sizeof pair);
        const __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
        acc[t][0] = _mm512_dpbf16_ps(acc[t][0], v0, xv);
        acc[t][1] = _mm512_dpbf16_ps(acc[t][1], v1, xv);
      }
    }
  }
}

// Tokens [i0, i0 + T) (rows past m are the zero padding: computed, not stored) x rows [j0, j0 + 32).
template <int T>
void run_block(const uint16_t* a, size_t m, size_t i0, const uint16_t* b0, const uint16_t* b1, size_t n, size_t j0,
               size_t kp, float* y, size_t ldy, bool accumulate) {
  __m512 acc[T][2];
  block<T>(a + i0 * kp, kp, b0, b1, kp / 32, acc);
  for (int h = 0; h < 2; ++h) {
    const size_t j = j0 + size_t(16 * h);
    if (j >= n) break;
    const __mmask16 mask = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    for (int t = 0; t < T && i0 + size_t(t) < m; ++t) {
      float* yi = y + (i0 + size_t(t)) * ldy + j;
      __m512 v = acc[t][h];
      if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, yi));
      _mm512_mask_storeu_ps(yi, mask, v);
    }
  }
}

}  // namespace

void bf16_pack_acts(const float* x, size_t m, size_t ldx, size_t k, uint16_t* out) {
  const size_t kp = bf16_k(k), mp = bf16_m(m);
  for (size_t i = 0; i < mp; ++i) {
    uint16_t* o = out + i * kp;
    if (i >= m) {
      std::memset(o, 0, kp * 2);
      continue;
    }
    const float* xi = x + i * ldx;
    size_t c = 0;
    for (; c + 16 <= k; c += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c), to_bf16(_mm512_loadu_ps(xi + c)));
    for (; c < k; ++c) o[c] = f32_to_bf16(xi[c]);
    for (; c < kp; ++c) o[c] = 0;
  }
}

void bf16_pack_weights(const float* w, size_t n, size_t k, uint16_t* out) {
  const size_t kp = bf16_k(k), np = bf16_m(n), kc_n = kp / 32;
  alignas(64) uint16_t row[32];
  for (size_t rb = 0; rb < np / 16; ++rb)
    for (size_t kc = 0; kc < kc_n; ++kc) {
      uint32_t* tile = reinterpret_cast<uint32_t*>(out + (rb * kc_n + kc) * 512);  // 16 x 16 pairs
      for (size_t j = 0; j < 16; ++j) {
        const size_t r = rb * 16 + j, c0 = kc * 32;
        if (r >= n) {
          std::memset(row, 0, sizeof row);
        } else if (c0 + 32 <= k) {
          const float* src = w + r * k + c0;
          _mm256_store_si256(reinterpret_cast<__m256i*>(row), to_bf16(_mm512_loadu_ps(src)));
          _mm256_store_si256(reinterpret_cast<__m256i*>(row + 16), to_bf16(_mm512_loadu_ps(src + 16)));
        } else {
          for (size_t c = 0; c < 32; ++c) row[c] = c0 + c < k ? f32_to_bf16(w[r * k + c0 + c]) : 0;
        }
        // Pair p of this row goes to tile row p, column j.
        uint32_t pairs[16];
        std::memcpy(pairs, row, sizeof pairs);
        for (size_t p = 0; p < 16; ++p) tile[p * 16 + j] = pairs[p];
      }
    }
}

void bf16_pack_weights_lanes(const PackedMatrix& w, int64_t r0, int64_t r1, uint16_t* out) {
  const size_t n = size_t(r1 - r0), kp = bf16_k(size_t(w.cols)), np = bf16_m(n), kc_n = kp / 32;
  const int64_t uc = w.unit_cols(), units = w.cols / uc, G = std::min(w.group, w.cols), groups = w.groups();
  const bool u4 = w.kind == PackedKind::U4;
  const __m512i low4 = _mm512_set1_epi32(0x0F), z = _mm512_set1_epi32(w.int_zero);
  const __m512 lut = _mm512_loadu_ps(w.lut);  // U4's values (for integer tables lut[c] = c − z exactly)
  auto params = [](const float* f32, const uint16_t* f16, size_t i) {
    return f16 ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(f16 + i))) : _mm512_loadu_ps(f32 + i);
  };
  for (size_t rb = 0; rb < np / 16; ++rb) {
    const int64_t b = r0 / 16 + int64_t(rb);
    const size_t valid = 16 * rb < n ? std::min<size_t>(16, n - 16 * rb) : 0;
    const __mmask16 rows = __mmask16((1u << valid) - 1);  // tile columns past r1 stay zero
    for (size_t kc = 0; kc < kc_n; ++kc) {
      uint16_t* tile = out + (rb * kc_n + kc) * 512;  // 16 pairs x 16 rows, a pair per 32 bits
      if (valid == 0) {
        std::memset(tile, 0, 512 * sizeof(uint16_t));
        continue;
      }
      const size_t pi = size_t((b * groups + int64_t(kc * 32) / G) * w.lanes_pstride);
      const __m512 s = params(w.scale, w.scale_f16, pi);
      const __m512 off = w.has_offset() ? params(w.offset, w.offset_f16, pi) : _mm512_setzero_ps();
      const size_t per = size_t(32 / uc);  // units per 32 inputs
      for (size_t u = 0; u < per; ++u) {
        const __m512i v = _mm512_loadu_si512(w.data + size_t(b * units + int64_t(kc * per + u)) * 64);
        for (int q = 0; q < uc / 2; ++q) {  // pair q: columns 2q, 2q + 1 of the unit
          // U4: columns 0-3 are the low nibbles of bytes 0-3, 4-7 the high ones; U8: bytes 0-3.
          const __m512i nib = q < 2 ? v : _mm512_srli_epi32(v, 4);
          const int shift = 16 * (q & 1);
          const __m512i mask = u4 ? low4 : _mm512_set1_epi32(0xFF);
          const __m512i ca = _mm512_and_si512(_mm512_srli_epi32(nib, unsigned(shift)), mask);
          const __m512i cb = _mm512_and_si512(_mm512_srli_epi32(nib, unsigned(shift + 8)), mask);
          // As the reference rounds a value: lut[code] (U4) or code − z (U8), ·scale, then + offset; then to bf16.
          const __m512 va = u4 ? _mm512_permutexvar_ps(ca, lut) : _mm512_cvtepi32_ps(_mm512_sub_epi32(ca, z));
          const __m512 vb = u4 ? _mm512_permutexvar_ps(cb, lut) : _mm512_cvtepi32_ps(_mm512_sub_epi32(cb, z));
          const __m512 fa = _mm512_add_ps(_mm512_mul_ps(va, s), off);
          const __m512 fb = _mm512_add_ps(_mm512_mul_ps(vb, s), off);
          const __m512i pair = _mm512_or_si512(to_bf16_32(fa), _mm512_slli_epi32(to_bf16_32(fb), 16));
          _mm512_storeu_si512(tile + (size_t(uc / 2) * u + size_t(q)) * 32, _mm512_maskz_mov_epi32(rows, pair));
        }
      }
    }
  }
}


void avx512bf16_gemm(const uint16_t* a, size_t m, const uint16_t* b, size_t n, size_t k, float* y, size_t ldy,
                     bool accumulate) {
  constexpr size_t kT = 12;
  const size_t kp = bf16_k(k), kc_n = kp / 32;
  for (size_t j0 = 0; j0 < n; j0 += 32) {
    const uint16_t* b0 = b + (j0 / 16) * kc_n * 512;
    const uint16_t* b1 = b0 + kc_n * 512;  // inside the padding to 32 rows when n - j0 <= 16
    size_t i0 = 0;
    for (; i0 + kT <= m; i0 += kT) run_block<kT>(a, m, i0, b0, b1, n, j0, kp, y, ldy, accumulate);
    // The rest in 4, 8 or 12 tokens: rows up to m rounded up to 4 are inside the padding to 32.
    const size_t left = m - i0;
    if (left > 8)
      run_block<12>(a, m, i0, b0, b1, n, j0, kp, y, ldy, accumulate);
    else if (left > 4)
      run_block<8>(a, m, i0, b0, b1, n, j0, kp, y, ldy, accumulate);
    else if (left > 0)
      run_block<4>(a, m, i0, b0, b1, n, j0, kp, y, ldy, accumulate);
  }
}

}  // namespace lowbit

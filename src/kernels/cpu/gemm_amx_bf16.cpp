// AMX-BF16 prefill GEMM (see amx.h). Tiles: C 0-3 (2 x 2 blocks of 16 x 16 float), A 4-5 (16
// tokens x 32 inputs each), B 6-7 (16 input pairs x 16 outputs each): 32 tokens x 32 outputs per
// step of 32 inputs, four TDPBF16PS per two A and two B loads. Compiled with its own ISA flags
// (CMakeLists.txt) and only called when amx_bf16_available().
#include <cpuid.h>
#include "intrinsics.h"
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "lowbit/core/dtype.h"
#include "lowbit/kernels/amx.h"

namespace lowbit {

namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl: ask for an extended state component
constexpr long kXfeatureXtiledata = 18;      // AMX tile data

struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tile configuration is per thread; loading it costs little next to a 128-row tile product.
void configure_tiles() {
  alignas(64) TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  _tile_loadconfig(&c);
}

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

}  // namespace

size_t amx_m(size_t m) { return (m + 31) / 32 * 32; }
size_t amx_k(size_t k) { return (k + 31) / 32 * 32; }

bool amx_bf16_available() {
  static const bool ok = [] {
    if (const char* v = std::getenv("LOWBIT_AMX"); v && std::strcmp(v, "0") == 0) return false;
    // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 22 AMX-BF16 (clang 14's __builtin_cpu_supports knows
    // neither); the kernel grants the tile state below, or refuses.
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22))) return false;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bw")) return false;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

void amx_pack_acts(const float* x, size_t m, size_t ldx, size_t k, uint16_t* out) {
  const size_t kp = amx_k(k), mp = amx_m(m);
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

void amx_pack_weights(const float* w, size_t n, size_t k, uint16_t* out) {
  const size_t kp = amx_k(k), np = amx_m(n), kc_n = kp / 32;
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

void amx_pack_weights_lanes(const PackedMatrix& w, int64_t r0, int64_t r1, uint16_t* out) {
  const size_t n = size_t(r1 - r0), kp = amx_k(size_t(w.cols)), np = amx_m(n), kc_n = kp / 32;
  const int64_t uc = w.unit_cols(), units = w.cols / uc, G = std::min(w.group, w.cols), groups = w.groups();
  const bool u4 = w.kind == PackedKind::U4;
  const __m512i low4 = _mm512_set1_epi32(0x0F), z = _mm512_set1_epi32(w.int_zero);
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
      const size_t pi = size_t((b * groups + int64_t(kc * 32) / G) * 16);
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
          // As the reference rounds a value: (code - z)·scale, then + offset; then to bf16.
          const __m512 fa = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(ca, z)), s), off);
          const __m512 fb = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(cb, z)), s), off);
          const __m512i pair = _mm512_or_si512(to_bf16_32(fa), _mm512_slli_epi32(to_bf16_32(fb), 16));
          _mm512_storeu_si512(tile + (size_t(uc / 2) * u + size_t(q)) * 32, _mm512_maskz_mov_epi32(rows, pair));
        }
      }
    }
  }
}

void amx_gemm(const uint16_t* a, size_t m, const uint16_t* b, size_t n, size_t k, float* y, size_t ldy,
              bool accumulate) {
  configure_tiles();
  const size_t kp = amx_k(k), kc_n = kp / 32, stride_a = kp * 2;
  alignas(64) float c[4][16 * 16];
  // Tokens outer: a 32-token block of activations stays in L1/L2 while the (L2-resident) weights
  // of the work item stream past it.
  for (size_t mb = 0; mb < amx_m(m); mb += 32) {
    const uint16_t* a0 = a + mb * kp;
    const uint16_t* a1 = a0 + 16 * kp;
    for (size_t nb = 0; nb < amx_m(n); nb += 32) {
      const uint16_t* b0 = b + (nb / 16) * kc_n * 512;
      const uint16_t* b1 = b0 + kc_n * 512;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (size_t kc = 0; kc < kc_n; ++kc) {
        _tile_loadd(4, a0 + kc * 32, stride_a);
        _tile_loadd(5, a1 + kc * 32, stride_a);
        _tile_loadd(6, b0 + kc * 512, 64);
        _tile_loadd(7, b1 + kc * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c[0], 64);
      _tile_stored(1, c[1], 64);
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
      for (int t = 0; t < 4; ++t) {
        const size_t i0 = mb + (t >= 2 ? 16 : 0), j0 = nb + (t & 1 ? 16 : 0);
        if (j0 >= n) continue;
        const size_t cols = n - j0 < 16 ? n - j0 : 16;
        const __mmask16 mask = __mmask16((1u << cols) - 1);
        for (size_t i = i0; i < m && i < i0 + 16; ++i) {
          float* yi = y + i * ldy + j0;
          __m512 v = _mm512_load_ps(c[t] + (i - i0) * 16);
          if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, yi));
          _mm512_mask_storeu_ps(yi, mask, v);
        }
      }
    }
  }
  _tile_release();
}

}  // namespace lowbit

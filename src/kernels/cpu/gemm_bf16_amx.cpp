// AMX-BF16 prefill GEMM (see bf16_gemm.h). Tiles: C 0-3 (2 x 2 blocks of 16 x 16 float), A 4-5 (16
// tokens x 32 inputs each), B 6-7 (16 input pairs x 16 outputs each): 32 tokens x 32 outputs per
// step of 32 inputs, four TDPBF16PS per two A and two B loads. Compiled with its own ISA flags
// (CMakeLists.txt) and only called when amx_bf16_available().
#include "intrinsics.h"

#include "lowbit/kernels/bf16_gemm.h"

namespace lowbit {

namespace {

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

}  // namespace

void amx_gemm(const uint16_t* a, size_t m, const uint16_t* b, size_t n, size_t k, float* y, size_t ldy,
              bool accumulate) {
  configure_tiles();
  const size_t kp = bf16_k(k), kc_n = kp / 32, stride_a = kp * 2;
  alignas(64) float c[4][16 * 16];
  // Tokens outer: a 32-token block of activations stays in L1/L2 while the (L2-resident) weights
  // of the work item stream past it.
  for (size_t mb = 0; mb < bf16_m(m); mb += 32) {
    const uint16_t* a0 = a + mb * kp;
    const uint16_t* a1 = a0 + 16 * kp;
    for (size_t nb = 0; nb < bf16_m(n); nb += 32) {
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

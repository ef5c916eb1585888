#pragma once
// Prefill GEMMs in bfloat16 with float32 sums, for quantized weights (their tiles are dequantized
// anyway): activations and dequantized weights are rounded to bf16 (8 significant bits: relative
// error <= 2^-8 per value), every product of two bf16 is exact in float32 and sums stay float32.
// Two back ends on the same packed operands:
//   AMX (Sapphire Rapids and later): TDPBF16PS multiplies a 16 x 32 bf16 tile of activations by a
//     32 x 16 bf16 tile of weights into 16 x 16 float32 sums, 8192 multiply-adds per instruction.
//   AVX-512 BF16 (Zen 4 / Zen 5, Cooper Lake and later Xeons): VDPBF16PS adds the products of one
//     broadcast activation pair and 16 rows' weight pairs (one 64-byte row of a weight tile) into 16
//     float32 lanes: 32 multiply-adds per instruction, twice a float32 FMA.
// (Intel Architecture Instruction Set Extensions Programming Reference, chapter 3 "AMX" and the
// VDPBF16PS entry.)
#include <cstddef>
#include <cstdint>

#include "lowbit/kernels/packed.h"

namespace lowbit {

// Whether the CPU has AMX-BF16 and the kernel lets this process use it (permission asked once).
// LOWBIT_AMX=0 turns it off.
bool amx_bf16_available();
// Whether the CPU has AVX-512 BF16 (with F / BW / VL). LOWBIT_BF16_GEMM=0 turns both back ends off.
bool avx512_bf16_available();

// Activations x[i * ldx + c] (i < m, c < k) -> bf16 rows of bf16_k(k) values, m rounded up to 32
// rows; padding is zero. `out` holds bf16_m(m) * bf16_k(k) values.
size_t bf16_m(size_t m);
size_t bf16_k(size_t k);
void bf16_pack_acts(const float* x, size_t m, size_t ldx, size_t k, uint16_t* out);

// Weights w[j * k + c] (j < n rows, c < k) -> bf16 VNNI tiles: for each block of 16 rows and each
// 32 inputs, 16 rows of 16 (input pair) x 2 values (tile row p = input pair p, its 16 columns the 16
// weight rows: one AVX-512 register per pair); n rounded up to 32 with zero rows.
// `out` holds bf16_m(n) * bf16_k(k) values.
void bf16_pack_weights(const float* w, size_t n, size_t k, uint16_t* out);

// The same tiles straight from a matrix in the lanes layout (PackedMatrix::lanes, whose units are
// already rows-in-lanes): rows [r0, r1) of w, r0 a multiple of 16, no float copy; bit for bit
// bf16_pack_weights of the reference's dequantization.
void bf16_pack_weights_lanes(const PackedMatrix& w, int64_t r0, int64_t r1, uint16_t* out);

// y[i * ldy + j] (= or +=) Σ_c x[i][c] w[j][c] for i < m, j < n, from the packed operands.
using Bf16GemmFn = void (*)(const uint16_t* a, size_t m, const uint16_t* b, size_t n, size_t k, float* y,
                            size_t ldy, bool accumulate);
void amx_gemm(const uint16_t* a, size_t m, const uint16_t* b, size_t n, size_t k, float* y, size_t ldy,
              bool accumulate);
void avx512bf16_gemm(const uint16_t* a, size_t m, const uint16_t* b, size_t n, size_t k, float* y, size_t ldy,
                     bool accumulate);
// AMX where available, else AVX-512 BF16, else nullptr (prefill then dequantizes to float32 for BLAS).
Bf16GemmFn bf16_gemm_best();
const char* bf16_gemm_best_name();  // "amx", "avx512bf16" or "none"

}  // namespace lowbit

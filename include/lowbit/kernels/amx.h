#pragma once
// Prefill GEMMs on Intel AMX (Sapphire Rapids and later): bfloat16 tiles, float32 accumulation.
// TDPBF16PS multiplies a 16 x 32 bf16 tile of activations by a 32 x 16 bf16 tile of weights
// (stored as 16 rows of 16 input pairs, the "VNNI" layout) into 16 x 16 float32 sums: 8192
// multiply-adds per instruction, ~16x what AVX-512 FMAs do per cycle. Used for quantized weights
// in prefill (their tiles are dequantized anyway); activations and dequantized weights are rounded
// to bf16 (8 significant bits: relative error <= 2^-8 per value), sums stay float32.
// (Intel Architecture Instruction Set Extensions Programming Reference, chapter 3, "AMX".)
#include <cstddef>
#include <cstdint>

#include "lowbit/kernels/packed.h"

namespace lowbit {

// Whether the CPU has AMX-BF16 and the kernel lets this process use it (permission asked once).
// LOWBIT_AMX=0 turns it off.
bool amx_bf16_available();

// Activations x[i * ldx + c] (i < m, c < k) -> bf16 rows of amx_k(k) values, m rounded up to 32
// rows; padding is zero. `out` holds amx_m(m) * amx_k(k) values.
size_t amx_m(size_t m);
size_t amx_k(size_t k);
void amx_pack_acts(const float* x, size_t m, size_t ldx, size_t k, uint16_t* out);

// Weights w[j * k + c] (j < n rows, c < k) -> bf16 VNNI tiles: for each block of 16 rows and each
// 32 inputs, 16 rows of 16 (input pair) x 2 values; n rounded up to 32 with zero rows.
// `out` holds amx_m(n) * amx_k(k) values.
void amx_pack_weights(const float* w, size_t n, size_t k, uint16_t* out);

// The same tiles straight from a matrix in the lanes layout (PackedMatrix::lanes, whose units are
// already rows-in-lanes): rows [r0, r1) of w, r0 a multiple of 16, no float copy; bit for bit
// amx_pack_weights of the reference's dequantization.
void amx_pack_weights_lanes(const PackedMatrix& w, int64_t r0, int64_t r1, uint16_t* out);

// y[i * ldy + j] (= or +=) Σ_c x[i][c] w[j][c] for i < m, j < n, from the packed operands.
void amx_gemm(const uint16_t* a, size_t m, const uint16_t* b, size_t n, size_t k, float* y, size_t ldy,
              bool accumulate);

}  // namespace lowbit

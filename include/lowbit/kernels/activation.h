#pragma once
// Element-wise activations of the feed-forward blocks: out[j] = SiLU(gate[j]) · up[j] with
// SiLU(g) = g / (1 + e^-g) (LLaMA's gated MLP). A scalar reference (std::exp) and an AVX-512
// version (a 16-lane exp, exp_avx512.h) within a few float roundings of it; which one runs is decided
// once from the CPU.
#include <cstddef>

namespace lowbit {

using SiluMulFn = void (*)(const float* gate, const float* up, float* out, size_t n);
void silu_mul_ref(const float* gate, const float* up, float* out, size_t n);
// Needs AVX-512 F/DQ.
void silu_mul_avx512(const float* gate, const float* up, float* out, size_t n);
// The AVX-512 version when the CPU has AVX-512 F/DQ; LOWBIT_SILU=ref forces the reference.
SiluMulFn silu_mul_best();

}  // namespace lowbit

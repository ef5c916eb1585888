#pragma once
// Element-wise activations of the feed-forward blocks: out[j] = SiLU(gate[j]) · up[j] with
// SiLU(g) = g / (1 + e^-g) (LLaMA's gated MLP). A scalar reference (std::exp) and an AVX-512
// version (a 16-lane exp, exp_avx512.h) within a few float roundings of it; which one runs is decided
// once from the CPU.
#include <cstddef>
#include <cstdint>

namespace lowbit {

using SiluMulFn = void (*)(const float* gate, const float* up, float* out, size_t n);
void silu_mul_ref(const float* gate, const float* up, float* out, size_t n);
// Needs AVX-512 F/DQ.
void silu_mul_avx512(const float* gate, const float* up, float* out, size_t n);
// The AVX-512 version when the CPU has AVX-512 F/DQ; LOWBIT_SILU=ref forces the reference.
SiluMulFn silu_mul_best();

// RMSNorm (LLaMA's): out[i] = weight[i] · (x[i] · s), s = 1 / sqrt(Σ x² / n + eps), with Σ x² in
// double as eight partial sums (element i into sum i mod 8, the tail into sum 0), added pairwise.
// The AVX-512 version keeps those eight sums in one register's lanes and adds in the same order:
// bit for bit the reference's (x² is exact in double, so its fused multiply-add rounds as the
// reference's add does).
using RmsNormFn = void (*)(const float* x, const float* weight, float* out, int n, float eps);
void rms_norm_ref(const float* x, const float* weight, float* out, int n, float eps);
void rms_norm_avx512(const float* x, const float* weight, float* out, int n, float eps);  // AVX-512 F
// The AVX-512 version when the CPU has AVX-512 F; LOWBIT_SILU=ref forces the reference here too.
RmsNormFn rms_norm_best();

// The index of the first maximum of x[0, n) (n >= 1), as torch.argmax for finite values: the first
// i with x[i] > every earlier element; NaNs are never chosen, except that a NaN at 0 is never beaten
// (the scalar loop `if (x[i] > x[best]) best = i`). Greedy decoding's pick over a 128k vocabulary:
// the scalar loop took ~0.5 ms per token (4 % of a llama-3.2-1b int4 decode step).
using ArgmaxFn = int64_t (*)(const float* x, int64_t n);
int64_t argmax_ref(const float* x, int64_t n);
int64_t argmax_avx512(const float* x, int64_t n);  // AVX-512 F
ArgmaxFn argmax_best();  // (LOWBIT_SILU=ref: the reference)

}  // namespace lowbit

#pragma once
// One decode step's attention for the query heads that share one KV head (grouped-query attention):
// for each head h < g, softmax(q_h · k_j · scale over j < len) · v_j. A scalar reference and an
// AVX-512 version (16-wide dot products, a vectorized exp, the keys and values read once for the g
// heads instead of once per head); which one runs is decided once from the CPU.
#include <cstddef>

namespace lowbit {

// q: g heads of hd values (head h at q + h*hd); key j at k + j*ld, value j at v + j*ld (hd values
// each); scores: scratch of g*len floats; out: g heads of hd values (head h at out + h*hd).
using AttendFn = void (*)(const float* q, int g, int hd, const float* k, const float* v, size_t ld, int len,
                          float scale, float* scores, float* out);
void attend_ref(const float* q, int g, int hd, const float* k, const float* v, size_t ld, int len, float scale,
                float* scores, float* out);
// Needs AVX-512 F/BW/VL/DQ and hd % 16 == 0 (attend_best() falls back to the reference otherwise).
void attend_avx512(const float* q, int g, int hd, const float* k, const float* v, size_t ld, int len, float scale,
                   float* scores, float* out);
// The AVX-512 version when the CPU has AVX-512 F/BW/VL/DQ and hd % 16 == 0; LOWBIT_ATTEND=ref forces the
// reference.
AttendFn attend_best(int hd);

}  // namespace lowbit

#pragma once
// One decode step's attention for the query heads that share one KV head (grouped-query attention):
// for each head h < g, softmax(q_h · k_j · scale over the visible positions j) · v_j, read straight
// from one KV head's cache. A scalar reference and an AVX-512 version; which one runs is decided once
// from the CPU.
//
// The cache of one KV head (element type float, or f16 as uint16_t bits):
// - keys in blocks of kKVBlock positions, each block dimension-major: value d of position p at
//   k[(p / 16) * 16 * hd + d * 16 + p % 16]. A block's 16 scores are then 16-wide FMAs of broadcast
//   query values, no horizontal sums (row-major keys needed a 16-way shuffle reduction per 16 keys,
//   about 40 % of the score work);
// - values row-major: value d of position p at v[p * hd + d].
#include <cstddef>
#include <cstdint>

namespace lowbit {

constexpr int kKVBlock = 16;

// Floats of the `scores` scratch an AttendFn needs for g heads over len positions.
inline size_t attend_scratch(int g, int len) { return size_t(g) * (size_t(len) + 2 * kKVBlock); }

// q: g heads of hd values (head h at q + h*hd); k, v: the KV head's cache (position 0 at the start,
// layouts above); the visible positions are [lo, lo + len), len >= 1; scores: attend_scratch(g, len)
// floats of scratch; out: g heads of hd values.
template <class T>
using AttendFn = void (*)(const float* q, int g, int hd, const T* k, const T* v, int lo, int len, float scale,
                          float* scores, float* out);
template <class T>
void attend_ref(const float* q, int g, int hd, const T* k, const T* v, int lo, int len, float scale, float* scores,
                float* out);
// Needs AVX-512 F/BW/VL/DQ and hd % 16 == 0 (attend_best() falls back to the reference otherwise).
template <class T>
void attend_avx512(const float* q, int g, int hd, const T* k, const T* v, int lo, int len, float scale,
                   float* scores, float* out);
// The AVX-512 version when the CPU has AVX-512 F/BW/VL/DQ and hd % 16 == 0; LOWBIT_ATTEND=ref forces the
// reference.
template <class T>
AttendFn<T> attend_best(int hd);

// Where position p's key value d sits in a KV head's key blocks.
inline size_t kv_key_index(int p, int d, int hd) {
  return size_t(p / kKVBlock) * size_t(kKVBlock) * size_t(hd) + size_t(d) * kKVBlock + size_t(p % kKVBlock);
}

}  // namespace lowbit

// attention.h: the scalar reference of one decode step's grouped-query attention over a KV head's
// cache, and the choice of the version that runs.
#include "lowbit/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "lowbit/core/dtype.h"

namespace lowbit {

namespace {

inline float to_f32(float x) { return x; }
inline float to_f32(uint16_t x) { return f16_to_f32(x); }

}  // namespace

template <class T>
void attend_ref(const float* q, int g, int hd, const T* k, const T* v, int lo, int len, float scale, float* scores,
                float* out) {
  for (int h = 0; h < g; ++h) {
    const float* qh = q + size_t(h) * size_t(hd);
    float* s = scores + size_t(h) * size_t(len);
    // A block's 16 scores as 16 running sums over the dimensions (contiguous in the block: this
    // vectorizes), then the visible ones kept.
    float max_score = -INFINITY;
    for (int b = lo / kKVBlock; b * kKVBlock < lo + len; ++b) {
      float acc[kKVBlock] = {};
      const T* blk = k + size_t(b) * size_t(kKVBlock) * size_t(hd);
      for (int d = 0; d < hd; ++d)
        for (int t = 0; t < kKVBlock; ++t) acc[t] += qh[d] * to_f32(blk[size_t(d) * kKVBlock + size_t(t)]);
      for (int t = 0; t < kKVBlock; ++t) {
        const int j = b * kKVBlock + t - lo;
        if (j < 0 || j >= len) continue;
        s[j] = acc[t] * scale;
        max_score = std::max(max_score, s[j]);
      }
    }
    float sum = 0;
    for (int j = 0; j < len; ++j) {
      s[j] = std::exp(s[j] - max_score);
      sum += s[j];
    }
    float* o = out + size_t(h) * size_t(hd);
    std::fill(o, o + hd, 0.0f);
    const float inv_sum = 1.0f / sum;
    for (int j = 0; j < len; ++j) {
      const T* vj = v + size_t(lo + j) * size_t(hd);
      const float p = s[j] * inv_sum;
      for (int d = 0; d < hd; ++d) o[d] += p * to_f32(vj[d]);
    }
  }
}

template <class T>
AttendFn<T> attend_best(int hd) {
  static const bool avx512 = [] {
    if (const char* e = std::getenv("LOWBIT_ATTEND"); e && std::strcmp(e, "ref") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
  }();
  return avx512 && hd % 16 == 0 && hd > 0 ? &attend_avx512<T> : &attend_ref<T>;
}

template void attend_ref<float>(const float*, int, int, const float*, const float*, int, int, float, float*, float*);
template void attend_ref<uint16_t>(const float*, int, int, const uint16_t*, const uint16_t*, int, int, float, float*,
                                   float*);
template AttendFn<float> attend_best<float>(int);
template AttendFn<uint16_t> attend_best<uint16_t>(int);

}  // namespace lowbit

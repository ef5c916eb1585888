// attention.h: the scalar reference of one decode step's grouped-query attention, and the choice
// of the version that runs.
#include "lowbit/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace lowbit {

namespace {

// q·k with 8 independent partial sums: a single running sum is a chain of dependent adds that the
// compiler may not reorder (no -ffast-math), 4 cycles per element; this vectorizes.
inline float dot(const float* a, const float* b, int n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int d = 0;
  for (; d + 8 <= n; d += 8)
    for (int u = 0; u < 8; ++u) s[u] += a[d + u] * b[d + u];
  float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; d < n; ++d) t += a[d] * b[d];
  return t;
}

}  // namespace

void attend_ref(const float* q, int g, int hd, const float* k, const float* v, size_t ld, int len, float scale,
                float* scores, float* out) {
  for (int h = 0; h < g; ++h) {
    const float* qh = q + size_t(h) * size_t(hd);
    float* s = scores + size_t(h) * size_t(len);
    float max_score = -INFINITY;
    for (int j = 0; j < len; ++j) {
      s[j] = dot(qh, k + size_t(j) * ld, hd) * scale;
      max_score = std::max(max_score, s[j]);
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
      const float* vj = v + size_t(j) * ld;
      const float p = s[j] * inv_sum;
      for (int d = 0; d < hd; ++d) o[d] += p * vj[d];
    }
  }
}

AttendFn attend_best(int hd) {
  static const bool avx512 = [] {
    if (const char* e = std::getenv("LOWBIT_ATTEND"); e && std::strcmp(e, "ref") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
  }();
  return avx512 && hd % 16 == 0 && hd > 0 ? &attend_avx512 : &attend_ref;
}

}  // namespace lowbit

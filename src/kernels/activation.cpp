// activation.h: the scalar reference of the gated activations, and the choice of the version that runs.
#include "lowbit/kernels/activation.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace lowbit {

void silu_mul_ref(const float* gate, const float* up, float* out, size_t n) {
  for (size_t j = 0; j < n; ++j) out[j] = gate[j] / (1.0f + std::exp(-gate[j])) * up[j];
}

void rms_norm_ref(const float* x, const float* weight, float* out, int n, float eps) {
  // Eight partial sums (one chain of n dependent double adds was ~3 µs of a decode layer at n = 2048).
  double part[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) part[j] += double(x[i + j]) * double(x[i + j]);
  for (; i < n; ++i) part[0] += double(x[i]) * double(x[i]);
  const double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  const float scale = float(1.0 / std::sqrt(ss / n + double(eps)));
  for (i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * scale);
}

namespace {
bool reference_forced() {
  const char* e = std::getenv("LOWBIT_SILU");
  return e && std::strcmp(e, "ref") == 0;
}
}  // namespace

RmsNormFn rms_norm_best() {
  static const RmsNormFn fn = [] {
    if (reference_forced()) return &rms_norm_ref;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? &rms_norm_avx512 : &rms_norm_ref;
  }();
  return fn;
}

int64_t argmax_ref(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

ArgmaxFn argmax_best() {
  static const ArgmaxFn fn = [] {
    if (reference_forced()) return &argmax_ref;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? &argmax_avx512 : &argmax_ref;
  }();
  return fn;
}

SiluMulFn silu_mul_best() {
  static const SiluMulFn fn = [] {
    if (reference_forced()) return &silu_mul_ref;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") ? &silu_mul_avx512 : &silu_mul_ref;
  }();
  return fn;
}

}  // namespace lowbit

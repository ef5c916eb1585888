// activation.h: the scalar reference of the gated activations, and the choice of the version that runs.
#include "lowbit/kernels/activation.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace lowbit {

void silu_mul_ref(const float* gate, const float* up, float* out, size_t n) {
  for (size_t j = 0; j < n; ++j) out[j] = gate[j] / (1.0f + std::exp(-gate[j])) * up[j];
}

SiluMulFn silu_mul_best() {
  static const SiluMulFn fn = [] {
    if (const char* e = std::getenv("LOWBIT_SILU"); e && std::strcmp(e, "ref") == 0) return &silu_mul_ref;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") ? &silu_mul_avx512 : &silu_mul_ref;
  }();
  return fn;
}

}  // namespace lowbit

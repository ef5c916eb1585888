#include "lowbit/core/numerics.h"

#include <cstring>

#include "lowbit/core/error.h"

namespace lowbit {

int64_t find_non_finite(const float* x, size_t n) {
  // A float is NaN or Inf exactly when its exponent bits are all ones. The OR-reduction over
  // integer bits vectorises (a float compare reduction would not without -ffast-math); only a block
  // that has a bad value is searched again for its position.
  constexpr size_t kBlock = 4096;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = b + kBlock < n ? b + kBlock : n;
    uint32_t bad = 0;
    for (size_t i = b; i < e; ++i) {
      uint32_t u;
      std::memcpy(&u, &x[i], 4);
      bad |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
    }
    if (bad)
      for (size_t i = b; i < e; ++i) {
        uint32_t u;
        std::memcpy(&u, &x[i], 4);
        if ((u & 0x7f800000u) == 0x7f800000u) return int64_t(i);
      }
  }
  return -1;
}

int64_t find_non_finite_bits(const void* data, size_t n, size_t elem_bytes, uint32_t mask) {
  if (elem_bytes == 4 && mask == 0x7f800000u) return find_non_finite(static_cast<const float*>(data), n);
  const auto* p = static_cast<const uint8_t*>(data);
  constexpr size_t kBlock = 4096;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = b + kBlock < n ? b + kBlock : n;
    uint32_t bad = 0;
    for (size_t i = b; i < e; ++i) {
      uint16_t u;
      std::memcpy(&u, p + 2 * i, 2);
      bad |= uint32_t((u & mask) == mask);
    }
    if (bad)
      for (size_t i = b; i < e; ++i) {
        uint16_t u;
        std::memcpy(&u, p + 2 * i, 2);
        if ((u & mask) == mask) return int64_t(i);
      }
  }
  return -1;
}

void check_finite_activations(const float* x, int rows, int cols, int pos0, std::string_view layer_prefix, int layer) {
  const int64_t i = find_non_finite(x, size_t(rows) * size_t(cols));
  if (i < 0) return;
  fail("{}{} output: non-finite activation ({}) at token position {}, channel {} (the weights or the input overflow "
       "float32)", layer_prefix, layer, x[i], pos0 + i / cols, i % cols);
}

}  // namespace lowbit

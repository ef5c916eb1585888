#include "lowbit/core/numerics.h"

#include <cstring>

#include "lowbit/core/error.h"

namespace lowbit {

namespace {

// Index of the first element whose bits have every bit of `mask` set (the exponent all ones: NaN or
// Inf), or -1. The OR-reduction over integer bits vectorises (a float compare reduction would not
// without -ffast-math); only a block that has a bad value is searched again for its position.
template <typename U>
int64_t find_all_ones(const void* data, size_t n, U mask) {
  const auto* p = static_cast<const uint8_t*>(data);
  auto at = [&](size_t i) {
    U u;
    std::memcpy(&u, p + i * sizeof(U), sizeof(U));
    return U(u & mask) == mask;
  };
  constexpr size_t kBlock = 4096;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = b + kBlock < n ? b + kBlock : n;
    uint32_t bad = 0;
    for (size_t i = b; i < e; ++i) bad |= uint32_t(at(i));
    if (bad)
      for (size_t i = b; i < e; ++i)
        if (at(i)) return int64_t(i);
  }
  return -1;
}

}  // namespace

int64_t find_non_finite(const float* x, size_t n) { return find_all_ones<uint32_t>(x, n, 0x7f800000u); }

int64_t find_non_finite_bits(const void* data, size_t n, size_t elem_bytes, uint32_t mask) {
  if (elem_bytes == 4) return find_all_ones<uint32_t>(data, n, mask);
  return find_all_ones<uint16_t>(data, n, uint16_t(mask));
}

void check_finite_activations(const float* x, int rows, int cols, int pos0, std::string_view layer_prefix, int layer) {
  const int64_t i = find_non_finite(x, size_t(rows) * size_t(cols));
  if (i < 0) return;
  fail("{}{} output: non-finite activation ({}) at token position {}, channel {} (the weights or the input overflow "
       "float32)", layer_prefix, layer, x[i], pos0 + i / cols, i % cols);
}

}  // namespace lowbit

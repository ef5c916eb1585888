#pragma once
// Numerical hazards: NaN and Inf in weights and activations are found and reported with where they
// are (tensor name, layer, token position, channel) instead of flowing silently into the output.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lowbit {

// Index of the first NaN or +-Inf in x[0..n), or -1 when every value is finite.
int64_t find_non_finite(const float* x, size_t n);
// The same over n stored values of 4 or 2 bytes (F32, F16, BF16) whose non-finite values have
// every bit of exponent_mask set.
int64_t find_non_finite_bits(const void* data, size_t n, size_t elem_bytes, uint32_t exponent_mask);

// The output x[rows][cols] of layer `layer` (named "<layer_prefix><layer>", e.g. "model.layers.3")
// for tokens at positions pos0.. : fails with "model.layers.3 output: non-finite activation (nan) at
// token position P, channel C" when a value is not finite.
void check_finite_activations(const float* x, int rows, int cols, int pos0, std::string_view layer_prefix, int layer);

}  // namespace lowbit

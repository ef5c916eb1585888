#pragma once
// Element types of stored tensors (safetensors names) and float16 / bfloat16 conversion.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace lowbit {

enum class DType : uint8_t { F32, F16, BF16, I8, U8, I32, I64, F64 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);                    // "F32", "BF16", ... as safetensors spells it
std::optional<DType> dtype_from_name(std::string_view);  // nullopt for an unknown name

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // Inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: value = mant * 2^-24
    float f = float(mant) * 0x1p-24f;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f);  // round to nearest even, overflow to Inf

// Converts n elements of type `t` at `src` to float32 (F32, F16, BF16, I8, U8, I32, F64).
void convert_to_f32(DType t, const void* src, float* dst, size_t n);

}  // namespace lowbit

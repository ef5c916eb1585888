// The scalar reference of the packed-weight kernels (the oracle the vector variants are tested
// against), the helpers they share for scalar tails, and the start-up choice of a variant.
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"
#include "lowbit/kernels/packed.h"

namespace lowbit {

const char* packed_kind_name(PackedKind k) {
  switch (k) {
    case PackedKind::F32: return "f32";
    case PackedKind::F16: return "f16";
    case PackedKind::BF16: return "bf16";
    case PackedKind::U8: return "u8";
    case PackedKind::U4: return "u4";
  }
  return "?";
}

uint64_t PackedMatrix::bytes() const {
  uint64_t n = uint64_t(rows) * row_bytes;
  if (kind == PackedKind::U8 || kind == PackedKind::U4)
    n += uint64_t(rows) * uint64_t(groups()) * sizeof(float) * (offset ? 2 : 1);
  return n;
}

uint8_t packed_code(const PackedMatrix& w, const uint8_t* row, int64_t c) {
  if (w.kind == PackedKind::U8) return row[c];
  const uint8_t b = row[c >> 1];
  return (c & 1) ? uint8_t(b >> 4) : uint8_t(b & 15);
}

float packed_value(const PackedMatrix& w, int64_t r, int64_t c) {
  const uint8_t* row = w.data + size_t(r) * w.row_bytes;
  switch (w.kind) {
    case PackedKind::F32: {
      float v;
      std::memcpy(&v, row + 4 * c, 4);
      return v;
    }
    case PackedKind::F16:
    case PackedKind::BF16: {
      uint16_t h;
      std::memcpy(&h, row + 2 * c, 2);
      return w.kind == PackedKind::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
    case PackedKind::U8:
    case PackedKind::U4: {
      const int64_t g = r * w.groups() + c / w.group;
      const uint8_t code = packed_code(w, row, c);
      const float base = w.kind == PackedKind::U8 ? float(int(code) - w.zero) : w.lut[code];
      return base * w.scale[g] + (w.offset ? w.offset[g] : 0.0f);
    }
  }
  return 0;
}

namespace {

bool ref_supports(const PackedMatrix&) { return true; }

// Sums in double: the oracle should carry less rounding than anything it judges.
void ref_matvec(const PackedMatrix& w, const float* x, size_t m, size_t ldx, int64_t r0, int64_t r1, float* y,
                size_t ldy, bool accumulate) {
  for (size_t i = 0; i < m; ++i)
    for (int64_t r = r0; r < r1; ++r) {
      double s = 0;
      for (int64_t c = 0; c < w.cols; ++c) s += double(packed_value(w, r, c)) * double(x[i * ldx + size_t(c)]);
      float& out = y[i * ldy + size_t(r - r0)];
      out = accumulate ? float(double(out) + s) : float(s);
    }
}

void ref_dequant(const PackedMatrix& w, int64_t r0, int64_t r1, float* out) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < w.cols; ++c) out[size_t((r - r0) * w.cols + c)] = packed_value(w, r, c);
}

}  // namespace

const PackedKernels& packed_kernels_ref() {
  static const PackedKernels k{"ref", ref_supports, ref_matvec, ref_dequant};
  return k;
}

bool packed_kernels_available(const PackedKernels& k) {
  __builtin_cpu_init();
  const std::string_view n = k.name;
  if (n == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
  if (n == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return true;
}

const PackedKernels& packed_kernels_best() {
  static const PackedKernels* best = [] {
    const PackedKernels* all[] = {&packed_kernels_avx512(), &packed_kernels_avx2(), &packed_kernels_ref()};
    if (const char* force = std::getenv("LOWBIT_KERNELS"); force && *force) {
      for (const PackedKernels* k : all)
        if (std::string_view(force) == k->name) {
          if (!packed_kernels_available(*k)) fail("LOWBIT_KERNELS={}: this CPU cannot run that variant", force);
          return k;
        }
      fail("LOWBIT_KERNELS={}: expected ref, avx2 or avx512", force);
    }
    for (const PackedKernels* k : all)
      if (packed_kernels_available(*k)) return k;
    return all[2];
  }();
  return *best;
}

}  // namespace lowbit

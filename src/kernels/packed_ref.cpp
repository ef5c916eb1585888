// The scalar reference of the packed-weight kernels (the oracle the vector variants are tested
// against), the helpers they share for scalar tails, and the start-up choice of a variant.
#include <cpuid.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "lowbit/core/dtype.h"
#include "lowbit/core/env.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
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
    n += uint64_t(rows) * uint64_t(groups()) * ((scale_f16 ? 2 : 4) + (offset_f16 ? 2 : offset ? 4 : 0));
  return n;
}

uint8_t packed_code(const PackedMatrix& w, const uint8_t* row, int64_t c) {
  if (w.kind == PackedKind::U8) return row[c];
  const uint8_t b = row[c >> 1];
  return (c & 1) ? uint8_t(b >> 4) : uint8_t(b & 15);
}

uint8_t packed_code_at(const PackedMatrix& w, int64_t r, int64_t c) {
  if (!w.lanes) return packed_code(w, w.data + size_t(r) * w.row_bytes, c);
  const int64_t uc = w.unit_cols();
  const uint8_t b = w.data[size_t(((r / 16) * ((w.cols + uc - 1) / uc) + c / uc) * 64 + (r % 16) * 4 + (c % 4))];
  if (w.kind == PackedKind::U8) return b;
  return (c % 8) < 4 ? uint8_t(b & 15) : uint8_t(b >> 4);
}

bool lanes_eligible(const PackedMatrix& w) {
  return (w.kind == PackedKind::U4 || (w.kind == PackedKind::U8 && w.int_zero >= 0)) && !w.lanes && w.cols > 0 && w.cols % 64 == 0 &&
         (w.group >= w.cols || (w.group > 0 && w.group % 64 == 0));
}

PackedMatrix lanes_columns(const PackedMatrix& w, int64_t c0, int64_t c1, PackedLanes& out) {
  const bool one_group = w.group >= w.cols;
  if (!w.lanes || c0 < 0 || c1 > w.cols || c0 >= c1 || c0 % 64 != 0 || (c1 % 64 != 0 && c1 != w.cols) ||
      (!one_group && (c0 % w.group != 0 || (c1 % w.group != 0 && c1 != w.cols))))
    fail("lanes_columns: columns [{}, {}) of a {} x {} {} matrix with group {} do not start and end on its groups",
         c0, c1, w.rows, w.cols, packed_kind_name(w.kind), w.group);
  const int64_t blocks = (w.rows + 15) / 16, uc = w.unit_cols();
  const int64_t units = w.cols / uc, u0 = c0 / uc, nu = (c1 - c0) / uc;
  const int64_t groups = w.groups(), g0 = one_group ? 0 : c0 / w.group;
  PackedMatrix l = w;
  l.cols = c1 - c0;
  if (one_group) l.group = l.cols;
  l.row_bytes = w.kind == PackedKind::U4 ? size_t(l.cols / 2) : size_t(l.cols);
  const int64_t ng = l.groups(), ps = w.lanes_pstride;
  out.codes.assign(size_t(blocks * nu * 64), 0);
  for (int64_t b = 0; b < blocks; ++b)
    std::memcpy(out.codes.data() + b * nu * 64, w.data + (b * units + u0) * 64, size_t(nu * 64));
  // Parameters: [block][group][pstride] (interleaved scale + offset, or separate arrays).
  auto params = [&](const auto* src, auto& dst) {
    if (!src) return decltype(src)(nullptr);
    dst.assign(size_t(blocks * ng * ps), 0);
    for (int64_t b = 0; b < blocks; ++b)
      std::copy_n(src + (b * groups + g0) * ps, ng * ps, dst.data() + b * ng * ps);
    return decltype(src)(dst.data());
  };
  const bool inter = ps == 32;
  l.scale = params(w.scale, out.scale);
  l.scale_f16 = params(w.scale_f16, out.scale_f16);
  l.offset = !w.offset ? nullptr : inter ? l.scale + 16 : params(w.offset, out.offset);
  l.offset_f16 = !w.offset_f16 ? nullptr : inter ? l.scale_f16 + 16 : params(w.offset_f16, out.offset_f16);
  l.data = out.codes.data();
  return l;
}

namespace {

// A lanes matrix's parameter arrays with their element sizes: scale (float32 or float16), and the
// offset where it has one of its own (not interleaved into the scale's array: lanes_pstride 32).
struct LanesArray {
  const void* base;
  size_t elem;
};
std::vector<LanesArray> lanes_arrays(const PackedMatrix& w) {
  std::vector<LanesArray> a;
  if (w.scale) a.push_back({w.scale, 4});
  if (w.scale_f16) a.push_back({w.scale_f16, 2});
  if (w.lanes_pstride != 32) {
    if (w.offset) a.push_back({w.offset, 4});
    if (w.offset_f16) a.push_back({w.offset_f16, 2});
  }
  return a;
}

void check_lanes_rows(const PackedMatrix& w, int64_t r0, int64_t r1) {
  if (!w.lanes || r0 < 0 || r1 > w.rows || r0 >= r1 || r0 % 16 != 0 || (r1 % 16 != 0 && r1 != w.rows))
    fail("lanes_rows: rows [{}, {}) of a {} x {} {} matrix do not start and end on its 16-row blocks", r0, r1, w.rows,
         w.cols, packed_kind_name(w.kind));
}

size_t round_line(size_t n) { return (n + 63) / 64 * 64; }

}  // namespace

LanesBytes lanes_rows_bytes(const PackedMatrix& w, int64_t r0, int64_t r1) {
  check_lanes_rows(w, r0, r1);
  const size_t blocks = size_t((r1 + 15) / 16 - r0 / 16), per_block = size_t(w.groups() * w.lanes_pstride);
  LanesBytes b;
  b.codes = round_line(blocks * size_t(w.cols / w.unit_cols()) * 64);
  for (const LanesArray& a : lanes_arrays(w)) b.params += round_line(blocks * per_block * a.elem);
  return b;
}

PackedMatrix lanes_rows_into(const PackedMatrix& w, int64_t r0, int64_t r1, uint8_t* codes, uint8_t* params) {
  check_lanes_rows(w, r0, r1);
  const size_t b0 = size_t(r0 / 16), blocks = size_t((r1 + 15) / 16) - b0;
  const size_t block_codes = size_t(w.cols / w.unit_cols()) * 64, per_block = size_t(w.groups() * w.lanes_pstride);
  PackedMatrix l = w;
  l.rows = r1 - r0;
  std::memcpy(codes, w.data + b0 * block_codes, blocks * block_codes);
  l.data = codes;
  for (const LanesArray& a : lanes_arrays(w)) {
    std::memcpy(params, static_cast<const uint8_t*>(a.base) + b0 * per_block * a.elem, blocks * per_block * a.elem);
    if (a.base == w.scale) l.scale = reinterpret_cast<const float*>(params);
    if (a.base == w.scale_f16) l.scale_f16 = reinterpret_cast<const uint16_t*>(params);
    if (a.base == w.offset) l.offset = reinterpret_cast<const float*>(params);
    if (a.base == w.offset_f16) l.offset_f16 = reinterpret_cast<const uint16_t*>(params);
    params += round_line(blocks * per_block * a.elem);
  }
  if (w.lanes_pstride == 32) {  // offsets interleaved 16 after the scales
    if (w.offset) l.offset = l.scale + 16;
    if (w.offset_f16) l.offset_f16 = l.scale_f16 + 16;
  }
  return l;
}

PackedMatrix relayout_lanes(const PackedMatrix& w, PackedLanes& out) {
  if (!lanes_eligible(w)) fail("relayout_lanes: a {} x {} {} matrix with group {} is not eligible", w.rows, w.cols,
                               packed_kind_name(w.kind), w.group);
  const int64_t blocks = (w.rows + 15) / 16, units = w.cols / w.unit_cols(), groups = w.groups();
  PackedMatrix l = w;
  l.lanes = true;
  out.codes.assign(size_t(blocks * units * 64), 0);
  // Scale and offset of the same type interleaved per group (PackedMatrix::lanes_pstride): a decode
  // thread then streams two arrays, not three (in-process A/B over fresh allocations in both orders,
  // bench/NOTES.md: 5-6 % less time for a decode step's int4 matrices).
  const bool inter = (w.scale_f16 && w.offset_f16) || (w.scale && w.offset);
  l.lanes_pstride = inter ? 32 : 16;
  const size_t np = size_t(blocks * groups * l.lanes_pstride);
  auto params = [&](const float* f32, const uint16_t* f16, stream_vector<float>& o32, stream_vector<uint16_t>& o16,
                    size_t shift) {
    if (f16 && shift == 0) o16.assign(np, 0);
    if (f32 && shift == 0) o32.assign(np, 0.0f);
    for (int64_t r = 0; r < w.rows; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        const size_t from = size_t(r * groups + g), to = l.param_index(r, g) + shift;
        if (f16) o16[to] = f16[from];
        if (f32) o32[to] = f32[from];
      }
  };
  params(w.scale, w.scale_f16, out.scale, out.scale_f16, 0);
  if (inter)
    params(w.offset, w.offset_f16, out.scale, out.scale_f16, 16);
  else
    params(w.offset, w.offset_f16, out.offset, out.offset_f16, 0);
  l.data = out.codes.data();
  l.scale = w.scale ? out.scale.data() : nullptr;
  l.scale_f16 = w.scale_f16 ? out.scale_f16.data() : nullptr;
  l.offset = !w.offset ? nullptr : inter ? out.scale.data() + 16 : out.offset.data();
  l.offset_f16 = !w.offset_f16 ? nullptr : inter ? out.scale_f16.data() + 16 : out.offset_f16.data();
  // U4: a row's 4 bytes for columns 8j..8j+7 hold (low nibble first) c0 c1 | c2 c3 | c4 c5 | c6 c7;
  // the unit wants c0 c4 | c1 c5 | c2 c6 | c3 c7. U8: the row's 4 bytes as they are.
  default_thread_pool().parallel_for(size_t(w.rows), [&](size_t b, size_t e, int) {
    for (size_t r = b; r < e; ++r) {
      const uint8_t* row = w.data + r * w.row_bytes;
      uint8_t* dst = out.codes.data() + (r / 16) * size_t(units) * 64 + (r % 16) * 4;
      if (w.kind == PackedKind::U8) {
        for (int64_t j = 0; j < units; ++j, row += 4, dst += 64) std::memcpy(dst, row, 4);
        continue;
      }
      for (int64_t j = 0; j < units; ++j, row += 4, dst += 64) {
        dst[0] = uint8_t((row[0] & 0x0F) | (row[2] << 4));
        dst[1] = uint8_t((row[0] >> 4) | (row[2] & 0xF0));
        dst[2] = uint8_t((row[1] & 0x0F) | (row[3] << 4));
        dst[3] = uint8_t((row[1] >> 4) | (row[3] & 0xF0));
      }
    }
  });
  return l;
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
      const size_t g = w.param_index(r, c / w.group);
      const uint8_t code = packed_code_at(w, r, c);
      const float base = w.kind == PackedKind::U8 ? float(int(code) - w.zero) : w.lut[code];
      return base * w.scale_at(g) + w.offset_at(g);
    }
  }
  return 0;
}

int int_zero_of(const PackedMatrix& w) {
  if (w.kind == PackedKind::U8) return w.zero;
  if (w.kind != PackedKind::U4) return -1;
  const float z = -w.lut[0];
  if (!(z >= 0 && z <= 15 && z == float(int(z)))) return -1;
  for (int c = 0; c < 16; ++c)
    if (w.lut[c] != float(c) - z) return -1;
  return int(z);
}

namespace {
// Where column c sits in a token's row of QActs::q.
inline int64_t q_position(int64_t c, bool nibble_order) {
  constexpr int64_t C = QActs::kChunk;
  return nibble_order ? (c / C) * C + (c % 2) * (C / 2) + (c % C) / 2 : c;
}
}  // namespace

int8_t QActs::at(size_t i, int64_t c) const { return q[i * size_t(stride) + size_t(q_position(c, nibble_order))]; }

namespace {
// Where column c sits in a token's row of QActs::q16: columns 0 2 4 6 1 3 5 7 of each 8.
inline int64_t q16_position(int64_t c) { return (c & ~int64_t(7)) + (c & 1) * 4 + ((c & 7) >> 1); }
// v rounded half away from zero (as the vector variants do: v ± 0.5, truncated).
inline int round_away(float v) { return int(v + (v >= 0 ? 0.5f : -0.5f)); }
}  // namespace

int16_t QActs::at16(size_t i, int64_t c) const { return q16[i * size_t(stride) + size_t(q16_position(c))]; }

float code_book_i16(const PackedMatrix& w, int16_t out[16]) {
  float m = 0;
  for (int c = 0; c < 16; ++c) m = std::max(m, std::fabs(w.lut[c]));
  const float inv = m > 0 ? float(kCodeBookI16Max) / m : 0.0f;
  for (int c = 0; c < 16; ++c) out[c] = int16_t(std::clamp(round_away(w.lut[c] * inv), -kCodeBookI16Max, kCodeBookI16Max));
  return m / float(kCodeBookI16Max);
}

void prepare_acts_wide(size_t m, int64_t cols, int64_t group, QActs& a) {
  if (cols % 8 != 0) fail("quantize_acts_wide: {} columns are not a multiple of 8", cols);
  prepare_acts(m, cols, group, false, a);
  a.q.clear();
  a.wide = true;
  a.q16.assign(m * size_t(a.stride), 0);
}

void quantize_acts_wide(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, QActs& a) {
  constexpr int64_t B = QActs::kBlock;
  prepare_acts_wide(m, cols, group, a);
  const int64_t G = a.group;
  for (size_t i = 0; i < m; ++i) {
    const float* xi = x + i * ldx;
    int16_t* qi = a.q16.data() + i * size_t(a.stride);
    for (int64_t k = 0; k * B < cols; ++k) {
      const int64_t c0 = k * B, c1 = std::min(c0 + B, cols);
      float absmax = 0;
      for (int64_t c = c0; c < c1; ++c) absmax = std::max(absmax, std::fabs(xi[c]));
      const float inv = absmax > 0 ? float(QActs::kWideMax) / absmax : 0.0f;
      for (int64_t c = c0; c < c1; ++c)
        qi[q16_position(c)] = int16_t(std::clamp(round_away(xi[c] * inv), -QActs::kWideMax, QActs::kWideMax));
      a.scale[i * size_t(a.blocks) + size_t(k)] = absmax / float(QActs::kWideMax);
    }
    for (int64_t g = 0; g < a.groups; ++g) {
      float sum = 0;
      for (int64_t c = g * G; c < std::min((g + 1) * G, cols); ++c) sum += xi[c];
      a.sum_x[i * size_t(a.groups) + size_t(g)] = sum;
    }
  }
}

void prepare_acts(size_t m, int64_t cols, int64_t group, bool nibble_order, QActs& a) {
  constexpr int64_t B = QActs::kBlock;
  const int64_t G = group > 0 ? std::min(group, cols) : cols;
  if (G < cols && G % B != 0) fail("quantize_acts: group {} is not a multiple of {}", G, B);
  a.m = m;
  a.cols = cols;
  a.group = G;
  a.groups = (cols + G - 1) / G;
  a.blocks = (cols + B - 1) / B;
  if (nibble_order) a.blocks = (cols + QActs::kChunk - 1) / QActs::kChunk * (QActs::kChunk / B);
  a.stride = a.blocks * B;
  a.nibble_order = nibble_order;
  a.wide = false;
  a.q16.clear();
  a.q.assign(m * size_t(a.stride), 0);
  a.scale.assign(m * size_t(a.blocks), 0.0f);
  a.zsum.assign(m * size_t(a.groups), 0.0f);
  a.sum_x.assign(m * size_t(a.groups), 0.0f);
}

void quantize_acts(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, bool nibble_order, QActs& a) {
  constexpr int64_t B = QActs::kBlock;
  prepare_acts(m, cols, group, nibble_order, a);
  const int64_t G = a.group;
  // Tokens split over the pool when there are enough of them to pay for waking it.
  auto rows = [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      const float* xi = x + i * ldx;
      int8_t* qi = a.q.data() + i * size_t(a.stride);
      for (int64_t k = 0; k * B < cols; ++k) {
        const int64_t c0 = k * B, c1 = std::min(c0 + B, cols);
        float absmax = 0;
        for (int64_t c = c0; c < c1; ++c) absmax = std::max(absmax, std::fabs(xi[c]));
        const float inv = absmax > 0 ? 127.0f / absmax : 0.0f;
        int32_t qsum = 0;
        for (int64_t c = c0; c < c1; ++c) {
          const float v = xi[c] * inv;
          const int q = std::clamp(int(v + (v >= 0 ? 0.5f : -0.5f)), -127, 127);
          qi[q_position(c, nibble_order)] = int8_t(q);
          qsum += q;
        }
        const float scale = absmax / 127.0f;
        a.scale[i * size_t(a.blocks) + size_t(k)] = scale;
        a.zsum[i * size_t(a.groups) + size_t(c0 / G)] += scale * float(qsum);
      }
      for (int64_t g = 0; g < a.groups; ++g) {
        float sum = 0;
        for (int64_t c = g * G; c < std::min((g + 1) * G, cols); ++c) sum += xi[c];
        a.sum_x[i * size_t(a.groups) + size_t(g)] = sum;
      }
    }
  };
  if (m >= 8) {
    default_thread_pool().parallel_for(m, [&](size_t b, size_t e, int) { rows(b, e); });
  } else {
    rows(0, m);
  }
}

namespace {

bool ref_supports(const PackedMatrix&) { return true; }

bool ref_supports_q8(const PackedMatrix& w) { return w.int_zero >= 0 || is_code_book(w); }

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

// Exact int32 sums per block, then the float epilogue in a fixed order.
void ref_matmul_q8(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy,
                   bool accumulate) {
  constexpr int64_t B = QActs::kBlock;
  const int64_t G = a.group;
  if (a.wide != is_code_book(w))
    fail("matmul_q8: {} activations for a {} matrix with {}", a.wide ? "wide" : "int8", packed_kind_name(w.kind),
         is_code_book(w) ? "a code book" : "an integer table");
  // Wide activations: the code book as int16 (code_book_i16), its factor f applied with each block's scale.
  int16_t lut[16] = {};
  const float f = a.wide ? code_book_i16(w, lut) : 1.0f;
  auto product = [&](size_t i, int64_t r, int64_t c) {
    return a.wide ? int32_t(lut[packed_code_at(w, r, c)]) * a.at16(i, c) : int32_t(packed_code_at(w, r, c)) * a.at(i, c);
  };
  for (size_t i = 0; i < a.m; ++i)
    for (int64_t r = r0; r < r1; ++r) {
      float acc = 0;
      for (int64_t g = 0; g < a.groups; ++g) {
        float gsum = 0;
        for (int64_t k = (g * G) / B; k < (std::min((g + 1) * G, w.cols) + B - 1) / B; ++k) {
          int32_t s = 0;
          for (int64_t c = k * B; c < std::min((k + 1) * B, w.cols); ++c) s += product(i, r, c);
          gsum += a.scale[i * size_t(a.blocks) + size_t(k)] * f * float(s);
        }
        const size_t wg = w.param_index(r, g), ag = i * size_t(a.groups) + size_t(g);
        const float s = w.scale_at(wg), zterm = a.wide ? 0.0f : float(w.int_zero) * s * a.zsum[ag];
        acc += s * gsum - zterm + (w.has_offset() ? w.offset_at(wg) * a.sum_x[ag] : 0.0f);
      }
      float& out = y[i * ldy + size_t(r - r0)];
      out = accumulate ? out + acc : acc;
    }
}

}  // namespace

const PackedKernels& packed_kernels_ref() {
  static const PackedKernels k{"ref", ref_supports, ref_matvec, ref_dequant, ref_supports_q8, ref_matmul_q8, nullptr, true};
  return k;
}

namespace {

// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}

}  // namespace

bool packed_kernels_available(const PackedKernels& k) {
  __builtin_cpu_init();
  const std::string_view n = k.name;
  if (n == "avx512vnni")
    return packed_kernels_available(packed_kernels_avx512()) && __builtin_cpu_supports("avx512vnni");
  if (n == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && cpu_has_f16c() && __builtin_cpu_supports("fma");
  if (n == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  return true;
}

const PackedKernels& packed_kernels_best() {
  static const PackedKernels* best = [] {
    const PackedKernels* all[] = {&packed_kernels_avx512vnni(), &packed_kernels_avx512(), &packed_kernels_avx2(),
                                  &packed_kernels_ref()};
    if (const char* force = std::getenv("LOWBIT_KERNELS"); force && *force) {
      for (const PackedKernels* k : all)
        if (std::string_view(force) == k->name) {
          if (!packed_kernels_available(*k)) fail("LOWBIT_KERNELS={}: this CPU cannot run that variant", force);
          return k;
        }
      fail("LOWBIT_KERNELS={}: expected ref, avx2, avx512 or avx512vnni", force);
    }
    for (const PackedKernels* k : all)
      if (packed_kernels_available(*k)) return k;
    return all[3];
  }();
  return *best;
}

bool packed_q8_activations_enabled() {
  static const bool on = env_switch("LOWBIT_ACTIVATIONS", "q8", "f32");
  return on;
}

}  // namespace lowbit

// Conformance of the packed-weight kernels: every variant this CPU runs against the scalar reference,
// for every kind, on shapes chosen to break them (1, 3, 33 rows; widths around the vector steps,
// 172-wide rows, groups that leave a short last group), outputs pre-filled with NaN. dequant must be
// bit-exact; matvec within a bound that grows with the dot length.
#include <cmath>
#include <limits>
#include <random>

#include "lowbit/core/dtype.h"
#include "lowbit/kernels/packed.h"
#include "test_util.h"

namespace lowbit {
namespace {

struct Owned {
  PackedMatrix m;
  std::vector<uint8_t> data;
  std::vector<float> scale, offset;
};

Owned make(PackedKind kind, int64_t rows, int64_t cols, int64_t group, bool with_offset, std::mt19937& rng) {
  Owned o;
  PackedMatrix& m = o.m;
  m.kind = kind;
  m.rows = rows;
  m.cols = cols;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  switch (kind) {
    case PackedKind::F32: m.row_bytes = size_t(cols) * 4; break;
    case PackedKind::F16:
    case PackedKind::BF16: m.row_bytes = size_t(cols) * 2; break;
    case PackedKind::U8: m.row_bytes = size_t(cols); break;
    case PackedKind::U4: m.row_bytes = size_t(cols + 1) / 2; break;
  }
  o.data.resize(size_t(rows) * m.row_bytes);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = o.data.data() + size_t(r) * m.row_bytes;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = normal(rng);
      if (kind == PackedKind::F32) std::memcpy(row + 4 * c, &v, 4);
      if (kind == PackedKind::F16 || kind == PackedKind::BF16) {
        const uint16_t h = kind == PackedKind::F16 ? f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(row + 2 * c, &h, 2);
      }
      if (kind == PackedKind::U8) row[c] = uint8_t(byte(rng));
    }
    if (kind == PackedKind::U4)
      for (size_t b = 0; b < m.row_bytes; ++b) row[b] = uint8_t(byte(rng) & (b * 2 + 1 < size_t(cols) ? 0xFF : 0x0F));
  }
  if (kind == PackedKind::U8 || kind == PackedKind::U4) {
    m.group = group;
    o.scale.resize(size_t(rows * m.groups()));
    for (auto& s : o.scale) s = 0.01f + std::fabs(normal(rng)) * 0.1f;
    if (with_offset) {
      o.offset.resize(o.scale.size());
      for (auto& v : o.offset) v = normal(rng);
    }
    m.zero = kind == PackedKind::U8 ? 128 : 0;
    for (int i = 0; i < 16; ++i) m.lut[i] = normal(rng);  // any code book: NF4-like, affine (0..15), symmetric
  }
  m.data = o.data.data();
  m.scale = o.scale.empty() ? nullptr : o.scale.data();
  m.offset = o.offset.empty() ? nullptr : o.offset.data();
  return o;
}

std::vector<const PackedKernels*> variants() {
  std::vector<const PackedKernels*> v;
  for (const PackedKernels* k :
       {&packed_kernels_ref(), &packed_kernels_avx2(), &packed_kernels_avx512(), &packed_kernels_avx512vnni()})
    if (packed_kernels_available(*k)) v.push_back(k);
  return v;
}

TEST(PackedKernels, EveryVariantMatchesTheReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const PackedKernels& ref = packed_kernels_ref();
  int checked = 0, vector_checked = 0;
  for (PackedKind kind : {PackedKind::F32, PackedKind::F16, PackedKind::BF16, PackedKind::U8, PackedKind::U4})
    for (int64_t rows : {1, 3, 4, 33})
      for (int64_t cols : {1, 15, 16, 31, 32, 33, 64, 95, 172, 300})
        for (int64_t group : {int64_t(0), int64_t(32), int64_t(64), int64_t(128), int64_t(100)}) {
          const bool quant = kind == PackedKind::U8 || kind == PackedKind::U4;
          if (!quant && group != 0) continue;
          const int64_t g = group == 0 ? cols : group;
          for (bool with_offset : {false, true}) {
            if (!quant && with_offset) continue;
            Owned o = make(kind, rows, cols, g, with_offset, rng);
            std::vector<float> want_deq(size_t(rows * cols), nan);
            ref.dequant(o.m, 0, rows, want_deq.data());
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t c = 0; c < cols; ++c) ASSERT_FALSE(std::isnan(want_deq[size_t(r * cols + c)]));
            for (size_t m : {size_t(1), size_t(3)}) {
              const size_t ldx = size_t(cols) + 5, ldy = size_t(rows) + 2;
              std::vector<float> x(m * ldx, nan);  // the padding past cols must not be read
              for (size_t i = 0; i < m; ++i)
                for (int64_t c = 0; c < cols; ++c) x[i * ldx + size_t(c)] = normal(rng);
              std::vector<float> want(m * ldy, nan);
              ref.matvec(o.m, x.data(), m, ldx, 0, rows, want.data(), ldy, false);
              for (const PackedKernels* k : variants()) {
                if (!k->supports(o.m)) continue;
                SCOPED_TRACE(fmt::format("{} kind {} rows {} cols {} group {} offset {} m {}", k->name,
                                         packed_kind_name(kind), rows, cols, g, with_offset, m));
                // Rows [1, rows) as well as all of them: a range that starts off the 4-row blocks.
                for (int64_t r0 : {int64_t(0), std::min<int64_t>(1, rows - 1)}) {
                  std::vector<float> got(m * ldy, nan);
                  k->matvec(o.m, x.data(), m, ldx, r0, rows, got.data(), ldy, false);
                  std::vector<float> acc(m * ldy, 1.5f);
                  k->matvec(o.m, x.data(), m, ldx, r0, rows, acc.data(), ldy, true);
                  for (size_t i = 0; i < m; ++i)
                    for (int64_t r = r0; r < rows; ++r) {
                      // Σ of the magnitudes of the terms the kernels may add: value·x, or for codes
                      // (|base|·scale + |offset|)·|x| (they sum scale·Σ base·x and offset·Σ x apart).
                      double mag = 0;
                      for (int64_t c = 0; c < cols; ++c) {
                        double term = std::fabs(double(want_deq[size_t(r * cols + c)]));
                        if (quant) {
                          const uint8_t code = packed_code(o.m, o.m.data + size_t(r) * o.m.row_bytes, c);
                          const double base = kind == PackedKind::U8 ? double(int(code) - o.m.zero) : o.m.lut[code];
                          const size_t gi = size_t(r * o.m.groups() + c / g);
                          term = std::fabs(base) * o.scale[gi] + (with_offset ? std::fabs(o.offset[gi]) : 0.0);
                        }
                        mag += term * std::fabs(x[i * ldx + size_t(c)]);
                      }
                      const double tol = 1.2e-7 * double(cols + 8) * mag + 1e-30;
                      const float w = want[i * ldy + size_t(r)];
                      ASSERT_NEAR(got[i * ldy + size_t(r - r0)], w, tol) << "row " << r << " input " << i;
                      ASSERT_NEAR(acc[i * ldy + size_t(r - r0)], 1.5 + w, tol + 2e-7) << "row " << r;
                    }
                  for (size_t i = 0; i < m; ++i)  // nothing written past the range
                    for (size_t r = size_t(rows - r0); r < ldy; ++r) ASSERT_TRUE(std::isnan(got[i * ldy + r]));
                }
                const int64_t d0 = rows > 1 ? 1 : 0;
                std::vector<float> deq(size_t((rows - d0) * cols), nan);
                k->dequant(o.m, d0, rows, deq.data());
                for (size_t e = 0; e < deq.size(); ++e)
                  ASSERT_EQ(deq[e], want_deq[size_t(d0 * cols) + e]) << "element " << e;
                ++checked;
                if (k != &ref) ++vector_checked;
              }
            }
          }
        }
  EXPECT_GT(checked, 500);
  if (variants().size() > 1) {
    EXPECT_GT(vector_checked, 300);
  }
}

// Scales and offsets read in place from F16 parts (PackedMatrix::scale_f16 / offset_f16) give
// exactly what the same values as float32 give, in every variant and entry point.
TEST(PackedKernels, Float16ParametersMatchFloat32Ones) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  int checked = 0;
  for (PackedKind kind : {PackedKind::U8, PackedKind::U4})
    for (int64_t cols : {33, 128, 300})
      for (int64_t group : {int64_t(64), int64_t(128), cols})
        for (bool with_offset : {false, true}) {
          const int64_t rows = 9;
          Owned o = make(kind, rows, cols, group, with_offset, rng);
          for (int c = 0; c < 16; ++c) o.m.lut[c] = float(c);  // integer table: the q8 path too
          o.m.zero = 0;
          o.m.int_zero = int_zero_of(o.m);
          // Values float16 can hold, in both representations.
          std::vector<uint16_t> sh(o.scale.size()), oh(o.offset.size());
          for (size_t i = 0; i < sh.size(); ++i) o.scale[i] = f16_to_f32(sh[i] = f32_to_f16(o.scale[i]));
          for (size_t i = 0; i < oh.size(); ++i) o.offset[i] = f16_to_f32(oh[i] = f32_to_f16(o.offset[i]));
          PackedMatrix h = o.m;
          h.scale = nullptr;
          h.offset = nullptr;
          h.scale_f16 = sh.data();
          h.offset_f16 = oh.empty() ? nullptr : oh.data();
          ASSERT_EQ(h.has_offset(), with_offset);
          ASSERT_LT(h.bytes(), o.m.bytes());
          const size_t m = 2, ldx = size_t(cols), ldy = size_t(rows);
          std::vector<float> x(m * ldx);
          for (auto& v : x) v = normal(rng);
          QActs a;
          quantize_acts(x.data(), m, ldx, cols, group, kind == PackedKind::U4, a);
          for (const PackedKernels* k : variants()) {
            if (!k->supports(o.m)) continue;
            SCOPED_TRACE(fmt::format("{} kind {} cols {} group {} offset {}", k->name, packed_kind_name(kind), cols,
                                     group, with_offset));
            std::vector<float> d32(size_t(rows * cols), nan), d16(d32.size(), nan);
            k->dequant(o.m, 0, rows, d32.data());
            k->dequant(h, 0, rows, d16.data());
            ASSERT_EQ(d32, d16);
            std::vector<float> y32(m * ldy, nan), y16(m * ldy, nan);
            k->matvec(o.m, x.data(), m, ldx, 0, rows, y32.data(), ldy, false);
            k->matvec(h, x.data(), m, ldx, 0, rows, y16.data(), ldy, false);
            ASSERT_EQ(y32, y16);
            if (k->matmul_q8 && k->supports_q8(o.m)) {
              std::fill(y32.begin(), y32.end(), nan);
              std::fill(y16.begin(), y16.end(), nan);
              k->matmul_q8(o.m, a, 0, rows, y32.data(), ldy, false);
              k->matmul_q8(h, a, 0, rows, y16.data(), ldy, false);
              ASSERT_EQ(y32, y16);
            }
            ++checked;
          }
        }
  EXPECT_GE(checked, 36);
}

TEST(PackedKernels, VectorVariantsDeclineGroupsThatSplitTheirSteps) {
  std::mt19937 rng(1);
  Owned o = make(PackedKind::U4, 2, 300, 100, true, rng);
  for (const PackedKernels* k : variants())
    if (k != &packed_kernels_ref()) {
      EXPECT_FALSE(k->supports(o.m)) << k->name;
    }
  EXPECT_TRUE(packed_kernels_ref().supports(o.m));
  EXPECT_TRUE(packed_kernels_available(packed_kernels_best()));
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// The integer path: U8 (zero 128 or 0) and U4 with integer tables (affine: z 0 + offsets;
// symmetric: z 8), against the scalar reference.
TEST(PackedKernelsQ8, EveryVariantMatchesTheReference) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const PackedKernels& ref = packed_kernels_ref();
  int checked = 0, exact_checked = 0;
  for (PackedKind kind : {PackedKind::U8, PackedKind::U4})
    for (int zero : {0, 1})
      for (int64_t rows : {1, 3, 33})
        for (int64_t cols : {1, 33, 64, 100, 172, 300})
          for (int64_t group : {int64_t(0), int64_t(64), int64_t(128)})
            for (bool exact : {false, true}) {
              const int64_t g = group == 0 ? cols : group;
              Owned o = make(kind, rows, cols, g, zero == 0, rng);
              const int z = zero == 0 ? 0 : (kind == PackedKind::U8 ? 128 : 8);
              o.m.zero = kind == PackedKind::U8 ? z : 0;
              for (int c = 0; c < 16; ++c) o.m.lut[c] = float(c - z);
              if (exact) {  // integer scales and no offsets: the float epilogue is exact too
                for (auto& s : o.scale) s = 1.0f;
                o.m.offset = nullptr;
              }
              o.m.int_zero = int_zero_of(o.m);
              ASSERT_EQ(o.m.int_zero, z);
              for (size_t m : {size_t(1), size_t(5)}) {
                const size_t ldx = size_t(cols) + 3, ldy = size_t(rows) + 1;
                std::vector<float> x(m * ldx, nan);
                std::uniform_int_distribution<int> q(-127, 127);
                for (size_t i = 0; i < m; ++i)
                  for (int64_t c = 0; c < cols; ++c)
                    x[i * ldx + size_t(c)] = exact ? float(c % QActs::kBlock == 0 ? 127 : q(rng)) : normal(rng);
                for (bool nibble : {false, true}) {  // QActs::at undoes the permutation
                  QActs a;
                  quantize_acts(x.data(), m, ldx, cols, g, nibble, a);
                  for (size_t i = 0; i < m; ++i)
                    for (int64_t c = 0; c < cols; ++c) {
                      const float s = a.scale[i * size_t(a.blocks) + size_t(c / QActs::kBlock)];
                      ASSERT_LE(std::fabs(a.at(i, c) * s - x[i * ldx + size_t(c)]), 0.5f * s + 1e-6f);
                    }
                }
                QActs a;
                quantize_acts(x.data(), m, ldx, cols, g, kind == PackedKind::U4, a);
                std::vector<float> want(m * ldy, nan), flt(m * ldy, nan);
                ref.matmul_q8(o.m, a, 0, rows, want.data(), ldy, false);
                ref.matvec(o.m, x.data(), m, ldx, 0, rows, flt.data(), ldy, false);
                std::vector<double> mag(m * ldy, 0.0);  // Σ |w·x|: the scale of the rounding
                for (size_t i = 0; i < m; ++i)
                  for (int64_t r = 0; r < rows; ++r)
                    for (int64_t c = 0; c < cols; ++c)
                      mag[i * ldy + size_t(r)] += std::fabs(packed_value(o.m, r, c) * x[i * ldx + size_t(c)]) +
                                                  (o.m.offset ? std::fabs(o.m.offset[0] * x[i * ldx + size_t(c)]) : 0);
                for (const PackedKernels* k : variants()) {
                  if (!k->matmul_q8 || !k->supports_q8(o.m)) continue;
                  SCOPED_TRACE(fmt::format("{} kind {} z {} rows {} cols {} group {} m {} exact {}", k->name,
                                           packed_kind_name(kind), z, rows, cols, g, m, exact));
                  std::vector<float> got(m * ldy, nan);
                  k->matmul_q8(o.m, a, 0, rows, got.data(), ldy, false);
                  std::vector<float> acc(m * ldy, 2.0f);
                  k->matmul_q8(o.m, a, 0, rows, acc.data(), ldy, true);
                  for (size_t i = 0; i < m; ++i) {
                    for (int64_t r = 0; r < rows; ++r) {
                      const float wv = want[i * ldy + size_t(r)], gv = got[i * ldy + size_t(r)];
                      if (exact) {
                        ASSERT_EQ(gv, wv) << "row " << r;
                      } else {
                        ASSERT_NEAR(gv, wv, 4e-6 * mag[i * ldy + size_t(r)] + 1e-6) << "row " << r;
                      }
                      ASSERT_NEAR(acc[i * ldy + size_t(r)], 2.0f + wv, 4e-6 * mag[i * ldy + size_t(r)] + 1e-6) << "row " << r;
                    }
                    ASSERT_TRUE(std::isnan(got[i * ldy + size_t(rows)]));  // nothing past the range
                  }
                  ++checked;
                  if (exact) ++exact_checked;
                }
                if (!exact) {  // int8 activations stay close to the float product
                  for (size_t i = 0; i < m; ++i)
                    for (int64_t r = 0; r < rows; ++r)
                      ASSERT_NEAR(want[i * ldy + size_t(r)], flt[i * ldy + size_t(r)], 0.02 * mag[i * ldy + size_t(r)] + 1e-6);
                }
              }
            }
  EXPECT_GT(checked, 200);
  EXPECT_GT(exact_checked, 100);
  if (packed_kernels_available(packed_kernels_avx512vnni())) {
    EXPECT_GT(checked, 400);  // the reference and the VNNI variant
  }
}

// Each variant's quantize_acts against the reference: q, block scales and zsum bit for bit, sum_x
// within float rounding (summed in another order).
// A variant's group sums of x against the reference's: the same within float rounding (summed in
// another order).
void expect_sum_x_near(const QActs& got, const QActs& want, const std::vector<float>& x, size_t ldx, int64_t cols) {
  ASSERT_EQ(got.sum_x.size(), want.sum_x.size());
  for (size_t g = 0; g < want.sum_x.size(); ++g) {
    double mag = 0;
    const size_t i = g / size_t(want.groups), gi = g % size_t(want.groups);
    for (int64_t c = int64_t(gi) * want.group; c < std::min<int64_t>(int64_t(gi + 1) * want.group, cols); ++c)
      mag += std::fabs(x[i * ldx + size_t(c)]);
    ASSERT_NEAR(got.sum_x[g], want.sum_x[g], 1.2e-7 * double(cols) * mag + 1e-30) << "group " << g;
  }
}

TEST(PackedKernelsQ8, QuantizeActsMatchesTheReference) {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int checked = 0;
  for (const PackedKernels* k : variants()) {
    if (!k->quantize_acts) continue;
    for (int64_t cols : {1, 33, 64, 100, 128, 172, 300, 2048})
      for (int64_t group : {int64_t(64), int64_t(128), int64_t(0)})
        for (bool nibble : {false, true})
          for (size_t m : {size_t(1), size_t(3)}) {
            SCOPED_TRACE(fmt::format("{} cols {} group {} nibble {} m {}", k->name, cols, group, nibble, m));
            const size_t ldx = size_t(cols) + 2;
            std::vector<float> x(m * ldx, std::numeric_limits<float>::quiet_NaN());  // padding never read
            for (size_t i = 0; i < m; ++i)
              for (int64_t c = 0; c < cols; ++c) x[i * ldx + size_t(c)] = normal(rng) * (c % 7 == 0 ? 20.0f : 1.0f);
            x[0] = 0.0f;  // a block may start with zeros (and -0 rounds to 0)
            if (cols > 1) x[1] = -0.0f;
            QActs want, got;
            quantize_acts(x.data(), m, ldx, cols, group, nibble, want);
            got.q.assign(7, 1);  // stale contents are replaced
            k->quantize_acts(x.data(), m, ldx, cols, group, nibble, got);
            ASSERT_EQ(got.stride, want.stride);
            ASSERT_EQ(got.blocks, want.blocks);
            ASSERT_EQ(got.groups, want.groups);
            ASSERT_EQ(got.q, want.q);
            ASSERT_EQ(got.scale, want.scale);
            ASSERT_EQ(got.zsum, want.zsum);
            expect_sum_x_near(got, want, x, ldx, cols);
            ++checked;
          }
  }
  if (packed_kernels_available(packed_kernels_avx512vnni())) {
    EXPECT_EQ(checked, 96);
  }
}

// The wide form (int16 activations for code books): every variant's quantize_acts_wide bit for bit
// as the reference (sum_x within rounding), and the reference within half a step of x.
TEST(PackedKernelsQ8, QuantizeActsWideMatchesTheReference) {
  std::mt19937 rng(23);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int checked = 0;
  for (int64_t cols : {8, 64, 72, 128, 200, 2048})
    for (int64_t group : {int64_t(64), int64_t(128), int64_t(0)})
      for (size_t m : {size_t(1), size_t(3)}) {
        SCOPED_TRACE(fmt::format("cols {} group {} m {}", cols, group, m));
        const size_t ldx = size_t(cols) + 2;
        std::vector<float> x(m * ldx, std::numeric_limits<float>::quiet_NaN());  // padding never read
        for (size_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < cols; ++c) x[i * ldx + size_t(c)] = normal(rng) * (c % 7 == 0 ? 20.0f : 1.0f);
        x[0] = 0.0f;
        x[1] = -0.0f;
        if (m > 1)
          for (int64_t c = 0; c < std::min<int64_t>(cols, 64); ++c) x[ldx + size_t(c)] = 0.0f;  // an all-zero block
        QActs want;
        quantize_acts_wide(x.data(), m, ldx, cols, group, want);
        ASSERT_TRUE(want.wide);
        ASSERT_TRUE(want.q.empty());
        for (size_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < cols; ++c) {
            const float s = want.scale[i * size_t(want.blocks) + size_t(c / QActs::kBlock)];
            ASSERT_LE(std::abs(int(want.at16(i, c))), QActs::kWideMax);
            ASSERT_LE(std::fabs(want.at16(i, c) * s - x[i * ldx + size_t(c)]), 0.5f * s * (1 + 1e-6f)) << c;
          }
        for (const PackedKernels* k : variants()) {
          if (!k->quantize_acts_wide) continue;
          SCOPED_TRACE(k->name);
          QActs got;
          got.q.assign(7, 1);  // stale contents are replaced
          got.q16.assign(5, 1);
          k->quantize_acts_wide(x.data(), m, ldx, cols, group, got);
          ASSERT_TRUE(got.wide);
          ASSERT_TRUE(got.q.empty());
          ASSERT_EQ(got.stride, want.stride);
          ASSERT_EQ(got.blocks, want.blocks);
          ASSERT_EQ(got.groups, want.groups);
          ASSERT_EQ(got.q16, want.q16);
          ASSERT_EQ(got.scale, want.scale);
          expect_sum_x_near(got, want, x, ldx, cols);
          ++checked;
        }
      }
  if (packed_kernels_available(packed_kernels_avx512vnni())) {
    EXPECT_EQ(checked, 36);
  }
  QActs a;
  EXPECT_THROW(quantize_acts_wide(std::vector<float>(12, 1.0f).data(), 1, 12, 12, 0, a), Error);  // not whole units
}

// A code book's products take the wide form only, and an integer table's the int8 one: a mix-up
// is an error, not a silently wrong product.
TEST(PackedKernelsQ8, ActivationFormsMatchTheTable) {
  std::mt19937 rng(29);
  std::vector<float> x(64, 0.5f), y(4, 0.0f);
  Owned book = make(PackedKind::U4, 4, 64, 64, false, rng);
  for (int c = 0; c < 16; ++c) book.m.lut[c] = std::tanh(float(c - 7) / 4.0f);
  book.m.int_zero = int_zero_of(book.m);
  ASSERT_TRUE(is_code_book(book.m));
  Owned ints = make(PackedKind::U4, 4, 64, 64, false, rng);
  for (int c = 0; c < 16; ++c) ints.m.lut[c] = float(c - 8);
  ints.m.int_zero = int_zero_of(ints.m);
  ASSERT_FALSE(is_code_book(ints.m));
  QActs narrow, wide;
  quantize_acts(x.data(), 1, 64, 64, 64, false, narrow);
  quantize_acts_wide(x.data(), 1, 64, 64, 64, wide);
  const PackedKernels& ref = packed_kernels_ref();
  EXPECT_THROW(ref.matmul_q8(book.m, narrow, 0, 4, y.data(), 4, false), Error);
  EXPECT_THROW(ref.matmul_q8(ints.m, wide, 0, 4, y.data(), 4, false), Error);
  EXPECT_NO_THROW(ref.matmul_q8(book.m, wide, 0, 4, y.data(), 4, false));
  int16_t lut16[16];
  PackedMatrix zero = book.m;
  for (float& v : zero.lut) v = 0.0f;
  EXPECT_EQ(code_book_i16(zero, lut16), 0.0f);
  for (int16_t v : lut16) EXPECT_EQ(v, 0);
}

TEST(PackedKernelsQ8, OnlyIntegerTablesGetAnIntegerZero) {
  PackedMatrix m;
  m.kind = PackedKind::U4;
  for (int c = 0; c < 16; ++c) m.lut[c] = float(c) * 0.1f - 0.7f;  // NF4-like
  EXPECT_EQ(int_zero_of(m), -1);
  for (int c = 0; c < 16; ++c) m.lut[c] = float(c - 8);
  EXPECT_EQ(int_zero_of(m), 8);
  m.kind = PackedKind::BF16;
  EXPECT_EQ(int_zero_of(m), -1);
}

}  // namespace
}  // namespace lowbit

#include "lowbit/kernels/bf16_gemm.h"

namespace lowbit {
namespace {

// Each bf16 GEMM back end this CPU has (AMX, AVX-512 BF16) against a double-precision product on
// awkward shapes (token counts around the AVX-512 kernel's blocks of 12 and 4, rows around 16 and
// 32, inputs around 32): both operands are rounded to bf16 (relative error <= 2^-8 each, 8
// significant bits), sums are float32.
TEST(Bf16Gemm, EveryBackEndMatchesReferenceWithinBf16Rounding) {
  std::vector<std::pair<const char*, Bf16GemmFn>> backs;
  if (amx_bf16_available()) backs.emplace_back("amx", &amx_gemm);
  if (avx512_bf16_available()) backs.emplace_back("avx512bf16", &avx512bf16_gemm);
  if (backs.empty()) GTEST_SKIP() << "neither AMX-BF16 nor AVX-512 BF16 on this CPU";
  for (const auto& [name, gemm] : backs) {
    SCOPED_TRACE(name);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t m : {1, 5, 12, 13, 21, 33, 64})
      for (size_t n : {1, 16, 17, 40, 64})
        for (size_t k : {1, 31, 33, 100}) {
          std::vector<float> x(m * k), w(n * k);
          for (auto& v : x) v = normal(rng);
          for (auto& v : w) v = normal(rng);
          std::vector<uint16_t> a(bf16_m(m) * bf16_k(k)), b(bf16_m(n) * bf16_k(k));
          bf16_pack_acts(x.data(), m, k, k, a.data());
          bf16_pack_weights(w.data(), n, k, b.data());
          const size_t ldy = n + 3;
          std::vector<float> y(m * ldy, nan), acc(m * ldy, 1.0f);
          gemm(a.data(), m, b.data(), n, k, y.data(), ldy, false);
          gemm(a.data(), m, b.data(), n, k, acc.data(), ldy, true);
          for (size_t i = 0; i < m; ++i) {
            for (size_t j = 0; j < n; ++j) {
              double want = 0, mag = 0, want_bf = 0;
              for (size_t c = 0; c < k; ++c) {
                want += double(x[i * k + c]) * w[j * k + c];
                mag += std::fabs(double(x[i * k + c]) * w[j * k + c]);
                want_bf += double(bf16_to_f32(f32_to_bf16(x[i * k + c]))) * bf16_to_f32(f32_to_bf16(w[j * k + c]));
              }
              const double tol = mag * (1.0 / 128 + 1e-6 * double(k)) + 1e-6;  // two roundings of 2^-8
              ASSERT_NEAR(y[i * ldy + j], want, tol) << m << "x" << n << "x" << k << " at " << i << "," << j;
              // Exact products of the bf16 operands: only the float32 sums' rounding is left.
              ASSERT_NEAR(y[i * ldy + j], want_bf, 1.2e-7 * double(k + 2) * mag * 1.01 + 1e-30) << i << "," << j;
              ASSERT_NEAR(acc[i * ldy + j], 1.0 + want, tol + 1e-6);
            }
            for (size_t j = n; j < ldy; ++j) ASSERT_TRUE(std::isnan(y[i * ldy + j]));  // nothing past n
          }
        }
  }
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// The lanes layout (PackedMatrix::lanes): the same matrix as its row-major source in every entry
// point of every variant that takes it, against the reference on the source; ranges that start and
// end inside a 16-row block; f16 and f32 parameters; affine (z 0, offsets) and symmetric (z 8);
// U4 code books (z -1: an NF4-like table; the float path, one token and three, and the wide int16 one).
TEST(PackedKernelsQ8, LanesLayoutMatchesRowMajor) {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const PackedKernels& ref = packed_kernels_ref();
  int checked = 0, vector_checked = 0, tiles_checked = 0;
  const bool bf16_tiles = amx_bf16_available() || avx512_bf16_available();  // the packing's ISA
  for (PackedKind kind : {PackedKind::U8, PackedKind::U4})
  for (int64_t rows : {1, 3, 16, 17, 33})
    for (int64_t cols : {64, 192, 320})
      for (int64_t group : {int64_t(64), int64_t(128), cols})
        for (int z : {0, kind == PackedKind::U4 ? 8 : 128, -1})
          for (bool f16 : {false, true})
            for (bool exact : {false, true}) {
              const bool book = z < 0;  // a code book: no integer path
              if (book && (kind != PackedKind::U4 || exact)) continue;
              SCOPED_TRACE(fmt::format("{} rows {} cols {} group {} z {} f16 {} exact {}", packed_kind_name(kind), rows,
                                       cols, group, z, f16, exact));
              Owned o = make(kind, rows, cols, group, z == 0 && !exact, rng);
              for (int c = 0; c < 16; ++c) o.m.lut[c] = book ? std::tanh(float(c - 7) / 4.0f) : float(c - z);
              o.m.zero = kind == PackedKind::U8 ? z : 0;
              if (exact)
                for (auto& s : o.scale) s = 1.0f;
              std::vector<uint16_t> sh, oh;
              if (f16) {
                for (float s : o.scale) sh.push_back(f32_to_f16(s));
                for (float v : o.offset) oh.push_back(f32_to_f16(v));
                o.m.scale = nullptr;
                o.m.offset = nullptr;
                o.m.scale_f16 = sh.data();
                o.m.offset_f16 = oh.empty() ? nullptr : oh.data();
              }
              o.m.int_zero = int_zero_of(o.m);
              ASSERT_TRUE(lanes_eligible(o.m));
              PackedLanes keep;
              const PackedMatrix l = relayout_lanes(o.m, keep);
              ASSERT_TRUE(l.lanes);
              ASSERT_FALSE(lanes_eligible(l));
              ASSERT_EQ(l.bytes(), o.m.bytes());
              for (int64_t r = 0; r < rows; ++r) {
                for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(packed_code_at(l, r, c), packed_code_at(o.m, r, c)) << r << "," << c;
                for (int64_t g = 0; g < o.m.groups(); ++g) {
                  ASSERT_EQ(l.scale_at(l.param_index(r, g)), o.m.scale_at(o.m.param_index(r, g)));
                  ASSERT_EQ(l.offset_at(l.param_index(r, g)), o.m.offset_at(o.m.param_index(r, g)));
                }
              }
              std::vector<float> want_deq(size_t(rows * cols), nan);
              ref.dequant(o.m, 0, rows, want_deq.data());
              const size_t m = 3, ldx = size_t(cols) + 2, ldy = size_t(rows) + 1;
              std::vector<float> x(m * ldx, nan);
              std::uniform_int_distribution<int> q(-127, 127);
              for (size_t i = 0; i < m; ++i)
                for (int64_t c = 0; c < cols; ++c)
                  x[i * ldx + size_t(c)] = exact ? float(c % QActs::kBlock == 0 ? 127 : q(rng)) : normal(rng);
              QActs a;  // code books: the wide form (int16), on the row-major source for the reference
              if (book) {
                quantize_acts_wide(x.data(), m, ldx, cols, group, a);
              } else {
                quantize_acts(x.data(), m, ldx, cols, group, false, a);
              }
              std::vector<float> want_q8(m * ldy, nan), want_f(m * ldy, nan);
              ref.matmul_q8(o.m, a, 0, rows, want_q8.data(), ldy, false);
              ref.matvec(o.m, x.data(), m, ldx, 0, rows, want_f.data(), ldy, false);
              std::vector<double> mag(m * ldy, 0.0);  // Σ (|base|·scale + |offset|)·|x|
              for (size_t i = 0; i < m; ++i)
                for (int64_t r = 0; r < rows; ++r)
                  for (int64_t c = 0; c < cols; ++c) {
                    const size_t gi = o.m.param_index(r, c / group);
                    const int code = packed_code_at(o.m, r, c);
                    const double base = kind == PackedKind::U8 ? double(code - z) : double(o.m.lut[code]);
                    mag[i * ldy + size_t(r)] += (std::fabs(base) * o.m.scale_at(gi) +
                                                 std::fabs(o.m.offset_at(gi))) * std::fabs(x[i * ldx + size_t(c)]);
                  }
              if (book) {  // the wide product against the float one: the int16 roundings' bound
                int16_t lut16[16];
                const double f = code_book_i16(o.m, lut16);
                for (int v = 0; v < 16; ++v) ASSERT_LE(std::fabs(lut16[v] * f - o.m.lut[v]), 0.5 * f * (1 + 1e-6)) << v;
                for (size_t i = 0; i < m; ++i)
                  for (int64_t r = 0; r < rows; ++r) {
                    double bound = 0;
                    for (int64_t c = 0; c < cols; ++c) {
                      const double s = std::fabs(o.m.scale_at(o.m.param_index(r, c / group)));
                      const double xs = a.scale[i * size_t(a.blocks) + size_t(c / QActs::kBlock)];
                      bound += s * (0.5 * f * std::fabs(x[i * ldx + size_t(c)]) + std::fabs(o.m.lut[packed_code_at(o.m, r, c)]) * 0.5 * xs);
                    }
                    const size_t at = i * ldy + size_t(r);
                    ASSERT_NEAR(want_q8[at], want_f[at], 1.01 * bound + 1.2e-7 * double(cols + 8) * mag[at] + 1e-30) << "row " << r;
                  }
              }
              if (bf16_tiles)  // prefill tiles straight from the lanes: bit for bit the float route's
                for (int64_t r0 : {int64_t(0), int64_t(16)}) {
                  if (r0 >= rows) continue;
                  const size_t n = size_t(rows - r0), size = bf16_m(n) * bf16_k(size_t(cols));
                  std::vector<uint16_t> want_t(size, 0xFFFF), got_t(size, 0xFFFF);
                  bf16_pack_weights(want_deq.data() + size_t(r0 * cols), n, size_t(cols), want_t.data());
                  bf16_pack_weights_lanes(l, r0, rows, got_t.data());
                  ASSERT_EQ(got_t, want_t) << "from row " << r0;
                  ++tiles_checked;
                }
              for (const PackedKernels* k : variants()) {
                if (!k->takes_lanes) {
                  EXPECT_FALSE(k->supports(l)) << k->name;
                  continue;
                }
                SCOPED_TRACE(k->name);
                ASSERT_TRUE(k->supports(l));
                ASSERT_TRUE(k->supports_q8 && k->supports_q8(l));  // code books: on wide activations
                for (int64_t r0 : {int64_t(0), std::min<int64_t>(rows - 1, 5)}) {
                  const int64_t r1 = rows > 20 ? rows - 2 : rows;  // ends inside a block too
                  std::vector<float> deq(size_t((r1 - r0) * cols), nan);
                  k->dequant(l, r0, r1, deq.data());
                  for (size_t e = 0; e < deq.size(); ++e) ASSERT_EQ(deq[e], want_deq[size_t(r0 * cols) + e]) << e;
                  std::vector<float> got(m * ldy, nan), acc(m * ldy, 1.5f), flt(m * ldy, nan), one(ldy, nan), one_acc(ldy, 2.5f);
                  // One token (the decode kernels), then three (the float fallback), = and +=.
                  k->matvec(l, x.data(), 1, ldx, r0, r1, one.data(), ldy, false);
                  k->matvec(l, x.data(), 1, ldx, r0, r1, one_acc.data(), ldy, true);
                  for (int64_t r = r0; r < r1; ++r) {
                    const double tol_f = 1.2e-7 * double(cols + 8) * mag[size_t(r)] + 1e-30;
                    ASSERT_NEAR(one[size_t(r - r0)], want_f[size_t(r)], tol_f) << "one token, row " << r;
                    ASSERT_NEAR(one_acc[size_t(r - r0)], 2.5f + want_f[size_t(r)], tol_f + 4e-7) << "one token +=, row " << r;
                  }
                  for (size_t r = size_t(r1 - r0); r < ldy; ++r) ASSERT_TRUE(std::isnan(one[r]));
                  k->matvec(l, x.data(), m, ldx, r0, r1, flt.data(), ldy, false);
                  if (book) {
                    for (size_t i = 0; i < m; ++i)
                      for (int64_t r = r0; r < r1; ++r)
                        ASSERT_NEAR(flt[i * ldy + size_t(r - r0)], want_f[i * ldy + size_t(r)],
                                    1.2e-7 * double(cols + 8) * mag[i * ldy + size_t(r)] + 1e-30) << "row " << r;
                  }
                  k->matmul_q8(l, a, r0, r1, got.data(), ldy, false);
                  k->matmul_q8(l, a, r0, r1, acc.data(), ldy, true);
                  for (size_t i = 0; i < m; ++i) {
                    for (int64_t r = r0; r < r1; ++r) {
                      const size_t at = i * ldy + size_t(r - r0), want_at = i * ldy + size_t(r);
                      const double tol = 4e-6 * mag[want_at] + 1e-6;
                      if (exact) {
                        ASSERT_EQ(got[at], want_q8[want_at]) << "row " << r;
                      } else {
                        ASSERT_NEAR(got[at], want_q8[want_at], tol) << "row " << r;
                      }
                      ASSERT_NEAR(acc[at], 1.5f + want_q8[want_at], tol + 2e-7) << "row " << r;
                      ASSERT_NEAR(flt[at], want_f[want_at], 1.2e-7 * double(cols + 8) * mag[want_at] + 1e-30) << "row " << r;
                    }
                    for (size_t r = size_t(r1 - r0); r < ldy; ++r) {  // nothing written past the range
                      ASSERT_TRUE(std::isnan(got[i * ldy + r]));
                      ASSERT_TRUE(std::isnan(flt[i * ldy + r]));
                    }
                  }
                }
                ++checked;
                if (k != &ref) ++vector_checked;
              }
            }
  EXPECT_GE(checked, 720);
  if (packed_kernels_available(packed_kernels_avx512vnni())) {
    EXPECT_GE(vector_checked, 720);
  }
  if (bf16_tiles) {
    EXPECT_GE(tiles_checked, 600);
  }
}

TEST(PackedKernelsQ8, LanesLayoutTakesCodesOnWholeBlocks) {
  std::mt19937 rng(19);
  auto eligible = [&](int64_t cols, int64_t group, bool integer) {
    Owned o = make(PackedKind::U4, 2, cols, group, true, rng);
    if (integer)
      for (int c = 0; c < 16; ++c) o.m.lut[c] = float(c);
    o.m.int_zero = int_zero_of(o.m);
    return lanes_eligible(o.m);
  };
  EXPECT_TRUE(eligible(128, 64, true));
  EXPECT_TRUE(eligible(192, 192, true));
  EXPECT_TRUE(eligible(128, 64, false));  // NF4-like table: the float lanes kernel
  EXPECT_FALSE(eligible(100, 100, true));  // not whole 64-column blocks
  EXPECT_FALSE(eligible(128, 32, true));   // groups splitting a block
  Owned o = make(PackedKind::U8, 2, 128, 64, false, rng);
  o.m.int_zero = int_zero_of(o.m);
  EXPECT_TRUE(lanes_eligible(o.m));
  o.m.cols = 96;
  EXPECT_FALSE(lanes_eligible(o.m));
  PackedLanes keep;
  EXPECT_THROW(relayout_lanes(o.m, keep), Error);
  Owned f = make(PackedKind::F16, 2, 128, 0, false, rng);
  EXPECT_FALSE(lanes_eligible(f.m));
}

}  // namespace
}  // namespace lowbit

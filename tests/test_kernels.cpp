// Conformance of the int8-dyn kernels: every variant against the scalar reference on shapes chosen
// to break them (integer results bit for bit), and linear_forward against float math.
#include <random>

#include "lowbit/core/error.h"
#include "lowbit/kernels/linear.h"
#include "test_util.h"

namespace lowbit {
namespace {

struct Variant {
  const char* name;
  GemmQ8Fn fn;
  bool available;
};

std::vector<Variant> variants() {
  __builtin_cpu_init();
  return {{"ref", &gemm_q8_dyn_ref, true},
          {"avx512vnni", &gemm_q8_dyn_avx512vnni,
           __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni")}};
}

TEST(KernelsQ8Dyn, EveryVariantMatchesReferenceBitForBit) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> s8(-128, 127);
  int checked = 0;
  for (size_t m : {1, 3, 4, 5, 33})
    for (size_t rows : {1, 3, 16, 17, 33, 48, 64})
      for (size_t k : {1, 7, 63, 64, 65, 172, 300}) {
        std::vector<int8_t> q(rows * k);
        for (auto& v : q) v = int8_t(s8(rng));
        // Extremes too: the first row all -128 (code 0) and the second all 127 (code 255) against
        // all -128 / 127 activations.
        if (k >= 7) std::fill(q.begin(), q.begin() + std::ptrdiff_t(k), int8_t(-128));
        if (k >= 7 && rows > 1) std::fill(q.begin() + std::ptrdiff_t(k), q.begin() + std::ptrdiff_t(2 * k), int8_t(127));
        const LinearWeights w = LinearWeights::from_q8(q, std::vector<float>(rows, 1.0f), int64_t(rows), int64_t(k));
        ASSERT_EQ(w.packed.size(), 1u);
        const PackedMatrix& pm = w.packed[0].m;
        const size_t lda = (k + 3) / 4 * 4 + 4, ldc = (rows + 15) / 16 * 16 + 16;
        std::vector<int8_t> a(m * lda);
        for (auto& v : a) v = int8_t(s8(rng));  // the padding bytes too: they must not matter
        if (k >= 7) std::fill(a.begin(), a.begin() + std::ptrdiff_t(k), int8_t(-128));
        if (k >= 7 && m > 1) std::fill(a.begin() + std::ptrdiff_t(lda), a.begin() + std::ptrdiff_t(lda + k), int8_t(127));
        std::vector<int32_t> want(m * ldc, INT32_MIN);
        gemm_q8_dyn_ref(a.data(), m, lda, pm, 0, rows, want.data(), ldc);
        // The reference is the sum it states: Σ_c xq · (q + 128).
        for (size_t i = 0; i < m; ++i)
          for (size_t r = 0; r < rows; ++r) {
            int64_t sum = 0;
            for (size_t c = 0; c < k; ++c) sum += int64_t(a[i * lda + c]) * (int64_t(q[r * k + c]) + 128);
            ASSERT_EQ(want[i * ldc + r], sum) << "ref m=" << m << " rows=" << rows << " k=" << k;
          }
        for (const Variant& v : variants()) {
          if (!v.available) continue;
          std::vector<int32_t> got(m * ldc, INT32_MIN);  // an unwritten element fails
          // Two calls over a split of the rows at a multiple of 16, as linear_forward's threads do.
          const size_t split = std::min(rows, size_t(16) * ((rows / 16) / 2 + (rows > 32 ? 1 : 0)));
          v.fn(a.data(), m, lda, pm, 0, split, got.data(), ldc);
          v.fn(a.data(), m, lda, pm, split, rows, got.data(), ldc);
          for (size_t i = 0; i < m; ++i)
            for (size_t r = 0; r < ldc; ++r)
              ASSERT_EQ(got[i * ldc + r], r < rows ? want[i * ldc + r] : INT32_MIN)
                  << v.name << " m=" << m << " rows=" << rows << " k=" << k << " at (" << i << ", " << r << ")";
          ++checked;
        }
      }
  EXPECT_GE(checked, 245);
  std::printf("[ kernels  ] int8-dyn variant in use: %s\n", gemm_q8_dyn_best_name());
}

TEST(KernelsQ8Dyn, LinearForwardMatchesFloatWithinActivationRounding) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (auto [m, rows, k] : {std::tuple<size_t, size_t, size_t>{1, 5, 172}, {33, 17, 64}, {3, 64, 300}}) {
    std::vector<float> x(m * k), wf(rows * k);
    for (auto& v : x) v = d(rng);
    for (auto& v : wf) v = 0.05f * d(rng);
    // int8 weights per row (absmax), and the float weights they stand for.
    std::vector<int8_t> q(rows * k);
    std::vector<float> scale(rows), deq(rows * k);
    for (size_t r = 0; r < rows; ++r) {
      float mx = 0;
      for (size_t c = 0; c < k; ++c) mx = std::max(mx, std::fabs(wf[r * k + c]));
      scale[r] = mx / 127;
      for (size_t c = 0; c < k; ++c) {
        q[r * k + c] = int8_t(std::lround(wf[r * k + c] / scale[r]));
        deq[r * k + c] = float(q[r * k + c]) * scale[r];
      }
    }
    LinearWeights w8 = LinearWeights::from_q8(q, scale, int64_t(rows), int64_t(k));
    LinearWeights wf32 = LinearWeights::from_f32(deq, int64_t(rows), int64_t(k));
    std::vector<float> y8(m * rows, NAN), yf(m * rows, NAN);
    linear_forward(w8, x.data(), m, y8.data());
    linear_forward(wf32, x.data(), m, yf.data());
    for (size_t i = 0; i < m; ++i) {
      // Activation rounding: |Δx| <= absmax/254 per element, so |Δy_r| <= absmax/254 · Σ|w_r|.
      float absmax = 0;
      for (size_t c = 0; c < k; ++c) absmax = std::max(absmax, std::fabs(x[i * k + c]));
      for (size_t r = 0; r < rows; ++r) {
        double l1 = 0;
        for (size_t c = 0; c < k; ++c) l1 += std::fabs(deq[r * k + c]);
        EXPECT_NEAR(y8[i * rows + r], yf[i * rows + r], absmax / 254.0 * l1 * 1.01 + 1e-5)
            << "m=" << m << " rows=" << rows << " k=" << k << " (" << i << ", " << r << ")";
      }
    }
    // Accumulate mode adds.
    std::vector<float> acc(m * rows, 1.0f);
    linear_forward(w8, x.data(), m, acc.data(), true);
    for (size_t i = 0; i < acc.size(); ++i) EXPECT_FLOAT_EQ(acc[i], y8[i] + 1.0f);
  }
}

TEST(KernelsQ8Dyn, ZeroRowsAndFusion) {
  std::vector<float> x(8, 0.0f);
  LinearWeights a = LinearWeights::from_q8(std::vector<int8_t>(16, 3), std::vector<float>(2, 0.5f), 2, 8);
  LinearWeights b = LinearWeights::from_q8(std::vector<int8_t>(8, -1), std::vector<float>(1, 2.0f), 1, 8);
  a.append_rows(b);
  EXPECT_EQ(a.rows, 3);
  EXPECT_EQ(a.packed.size(), 2u);  // one segment per part, each its own blocks of 16 rows
  std::vector<float> y(3, NAN);
  linear_forward(a, x.data(), 1, y.data());  // all-zero activations: scale 0, exact zeros
  EXPECT_EQ(y, (std::vector<float>{0, 0, 0}));
  for (auto& v : x) v = 1.0f;
  linear_forward(a, x.data(), 1, y.data());
  EXPECT_FLOAT_EQ(y[0], 8 * 3 * 0.5f);
  EXPECT_FLOAT_EQ(y[2], -8 * 2.0f);
  LinearWeights f = LinearWeights::from_f32(std::vector<float>(8, 1.0f), 1, 8);
  EXPECT_THROW(a.append_rows(f), Error);
  EXPECT_THROW(f.append_rows(a), Error);
}

// The lanes layout is the only copy of the weights: every weight reads back through q8_at, row_f32
// and a fusion of parts whose rows do not fill their last block of 16 (and widths not a multiple of 4).
TEST(KernelsQ8Dyn, WeightsReadBackFromTheirOnlyCopy) {
  for (int64_t cols : {5, 8, 37, 128}) {
    const int64_t r1 = 19, r2 = 7;
    auto values = [&](int64_t rows, int salt) {
      std::vector<int8_t> q(size_t(rows * cols));
      for (size_t i = 0; i < q.size(); ++i) q[i] = int8_t(int((i * 37 + size_t(salt)) % 256) - 128);
      return q;
    };
    const std::vector<int8_t> qa = values(r1, 1), qb = values(r2, 2);
    std::vector<float> sa(static_cast<size_t>(r1)), sb(static_cast<size_t>(r2));
    for (size_t r = 0; r < sa.size(); ++r) sa[r] = 0.25f + float(r);
    for (size_t r = 0; r < sb.size(); ++r) sb[r] = 0.5f + float(r);
    LinearWeights w = LinearWeights::from_q8(qa, sa, r1, cols);
    w.append_rows(LinearWeights::from_q8(qb, sb, r2, cols));
    ASSERT_EQ(w.rows, r1 + r2);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      const int8_t* want = r < r1 ? &qa[size_t(r * cols)] : &qb[size_t((r - r1) * cols)];
      const float s = r < r1 ? sa[size_t(r)] : sb[size_t(r - r1)];
      ASSERT_EQ(w.q8_scale_at(r), s);
      w.row_f32(r, row.data());
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(w.q8_at(r, c), want[c]) << cols << " " << r << "," << c;
        ASSERT_EQ(row[size_t(c)], float(want[c]) * s);
      }
    }
    // No second copy: the codes padded to blocks of 16 rows and 4 columns, and the scales.
    const uint64_t padded = uint64_t((r1 + 15) / 16 * 16 + (r2 + 15) / 16 * 16) * uint64_t((cols + 3) / 4 * 4);
    EXPECT_EQ(w.bytes(), uint64_t(w.rows * cols) + 4 * uint64_t(w.rows));  // what a pass reads
    EXPECT_LE(padded, 2 * w.bytes() + 4096);
  }
  EXPECT_THROW(LinearWeights::from_q8(std::vector<int8_t>(5), std::vector<float>(1), 2, 3), Error);
}

// A single input row (a decode step) runs on the lanes kernels with one activation scale for the
// token; several on gemm_q8_dyn. Both are the same product, within float rounding of the epilogue
// (the lanes kernel sums per block of 64 in float; the GEMM in int32), for dynamic and static scales,
// fused parts, and a weight split over its columns (each part's inputs then take their own scale).
TEST(KernelsQ8Dyn, DecodeOnTheLanesKernelsMatchesTheGemm) {
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::uniform_int_distribution<int> s8(-127, 127);
  const int64_t cols = 256, r1 = 40, r2 = 24;
  auto part = [&](int64_t rows) {
    std::vector<int8_t> q(size_t(rows * cols));
    for (auto& v : q) v = int8_t(s8(rng));
    std::vector<float> s(static_cast<size_t>(rows));
    for (auto& v : s) v = 0.001f + 0.01f * std::fabs(d(rng));
    return LinearWeights::from_q8(q, s, rows, cols);
  };
  LinearWeights w = part(r1);
  w.append_rows(part(r2));
  if (!w.packed[0].q8) GTEST_SKIP() << "this CPU's kernels do not take int8 segments";
  std::vector<float> x(2 * cols);
  for (auto& v : x) v = d(rng);
  x[3] = 9.0f;
  for (float act : {0.0f, 0.02f}) {
    w.set_act_scale(act);
    // Row by row (the lanes kernels) against two rows at once (the GEMM; row 2 a copy of row 1).
    std::copy_n(x.begin(), cols, x.begin() + cols);
    std::vector<float> y1(size_t(w.rows), NAN), y2(2 * size_t(w.rows), NAN);
    linear_forward(w, x.data(), 1, y1.data());
    linear_forward(w, x.data(), 2, y2.data());
    // The float sum over 4 blocks of (code · q) up to ~2e6 each: a relative error of ~1e-6 of Σ|terms|.
    for (int64_t r = 0; r < w.rows; ++r) {
      double mag = 0;
      for (int64_t c = 0; c < cols; ++c) mag += 255.0 * 127.0;
      const float scale = act > 0 ? act : [&] {
        float m = 0;
        for (int64_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(x[size_t(c)]));
        return m / 127;
      }();
      const double tol = 4e-7 * mag * scale * w.q8_scale_at(r);
      ASSERT_NEAR(y1[size_t(r)], y2[size_t(r)], tol) << "act " << act << " row " << r;
      ASSERT_EQ(y2[size_t(r)], y2[size_t(w.rows + r)]);
    }
    // Split over its columns: parts at 64 and 192, each with its own inputs' scale.
    LinearWeights one = part(r1);
    one.set_act_scale(act);
    const LinearWeights parts = one.split_columns({64, 192});
    ASSERT_TRUE(parts.is_int8());
    ASSERT_EQ(parts.packed.size(), 3u);
    std::vector<float> ys(size_t(r1), NAN), yg(2 * size_t(r1), NAN), yw(size_t(r1), NAN);
    linear_forward(parts, x.data(), 1, ys.data());
    linear_forward(parts, x.data(), 2, yg.data());
    linear_forward(one, x.data(), 1, yw.data());
    for (int64_t r = 0; r < r1; ++r) {
      const double tol = 4e-7 * 255.0 * 127.0 * double(cols) * 9.0 / 127 * one.q8_scale_at(r);
      ASSERT_NEAR(ys[size_t(r)], yg[size_t(r)], tol) << "act " << act << " row " << r;
      // Against the whole row's quantization: parts quantize finer, never coarser (one step of the
      // whole row's scale per input, at most).
      double l1 = 0;
      for (int64_t c = 0; c < cols; ++c) l1 += std::fabs(double(one.q8_at(r, c)) * one.q8_scale_at(r));
      ASSERT_NEAR(ys[size_t(r)], yw[size_t(r)], (act > 0 ? act : 9.0 / 127) * l1 + tol) << "act " << act << " row " << r;
    }
  }
}

}  // namespace
}  // namespace lowbit

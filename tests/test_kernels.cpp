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
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127);
  int checked = 0;
  for (size_t m : {1, 3, 4, 5, 33})
    for (size_t rows : {1, 3, 16, 17, 33, 48, 64})
      for (size_t k : {1, 7, 63, 64, 65, 172, 300}) {
        std::vector<int8_t> q(rows * k);
        for (auto& v : q) v = int8_t(s8(rng));
        // Extremes too: the first row all -128 against all-255 activations.
        if (k >= 7) std::fill(q.begin(), q.begin() + std::ptrdiff_t(k), int8_t(-128));
        const LinearWeights w = LinearWeights::from_q8(q, std::vector<float>(rows, 1.0f), int64_t(rows), int64_t(k));
        const size_t lda = size_t(w.cols_padded()), ldc = size_t(w.rows_padded());
        std::vector<uint8_t> a(m * lda);
        for (auto& v : a) v = uint8_t(u8(rng));  // the padding bytes too: they must not matter
        if (k >= 7) std::fill(a.begin(), a.begin() + std::ptrdiff_t(k), uint8_t(255));
        std::vector<int32_t> want(m * ldc, INT32_MIN);
        gemm_q8_dyn_ref(a.data(), m, w, 0, rows, want.data());
        for (const Variant& v : variants()) {
          if (!v.available) continue;
          std::vector<int32_t> got(m * ldc, INT32_MIN);  // an unwritten element fails
          // Two calls over a split of the rows at a multiple of 16, as linear_forward's threads do.
          const size_t split = std::min(rows, size_t(16) * ((rows / 16) / 2 + (rows > 32 ? 1 : 0)));
          v.fn(a.data(), m, w, 0, split, got.data());
          v.fn(a.data(), m, w, split, rows, got.data());
          for (size_t i = 0; i < m; ++i)
            for (size_t r = 0; r < rows; ++r)
              ASSERT_EQ(got[i * ldc + r], want[i * ldc + r])
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
  EXPECT_EQ(a.q8_rowsum, (std::vector<int32_t>{24, 24, -8}));
  std::vector<float> y(3, NAN);
  linear_forward(a, x.data(), 1, y.data());  // all-zero activations: scale 0, exact zeros
  EXPECT_EQ(y, (std::vector<float>{0, 0, 0}));
  for (auto& v : x) v = 1.0f;
  linear_forward(a, x.data(), 1, y.data());
  EXPECT_FLOAT_EQ(y[0], 8 * 3 * 0.5f);
  EXPECT_FLOAT_EQ(y[2], -8 * 2.0f);
  LinearWeights f = LinearWeights::from_f32(std::vector<float>(8, 1.0f), 1, 8);
  EXPECT_THROW(a.append_rows(f), Error);
}

// The VNNI layout is the only copy of the weights: every weight reads back through q8_at, row_f32
// and a fusion of parts whose rows do not fill their last block of 16 (and widths not a multiple of 4).
TEST(KernelsQ8Dyn, WeightsReadBackFromTheirOnlyCopy) {
  for (int64_t cols : {5, 8, 37}) {
    const int64_t r1 = 19, r2 = 7;
    auto values = [&](int64_t rows, int salt) {
      std::vector<int8_t> q(size_t(rows * cols));
      for (size_t i = 0; i < q.size(); ++i) q[i] = int8_t(int((i * 37 + size_t(salt)) % 255) - 127);
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
      int32_t sum = 0;
      w.row_f32(r, row.data());
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(w.q8_at(r, c), want[c]) << cols << " " << r << "," << c;
        ASSERT_EQ(row[size_t(c)], float(want[c]) * s);
        sum += want[c];
      }
      ASSERT_EQ(w.q8_rowsum[size_t(r)], sum);
    }
    EXPECT_EQ(w.q8_vnni.size(), size_t(w.rows_padded() * w.cols_padded()));  // no second copy
    EXPECT_EQ(w.bytes(), w.q8_vnni.size() + 8 * size_t(w.rows));
  }
  EXPECT_THROW(LinearWeights::from_q8(std::vector<int8_t>(5), std::vector<float>(1), 2, 3), Error);
}

}  // namespace
}  // namespace lowbit

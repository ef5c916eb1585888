// The gated activation kernels and RMSNorm (kernels/activation.h): the references against double
// precision, and every variant against the reference on lengths around the vector width (SiLU with
// values that reach exp's range limits; RMSNorm bit for bit), outputs past n left untouched.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "lowbit/kernels/activation.h"
#include "test_util.h"

namespace lowbit {
namespace {

std::vector<float> gates(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> g(n);
  for (auto& v : g) v = normal(rng);
  const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 90.0f, -90.0f, 200.0f, -200.0f, 1e30f, -1e30f};
  for (size_t j = 0; j < n && j < std::size(special); ++j) g[(j * 7) % n] = special[j];
  return g;
}

// (Below 1e-30 the reference itself rounds to 0: e^90 overflows float.)
double silu_mul_double(double g, double u) { return g / (1.0 + std::exp(-g)) * u; }

TEST(SiluMul, ReferenceMatchesDoublePrecision) {
  std::mt19937 rng(3);
  const auto g = gates(257, rng);
  std::vector<float> u(g.size(), 1.5f), out(g.size());
  silu_mul_ref(g.data(), u.data(), out.data(), g.size());
  for (size_t j = 0; j < g.size(); ++j) {
    const double want = silu_mul_double(g[j], u[j]);
    EXPECT_NEAR(out[j], want, 4e-7 * std::fabs(want) + 1e-30) << "g " << g[j];
  }
}

TEST(SiluMul, EveryVariantMatchesReference) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512dq")) GTEST_SKIP() << "no AVX-512 on this CPU";
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (size_t n : {1, 2, 15, 16, 17, 31, 33, 100, 2816}) {
    SCOPED_TRACE(n);
    const auto g = gates(n, rng);
    std::vector<float> u(n);
    for (auto& v : u) v = normal(rng);
    std::vector<float> want(n + 16, nan), got(n + 16, nan);
    silu_mul_ref(g.data(), u.data(), want.data(), n);
    silu_mul_avx512(g.data(), u.data(), got.data(), n);
    for (size_t j = 0; j < n; ++j)
      EXPECT_NEAR(got[j], want[j], 1e-6 * std::fabs(want[j]) + 1e-30) << j << " g " << g[j] << " u " << u[j];
    for (size_t j = n; j < n + 16; ++j) EXPECT_TRUE(std::isnan(got[j])) << "wrote past n at " << j;
  }
  // NaN stays NaN; ±inf as the reference has them.
  const float g[] = {nan, std::numeric_limits<float>::infinity(), 3.0f};
  const float u[] = {1.0f, 2.0f, nan};
  float want[3], got[3];
  silu_mul_ref(g, u, want, 3);
  silu_mul_avx512(g, u, got, 3);
  EXPECT_TRUE(std::isnan(got[0]));
  EXPECT_EQ(got[1], want[1]);
  EXPECT_TRUE(std::isnan(got[2]));
  EXPECT_NE(silu_mul_best(), nullptr);
}

TEST(RmsNorm, ReferenceMatchesDoublePrecision) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const int n = 2053;
  std::vector<float> x(n), w(n), out(n);
  for (auto& v : x) v = normal(rng);
  for (auto& v : w) v = 1.0f + 0.1f * normal(rng);
  rms_norm_ref(x.data(), w.data(), out.data(), n, 1e-5f);
  long double ss = 0;
  for (float v : x) ss += (long double)v * v;
  const double s = 1.0 / std::sqrt(double(ss / n) + 1e-5);
  for (int i = 0; i < n; ++i) EXPECT_NEAR(out[i], double(w[i]) * x[i] * s, 3e-7 * std::fabs(double(w[i]) * x[i] * s)) << i;
}

TEST(RmsNorm, EveryVariantMatchesReferenceBitForBit) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "no AVX-512 on this CPU";
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int n : {1, 7, 8, 9, 15, 16, 17, 33, 100, 2048, 2053}) {
    SCOPED_TRACE(n);
    std::vector<float> x(static_cast<size_t>(n)), w(static_cast<size_t>(n));
    for (auto& v : x) v = normal(rng) * (n % 2 ? 1e-3f : 50.0f);  // small and large sums
    for (auto& v : w) v = normal(rng);
    std::vector<float> want(size_t(n) + 16, nan), got(size_t(n) + 16, nan);
    rms_norm_ref(x.data(), w.data(), want.data(), n, 1e-6f);
    rms_norm_avx512(x.data(), w.data(), got.data(), n, 1e-6f);
    for (int i = 0; i < n; ++i) EXPECT_EQ(got[size_t(i)], want[size_t(i)]) << i;
    for (size_t j = size_t(n); j < size_t(n) + 16; ++j) EXPECT_TRUE(std::isnan(got[j])) << "wrote past n at " << j;
  }
  EXPECT_NE(rms_norm_best(), nullptr);
}

TEST(Argmax, EveryVariantMatchesReference) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "no AVX-512 on this CPU";
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-3, 3);  // many ties
  for (int64_t n : {1, 2, 15, 16, 17, 33, 1000, 128256}) {
    SCOPED_TRACE(n);
    for (int trial = 0; trial < 6; ++trial) {
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = float(small(rng));
      if (trial == 1) x[size_t(n - 1)] = 9;           // the maximum in the tail
      if (trial == 2) x.assign(size_t(n), -inf);      // nothing beats x[0]
      if (trial == 3) x[0] = nan;                     // a NaN first is never beaten
      if (trial == 4)
        for (size_t i = 0; i < x.size(); i += 3) x[i] = nan;  // NaNs elsewhere are never chosen
      if (trial == 5 && n > 1) x[1] = inf;
      EXPECT_EQ(argmax_avx512(x.data(), n), argmax_ref(x.data(), n)) << "trial " << trial;
    }
  }
  const float first_nan[] = {1.0f, nan, 1.0f, 2.0f, 2.0f};
  EXPECT_EQ(argmax_avx512(first_nan, 5), 3);
  EXPECT_NE(argmax_best(), nullptr);
}

}  // namespace
}  // namespace lowbit

// Decode attention (kernels/attention.h): the reference against double-precision math, and every
// variant against the reference on awkward shapes (one key, tails of 16, head sizes 16..128 incl. 80, GQA
// groups of 1, 3 and 8, score ranges that underflow exp).
#include <cmath>
#include <random>
#include <vector>

#include "lowbit/kernels/attention.h"
#include "test_util.h"

namespace lowbit {
namespace {

struct Case {
  int g, hd, len;
  size_t ld;
  std::vector<float> q, k, v;
};

Case make_case(int g, int hd, int len, float spread, std::mt19937& rng) {
  Case c{g, hd, len, size_t(2 * hd + 16), {}, {}, {}};  // keys of two KV heads side by side, and a gap
  std::normal_distribution<float> n(0.0f, 1.0f);
  c.q.resize(size_t(g * hd));
  c.k.resize(size_t(len) * c.ld);
  c.v.resize(c.k.size());
  for (auto& x : c.q) x = spread * n(rng);
  for (auto& x : c.k) x = n(rng);
  for (auto& x : c.v) x = n(rng);
  return c;
}

std::vector<float> run(AttendFn fn, const Case& c, float scale) {
  std::vector<float> scores(size_t(c.g * c.len), NAN), out(size_t(c.g * c.hd), NAN);
  fn(c.q.data(), c.g, c.hd, c.k.data(), c.v.data(), c.ld, c.len, scale, scores.data(), out.data());
  return out;
}

TEST(DecodeAttention, ReferenceMatchesDoublePrecision) {
  std::mt19937 rng(7);
  for (int len : {1, 5, 40}) {
    const Case c = make_case(3, 24, len, 1.0f, rng);  // hd 24: not a multiple of 8 or 16
    const float scale = 1.0f / std::sqrt(24.0f);
    const std::vector<float> out = run(&attend_ref, c, scale);
    for (int h = 0; h < c.g; ++h) {
      std::vector<double> s(static_cast<size_t>(len));
      double mx = -1e300, sum = 0;
      for (int j = 0; j < len; ++j) {
        double d = 0;
        for (int e = 0; e < c.hd; ++e) d += double(c.q[size_t(h * c.hd + e)]) * double(c.k[size_t(j) * c.ld + size_t(e)]);
        s[size_t(j)] = d * scale;
        mx = std::max(mx, s[size_t(j)]);
      }
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int e = 0; e < c.hd; ++e) {
        double o = 0;
        for (int j = 0; j < len; ++j) o += s[size_t(j)] / sum * double(c.v[size_t(j) * c.ld + size_t(e)]);
        EXPECT_NEAR(out[size_t(h * c.hd + e)], o, 1e-5) << "len " << len << " head " << h << " dim " << e;
      }
    }
  }
}

TEST(DecodeAttention, EveryVariantMatchesReference) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(11);
  int checked = 0;
  for (int g : {1, 3, 8})
    for (int hd : {16, 32, 64, 80, 128})  // 80: the generic paths (not a register count of 1, 2, 4 or 8)
      for (int len : {1, 2, 15, 16, 17, 33, 200})
        for (float spread : {1.0f, 30.0f}) {  // 30: scores spread over hundreds, most exps underflow
          const Case c = make_case(g, hd, len, spread, rng);
          const float scale = 1.0f / std::sqrt(float(hd));
          const std::vector<float> ref = run(&attend_ref, c, scale), fast = run(&attend_avx512, c, scale);
          for (size_t i = 0; i < ref.size(); ++i) {
            ASSERT_TRUE(std::isfinite(fast[i])) << g << " " << hd << " " << len << " at " << i;
            // Outputs are convex combinations of N(0,1) values: an absolute bound; the exps differ by
            // ~1 ulp and the sums' order differs, and a score's rounding (~spread·ulp) becomes a
            // relative error of its weight through exp, so the bound grows with the spread.
            ASSERT_NEAR(fast[i], ref[i], (2e-6f * std::sqrt(float(len)) + 1e-6f) * spread)
                << g << " " << hd << " " << len << " " << spread << " at " << i;
          }
          ++checked;
        }
  EXPECT_EQ(checked, 3 * 5 * 7 * 2);
  EXPECT_EQ(attend_best(64), &attend_avx512);
  EXPECT_EQ(attend_best(24), &attend_ref);  // not a multiple of 16
}

}  // namespace
}  // namespace lowbit

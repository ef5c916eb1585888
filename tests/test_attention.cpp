// Decode attention (kernels/attention.h) over a KV head's cache (keys in dimension-major blocks of 16
// positions, values row-major; float or f16): the reference against double-precision math, and every
// variant against the reference on awkward shapes (one key, tails of 16, windows starting inside a
// block, head sizes 16..128 incl. 80, GQA groups of 1, 2, 3, 5, 8 and 12, score ranges that underflow
// exp). The block slots outside the visible positions hold NaN: reading one shows.
#include <cmath>
#include <random>
#include <vector>

#include "lowbit/core/dtype.h"
#include "lowbit/kernels/attention.h"
#include "lowbit/models/attention.h"
#include "test_util.h"

namespace lowbit {
namespace {

struct Case {
  int g, hd, lo, len;
  std::vector<float> q, k, v;  // k, v: row-major, positions 0 .. lo + len - 1 (exactly f16 values)
};

Case make_case(int g, int hd, int lo, int len, float spread, std::mt19937& rng) {
  Case c{g, hd, lo, len, {}, {}, {}};
  std::normal_distribution<float> n(0.0f, 1.0f);
  c.q.resize(size_t(g * hd));
  c.k.resize(size_t(lo + len) * size_t(hd));
  c.v.resize(c.k.size());
  for (auto& x : c.q) x = spread * n(rng);
  // Rounded to f16, so that both caches hold the same values.
  for (auto& x : c.k) x = f16_to_f32(f32_to_f16(n(rng)));
  for (auto& x : c.v) x = f16_to_f32(f32_to_f16(n(rng)));
  return c;
}

inline float nan_of(float) { return NAN; }
inline uint16_t nan_of(uint16_t) { return 0x7e00; }
inline float cache_value(float x, float) { return x; }
inline uint16_t cache_value(float x, uint16_t) { return f32_to_f16(x); }

// The case's keys and values in the cache layout; positions before lo and after the end hold NaN.
template <class T>
void to_cache(const Case& c, std::vector<T>& k, std::vector<T>& v) {
  const int cap = (c.lo + c.len + kKVBlock - 1) / kKVBlock * kKVBlock;
  k.assign(size_t(cap) * size_t(c.hd), nan_of(T()));
  v.assign(k.size(), nan_of(T()));
  for (int p = c.lo; p < c.lo + c.len; ++p)
    for (int d = 0; d < c.hd; ++d) {
      k[kv_key_index(p, d, c.hd)] = cache_value(c.k[size_t(p) * size_t(c.hd) + size_t(d)], T());
      v[size_t(p) * size_t(c.hd) + size_t(d)] = cache_value(c.v[size_t(p) * size_t(c.hd) + size_t(d)], T());
    }
}

template <class T>
std::vector<float> run(AttendFn<T> fn, const Case& c, float scale) {
  std::vector<T> k, v;
  to_cache(c, k, v);
  std::vector<float> scores(attend_scratch(c.g, c.len), NAN), out(size_t(c.g * c.hd), NAN);
  fn(c.q.data(), c.g, c.hd, k.data(), v.data(), c.lo, c.len, scale, scores.data(), out.data());
  return out;
}

TEST(DecodeAttention, ReferenceMatchesDoublePrecision) {
  std::mt19937 rng(7);
  for (int lo : {0, 3, 16})
    for (int len : {1, 5, 40}) {
      const Case c = make_case(3, 24, lo, len, 1.0f, rng);  // hd 24: not a multiple of 8 or 16
      const float scale = 1.0f / std::sqrt(24.0f);
      const std::vector<float> out = run<float>(&attend_ref<float>, c, scale);
      const std::vector<float> out16 = run<uint16_t>(&attend_ref<uint16_t>, c, scale);
      for (int h = 0; h < c.g; ++h) {
        std::vector<double> s(static_cast<size_t>(len));
        double mx = -1e300, sum = 0;
        for (int j = 0; j < len; ++j) {
          double d = 0;
          for (int e = 0; e < c.hd; ++e)
            d += double(c.q[size_t(h * c.hd + e)]) * double(c.k[size_t(lo + j) * size_t(c.hd) + size_t(e)]);
          s[size_t(j)] = d * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (int e = 0; e < c.hd; ++e) {
          double o = 0;
          for (int j = 0; j < len; ++j) o += s[size_t(j)] / sum * double(c.v[size_t(lo + j) * size_t(c.hd) + size_t(e)]);
          EXPECT_NEAR(out[size_t(h * c.hd + e)], o, 1e-5) << "lo " << lo << " len " << len << " head " << h << " dim " << e;
          // The same values held as f16 (they are f16 values): the same result.
          EXPECT_NEAR(out16[size_t(h * c.hd + e)], o, 1e-5) << "f16, lo " << lo << " len " << len;
        }
      }
    }
}

template <class T>
int check_variants(std::mt19937& rng) {
  int checked = 0;
  for (int g : {1, 2, 3, 5, 8, 12})
    for (int hd : {16, 32, 64, 80, 128})  // 80: the generic paths (not a register count of 1, 2, 4 or 8)
      for (int lo : {0, 5, 16})
        for (int len : {1, 2, 15, 16, 17, 33, 200})
          for (float spread : {1.0f, 30.0f}) {  // 30: scores spread over hundreds, most exps underflow
            const Case c = make_case(g, hd, lo, len, spread, rng);
            const float scale = 1.0f / std::sqrt(float(hd));
            const std::vector<float> ref = run<T>(&attend_ref<T>, c, scale), fast = run<T>(&attend_avx512<T>, c, scale);
            for (size_t i = 0; i < ref.size(); ++i) {
              EXPECT_TRUE(std::isfinite(fast[i])) << g << " " << hd << " " << lo << " " << len << " at " << i;
              // Outputs are convex combinations of N(0,1) values: an absolute bound; the exps differ by
              // ~1 ulp and the sums' order differs, and a score's rounding (~spread·ulp) becomes a
              // relative error of its weight through exp, so the bound grows with the spread.
              EXPECT_NEAR(fast[i], ref[i], (2e-6f * std::sqrt(float(len)) + 1e-6f) * spread)
                  << g << " " << hd << " " << lo << " " << len << " " << spread << " at " << i;
              if (::testing::Test::HasFailure()) return checked;
            }
            ++checked;
          }
  return checked;
}

TEST(DecodeAttention, EveryVariantMatchesReference) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(11);
  EXPECT_EQ(check_variants<float>(rng), 6 * 5 * 3 * 7 * 2);
  EXPECT_EQ(check_variants<uint16_t>(rng), 6 * 5 * 3 * 7 * 2);
  EXPECT_EQ(attend_best<float>(64), &attend_avx512<float>);
  EXPECT_EQ(attend_best<uint16_t>(64), &attend_avx512<uint16_t>);
  EXPECT_EQ(attend_best<float>(24), &attend_ref<float>);  // not a multiple of 16
}

// The session's cache: stored heads come back exactly (f32) or rounded to f16, and its attention
// equals the kernel's on the same values.
TEST(KVSession, StoresUnpacksAndAttends) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int layers = 2, heads = 3, hd = 32, cap = 37;
  for (KVCacheType type : {KVCacheType::f32, KVCacheType::f16}) {
    KVSession s(layers, cap, heads, hd, type);
    std::vector<float> k(size_t(layers) * cap * heads * hd), v(k.size());
    for (auto& x : k) x = 4 * n(rng);
    for (auto& x : v) x = n(rng);
    auto at = [&](int l, int p) { return size_t(l * cap + p) * size_t(heads * hd); };
    for (int l = 0; l < layers; ++l)
      for (int p = 0; p < cap; ++p) {
        if (p % 2) {
          s.store(l, p, &k[at(l, p)], &v[at(l, p)]);
        } else {  // head by head, as the split decode stores its heads
          s.store_heads(l, 0, 1, p, &k[at(l, p)], &v[at(l, p)]);
          s.store_heads(l, 1, heads, p, &k[at(l, p) + hd], &v[at(l, p) + hd]);
        }
      }
    std::vector<float> uk(size_t(cap) * hd), uv(uk.size());
    for (int l = 0; l < layers; ++l)
      for (int h = 0; h < heads; ++h) {
        s.unpack(l, h, cap, uk.data(), uv.data());
        for (int p = 0; p < cap; ++p)
          for (int d = 0; d < hd; ++d) {
            const float wk = k[at(l, p) + size_t(h * hd + d)], wv = v[at(l, p) + size_t(h * hd + d)];
            const float ek = type == KVCacheType::f32 ? wk : f16_to_f32(f32_to_f16(wk));
            const float ev = type == KVCacheType::f32 ? wv : f16_to_f32(f32_to_f16(wv));
            ASSERT_EQ(uk[size_t(p * hd + d)], ek) << int(type) << " " << l << " " << h << " " << p << " " << d;
            ASSERT_EQ(uv[size_t(p * hd + d)], ev) << int(type) << " " << l << " " << h << " " << p << " " << d;
          }
        // Attention of 2 query heads over positions [5, 37) against the reference on the unpacked rows.
        Case c{2, hd, 5, cap - 5, std::vector<float>(size_t(2 * hd)), uk, uv};
        for (auto& x : c.q) x = n(rng);
        std::vector<float> scores(attend_scratch(2, c.len)), out(size_t(2 * hd));
        s.attend(l, h, c.q.data(), 2, c.lo, c.len, 0.2f, scores.data(), out.data());
        const std::vector<float> want = run<float>(&attend_ref<float>, c, 0.2f);
        for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(out[i], want[i], 1e-5) << int(type) << " " << i;
      }
  }
}

}  // namespace
}  // namespace lowbit

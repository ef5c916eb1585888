// Quantized formats: every format in format_registry() and every scheme in scheme_registry(), on
// awkward shapes (rows 1, 3, 33; cols 1, 7, 64, 172, 300), with fixed seeds and outputs pre-filled
// with NaN so that an element dequantize forgets to write fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/format.h"

namespace lowbit {
namespace {

constexpr int64_t kRows[] = {1, 3, 33};
constexpr int64_t kCols[] = {1, 7, 64, 172, 300};
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// The code books as published by bitsandbytes (bitsandbytes/functional.py get_4bit_type; FP4 also as
// the constants of csrc/kernels.cu dDequantizeFP4Tree), index = 4-bit code.
constexpr float kPublishedNf4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};
constexpr float kPublishedFp4[16] = {0.0f,         5.208333333e-03f,  0.66666667f,  1.0f,
                                     0.33333333f,  0.5f,              0.16666667f,  0.25f,
                                     -0.0f,        -5.208333333e-03f, -0.66666667f, -1.0f,
                                     -0.33333333f, -0.5f,             -0.16666667f, -0.25f};

std::vector<float> gaussian(int64_t rows, int64_t cols, uint32_t seed, float sigma = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, sigma);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& x : w) x = dist(rng);
  return w;
}

// Dequantizes into a buffer pre-filled with NaN.
std::vector<float> dequantize(const QuantizedTensor& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols), kNaN);
  find_format(q.format).dequantize(q, out.data());
  return out;
}

QuantizedTensor quantize(std::string_view format, const std::vector<float>& w, int64_t rows, int64_t cols,
                         const QuantSpec& spec) {
  return find_format(format).quantize(w.data(), rows, cols, spec);
}

std::vector<float> part_floats(const QuantPart& p) {
  std::vector<float> v(p.bytes.size() / dtype_size(p.dtype));
  convert_to_f32(p.dtype, p.bytes.data(), v.data(), v.size());
  return v;
}

// Index of the parameter (scale, min, absmax) of element [r][c] under spec.group.
int64_t param_index(const QuantSpec& spec, int64_t cols, int64_t r, int64_t c) {
  if (spec.group == -1) return 0;
  return r * groups_per_row(cols, spec.group) + (spec.group >= 1 ? c / spec.group : 0);
}

std::string describe(std::string_view format, const QuantSpec& spec, int64_t rows, int64_t cols) {
  return std::string(format) + " bits=" + std::to_string(spec.bits) + " group=" + std::to_string(spec.group) +
         (spec.double_quant ? " dq" : "") + " shape=[" + std::to_string(rows) + " x " + std::to_string(cols) + "]";
}

// Expects fn to throw lowbit::Error whose message contains `needle`.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle, const std::string& context) {
  try {
    fn();
    ADD_FAILURE() << context << ": expected an error containing \"" << needle << "\", got none";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << context << ": message \"" << e.what() << "\" lacks \"" << needle << "\"";
  }
}

// The specs each format is tested with.
std::vector<QuantSpec> specs_for(std::string_view format) {
  std::vector<QuantSpec> specs;
  const int64_t groups[] = {0, -1, 64, 5};
  if (format == "affine" || format == "symmetric") {
    for (int bits = format == "affine" ? 1 : 2; bits <= 8; ++bits)
      for (int64_t g : groups) specs.push_back({.bits = bits, .group = g});
  } else if (format == "llm-int8") {
    specs.push_back({.bits = 8, .group = 0});
  } else if (format == "nf4" || format == "fp4") {
    for (bool dq : {false, true})
      for (int64_t g : {int64_t(64), int64_t(0), int64_t(-1), int64_t(7)})
        specs.push_back({.bits = 4, .group = g, .double_quant = dq});
  } else if (format == "kmeans") {
    for (int bits = 1; bits <= 8; ++bits)
      for (int64_t g : {int64_t(0), int64_t(-1)}) specs.push_back({.bits = bits, .group = g, .iterations = 20});
  } else if (format == "binary" || format == "ternary") {
    for (int64_t g : groups) specs.push_back({.bits = format == "binary" ? 1 : 2, .group = g});
  } else {
    specs.push_back({.bits = 16, .group = 0});
  }
  return specs;
}

// ---- bit packing --------------------------------------------------------------------------------

TEST(FormatsPack, RoundTripsEveryWidthAndLength) {
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t n : {0, 1, 7, 8, 9, 172, 1000}) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " n=" + std::to_string(n));
      std::mt19937 rng(uint32_t(1000 * bits + n));
      std::vector<uint8_t> codes(static_cast<size_t>(n));
      for (auto& c : codes) c = uint8_t(rng() & ((1u << bits) - 1));
      const size_t nbytes = packed_bytes(n, bits);
      ASSERT_EQ(nbytes, size_t((n * bits + 7) / 8));

      std::vector<uint8_t> packed(nbytes + 4, 0xAB);  // 4 guard bytes must stay untouched
      pack_bits(codes.data(), n, bits, packed.data());
      for (size_t i = nbytes; i < packed.size(); ++i) EXPECT_EQ(packed[i], 0xAB) << "pack wrote past the end";
      if (nbytes > 0 && (n * bits) % 8 != 0) {
        EXPECT_EQ(packed[nbytes - 1] >> ((n * bits) % 8), 0) << "padding bits";
      }

      // An exactly sized heap block: AddressSanitizer reports any read past it.
      std::unique_ptr<uint8_t[]> exact(new uint8_t[nbytes]);
      if (nbytes > 0) {
        std::memcpy(exact.get(), packed.data(), nbytes);
      }
      std::vector<uint8_t> back(static_cast<size_t>(n) + 4, 0xCD);
      unpack_bits(exact.get(), n, bits, back.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[i], codes[i]) << "code " << i;
      for (size_t i = size_t(n); i < back.size(); ++i) EXPECT_EQ(back[i], 0xCD) << "unpack wrote past the end";
    }
  }
}

TEST(FormatsPack, BitOrderIsLeastSignificantFirst) {
  const uint8_t three[] = {5, 3, 7};  // 101 | 011 << 3 | 111 << 6 -> 0b11011101, then 0b1
  uint8_t out[2] = {};
  pack_bits(three, 3, 3, out);
  EXPECT_EQ(out[0], 0xDD);
  EXPECT_EQ(out[1], 0x01);
  const uint8_t four[] = {0x1, 0x2, 0xF};
  pack_bits(four, 3, 4, out);
  EXPECT_EQ(out[0], 0x21);
  EXPECT_EQ(out[1], 0x0F);
  const uint8_t one[] = {1, 0, 0, 0, 0, 0, 0, 1, 1};
  pack_bits(one, 9, 1, out);
  EXPECT_EQ(out[0], 0x81);
  EXPECT_EQ(out[1], 0x01);
}

TEST(FormatsPack, RejectsBadWidths) {
  expect_error([] { (void)packed_bytes(4, 0); }, "bits", "bits 0");
  expect_error([] { (void)packed_bytes(4, 9); }, "bits", "bits 9");
}

TEST(FormatsGroups, GroupsPerRow) {
  EXPECT_EQ(groups_per_row(172, 64), 3);  // 64 + 64 + 44
  EXPECT_EQ(groups_per_row(172, 0), 1);
  EXPECT_EQ(groups_per_row(172, -1), 1);
  EXPECT_EQ(groups_per_row(1, 64), 1);
  EXPECT_EQ(groups_per_row(128, 128), 1);
  EXPECT_EQ(groups_per_row(129, 128), 2);
  EXPECT_EQ(groups_per_row(100, 128), 1);  // int4 on a short row: one group, the whole row
  EXPECT_EQ(groups_per_row(7, std::numeric_limits<int64_t>::max()), 1);
  expect_error([] { (void)groups_per_row(172, -2); }, "group", "group -2");
}

// ---- registries ---------------------------------------------------------------------------------

TEST(FormatsRegistry, FormatsAreListedOnce) {
  const std::vector<std::string> expected = {"affine", "symmetric", "llm-int8", "nf4", "fp4", "kmeans",
                                             "binary", "ternary",   "f16",      "bf16"};
  std::vector<std::string> names;
  for (const auto& f : format_registry()) {
    names.emplace_back(f.name);
    EXPECT_FALSE(f.description.empty()) << f.name;
    EXPECT_EQ(f.description.find('\n'), std::string_view::npos) << f.name;
    EXPECT_LE(f.min_bits, f.max_bits) << f.name;
    EXPECT_TRUE(f.quantize && f.dequantize && f.bits_per_weight) << f.name;
    EXPECT_EQ(&find_format(f.name), &f);
  }
  EXPECT_EQ(names, expected);
  expect_error([] { (void)find_format("int5"); }, "affine, symmetric", "unknown format lists the known ones");
}

TEST(FormatsRegistry, SchemesMeanWhatTheyNameSays) {
  struct Want {
    std::string format;
    int bits;
    int64_t group;
    bool double_quant;
  };
  const std::map<std::string, Want> expected = {
      {"int8", {"symmetric", 8, 0, false}}, {"int4", {"affine", 4, 128, false}},
      {"w8a8", {"symmetric", 8, 0, false}}, {"llm-int8", {"llm-int8", 8, 0, false}},
      {"int4-sym", {"symmetric", 4, 32, false}},    {"int8-dyn", {"symmetric", 8, 0, false}},
      {"int3", {"affine", 3, 64, false}},   {"int2", {"affine", 2, 64, false}},
      {"nf4", {"nf4", 4, 64, true}},        {"fp4", {"fp4", 4, 64, true}},
      {"kmeans4", {"kmeans", 4, 0, false}}, {"binary", {"binary", 1, 0, false}},
      {"ternary", {"ternary", 2, 0, false}}, {"f16", {"f16", 16, 0, false}},
      {"bf16", {"bf16", 16, 0, false}},
  };
  EXPECT_EQ(scheme_registry().size(), expected.size());
  for (const auto& s : scheme_registry()) {
    SCOPED_TRACE(std::string(s.name));
    auto it = expected.find(std::string(s.name));
    ASSERT_NE(it, expected.end());
    EXPECT_EQ(s.format, it->second.format);
    EXPECT_EQ(s.spec.bits, it->second.bits);
    EXPECT_EQ(s.spec.group, it->second.group);
    EXPECT_EQ(s.spec.double_quant, it->second.double_quant);
    EXPECT_FALSE(s.description.empty());
    EXPECT_EQ(s.description.find('\n'), std::string_view::npos);
    const FormatTraits& f = find_format(s.format);
    EXPECT_GE(s.spec.bits, f.min_bits);
    EXPECT_LE(s.spec.bits, f.max_bits);
    EXPECT_EQ(&find_scheme(s.name), &s);
  }
  expect_error([] { (void)find_scheme("q4_k"); }, "int8, int8-dyn, w8a8, llm-int8, int4", "unknown scheme lists the known ones");
}

// ---- code books ---------------------------------------------------------------------------------

// Hand-built tensors (codes 0..15, absmax 1 and 2.5) decode to the published values.
TEST(FormatsCodebook4, ValuesAreTheBitsandbytesOnes) {
  for (auto [format, published] : {std::pair{"nf4", kPublishedNf4}, std::pair{"fp4", kPublishedFp4}}) {
    for (float absmax : {1.0f, 2.5f}) {
      SCOPED_TRACE(std::string(format) + " absmax " + std::to_string(absmax));
      QuantizedTensor q;
      q.format = format;
      q.spec = {.bits = 4, .group = 0};
      q.rows = 1;
      q.cols = 16;
      uint8_t codes[16];
      std::iota(codes, codes + 16, 0);
      QuantPart packed{"q", DType::U8, {1, 8}, std::vector<uint8_t>(8)};
      pack_bits(codes, 16, 4, packed.bytes.data());
      QuantPart scale{"absmax", DType::F32, {1, 1}, std::vector<uint8_t>(4)};
      std::memcpy(scale.bytes.data(), &absmax, 4);
      q.parts = {packed, scale};
      const std::vector<float> out = dequantize(q);
      for (int i = 0; i < 16; ++i) EXPECT_EQ(out[i], published[i] * absmax) << "code " << i;
    }
  }
}

// ---- values on the grid come back bit for bit ---------------------------------------------------

// Weights that `format` represents exactly under `spec`: f16-exact parameters, every group holding
// its extreme codes so that the quantizer finds the same parameters.
std::vector<float> on_grid(std::string_view format, const QuantSpec& spec, int64_t rows, int64_t cols,
                           std::mt19937& rng) {
  std::vector<float> w(static_cast<size_t>(rows * cols));
  auto uniform_int = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int64_t nparams = spec.group == -1 ? 1 : rows * std::max<int64_t>(1, groups_per_row(cols, spec.group));
  std::vector<int> a(static_cast<size_t>(nparams)), b(static_cast<size_t>(nparams));  // param = int * 2^-10
  for (auto& v : a) v = uniform_int(1, 2047);
  for (auto& v : b) v = uniform_int(-2047, 2047);
  std::vector<int> seen(static_cast<size_t>(nparams), 0);  // elements met so far per group

  if (format == "kmeans") {
    const int count = 1 << spec.bits;
    const int64_t span = spec.group == -1 ? rows * cols : cols;
    for (int64_t start = 0; start < rows * cols; start += span) {
      std::set<int> distinct;
      while (int64_t(distinct.size()) < std::min<int64_t>(count, span)) distinct.insert(uniform_int(-2047, 2047));
      const std::vector<int> values(distinct.begin(), distinct.end());
      for (int64_t i = 0; i < span; ++i) {  // each value once, then random ones
        const int v = i < int64_t(values.size()) ? values[i] : values[uniform_int(0, int(values.size()) - 1)];
        w[start + i] = std::ldexp(float(v), -10);
      }
    }
    return w;
  }
  if (format == "f16" || format == "bf16") {
    for (auto& x : w) {
      uint16_t h;
      do h = uint16_t(rng()); while ((h & 0x7f80u) == 0x7f80u || (h & 0x7c00u) == 0x7c00u);  // finite in both
      x = format == "f16" ? f16_to_f32(h) : bf16_to_f32(h);
    }
    return w;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = param_index(spec, cols, r, c);
      const int k = seen[i]++;
      float x = 0;
      if (format == "affine") {
        const int max_code = (1 << spec.bits) - 1;
        const int q = k == 0 ? 0 : k == 1 ? max_code : uniform_int(0, max_code);
        x = std::ldexp(float(q * a[i] + b[i]), -10);
      } else if (format == "symmetric" || format == "llm-int8") {
        const int qmax = (1 << (spec.bits - 1)) - 1;
        const int q = k == 0 ? (uniform_int(0, 1) ? qmax : -qmax) : uniform_int(-qmax, qmax);
        x = std::ldexp(float(q * a[i]), -10);
      } else if (format == "nf4" || format == "fp4") {
        const float* values = format == "nf4" ? kPublishedNf4 : kPublishedFp4;
        const int one = format == "nf4" ? 15 : 3, minus_one = format == "nf4" ? 0 : 11;
        const int code = k == 0 ? (uniform_int(0, 1) ? one : minus_one) : uniform_int(0, 15);
        // With double quantization every block gets the same absmax, which 8 bits represent exactly.
        x = values[code] * std::ldexp(float(a[spec.double_quant ? 0 : i]), -10);
      } else if (format == "binary") {
        x = std::ldexp(float(uniform_int(0, 1) ? a[i] : -a[i]), -10);
      } else if (format == "ternary") {
        const int t = k == 0 ? (uniform_int(0, 1) ? 1 : -1) : uniform_int(-1, 1);
        x = std::ldexp(float(t * a[i]), -10);
      }
      w[r * cols + c] = x;
    }
  }
  return w;
}

TEST(FormatsExact, ValuesOnTheGridRoundTripExactly) {
  for (const auto& f : format_registry()) {
    for (const QuantSpec& spec : specs_for(f.name)) {
      for (int64_t rows : kRows) {
        for (int64_t cols : kCols) {
          const std::string what = describe(f.name, spec, rows, cols);
          std::mt19937 rng(uint32_t(rows * 1000 + cols + spec.bits * 7 + spec.group * 31));
          const std::vector<float> w = on_grid(f.name, spec, rows, cols, rng);
          const std::vector<float> out = dequantize(f.quantize(w.data(), rows, cols, spec));
          int64_t bad = 0;
          for (int64_t i = 0; i < rows * cols; ++i) {
            if (!(out[i] == w[i]) && bad++ < 3)  // == : -0 and +0 are the same grid value
              ADD_FAILURE() << what << " at [" << i / cols << ", " << i % cols << "]: got " << out[i] << ", want "
                            << w[i];
          }
          EXPECT_EQ(bad, 0) << what;
        }
      }
    }
  }
}

// ---- affine and symmetric: |x - x^| <= scale / 2 ------------------------------------------------

TEST(FormatsError, AffineAndSymmetricWithinHalfTheStoredScale) {
  for (std::string_view format : {"affine", "symmetric"}) {
    for (const QuantSpec& spec : specs_for(format)) {
      for (int64_t rows : kRows) {
        for (int64_t cols : kCols) {
          const std::string what = describe(format, spec, rows, cols);
          // Small weights off centre, then wide uniform ones.
          std::vector<float> w = gaussian(rows, cols, uint32_t(rows * 7 + cols), 0.02f, 0.01f);
          std::mt19937 rng{uint32_t(cols)};
          for (size_t i = 0; i < w.size(); i += 3) w[i] = std::uniform_real_distribution<float>(-3.0f, 5.0f)(rng);
          const QuantizedTensor q = quantize(format, w, rows, cols, spec);
          const std::vector<float> out = dequantize(q);
          const std::vector<float> scale = part_floats(*q.find("scale"));
          std::vector<float> mins(scale.size(), 0.0f);
          if (format == "affine") mins = part_floats(*q.find("min"));
          int64_t bad = 0;
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t c = 0; c < cols; ++c) {
              const int64_t p = param_index(spec, cols, r, c);
              const double x = w[r * cols + c], err = std::fabs(x - out[r * cols + c]);
              // scale / 2, plus float rounding of q * scale + min
              const double tol = 0.5 * scale[p] + 0x1p-22 * (std::fabs(x) + std::fabs(mins[p]) + 255.0 * scale[p]);
              if (!(err <= tol) && bad++ < 3)
                ADD_FAILURE() << what << " at [" << r << ", " << c << "]: x " << x << " x^ " << out[r * cols + c]
                              << " error " << err << " > scale/2 = " << 0.5 * scale[p];
            }
          }
          EXPECT_EQ(bad, 0) << what;
        }
      }
    }
  }
}

// ---- NF4 / FP4: codes are the nearest code values to the stored absmax -------------------------

TEST(FormatsCodebook4, CodesAreNearestToTheStoredAbsmax) {
  for (std::string_view format : {"nf4", "fp4"}) {
    const float* values = format == "nf4" ? kPublishedNf4 : kPublishedFp4;
    const uint8_t one = format == "nf4" ? 15 : 3;
    for (const QuantSpec& spec : specs_for(format)) {
      const int64_t rows = 33, cols = 172;
      const std::string what = describe(format, spec, rows, cols);
      const std::vector<float> w = gaussian(rows, cols, 77, 0.03f);
      const QuantizedTensor q = quantize(format, w, rows, cols, spec);
      const std::vector<float> out = dequantize(q);
      // The absmax dequantize uses, whichever way it is stored: decode all-ones codes (code value 1.0).
      QuantizedTensor ones = q;
      for (auto& part : ones.parts) {
        if (part.suffix != "q") continue;
        std::vector<uint8_t> codes(static_cast<size_t>(cols), one);
        for (int64_t r = 0; r < rows; ++r) pack_bits(codes.data(), cols, 4, part.bytes.data() + r * part.shape[1]);
      }
      const std::vector<float> absmax = dequantize(ones);
      double sq = 0, sq_x = 0;
      for (int64_t i = 0; i < rows * cols; ++i) {
        double best = std::numeric_limits<double>::infinity();
        for (int j = 0; j < 16; ++j) best = std::min(best, std::fabs(double(w[i]) - double(values[j] * absmax[i])));
        ASSERT_LE(std::fabs(double(w[i]) - out[i]), best + 1e-7 * std::fabs(w[i])) << what << " element " << i;
        sq += (w[i] - out[i]) * double(w[i] - out[i]);
        sq_x += double(w[i]) * w[i];
      }
      EXPECT_LT(std::sqrt(sq / sq_x), format == "nf4" ? 0.12 : 0.16) << what << ": relative RMSE";
    }
  }
}

// ---- bits per weight ----------------------------------------------------------------------------

TEST(FormatsBitsPerWeight, DoubleQuantizationCostsAnEighthOfABit) {
  for (std::string_view format : {"nf4", "fp4"}) {
    const FormatTraits& f = find_format(format);
    const double plain = f.bits_per_weight(4096, 4096, {.bits = 4, .group = 64});
    const double dq = f.bits_per_weight(4096, 4096, {.bits = 4, .group = 64, .double_quant = true});
    EXPECT_DOUBLE_EQ(plain, 4.5) << format;  // 4 + 32/64
    EXPECT_NEAR(dq, 4.0 + 8.0 / 64 + 32.0 / (64 * 256), 1e-5) << format;
    EXPECT_NEAR(dq, 4.127, 5e-4) << format;
  }
  EXPECT_DOUBLE_EQ(find_format("affine").bits_per_weight(64, 256, {.bits = 4, .group = 128}), 4.25);
  EXPECT_DOUBLE_EQ(find_format("symmetric").bits_per_weight(64, 256, {.bits = 8, .group = 0}), 8.0625);
}

TEST(FormatsBitsPerWeight, AgreesWithTheStoredBytes) {
  auto check = [](std::string_view format, const QuantSpec& spec, int64_t rows, int64_t cols) {
    const std::vector<float> w = gaussian(rows, cols, uint32_t(rows + 3 * cols), 0.05f);
    const QuantizedTensor q = quantize(format, w, rows, cols, spec);
    EXPECT_EQ(double(q.bytes() * 8) / double(rows * cols), find_format(format).bits_per_weight(rows, cols, spec))
        << describe(format, spec, rows, cols);
  };
  for (const auto& s : scheme_registry())
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {33, 172}, {8, 300}, {64, 256}})
      check(s.format, s.spec, rows, cols);
  for (const auto& f : format_registry())
    for (const QuantSpec& spec : specs_for(f.name)) check(f.name, spec, 33, 172);
}

// ---- degenerate input ---------------------------------------------------------------------------

TEST(FormatsDegenerate, FiniteAndSensibleForEveryScheme) {
  struct Case {
    std::string name;
    int64_t rows, cols;
    std::vector<float> w;
  };
  std::vector<Case> cases;
  {
    Case c{"constant rows", 33, 172, {}};
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t i = 0; i < c.cols; ++i) c.w.push_back(float(r - 16) * 0.37f);  // row 16 is all zero
    cases.push_back(c);
  }
  cases.push_back({"all zero", 3, 172, std::vector<float>(3 * 172, 0.0f)});
  for (auto [name, magnitude] : {std::pair{"1e-30", 1e-30f}, std::pair{"1e30", 1e30f}}) {
    Case c{name, 33, 172, {}};
    std::mt19937 rng(5);
    for (int i = 0; i < 33 * 172; ++i)
      c.w.push_back((rng() & 1 ? 1.0f : -1.0f) * magnitude * std::uniform_real_distribution<float>(1.0f, 2.0f)(rng));
    cases.push_back(c);
  }
  cases.push_back({"single column", 33, 1, gaussian(33, 1, 9)});
  cases.push_back({"single element", 1, 1, {0.3f}});

  // Relative RMSE allowed on random data (well above what each scheme achieves).
  const std::map<std::string, double> bound = {
      {"int8", 0.02}, {"int8-dyn", 0.02}, {"w8a8", 0.02}, {"llm-int8", 0.02}, {"int4", 0.15}, {"int4-sym", 0.2}, {"int3", 0.3}, {"int2", 0.6},    {"nf4", 0.2},  {"fp4", 0.25},
      {"kmeans4", 0.15}, {"binary", 0.8}, {"ternary", 0.8}, {"f16", 1e-3}, {"bf16", 5e-3}};

  for (const auto& s : scheme_registry()) {
    for (const Case& c : cases) {
      const std::string what = std::string(s.name) + " on " + c.name;
      if (s.name == "f16" && c.name == "1e30") {  // beyond float16: an error that says so, not Inf
        expect_error([&] { (void)quantize(s.format, c.w, c.rows, c.cols, s.spec); }, "float16 range", what);
        continue;
      }
      const std::vector<float> out = dequantize(quantize(s.format, c.w, c.rows, c.cols, s.spec));
      double sq_err = 0, sq_x = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_TRUE(std::isfinite(out[i])) << what << " element " << i << " = " << out[i];
        sq_err += (double(c.w[i]) - out[i]) * (double(c.w[i]) - out[i]);
        sq_x += double(c.w[i]) * c.w[i];
      }
      if (sq_x == 0) {
        EXPECT_EQ(sq_err, 0) << what;
      } else if (s.name == "f16" && c.name == "1e-30") {
        EXPECT_LE(std::sqrt(sq_err / double(out.size())), 1e-29) << what << ": underflows to 0";
      } else {
        // Constant rows are reproduced almost exactly by every scheme (double-quantized absmax: ~1%).
        const double tol = c.name == "constant rows" ? (s.format == "nf4" || s.format == "fp4" ? 0.02 : 4e-3)
                                                     : bound.at(std::string(s.name));
        EXPECT_LE(std::sqrt(sq_err / sq_x), tol) << what << ": relative RMSE";
      }
    }
  }
  // Every format and spec: finite output on each case (f16 rejects 1e30, checked above).
  for (const auto& f : format_registry())
    for (const QuantSpec& spec : specs_for(f.name))
      for (const Case& c : cases) {
        if (f.name == "f16" && c.name == "1e30") continue;
        const std::vector<float> out = dequantize(quantize(f.name, c.w, c.rows, c.cols, spec));
        for (size_t i = 0; i < out.size(); ++i)
          ASSERT_TRUE(std::isfinite(out[i])) << describe(f.name, spec, c.rows, c.cols) << " on " << c.name;
      }
}

// ---- malformed tensors --------------------------------------------------------------------------

TEST(FormatsMalformed, DequantizeRejectsBrokenTensors) {
  std::vector<std::pair<std::string, QuantSpec>> cases;
  for (const auto& s : scheme_registry()) cases.emplace_back(s.format, s.spec);
  for (const auto& f : format_registry())
    for (const QuantSpec& spec : specs_for(f.name)) cases.emplace_back(f.name, spec);
  const int64_t rows = 3, cols = 172;
  const std::vector<float> w = gaussian(rows, cols, 11, 0.05f);

  for (const auto& c : cases) {
    const std::string& format = c.first;  // not a structured binding: clang 14 lambdas cannot capture those
    const QuantSpec& spec = c.second;
    const QuantizedTensor good = quantize(format, w, rows, cols, spec);
    const FormatTraits& f = find_format(format);
    std::vector<float> out(static_cast<size_t>(rows * cols));  // exactly the good size: ASan sees overruns
    ASSERT_NO_THROW(f.dequantize(good, out.data())) << format;
    auto expect_rejected = [&](const QuantizedTensor& bad, const std::string& needle, const std::string& how) {
      expect_error([&] { f.dequantize(bad, out.data()); }, needle, describe(format, spec, rows, cols) + ": " + how);
    };

    for (size_t p = 0; p < good.parts.size(); ++p) {
      const std::string name = "'" + good.parts[p].suffix + "'";
      QuantizedTensor bad = good;
      bad.parts.erase(bad.parts.begin() + long(p));
      expect_rejected(bad, name, "missing " + name);

      bad = good;
      bad.parts[p].dtype = DType::I32;
      expect_rejected(bad, name, "wrong dtype of " + name);

      bad = good;
      bad.parts[p].shape[0] += 1;
      expect_rejected(bad, name, "wrong shape of " + name);

      bad = good;
      bad.parts[p].shape.push_back(1);
      expect_rejected(bad, name, "extra dimension of " + name);

      bad = good;
      bad.parts[p].bytes.pop_back();
      expect_rejected(bad, name, "truncated " + name);

      bad = good;
      bad.parts[p].bytes.push_back(0);
      expect_rejected(bad, name, "padded " + name);

      const DType dt = good.parts[p].dtype;
      if (dt == DType::F16 || dt == DType::F32 || dt == DType::BF16) {
        bad = good;
        if (dt == DType::F32) {
          const float inf = std::numeric_limits<float>::infinity();
          std::memcpy(bad.parts[p].bytes.data(), &inf, 4);
        } else {
          const uint16_t nan = dt == DType::F16 ? 0x7e00 : 0x7fc0;
          std::memcpy(bad.parts[p].bytes.data(), &nan, 2);
        }
        expect_rejected(bad, name, "non-finite value in " + name);
      }
    }

    QuantizedTensor bad = good;
    bad.spec.bits = f.max_bits + 1;
    expect_rejected(bad, "bits", "bits above the range");
    bad.spec.bits = f.min_bits - 1;
    expect_rejected(bad, "bits", "bits below the range");
    bad = good;
    bad.format = format == "affine" ? "symmetric" : "affine";
    expect_rejected(bad, "format", "another format's name");
    bad = good;
    bad.rows = 0;
    expect_rejected(bad, "shape", "zero rows");
    bad.rows = -3;
    expect_rejected(bad, "shape", "negative rows");
    bad = good;
    bad.cols = std::numeric_limits<int64_t>::max() / 2;
    expect_rejected(bad, "shape", "enormous cols");
    bad = good;
    bad.rows = rows + 1;  // plausible header, parts for the old shape
    expect_rejected(bad, "part", "rows that the parts do not have");
    bad = good;
    bad.spec.group = -2;
    expect_rejected(bad, "group", "group -2");
    if (format == "kmeans") {
      bad = good;
      bad.spec.group = 64;
      expect_rejected(bad, "group", "kmeans with a group size");
    }

    // Codes outside the format's range.
    QuantPart* q = nullptr;
    bad = good;
    for (auto& part : bad.parts)
      if (part.suffix == "q") q = &part;
    ASSERT_NE(q, nullptr) << format;
    if (format == "symmetric") {
      q->bytes[0] = 0;  // int8: code 0 would mean q = -128
      expect_rejected(bad, "code 0", "symmetric code 0");
    }
    if (format == "ternary") {
      q->bytes[1] |= 0x0C;  // code 5 (2 bits at offset 2 of byte 1) = 3
      expect_rejected(bad, "code 3", "ternary code 3");
    }
    if (spec.double_quant) {
      bad = good;
      for (auto& part : bad.parts)
        if (part.suffix == "absmax_q") part.bytes.back() = 0;
      expect_rejected(bad, "'absmax_q'", "double-quant code 0");
    }
  }
}

TEST(FormatsQuantize, RejectsBadArguments) {
  const std::vector<float> w = gaussian(3, 172, 3);
  for (const auto& f : format_registry()) {
    const std::string name(f.name);
    QuantSpec spec = specs_for(f.name)[0];
    spec.bits = f.max_bits + 1;
    expect_error([&] { (void)f.quantize(w.data(), 3, 172, spec); }, "bits", name + " bits too high");
    expect_error([&] { (void)f.bits_per_weight(3, 172, spec); }, "bits", name + " bpw bits too high");
    spec.bits = f.min_bits - 1;
    expect_error([&] { (void)f.quantize(w.data(), 3, 172, spec); }, "bits", name + " bits too low");
    spec = specs_for(f.name)[0];
    spec.group = -2;
    expect_error([&] { (void)f.quantize(w.data(), 3, 172, spec); }, "group", name + " group -2");
    spec = specs_for(f.name)[0];
    expect_error([&] { (void)f.quantize(w.data(), 0, 172, spec); }, "shape", name + " zero rows");
    expect_error([&] { (void)f.quantize(w.data(), 3, 0, spec); }, "shape", name + " zero cols");
  }
  expect_error([&] { (void)find_format("kmeans").quantize(w.data(), 3, 172, {.bits = 4, .group = 64}); }, "group",
               "kmeans group 64");
  expect_error([&] { (void)find_format("kmeans").quantize(w.data(), 3, 172, {.bits = 4, .iterations = -1}); },
               "iterations", "kmeans iterations -1");
}

// ---- k-means ------------------------------------------------------------------------------------

TEST(FormatsKmeans, BeatsAffinePerRowAndCodesAreNearest) {
  const int64_t rows = 33, cols = 300;
  const std::vector<float> w = gaussian(rows, cols, 2024);
  for (int bits : {2, 3, 4}) {
    const QuantizedTensor km = quantize("kmeans", w, rows, cols, {.bits = bits, .group = 0});
    const std::vector<float> km_out = dequantize(km);
    const std::vector<float> af_out = dequantize(quantize("affine", w, rows, cols, {.bits = bits, .group = 0}));
    double km_mse = 0, af_mse = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      km_mse += (w[i] - km_out[i]) * double(w[i] - km_out[i]);
      af_mse += (w[i] - af_out[i]) * double(w[i] - af_out[i]);
    }
    EXPECT_LE(km_mse, af_mse) << bits << " bits: k-means MSE " << km_mse / w.size() << " vs affine "
                              << af_mse / w.size();

    // Each stored code is the nearest stored centroid.
    const std::vector<float> book = part_floats(*km.find("codebook"));
    const int count = 1 << bits;
    ASSERT_EQ(book.size(), size_t(rows * count));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float x = w[r * cols + c];
        for (int j = 0; j < count; ++j)
          ASSERT_LE(std::fabs(x - km_out[r * cols + c]), std::fabs(x - book[r * count + j]))
              << "row " << r << " col " << c << " centroid " << j;
      }
  }
}

}  // namespace
}  // namespace lowbit

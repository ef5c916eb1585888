// Quantized activations with calibration: the int8 product with a static activation scale (w8a8)
// and with LLM.int8()'s float outlier columns against scalar references; the llm-int8 format;
// SmoothQuant's scales; and the whole pipeline on llama-16m-wiki (checkpoint metadata, what bad
// metadata gets, perplexity against the float model).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/formats/format.h"
#include "lowbit/formats/weights.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/kernels/linear.h"
#include "lowbit/models/model.h"
#include "lowbit/quant/calibrate.h"
#include "lowbit/quant/quantize.h"
#include "test_util.h"

namespace lowbit {
namespace {

std::vector<float> gaussian(size_t n, uint64_t seed, float sd) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// int8 weights [rows][cols] and per-row scales from a Gaussian.
LinearWeights int8_weights(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> q(-127, 127);
  std::uniform_real_distribution<float> s(0.001f, 0.01f);
  std::vector<int8_t> w(size_t(rows * cols));
  for (auto& v : w) v = int8_t(q(rng));
  std::vector<float> scale(static_cast<size_t>(rows));
  for (auto& v : scale) v = s(rng);
  return LinearWeights::from_q8(std::move(w), std::move(scale), rows, cols);
}

// The scalar statement of the static product: q = clamp(round(x / a), ±127) (half away from zero),
// y = a · s_r · Σ q · w (the integer sum exact, the epilogue in float as the kernel does it).
float static_reference(const LinearWeights& w, const float* x, int64_t r) {
  int64_t sum = 0;
  for (int64_t c = 0; c < w.cols; ++c) {
    const float v = std::clamp(x[c] / w.act_scale(), -127.0f, 127.0f);
    const int q = int(std::lround(v));
    sum += int64_t(q) * w.q8_at(r, c);
  }
  return w.act_scale() * w.q8_scale_at(r) * float(sum);
}

TEST(ActQuant, StaticScaleMatchesTheReferenceAndClips) {
  for (int64_t m : {1, 3, 33}) {
    for (int64_t cols : {1, 172, 300}) {
      const int64_t rows = 33;
      LinearWeights w = int8_weights(rows, cols, uint64_t(m * 1000 + cols));
      w.set_act_scale(0.01f);  // |x| beyond 1.27 clips
      std::vector<float> x = gaussian(size_t(m * cols), uint64_t(cols), 1.0f);
      x[0] = 50.0f;  // far outside the range
      if (x.size() > 1) x[1] = -3e9f;
      std::vector<float> y(size_t(m * rows), std::numeric_limits<float>::quiet_NaN());
      linear_forward(w, x.data(), size_t(m), y.data());
      for (int64_t i = 0; i < m; ++i)
        for (int64_t r = 0; r < rows; ++r) {
          const float want = static_reference(w, x.data() + i * cols, r);
          ASSERT_EQ(y[size_t(i * rows + r)], want) << "m " << m << " cols " << cols << " at [" << i << ", " << r << "]";
        }
      // accumulate adds to what y held
      std::vector<float> y2(size_t(m * rows), 1.0f);
      linear_forward(w, x.data(), size_t(m), y2.data(), true);
      for (size_t i = 0; i < y.size(); ++i) ASSERT_FLOAT_EQ(y2[i], y[i] + 1.0f) << i;
    }
  }
}

TEST(ActQuant, RowQuantizerRoundsHalfAwayFromZeroAndSaturates) {
  const float x[] = {0.5f, -0.5f, 1.5f, -1.49f, 127.4f, 500.0f, -500.0f, 0.0f};
  int8_t q[8];
  quantize_row_q8_static(x, 8, 1.0f, q);
  const int want[] = {1, -1, 2, -1, 127, 127, -127, 0};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(int(q[i]), want[i]) << x[i];
}

// LLM.int8(): the outlier columns leave x before its per-row scale is taken and run in float.
TEST(ActQuant, OutlierColumnsRunInFloat) {
  const int64_t rows = 33, cols = 172, m = 3;
  const std::vector<float> wf = gaussian(size_t(rows * cols), 5, 0.05f);
  const std::vector<int32_t> outliers = {0, 17, 171};
  const QuantizedTensor q = quantize_llm_int8(wf.data(), rows, cols, outliers);
  std::vector<float> deq(wf.size());
  find_format("llm-int8").dequantize(q, deq.data());
  const LlmInt8Outliers o = llm_int8_outliers(q);
  ASSERT_EQ(o.cols, outliers);
  // Weights: every outlier column as F16 (exact up to its rounding), the others within scale / 2
  // of a scale taken without them.
  for (int64_t r = 0; r < rows; ++r) {
    float absmax = 0;
    for (int64_t c = 0; c < cols; ++c)
      if (std::find(outliers.begin(), outliers.end(), int32_t(c)) == outliers.end())
        absmax = std::max(absmax, std::fabs(wf[size_t(r * cols + c)]));
    for (int64_t c = 0; c < cols; ++c) {
      const bool out = std::find(outliers.begin(), outliers.end(), int32_t(c)) != outliers.end();
      const float err = std::fabs(deq[size_t(r * cols + c)] - wf[size_t(r * cols + c)]);
      ASSERT_LE(err, out ? 1e-3f * std::fabs(wf[size_t(r * cols + c)]) : absmax / 127 * 0.5f * 1.002f) << r << ", " << c;
    }
  }
  // The product: outlier inputs of 40 would set an int8 step 40x coarser; here they cost nothing.
  LinearWeights w;
  {
    std::vector<int8_t> codes(size_t(rows * cols));
    std::vector<float> scale(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      float s = 0;
      for (int64_t c = 0; c < cols; ++c)
        if (deq[size_t(r * cols + c)] != 0 && std::find(outliers.begin(), outliers.end(), int32_t(c)) == outliers.end())
          s = std::max(s, std::fabs(deq[size_t(r * cols + c)]));
      scale[size_t(r)] = s / 127;
      for (int64_t c = 0; c < cols; ++c) {
        const bool out = std::find(outliers.begin(), outliers.end(), int32_t(c)) != outliers.end();
        codes[size_t(r * cols + c)] = out ? 0 : int8_t(std::lround(deq[size_t(r * cols + c)] / scale[size_t(r)]));
      }
    }
    w = LinearWeights::from_q8(codes, scale, rows, cols);
    w.outlier_cols = o.cols;
    w.outlier_w = o.weights;
  }
  std::vector<float> x = gaussian(size_t(m * cols), 9, 1.0f);
  for (int64_t i = 0; i < m; ++i) x[size_t(i * cols + 17)] = 40.0f;
  std::vector<float> y(size_t(m * rows), std::numeric_limits<float>::quiet_NaN());
  linear_forward(w, x.data(), size_t(m), y.data());
  for (int64_t i = 0; i < m; ++i) {
    float inlier_max = 0;
    for (int64_t c = 0; c < cols; ++c)
      if (std::find(outliers.begin(), outliers.end(), int32_t(c)) == outliers.end())
        inlier_max = std::max(inlier_max, std::fabs(x[size_t(i * cols + c)]));
    for (int64_t r = 0; r < rows; ++r) {
      double want = 0, bound = 0;
      for (int64_t c = 0; c < cols; ++c) {
        want += double(deq[size_t(r * cols + c)]) * x[size_t(i * cols + c)];
        bound += std::fabs(deq[size_t(r * cols + c)]);
      }
      // Rounding x to the inliers' step: at most step / 2 per term.
      bound *= inlier_max / 127 * 0.5;
      ASSERT_NEAR(y[size_t(i * rows + r)], want, bound + 1e-4) << i << ", " << r;
    }
  }
}

TEST(ActQuant, LlmInt8FormatRefusesBrokenOutlierParts) {
  const int64_t rows = 3, cols = 40;
  const std::vector<float> wf = gaussian(size_t(rows * cols), 2, 0.1f);
  const QuantizedTensor good = quantize_llm_int8(wf.data(), rows, cols, {3, 9});
  std::vector<float> out(size_t(rows * cols));
  const FormatTraits& f = find_format("llm-int8");
  ASSERT_NO_THROW(f.dequantize(good, out.data()));
  auto part = [](QuantizedTensor& q, const char* suffix) -> QuantPart& {
    for (auto& p : q.parts)
      if (p.suffix == suffix) return p;
    throw std::runtime_error(suffix);
  };
  QuantizedTensor bad = good;
  int32_t swapped[2] = {9, 3};
  std::memcpy(part(bad, "cols").bytes.data(), swapped, 8);
  test::expect_error([&] { f.dequantize(bad, out.data()); }, {"'cols'", "ascending"});
  bad = good;
  int32_t beyond[2] = {3, 40};
  std::memcpy(part(bad, "cols").bytes.data(), beyond, 8);
  test::expect_error([&] { f.dequantize(bad, out.data()); }, {"'cols'", "below 40"});
  bad = good;
  part(bad, "q").bytes[9] = 200;  // row 0, outlier column 9: must hold the zero code
  test::expect_error([&] { f.dequantize(bad, out.data()); }, {"'q'", "outlier column"});
  bad = good;
  bad.parts.erase(std::remove_if(bad.parts.begin(), bad.parts.end(), [](const QuantPart& p) { return p.suffix == "outlier"; }),
                  bad.parts.end());
  test::expect_error([&] { f.dequantize(bad, out.data()); }, {"'outlier'"});
  test::expect_error([&] { (void)quantize_llm_int8(wf.data(), rows, cols, {5, 5}); }, {"ascending"});
  test::expect_error([&] { (void)f.quantize(wf.data(), rows, cols, {.bits = 8, .group = 32}); }, {"group must be 0"});
}

// α = 0.5 balances the two maxima exactly; α = 0 leaves the activations and α = 1 the weights alone.
TEST(ActQuant, SmoothQuantScalesBalanceTheMaxima) {
  const std::vector<double> ax = {8.0, 0.5, 100.0, 0.0, 3.0}, aw = {0.02, 0.5, 0.001, 0.3, 0.0};
  const std::vector<float> s = smoothquant_scales(ax, aw, 0.5);
  for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(ax[j] / s[j], aw[j] * s[j], 1e-6 * ax[j] / s[j]) << j;
  EXPECT_EQ(s[3], 1.0f);  // a channel that is never active, or never read: left alone
  EXPECT_EQ(s[4], 1.0f);
  const std::vector<float> s0 = smoothquant_scales(ax, aw, 0.0), s1 = smoothquant_scales(ax, aw, 1.0);
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_NEAR(s0[j], 1.0 / aw[j], 1e-6 / aw[j]) << j;  // max|W s| = 1 per channel
    EXPECT_NEAR(s1[j], ax[j], 1e-6 * ax[j]) << j;        // max|X / s| = 1 per channel
  }
}

// ---- the pipeline on llama-16m-wiki ------------------------------------------------------------

struct Llama16m : ::testing::Test {
  static void SetUpTestSuite() {
    // One folder per process: ctest runs each test of the suite in its own process, in parallel.
    root = new std::filesystem::path(std::filesystem::path(testing::TempDir()) /
                                     ("lowbit_act_quant_llama16m_" + std::to_string(getpid())));
    std::filesystem::remove_all(*root);
    QuantizeOptions opt;
    opt.progress = false;
    opt.calib = {test::shared_dir() / "datasets/wikitext-2/wiki.valid.tokens", 8, 256, 0};
    opt.scheme = "w8a8";
    opt.act.observer = Observer::Entropy;  // the best observer without smoothing
    opt.act.smooth_alpha = -1;
    quantize_checkpoint(test::model_dir("llama-16m-wiki"), *root / "w8a8", opt);
    opt.act = ActivationOptions{};  // the defaults: mse, SmoothQuant α = 0.9
    quantize_checkpoint(test::model_dir("llama-16m-wiki"), *root / "w8a8-smooth", opt);
    opt.scheme = "llm-int8";
    quantize_checkpoint(test::model_dir("llama-16m-wiki"), *root / "llm-int8", opt);
    opt.scheme = "int8-dyn";
    quantize_checkpoint(test::model_dir("llama-16m-wiki"), *root / "int8-dyn", opt);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*root);
    delete root;
  }
  static std::filesystem::path* root;
};
std::filesystem::path* Llama16m::root = nullptr;

TEST_F(Llama16m, CheckpointsCarryTheirActivationQuantization) {
  WeightStore w8(*root / "w8a8");
  WeightStore sm(*root / "w8a8-smooth");
  WeightStore llm(*root / "llm-int8");
  int outlier_tensors = 0;
  for (const auto& t : w8.tensors()) {
    if (t.format.empty()) continue;
    EXPECT_EQ(t.scheme, "w8a8") << t.name;
    EXPECT_GT(t.act_scale, 0) << t.name;
    // One input, one scale: q/k/v (and gate/up) share theirs.
    if (t.name.find("k_proj") != std::string::npos || t.name.find("v_proj") != std::string::npos) {
      std::string q = t.name;
      q.replace(q.find(t.name.find("k_proj") != std::string::npos ? "k_proj" : "v_proj"), 6, "q_proj");
      EXPECT_EQ(t.act_scale, w8.get(q).act_scale) << t.name;
    }
  }
  // Smoothing folded its scales into the norms (float32) and changed the static ranges.
  EXPECT_EQ(sm.get("model.layers.0.input_layernorm.weight").dtype, DType::F32);
  EXPECT_NE(sm.get("model.layers.0.self_attn.q_proj.weight").act_scale,
            w8.get("model.layers.0.self_attn.q_proj.weight").act_scale);
  for (const auto& t : llm.tensors()) {
    if (t.format.empty()) continue;
    EXPECT_EQ(t.format, "llm-int8") << t.name;
    outlier_tensors += llm_int8_outliers(llm.load_quantized(t.name)).cols.empty() ? 0 : 1;
  }
  EXPECT_GT(outlier_tensors, 0) << "no input reached the threshold";
}

TEST_F(Llama16m, PerplexityStaysNearTheFloatModel) {
  auto base = load_causal_lm(test::model_dir("llama-16m-wiki"));
  auto w8 = load_causal_lm(*root / "w8a8");
  auto sm = load_causal_lm(*root / "w8a8-smooth");
  auto llm = load_causal_lm(*root / "llm-int8");
  auto dyn = load_causal_lm(*root / "int8-dyn");
  auto tok = load_tokenizer(test::model_dir("llama-16m-wiki"));
  auto tokens = tok->encode(read_file(test::shared_dir() / "datasets/wikitext-2/wiki.test.raw").substr(0, 60000));
  PerplexityOptions popt;
  popt.ctx = 256;
  popt.bos_id = 1;
  popt.max_windows = 12;
  popt.progress = false;
  const CausalLM* models[] = {w8.get(), sm.get(), llm.get(), dyn.get()};
  auto r = perplexity_compare(models, base.get(), tokens, popt);
  const double base_ppl = perplexity(*base, tokens, popt).ppl;
  std::printf("[ act      ] llama-16m-wiki, 12 windows of 256: float %.3f; w8a8 %.3f (KLD %.4f), +smooth %.3f (%.4f), "
              "llm-int8 %.3f (%.4f), int8-dyn %.3f (%.4f)\n",
              base_ppl, r[0].ppl, r[0].kld, r[1].ppl, r[1].kld, r[2].ppl, r[2].kld, r[3].ppl, r[3].kld);
  // Per-token activations lose little; a static per-tensor int8 range loses more, and SmoothQuant
  // (α = 0.9, mse observer) wins most of it back.
  EXPECT_LT(r[3].kld, 0.005);
  EXPECT_LT(r[2].kld, 0.005);
  EXPECT_LT(r[0].kld, 0.15);
  EXPECT_LT(r[1].kld, 0.04);
  EXPECT_LT(r[1].kld, 0.5 * r[0].kld);
  EXPECT_LT(std::fabs(r[2].ppl / base_ppl - 1), 0.03);
}

TEST_F(Llama16m, BadActivationScaleIsRefused) {
  // Rewrite one tensor's metadata with a negative scale, then without one.
  const auto dir = test::temp_dir("bad");
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"})
    if (std::filesystem::exists(*root / "w8a8" / f)) std::filesystem::copy_file(*root / "w8a8" / f, dir / f);
  const TensorStore store(*root / "w8a8");
  const std::string name = "model.layers.2.mlp.down_proj.weight";
  for (const std::string how : {"negative", "missing"}) {
    SafetensorsWriter writer;
    for (const auto& file : store.files())
      for (const auto& [key, value] : file->metadata()) {
        if (key != std::string(kQuantMetaPrefix) + name) {
          writer.set_metadata(key, value);
          continue;
        }
        nlohmann::json j = nlohmann::json::parse(value);
        if (how == "negative")
          j["act_scale"] = -0.5;
        else
          j.erase("act_scale");
        writer.set_metadata(key, j.dump());
      }
    for (const auto& v : store.all()) writer.add(v.info->name, v.info->dtype, v.info->shape, v.data, v.bytes());
    writer.write(dir / "model.safetensors");
    if (how == "negative")
      test::expect_error([&] { (void)load_causal_lm(dir); }, {"model.safetensors", name, "act_scale", "positive"});
    else
      test::expect_error([&] { (void)load_causal_lm(dir); }, {name, "act_scale", "w8a8"});
  }
}

TEST(ActQuantCli, RefusesWhatCannotBeCalibrated) {
  QuantizeOptions opt;
  opt.progress = false;
  opt.scheme = "w8a8";
  opt.quantize_lm_head = true;
  opt.calib = {test::shared_dir() / "datasets/wikitext-2/wiki.valid.tokens", 2, 64, 0};
  const auto root = test::temp_dir("refuse");
  test::expect_error([&] { quantize_checkpoint(test::model_dir("llama-16m-wiki"), root / "a", opt); },
                     {"lm_head.weight", "w8a8", "--keep"});
  opt.quantize_lm_head = false;
  opt.method = "gptq";
  test::expect_error([&] { quantize_checkpoint(test::model_dir("llama-16m-wiki"), root / "b", opt); }, {"--method rtn"});
  opt.method = "rtn";
  opt.scheme = "w8a8@32";
  test::expect_error([&] { quantize_checkpoint(test::model_dir("llama-16m-wiki"), root / "c", opt); },
                     {"w8a8@32", "one weight scale per output row"});
  EXPECT_FALSE(std::filesystem::exists(root / "a"));
}

}  // namespace
}  // namespace lowbit

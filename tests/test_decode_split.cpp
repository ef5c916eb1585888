// LlamaModel's decode split over the threads by heads and MLP channels (llama_split.cpp) against the
// row-split decode of the same checkpoint, and the column-split weights it runs on against the
// whole matrix (LinearWeights::split_columns).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "golden_util.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/core/dtype.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/linear.h"
#include "lowbit/models/generate.h"
#include "lowbit/models/llama.h"
#include "lowbit/quant/quantize.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;

// Loads `dir` with LOWBIT_DECODE set to `mode`.
std::unique_ptr<CausalLM> load_with(const fs::path& dir, const char* mode) {
  struct Unset {
    ~Unset() { ::unsetenv("LOWBIT_DECODE"); }  // (also when the load throws)
  } unset;
  ::setenv("LOWBIT_DECODE", mode, 1);
  return load_causal_lm(dir);
}

// The logits of `tokens`: the first `prompt` in one call, then one token per call.
std::vector<float> run_tokens(const CausalLM& model, const std::vector<int32_t>& tokens, int prompt) {
  const int vocab = model.vocab_size();
  auto s = model.new_session(int(tokens.size()));
  std::vector<float> out, logits(static_cast<size_t>(vocab));
  model.forward(*s, std::span(tokens.data(), size_t(prompt)), logits.data(), false);
  out.insert(out.end(), logits.begin(), logits.end());
  for (size_t i = size_t(prompt); i < tokens.size(); ++i) {
    std::fill(logits.begin(), logits.end(), NAN);
    model.forward(*s, std::span(&tokens[i], 1), logits.data(), false);
    out.insert(out.end(), logits.begin(), logits.end());
  }
  return out;
}

// Decodes `seq` (8 tokens of prompt, then one at a time) with the checkpoint `dir` split and by rows,
// and with the float model `ref`.
// `between`: how far apart the two may be, as a share of the row decode's distance to the float model
// (int8-dyn's split quantizes o_proj's / down_proj's inputs per thread's part, not per token: another
// quantization, finer, not only another order of sums).
void expect_split_matches_rows(const fs::path& dir, const CausalLM& ref, const std::vector<int32_t>& seq,
                               const std::string& label, double between_share = 0.8) {
  auto rows = load_with(dir, "rows");
  auto split = load_with(dir, "split");
  const auto* ls = dynamic_cast<const LlamaModel*>(split.get());
  ASSERT_NE(ls, nullptr);
  EXPECT_EQ(dynamic_cast<const LlamaModel*>(rows.get())->decode_split_threads(), 0);
  EXPECT_EQ(ls->decode_split_threads(), default_thread_pool().size()) << label;
  const int vocab = split->vocab_size(), steps = int(seq.size()) - 7;
  const auto f = run_tokens(ref, seq, 8), a = run_tokens(*rows, seq, 8), b = run_tokens(*split, seq, 8);
  ASSERT_EQ(a.size(), size_t(steps) * size_t(vocab));
  for (float v : b) ASSERT_TRUE(std::isfinite(v));
  // The same products summed in another order (a partial sum per thread). Rounding differences
  // then move some int8 activations across a rounding step, which changes the logits by more than
  // float rounding would (llama-16m int8: ~0.7 % relative L2 per step; int4: ~2 %), so each
  // decode is held against the float model's: the split one must be as close to it as the other.
  double to_float_rows = 0, to_float_split = 0, between = 0;
  int argmax_same = 0;
  for (int st = 0; st < steps; ++st) {
    auto row = [&](const std::vector<float>& v) { return std::vector<float>(v.begin() + st * vocab, v.begin() + (st + 1) * vocab); };
    to_float_rows += test::compare_rows(row(a), row(f), 1, vocab).max_rel_l2 / steps;
    to_float_split += test::compare_rows(row(b), row(f), 1, vocab).max_rel_l2 / steps;
    const test::LogitCheck c = test::compare_rows(row(b), row(a), 1, vocab);
    between += c.max_rel_l2 / steps;
    argmax_same += c.argmax_mismatches == 0;
  }
  EXPECT_LE(to_float_split, 1.05 * to_float_rows + 1e-3) << label;
  EXPECT_LE(between, between_share * to_float_rows) << label;
  EXPECT_GE(argmax_same, steps - 2) << label;
  std::printf("[ split    ] %s, %d decode steps: mean relative L2 to the float model %.4f (by rows %.4f), "
              "to the decode by rows %.4f, same argmax %d\n",
              label.c_str(), steps, to_float_split, to_float_rows, between, argmax_same);
}

TEST(DecodeSplit, MatchesRowSplitDecodeOnQuantizedLlama16m) {
  if (default_thread_pool().size() < 2) GTEST_SKIP() << "one thread: nothing to split";
  const fs::path in = test::model_dir("llama-16m-wiki");
  const fs::path root = test::temp_dir("split");
  const auto tokens = test::read_binary<int32_t>(in / "golden_tokens_64.i32");
  const std::vector<int32_t> seq(tokens.begin(), tokens.begin() + 40);
  auto fmodel = load_causal_lm(in);
  // int8 per channel, int4 in groups of 64 (llama-16m's 3 query heads per thread are 192 columns
  // of o_proj: groups of 128 would not split there, and the model then decodes by rows), and nf4
  // (groups of 64; a code book, on int16 activations), and int8-dyn (one activation scale per token;
  // o_proj / down_proj inputs one per thread's part in the split).
  for (const char* scheme : {"int8", "int4@64", "int4", "nf4", "int8-dyn"}) {
    QuantizeOptions opt;
    opt.scheme = scheme;
    opt.progress = false;
    const fs::path dir = root / (std::string(scheme) == "int4@64" ? "int4g64" : scheme);
    quantize_checkpoint(in, dir, opt);
    if (std::string(scheme) == "int4") {
      auto split = load_with(dir, "split");
      EXPECT_EQ(dynamic_cast<const LlamaModel*>(split.get())->decode_split_threads(), 0)
          << "groups of 128 do not fall on the heads' columns";
      continue;
    }
    const bool per_part = std::string(scheme) == "int8-dyn";
    expect_split_matches_rows(dir, *fmodel, seq, std::string("llama-16m ") + scheme, per_part ? 1.25 : 0.8);
  }
}

// Q / K / V biases (Qwen2's) and a sliding window (Mistral's) take their own lines of the split
// decode: llama-16m with random biases added and a window of 12 positions, decoded past it.
TEST(DecodeSplit, BiasesAndSlidingWindowMatchRowSplit) {
  if (default_thread_pool().size() < 2) GTEST_SKIP() << "one thread: nothing to split";
  const fs::path in = test::model_dir("llama-16m-wiki");
  const fs::path dir = test::temp_dir("split_bias") / "float";
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(in))
    if (e.path().filename() != "model.safetensors" && e.path().filename() != "config.json" && e.is_regular_file())
      fs::copy_file(e.path(), dir / e.path().filename());
  std::ifstream cfg_in(in / "config.json");
  auto cfg = nlohmann::json::parse(cfg_in);
  cfg["attention_bias"] = true;
  cfg["sliding_window"] = 12;
  test::write_bytes(dir / "config.json", cfg.dump(2));
  SafetensorsFile file(in / "model.safetensors");
  SafetensorsWriter w;
  for (const auto& t : file.tensors()) {
    const TensorView v = file.view(t);
    w.add_borrowed(t.name, t.dtype, t.shape, v.data, v.bytes());
  }
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  const int layers = cfg["num_hidden_layers"], heads = cfg["num_attention_heads"], kv = cfg["num_key_value_heads"];
  const int hd = cfg["head_dim"];
  for (int l = 0; l < layers; ++l)
    for (auto [proj, n] : {std::pair{"q", heads * hd}, std::pair{"k", kv * hd}, std::pair{"v", kv * hd}}) {
      std::vector<float> b(static_cast<size_t>(n));
      for (auto& v : b) v = nd(rng);
      w.add(fmt::format("model.layers.{}.self_attn.{}_proj.bias", l, proj), DType::F32, {n}, b.data(), b.size() * 4);
    }
  w.write(dir / "model.safetensors");
  QuantizeOptions opt;
  opt.scheme = "int8";
  opt.progress = false;
  quantize_checkpoint(dir, dir.parent_path() / "int8", opt);
  auto fmodel = load_causal_lm(dir);
  const auto tokens = test::read_binary<int32_t>(in / "golden_tokens_64.i32");
  expect_split_matches_rows(dir.parent_path() / "int8", *fmodel, std::vector<int32_t>(tokens.begin(), tokens.begin() + 40),
                            "llama-16m int8 with q/k/v biases and a 12-position window");
}

TEST(DecodeSplit, BadModeIsRefused) {
  const fs::path in = test::model_dir("stories260K/hf");
  test::expect_error([&] { load_with(in, "columns"); }, {"LOWBIT_DECODE=columns", "split or rows"});
}

// A U4 / U8 matrix of random codes in the lanes layout.
// offset false: U4 symmetric (codes c - 8, no offsets).
LinearWeights random_lanes(PackedKind kind, int64_t rows, int64_t cols, int64_t group, std::vector<uint8_t>& codes,
                           std::vector<uint16_t>& params, bool offset = true) {
  PackedMatrix m;
  m.kind = kind;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = kind == PackedKind::U4 ? size_t(cols / 2) : size_t(cols);
  m.group = group;
  std::mt19937 rng(uint32_t(rows * 31 + cols));
  codes.resize(size_t(rows) * m.row_bytes);
  for (auto& c : codes) c = uint8_t(rng());
  std::uniform_real_distribution<float> u(0.005f, 0.02f);
  params.resize(2 * size_t(rows * m.groups()));
  for (auto& p : params) p = f32_to_f16(u(rng));
  m.data = codes.data();
  m.scale_f16 = params.data();
  if (kind == PackedKind::U4) {
    if (offset) m.offset_f16 = params.data() + params.size() / 2;
    for (int c = 0; c < 16; ++c) m.lut[c] = float(offset ? c : c - 8);
  } else {
    m.zero = 128;
  }
  return LinearWeights::from_packed(m, nullptr);
}

TEST(DecodeSplit, ColumnPartsComputeTheWholeProduct) {
  struct Case {
    PackedKind kind;
    int64_t rows, cols, group;
    std::vector<int64_t> bounds;
  };
  for (const Case& c : {Case{PackedKind::U4, 40, 512, 128, {256}}, Case{PackedKind::U4, 33, 384, 64, {64, 192}},
                        Case{PackedKind::U8, 17, 256, 256, {128}}, Case{PackedKind::U4, 16, 320, 128, {256}}}) {
    std::vector<uint8_t> codes;
    std::vector<uint16_t> params;
    const LinearWeights w = random_lanes(c.kind, c.rows, c.cols, c.group, codes, params);
    if (!w.packed[0].m.lanes) GTEST_SKIP() << "this CPU's kernels do not take the lanes layout";
    const LinearWeights parts = w.split_columns(c.bounds);
    ASSERT_EQ(parts.packed.size(), c.bounds.size() + 1);
    // (one group per row: each part holds the rows' scales)
    const uint64_t extra = c.group >= c.cols ? uint64_t(c.rows) * 2 * c.bounds.size() : 0;
    EXPECT_EQ(parts.bytes(), w.bytes() + extra);
    std::vector<float> r1(size_t(c.cols)), r2(size_t(c.cols));
    for (int64_t r : {int64_t(0), c.rows / 2, c.rows - 1}) {
      w.row_f32(r, r1.data());
      parts.row_f32(r, r2.data());
      EXPECT_EQ(r1, r2) << "row " << r;
    }
    std::mt19937 rng(5);
    std::normal_distribution<float> nd;
    for (size_t m : {size_t(1), size_t(3), size_t(12)}) {  // decode, a few rows, a prefill tile
      std::vector<float> x(m * size_t(c.cols)), y1(m * size_t(c.rows), 0.5f), y2 = y1;
      for (auto& v : x) v = nd(rng);
      linear_forward(w, x.data(), m, y1.data(), /*accumulate=*/true);
      linear_forward(parts, x.data(), m, y2.data(), /*accumulate=*/true);
      for (size_t i = 0; i < y1.size(); ++i)
        ASSERT_NEAR(y2[i], y1[i], 1e-4 * (1 + std::fabs(y1[i]))) << "m " << m << " element " << i;
    }
  }
}

TEST(DecodeSplit, ColumnBoundsOffTheGroupsAreRefused) {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> params;
  const LinearWeights w = random_lanes(PackedKind::U4, 16, 512, 128, codes, params);
  if (!w.packed[0].m.lanes) GTEST_SKIP() << "this CPU's kernels do not take the lanes layout";
  test::expect_error([&] { w.split_columns({192}); }, {"lanes_columns", "[0, 192)", "group 128"});
  test::expect_error([&] { w.split_columns({256, 128}); }, {"split_columns", "ascend"});
  test::expect_error([&] { w.split_columns({256}).split_columns({128}); }, {"split_columns", "one packed matrix"});
}

// A thread's rows copied out of a lanes matrix (lanes_rows_into, as LlamaModel::arrange_split lays
// them one after another): the same codes, parameters and products as those rows of the whole.
TEST(DecodeSplit, RowPartsHoldTheirRowsOfTheWhole) {
  struct Case {
    PackedKind kind;
    int64_t rows, cols, group, r0, r1;
    bool offset;
  };
  for (const Case& c : {Case{PackedKind::U4, 48, 512, 128, 16, 48, true}, Case{PackedKind::U4, 33, 256, 64, 16, 33, true},
                        Case{PackedKind::U4, 40, 256, 128, 0, 16, false}, Case{PackedKind::U8, 37, 256, 256, 32, 37, false}}) {
    std::vector<uint8_t> codes;
    std::vector<uint16_t> params;
    const LinearWeights w = random_lanes(c.kind, c.rows, c.cols, c.group, codes, params, c.offset);
    if (!w.packed[0].m.lanes) GTEST_SKIP() << "this CPU's kernels do not take the lanes layout";
    const PackedMatrix& whole = w.packed[0].m;
    EXPECT_EQ(whole.lanes_pstride, c.offset ? 32 : 16);
    const LanesBytes b = lanes_rows_bytes(whole, c.r0, c.r1);
    EXPECT_EQ(b.codes % 64, 0u);
    EXPECT_EQ(b.params % 64, 0u);
    // (filled with a byte no copy writes where it should not, then read back only where it should)
    std::vector<uint8_t> code_mem(b.codes + 64, 0xA5), param_mem(b.params + 64, 0xA5);
    uint8_t* cm = code_mem.data() + (64 - reinterpret_cast<uintptr_t>(code_mem.data()) % 64) % 64;
    uint8_t* pm = param_mem.data() + (64 - reinterpret_cast<uintptr_t>(param_mem.data()) % 64) % 64;
    const PackedMatrix part = lanes_rows_into(whole, c.r0, c.r1, cm, pm);
    ASSERT_EQ(part.rows, c.r1 - c.r0);
    EXPECT_EQ(part.has_offset(), whole.has_offset());
    for (int64_t r = c.r0; r < c.r1; ++r) {
      for (int64_t col = 0; col < c.cols; ++col)
        ASSERT_EQ(packed_code_at(part, r - c.r0, col), packed_code_at(whole, r, col)) << "row " << r << " column " << col;
      for (int64_t g = 0; g < whole.groups(); ++g) {
        EXPECT_EQ(part.scale_at(part.param_index(r - c.r0, g)), whole.scale_at(whole.param_index(r, g)));
        EXPECT_EQ(part.offset_at(part.param_index(r - c.r0, g)), whole.offset_at(whole.param_index(r, g)));
      }
    }
    // The kernels on the part give the whole's rows.
    const PackedKernels& k = *w.packed[0].kernels;
    std::mt19937 rng(9);
    std::normal_distribution<float> nd;
    std::vector<float> x(size_t(c.cols));
    for (auto& v : x) v = nd(rng);
    QActs a;
    quantize_token_acts(w.packed[0], x.data(), x.size(), a);
    std::vector<float> y_whole(size_t(c.rows), NAN), y_part(size_t(c.r1 - c.r0), NAN);
    ASSERT_TRUE(w.packed[0].q8);
    {
      k.matmul_q8(whole, a, 0, c.rows, y_whole.data(), 0, false);
      k.matmul_q8(part, a, 0, part.rows, y_part.data(), 0, false);
      for (int64_t r = c.r0; r < c.r1; ++r) EXPECT_EQ(y_part[size_t(r - c.r0)], y_whole[size_t(r)]) << "row " << r;
    }
  }
  std::vector<uint8_t> codes;
  std::vector<uint16_t> params;
  const LinearWeights w = random_lanes(PackedKind::U4, 40, 256, 128, codes, params);
  if (!w.packed[0].m.lanes) return;
  test::expect_error([&] { lanes_rows_bytes(w.packed[0].m, 8, 32); }, {"lanes_rows", "[8, 32)", "16-row blocks"});
  test::expect_error([&] { lanes_rows_bytes(w.packed[0].m, 16, 36); }, {"lanes_rows", "[16, 36)"});
  test::expect_error([&] { lanes_rows_bytes(w.packed[0].m, 32, 48); }, {"lanes_rows", "40 x 256"});
}

}  // namespace
}  // namespace lowbit

// Recipes, the quantized checkpoint (written atomically, read back bit for bit, validated), and
// evaluation of quantized models against the float one.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/formats/weights.h"
#include "lowbit/models/model.h"
#include "lowbit/quant/quantize.h"
#include "test_util.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;
using test::expect_error;

TEST(Recipe, DefaultsAndRules) {
  Recipe r("int4", false, false, {});
  EXPECT_EQ(r.scheme_for("model.layers.0.self_attn.q_proj.weight", 2), "int4");
  EXPECT_EQ(r.scheme_for("model.layers.0.mlp.down_proj.weight", 2), "int4");
  EXPECT_EQ(r.scheme_for("model.embed_tokens.weight", 2), std::nullopt);
  EXPECT_EQ(r.scheme_for("lm_head.weight", 2), std::nullopt);
  EXPECT_EQ(r.scheme_for("model.layers.0.input_layernorm.weight", 1), std::nullopt);
  EXPECT_EQ(r.scheme_for("model.layers.0.self_attn.q_proj.bias", 1), std::nullopt);

  Recipe all("nf4", true, true, {{"*.down_proj.weight", "int8", "--override"}, {"*.layers.0.*", "keep", "--keep"}});
  EXPECT_EQ(all.scheme_for("model.embed_tokens.weight", 2), "nf4");
  EXPECT_EQ(all.scheme_for("lm_head.weight", 2), "nf4");
  EXPECT_EQ(all.scheme_for("model.layers.3.mlp.down_proj.weight", 2), "int8");
  EXPECT_EQ(all.scheme_for("model.layers.0.mlp.down_proj.weight", 2), "int8");  // first match wins
  EXPECT_EQ(all.scheme_for("model.layers.0.mlp.up_proj.weight", 2), std::nullopt);
  EXPECT_EQ(all.scheme_for("model.norm.weight", 1), std::nullopt);  // never, whatever the rules say

  EXPECT_EQ(parse_override("*.q_proj.weight=int8").scheme, "int8");
  expect_error([] { parse_override("*.q_proj.weight"); }, {"PATTERN=SCHEME"});
  expect_error([] { parse_override("*.q_proj.weight=int5"); }, {"int5"});
  expect_error([] { Recipe bad("int7", false, false, {}); }, {"int7"});
  EXPECT_EQ(resolve_scheme("int4").spec.group, 128);
  EXPECT_EQ(resolve_scheme("int4@32").spec.group, 32);
  EXPECT_EQ(resolve_scheme("int4", 64).spec.group, 64);
  EXPECT_EQ(resolve_scheme("int4@32", 64).spec.group, 32);  // @G wins over --group-size
  EXPECT_EQ(resolve_scheme("nf4@128").format, "nf4");
  EXPECT_EQ(resolve_scheme("int4@row").spec.group, 0);
  EXPECT_EQ(resolve_scheme("int3@tensor", 64).spec.group, -1);
  EXPECT_EQ(resolve_scheme("kmeans4@tensor").spec.group, -1);
  expect_error([] { resolve_scheme("int4@0"); }, {"int4@0", "group size"});
  expect_error([] { resolve_scheme("int4@x"); }, {"int4@x"});
  expect_error([] { resolve_scheme("kmeans4@32"); }, {"kmeans4@32", "does not apply"});
  EXPECT_EQ(parse_override("*.down_proj.weight=int8@64").scheme, "int8@64");
  EXPECT_EQ(tensor_class("model.layers.1.self_attn.o_proj.weight"), "attention");
  EXPECT_EQ(tensor_class("model.layers.1.mlp.gate_proj.weight"), "mlp");
  EXPECT_EQ(tensor_class("model.layers.1.post_attention_layernorm.weight"), "norms");
  EXPECT_EQ(tensor_class("model.embed_tokens.weight"), "embeddings");
  EXPECT_EQ(tensor_class("lm_head.weight"), "lm_head");
}

// Bytes and modification times of every file of a folder.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) out[e.path().filename().string()] = read_file(e.path());
  return out;
}

TEST(QuantizedCheckpoint, WritesReadsAndRoundTrips) {
  const fs::path in = test::model_dir("stories260K/hf");
  const auto before = snapshot(in);
  const fs::path root = test::temp_dir("q");
  QuantizeOptions opt;
  opt.scheme = "int4";
  opt.progress = false;
  QuantizeReport rep = quantize_checkpoint(in, root / "int4", opt);
  EXPECT_EQ(snapshot(in), before);  // input untouched
  // Only the output folder: no temporary left behind.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"int4"});
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(root / "int4" / f)) << f;
  auto cfg = nlohmann::json::parse(read_file(root / "int4/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["scheme"], "int4");
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "lowbit");

  // 5 layers x 7 linear weights quantized; embeddings (tied) and norms kept.
  EXPECT_EQ(rep.params, 260032);
  int quantized = 0;
  for (const auto& t : rep.tensors) quantized += !t.scheme.empty();
  EXPECT_EQ(quantized, 35);
  EXPECT_LT(rep.bytes_out, rep.bytes_in);

  // The stored parts equal a fresh quantization of the same weights, bit for bit.
  WeightStore q(root / "int4"), f(in);
  EXPECT_TRUE(q.quantized());
  const std::string name = "model.layers.2.mlp.down_proj.weight";  // [64, 172]: groups of 128 + 44
  const LogicalTensor& lt = q.get(name);
  EXPECT_EQ(lt.format, "affine");
  EXPECT_EQ(lt.shape, (std::vector<int64_t>{64, 172}));
  ASSERT_TRUE(lt.error.has_value());
  EXPECT_GT(lt.error->sqnr_db, 10.0);
  QuantizedTensor stored = q.load_quantized(name);
  auto w = f.load_f32(name);
  const Scheme& s = find_scheme("int4");
  QuantizedTensor fresh = find_format(s.format).quantize(w.data(), 64, 172, s.spec);
  ASSERT_EQ(stored.parts.size(), fresh.parts.size());
  for (const auto& p : fresh.parts) {
    const QuantPart* sp = stored.find(p.suffix);
    ASSERT_NE(sp, nullptr) << p.suffix;
    EXPECT_EQ(sp->bytes, p.bytes) << p.suffix;
    EXPECT_EQ(sp->shape, p.shape) << p.suffix;
    EXPECT_EQ(sp->dtype, p.dtype) << p.suffix;
  }
  // Loaded for inference, the codes and the F16 scales and mins are read where the file maps them
  // (no float32 copy), and give the format's own dequantization row by row.
  {
    WeightStore packed(root / "int4");
    packed.set_packed(true);
    const LinearWeights lw = packed.load_linear(name, {64, 172});
    ASSERT_TRUE(lw.is_packed());
    ASSERT_EQ(lw.packed.size(), 1u);
    EXPECT_NE(lw.packed[0].m.scale_f16, nullptr);
    EXPECT_NE(lw.packed[0].m.offset_f16, nullptr);
    EXPECT_EQ(lw.packed[0].m.scale, nullptr);
    std::vector<float> deq(64 * 172), row(172);
    find_format("affine").dequantize(stored, deq.data());
    for (int64_t r = 0; r < 64; ++r) {
      lw.row_f32(r, row.data());
      ASSERT_TRUE(std::equal(row.begin(), row.end(), deq.begin() + r * 172)) << "row " << r;
    }
  }
  // Deterministic: the same command writes the same bytes.
  opt.force = true;
  quantize_checkpoint(in, root / "int4b", opt);
  EXPECT_EQ(read_file(root / "int4/model.safetensors"), read_file(root / "int4b/model.safetensors"));

  // Without --force an existing output is refused; with it, replaced.
  opt.force = false;
  expect_error([&] { quantize_checkpoint(in, root / "int4", opt); }, {"already exists", "--force"});
  opt.force = true;
  opt.scheme = "int8";
  quantize_checkpoint(in, root / "int4", opt);
  EXPECT_EQ(WeightStore(root / "int4").get(name).spec.bits, 8);
  // A quantized checkpoint is not quantized again.
  expect_error([&] { quantize_checkpoint(root / "int4", root / "again", opt); }, {"already quantized"});
}

TEST(QuantizedCheckpoint, QuantizedModelRunsCloseToFloat) {
  const fs::path in = test::model_dir("stories260K/hf");
  const fs::path root = test::temp_dir("run");
  QuantizeOptions opt;
  opt.scheme = "int8";
  opt.progress = false;
  quantize_checkpoint(in, root / "int8", opt);
  auto base = load_causal_lm(in);
  auto q8 = load_causal_lm(root / "int8");
  auto tokens = test::read_binary<int32_t>(test::model_dir("stories260K") / "reference/tokens_64.i32");
  std::vector<int32_t> text(tokens.begin() + 1, tokens.end());
  PerplexityOptions popt;
  popt.ctx = 32;
  popt.bos_id = 1;
  popt.progress = false;
  const CausalLM* models[] = {base.get(), q8.get()};
  auto r = perplexity_compare(models, base.get(), text, popt);
  EXPECT_EQ(r[0].kld, 0.0);
  EXPECT_EQ(r[0].top1, 1.0);
  EXPECT_GT(r[1].kld, 0.0);
  EXPECT_LT(r[1].kld, 0.01);
  EXPECT_NEAR(r[1].ppl, r[0].ppl, 0.05 * r[0].ppl);
}

TEST(QuantizedCheckpoint, RefusesNonFiniteWeights) {
  const fs::path dir = test::temp_dir("nan");
  fs::copy_file(test::model_dir("stories260K/hf") / "config.json", dir / "config.json");
  TensorStore src(test::model_dir("stories260K/hf"));
  SafetensorsWriter w;
  for (const auto& t : src.all()) {
    std::vector<uint8_t> bytes(t.data, t.data + t.bytes());
    if (t.info->name == "model.layers.1.self_attn.k_proj.weight") {
      float nan = NAN;
      std::memcpy(bytes.data() + 4 * 70, &nan, 4);  // row 1, column 6
    }
    w.add(t.info->name, t.info->dtype, t.info->shape, bytes.data(), bytes.size());
  }
  w.write(dir / "model.safetensors");
  QuantizeOptions opt;
  opt.progress = false;
  expect_error([&] { quantize_checkpoint(dir, dir / "out", opt); },
               {"model.layers.1.self_attn.k_proj.weight", "nan", "row 1, column 6"});
  EXPECT_FALSE(fs::exists(dir / "out"));
}

// A small quantized checkpoint with one tensor, whose metadata and parts the cases then break.
struct QCase {
  const char* name;
  std::string meta;  // the metadata JSON, "" for none
  bool drop_scale = false, bad_scale_shape = false;
  std::vector<std::string> expect;
};

TEST(QuantizedCheckpoint, RejectsMalformed) {
  std::vector<float> w(4 * 8);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i));
  const Scheme& s = find_scheme("int4");
  QuantizedTensor q = find_format(s.format).quantize(w.data(), 4, 8, s.spec);
  const std::string good = R"({"format":"affine","bits":4,"group":128,"shape":[4,8],"dtype":"F32"})";
  std::vector<QCase> cases = {
      {"bad_json", "{", false, false, {"lowbit.quant.x.weight", "not valid JSON"}},
      {"unknown_format", R"({"format":"q9","bits":4,"group":0,"shape":[4,8],"dtype":"F32"})", false, false, {"q9"}},
      {"bits_range", R"({"format":"affine","bits":12,"group":0,"shape":[4,8],"dtype":"F32"})", false, false, {"bits 12"}},
      {"no_shape", R"({"format":"affine","bits":4,"group":0,"dtype":"F32"})", false, false, {"missing field 'shape'"}},
      {"bad_shape", R"({"format":"affine","bits":4,"group":0,"shape":[4,-8],"dtype":"F32"})", false, false, {"shape"}},
      {"bad_dtype", R"({"format":"affine","bits":4,"group":0,"shape":[4,8],"dtype":"F7"})", false, false, {"dtype"}},
      {"missing_part", good, true, false, {"x.weight", "scale"}},
      {"wrong_part_shape", good, false, true, {"x.weight", "scale"}},
      {"shape_mismatch", R"({"format":"affine","bits":4,"group":128,"shape":[8,4],"dtype":"F32"})", false, false, {"x.weight"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path dir = test::temp_dir(c.name);
    SafetensorsWriter wr;
    wr.set_metadata("lowbit.quant.x.weight", c.meta);
    for (const auto& p : q.parts) {
      if (c.drop_scale && p.suffix == "scale") continue;
      std::vector<int64_t> shape = p.shape;
      std::vector<uint8_t> bytes = p.bytes;
      if (c.bad_scale_shape && p.suffix == "scale") shape = {2, 2};  // 4 scales, but [4, 1] is expected
      wr.add("x.weight." + p.suffix, p.dtype, shape, bytes.data(), bytes.size());
    }
    wr.write(dir / "model.safetensors");
    try {
      WeightStore ws(dir);
      ws.load_f32("x.weight");
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      std::string msg = e.what();
      for (const auto& part : c.expect) EXPECT_NE(msg.find(part), std::string::npos) << msg << "\nmissing: " << part;
    }
  }
}

// A code the format never writes (symmetric: code 0), anywhere in a loaded linear weight, is refused
// with its tensor and position, on every loader: int8 and int4-sym (packed, 8- and 4-bit codes, an
// odd width so the last byte's high nibble is padding) and int8-dyn (its VNNI copy). Good codes load.
TEST(QuantizedCheckpoint, RefusesCodesTheFormatNeverWrites) {
  const int64_t rows = 37, cols = 131;
  std::vector<float> w(size_t(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i) * 0.7f);
  for (const char* scheme : {"int8", "int4-sym", "int8-dyn"}) {
    const Scheme& s = find_scheme(scheme);
    QuantSpec spec = s.spec;
    if (std::string(scheme) == "int4-sym") spec.group = 0;  // one group per row: any width
    const QuantizedTensor q = find_format(s.format).quantize(w.data(), rows, cols, spec);
    nlohmann::json meta = {{"format", q.format}, {"bits", spec.bits}, {"group", spec.group}, {"shape", {rows, cols}},
                           {"dtype", "F32"}, {"scheme", scheme}};
    const int bits = spec.bits;
    // (row, column) of the planted code: a middle one, the last (for 4 bits, the last odd-width
    // row's low nibble), and the padding nibble, which is not a code and must be ignored.
    struct Plant { int64_t r, c; bool padding; };
    const std::vector<Plant> plants = {{20, 77, false}, {rows - 1, cols - 1, false}, {5, cols, true}};
    for (const Plant& pl : plants) {
      if (pl.padding && bits == 8) continue;
      SCOPED_TRACE(fmt::format("{} [{}, {}]", scheme, pl.r, pl.c));
      const fs::path dir = test::temp_dir(std::string("codes_") + scheme);
      SafetensorsWriter wr;
      wr.set_metadata("lowbit.quant.x.weight", meta.dump());
      for (const auto& p : q.parts) {
        std::vector<uint8_t> bytes = p.bytes;
        if (p.suffix == "q") {
          const size_t row_bytes = packed_bytes(cols, bits);
          uint8_t& b = bytes[size_t(pl.r) * row_bytes + size_t(bits == 8 ? pl.c : pl.c / 2)];
          if (bits == 8) b = 0;
          else b = pl.c % 2 ? uint8_t(b & 0x0F) : uint8_t(b & 0xF0);
        }
        wr.add("x.weight." + p.suffix, p.dtype, p.shape, bytes.data(), bytes.size());
      }
      wr.write(dir / "model.safetensors");
      WeightStore ws(dir);
      if (pl.padding) {
        EXPECT_NO_THROW(ws.load_linear("x.weight", {rows, cols}));
        continue;
      }
      test::expect_error([&] { ws.load_linear("x.weight", {rows, cols}); },
                         {"x.weight", "code 0", fmt::format("[{}, {}]", pl.r, pl.c)});
    }
  }
}

}  // namespace
}  // namespace lowbit

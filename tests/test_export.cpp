// lowbit synth and the GGUF export: the synthetic checkpoint is a valid model of its shape, and the
// exported GGUF says what llama.cpp needs, with q/k rows permuted for ggml's RoPE.
#include <cstring>

#include "lowbit/io/config.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/kernels/bandwidth.h"
#include "lowbit/models/export_gguf.h"
#include "lowbit/models/model.h"
#include "lowbit/models/synth.h"
#include "test_util.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;

TEST(Synth, ShapesAreTheRealModels) {
  const SynthShape& l2 = find_synth_shape("llama-2-7b");
  EXPECT_EQ(l2.hidden, 4096);
  EXPECT_EQ(l2.intermediate, 11008);
  EXPECT_EQ(l2.layers, 32);
  const SynthShape& l3 = find_synth_shape("llama-3.2-1b");
  EXPECT_EQ(l3.vocab, 128256);
  EXPECT_EQ(l3.kv_heads, 8);
  EXPECT_TRUE(l3.tie_embeddings && l3.llama3_rope);
  EXPECT_EQ(find_synth_shape("tinyllama-1.1b").intermediate, 5632);
  test::expect_error([] { find_synth_shape("gpt-5"); }, {"unknown --shape 'gpt-5'"});
}

TEST(Synth, WritesALoadableModelAndTokenizer) {
  const fs::path out = test::temp_dir("synth") / "tiny";
  SynthOptions o;
  o.shape = "tiny";
  o.seed = 3;
  write_synthetic_model(o, out);
  const ModelConfig c = load_config(out);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_kv_heads, 2);
  const TensorStore store(out);
  EXPECT_EQ(store.get("model.layers.1.self_attn.k_proj.weight").info->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(store.get("model.embed_tokens.weight").info->dtype, DType::BF16);
  // Values: uniform with standard deviation 0.02; norms 1.
  const auto w = store.load_f32("model.layers.0.mlp.up_proj.weight");
  double ss = 0, mx = 0;
  for (float v : w) ss += double(v) * v, mx = std::max(mx, double(std::fabs(v)));
  EXPECT_NEAR(std::sqrt(ss / double(w.size())), 0.02, 0.002);
  EXPECT_LE(mx, 0.02 * std::sqrt(3.0) * 1.01);
  for (float v : store.load_f32("model.norm.weight")) ASSERT_EQ(v, 1.0f);
  // Same seed, same bytes; another seed, other bytes.
  const fs::path again = test::temp_dir("synth2") / "tiny";
  write_synthetic_model(o, again);
  EXPECT_EQ(read_file(out / "model.safetensors"), read_file(again / "model.safetensors"));
  o.seed = 4;
  o.force = true;
  write_synthetic_model(o, again);
  EXPECT_NE(read_file(out / "model.safetensors"), read_file(again / "model.safetensors"));

  auto tok = load_tokenizer(out);
  const std::string text = "Hello, wörld!\n";
  const auto ids = tok->encode(text);
  EXPECT_EQ(ids.size(), text.size());  // one token per byte
  EXPECT_EQ(tok->decode(ids, true), text);
  EXPECT_EQ(tok->bos_id(), 1);
  auto model = load_causal_lm(out);
  auto s = model->new_session(32);
  std::vector<float> logits(512);
  model->forward(*s, ids, logits.data(), false);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

TEST(ExportGguf, SyntheticModelCarriesShapeVocabAndPermutedHeads) {
  const fs::path dir = test::temp_dir("export");
  SynthOptions o;
  o.shape = "tiny";
  write_synthetic_model(o, dir / "tiny");
  export_gguf(dir / "tiny", dir / "tiny.gguf");
  const GgufFile g(dir / "tiny.gguf");
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_uint("llama.block_count"), 2u);
  EXPECT_EQ(g.get_uint("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(g.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(g.tensors().size(), 2u * 9 + 3);  // 9 per layer, embeddings, final norm, output
  const TensorStore store(dir / "tiny");
  for (const auto& t : g.tensors()) {
    if (t.name != "blk.1.attn_k.weight") continue;
    EXPECT_EQ(t.ne, (std::vector<uint64_t>{64, 32}));  // [in, out]: reversed
    EXPECT_EQ(t.ggml_type, 30u);                        // BF16
    const TensorView k = store.get("model.layers.1.self_attn.k_proj.weight");
    const size_t row = 64 * 2, hd = 16;
    // Head 1, pair j = 3: new rows 2j, 2j+1 are old rows j and j + head_dim/2.
    for (size_t s = 0; s < 2; ++s)
      EXPECT_EQ(std::memcmp(g.tensor_data(t) + (hd + 6 + s) * row, k.data + (hd + s * hd / 2 + 3) * row, row), 0);
  }
  bool norm_f32 = false;
  for (const auto& t : g.tensors())
    if (t.name == "output_norm.weight") norm_f32 = t.ggml_type == 0;
  EXPECT_TRUE(norm_f32);
}

TEST(ExportGguf, SentencePieceVocabulary) {
  const fs::path dir = test::temp_dir("export_spm");
  export_gguf(test::model_dir("llama-16m-wiki"), dir / "l.gguf");
  const GgufFile g(dir / "l.gguf");
  EXPECT_EQ(g.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens").size(), 8192u);
  EXPECT_EQ(g.get_float_array("tokenizer.ggml.scores").size(), 8192u);
  EXPECT_EQ(g.get_uint("tokenizer.ggml.bos_token_id"), 1u);
}

TEST(Bandwidth, MeasuresAPositiveRate) {
  const BandwidthResult r = measure_read_bandwidth(size_t(32) << 20, 2);
  EXPECT_GT(r.gb_s, 0.1);
  EXPECT_GE(r.gb_s, r.median_gb_s);
  EXPECT_EQ(r.bytes, size_t(32) << 20);
}

}  // namespace
}  // namespace lowbit

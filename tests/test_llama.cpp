// The LLaMA forward pass against logits computed by Hugging Face transformers (float32).
#include <cmath>
#include <cstring>
#include <functional>

#include "lowbit/core/error.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/models/generate.h"
#include "lowbit/models/llama.h"
#include "golden_util.h"

namespace lowbit {
namespace {

using test::check_golden;
using test::compare_rows;
using test::LogitCheck;

// ../shared's golden_logits_64x8192.f32 of llama-16m-wiki differs from what transformers 5.17 /
// torch 2.11 itself computes in float32 from the saved bf16 weights (CPU eager, CPU sdpa and CUDA
// without TF32 all give a max relative row error of 8.1e-4 against it, and 1.2e-6 against lowbit;
// measured on the device machine, see docs/goldens.md). So the shared file is held to 1e-3 with
// every argmax equal, and lowbit to 1e-4 against logits regenerated with transformers on the CPU
// in float32 (tests/data, every 4th of the 64 positions).
TEST(Llama, MatchesTransformersLlama16m) {
  auto dir = test::model_dir("llama-16m-wiki");
  check_golden(dir, dir / "golden_tokens_64.i32", dir / "golden_logits_64x8192.f32", 1e-3);
}

TEST(Llama, MatchesTransformersCpuFp32Llama16m) {
  auto dir = test::model_dir("llama-16m-wiki");
  auto model = load_causal_lm(dir);
  auto tokens = test::read_binary<int32_t>(dir / "golden_tokens_64.i32");
  auto want = test::read_binary<float>(std::filesystem::path(LOWBIT_SOURCE_DIR) /
                                       "tests/data/llama16m_hf_cpu_fp32_logits_rows0to60step4_16x8192.f32");
  const int vocab = model->vocab_size();
  ASSERT_EQ(want.size(), 16u * size_t(vocab));
  auto session = model->new_session(64, KVCacheType::f32);
  std::vector<float> all(64 * size_t(vocab), NAN), got;
  model->forward(*session, tokens, all.data(), true);
  for (int r = 0; r < 64; r += 4) got.insert(got.end(), &all[size_t(r) * size_t(vocab)], &all[size_t(r + 1) * size_t(vocab)]);
  LogitCheck c = compare_rows(got, want, 16, vocab);
  EXPECT_LE(c.max_rel_l2, 1e-4);
  EXPECT_EQ(c.argmax_mismatches, 0);
  std::printf("[ golden   ] llama-16m-wiki vs transformers CPU fp32: max relative L2 error %.3g\n", c.max_rel_l2);
}

TEST(Llama, MatchesReferenceStories260K) {
  auto dir = test::model_dir("stories260K");
  check_golden(dir / "hf", dir / "reference/tokens_64.i32", dir / "reference/logits_64x512.f32");
}

TEST(Llama, SessionLimitsAndBadTokens) {
  auto model = load_causal_lm(test::model_dir("stories260K/hf"));
  std::vector<float> logits(512);
  auto s = model->new_session(4);
  std::vector<int32_t> five = {1, 2, 3, 4, 5};
  test::expect_error([&] { model->forward(*s, five, logits.data(), false); }, {"exceeds", "4 positions"});
  std::vector<int32_t> bad = {1, 600};
  test::expect_error([&] { model->forward(*s, bad, logits.data(), false); }, {"token id 600", "outside the vocabulary"});
  test::expect_error([&] { model->new_session(100000); }, {"max_position_embeddings"});
}

TEST(Llama, MissingTensorIsNamed) {
  // A checkpoint whose lm_head is absent although config.json says the embeddings are not tied.
  auto dir = test::temp_dir("untied");
  std::filesystem::copy_file(test::model_dir("stories260K/hf") / "config.json", dir / "config.json");
  std::string cfg;
  {
    std::ifstream f(dir / "config.json");
    cfg.assign(std::istreambuf_iterator<char>(f), {});
  }
  cfg.replace(cfg.find("\"tie_word_embeddings\": true"), 27, "\"tie_word_embeddings\": false");
  std::filesystem::remove(dir / "config.json");
  test::write_bytes(dir / "config.json", cfg);
  std::filesystem::copy_file(test::model_dir("stories260K/hf") / "model.safetensors", dir / "model.safetensors");
  test::expect_error([&] { load_causal_lm(dir); }, {"lm_head.weight", "tie_word_embeddings"});

  // And a checkpoint that lacks a layer's weight altogether.
  auto dir2 = test::temp_dir("missing");
  std::filesystem::copy_file(test::model_dir("stories260K/hf") / "config.json", dir2 / "config.json");
  TensorStore src(test::model_dir("stories260K/hf"));
  SafetensorsWriter w;
  for (const auto& t : src.all())
    if (t.info->name != "model.layers.3.mlp.up_proj.weight")
      w.add(t.info->name, t.info->dtype, t.info->shape, t.data, t.bytes());
  w.write(dir2 / "model.safetensors");
  test::expect_error([&] { load_causal_lm(dir2); }, {"missing tensor 'model.layers.3.mlp.up_proj.weight'"});
}

// stories260K with one weight changed by `edit` (the checkpoint stores float32).
std::filesystem::path edited_stories(const std::string& tag, const std::string& tensor,
                                     const std::function<void(std::vector<float>&)>& edit) {
  auto dir = test::temp_dir(tag);
  std::filesystem::copy_file(test::model_dir("stories260K/hf") / "config.json", dir / "config.json");
  TensorStore src(test::model_dir("stories260K/hf"));
  SafetensorsWriter w;
  for (const auto& t : src.all()) {
    if (t.info->name != tensor) {
      w.add(t.info->name, t.info->dtype, t.info->shape, t.data, t.bytes());
      continue;
    }
    EXPECT_EQ(t.info->dtype, DType::F32);
    std::vector<float> v(size_t(t.info->numel()));
    std::memcpy(v.data(), t.data, t.bytes());
    edit(v);
    w.add(t.info->name, t.info->dtype, t.info->shape, v.data(), t.bytes());
  }
  w.write(dir / "model.safetensors");
  return dir;
}

TEST(Llama, NonFiniteWeightsAndActivationsAreNamed) {
  // A NaN stored in a weight is refused at load, with the tensor and the element.
  auto nan_dir = edited_stories("nan", "model.layers.2.mlp.up_proj.weight", [](std::vector<float>& v) { v[37] = NAN; });
  test::expect_error([&] { load_causal_lm(nan_dir); },
                     {"model.layers.2.mlp.up_proj.weight", "non-finite value (nan)", "row 0, column 37"});
  auto inf_dir = edited_stories("inf", "model.norm.weight", [](std::vector<float>& v) { v[0] = -INFINITY; });
  test::expect_error([&] { load_causal_lm(inf_dir); }, {"model.norm.weight", "non-finite value (-inf)"});

  // Finite weights so large that layer 1's MLP overflows float32: the forward pass stops there and
  // says where, instead of returning NaN logits.
  auto big_dir = edited_stories("big", "model.layers.1.mlp.down_proj.weight", [](std::vector<float>& v) {
    for (auto& x : v) x = 3e38f;  // near float32's largest: any sum of two overflows
  });
  auto model = load_causal_lm(big_dir);
  auto session = model->new_session(16);
  std::vector<int32_t> tokens{1, 403, 407, 261};
  std::vector<float> logits(size_t(model->vocab_size()));
  test::expect_error([&] { model->forward(*session, tokens, logits.data(), false); },
                     {"model.layers.1 output: non-finite activation", "token position"});
}

TEST(Llama, KeysBeyondTheF16CacheAreNamed) {
  // Layer 1's keys ~1e6 times their size: finite in float32, beyond f16's 65504.
  auto dir = edited_stories("bigk", "model.layers.1.self_attn.k_proj.weight", [](std::vector<float>& v) {
    for (auto& x : v) x *= 1e6f;
  });
  auto model = load_causal_lm(dir);
  std::vector<int32_t> tokens{1, 403, 407, 261};
  std::vector<float> logits(size_t(model->vocab_size()));
  auto session = model->new_session(16);  // f16
  for (size_t n : {tokens.size(), size_t(1)}) {  // prefill, then a decode step
    session->reset();
    test::expect_error([&] { model->forward(*session, std::span(tokens.data(), n), logits.data(), false); },
                       {"model.layers.1: a key or value at position 0", "f16 KV cache's range", "--kv-cache f32"});
  }
  auto exact = model->new_session(16, KVCacheType::f32);
  model->forward(*exact, tokens, logits.data(), false);
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
}

}  // namespace
}  // namespace lowbit

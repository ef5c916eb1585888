// lowbit synth: checkpoints of real model shapes with random weights (see synth.h).
// Shapes from the models' published config.json files on the Hugging Face hub
// (meta-llama/Llama-2-7b-hf, meta-llama/Llama-3.2-1B, TinyLlama/TinyLlama-1.1B-Chat-v1.0).
#include "lowbit/models/synth.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/io/safetensors.h"

namespace lowbit {

using nlohmann::json;

const std::vector<SynthShape>& synth_shapes() {
  static const std::vector<SynthShape> shapes = {
      {"llama-2-7b", "Llama 2 7B: 32 layers, hidden 4096, MHA", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0, false,
       false},
      {"llama-3.2-1b", "Llama 3.2 1B: 16 layers, hidden 2048, GQA 32/8, tied 128256-token embeddings", 2048, 8192, 16,
       32, 8, 128256, 131072, 500000.0, true, true},
      {"tinyllama-1.1b", "TinyLlama 1.1B: 22 layers, hidden 2048, GQA 32/4", 2048, 5632, 22, 32, 4, 32000, 2048,
       10000.0, false, false},
      {"tiny", "a 2-layer toy of the same layout, for tests: hidden 64, GQA 4/2", 64, 160, 2, 4, 2, 512, 256, 10000.0,
       false, false},
  };
  return shapes;
}

const SynthShape& find_synth_shape(std::string_view name) {
  std::vector<std::string_view> names;
  for (const auto& s : synth_shapes()) {
    if (s.name == name) return s;
    names.push_back(s.name);
  }
  fail("unknown --shape '{}'; known shapes: {}", name, fmt::join(names, ", "));
}

namespace {

// splitmix64: fast, and each tensor's stream depends only on (seed, tensor index).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
};

// Fills `out` with n values of `dtype`: uniform on [-a, a] with a = sqrt(3) * stddev (or all `constant`).
void fill_values(uint8_t* out, size_t n, DType dtype, float stddev, float constant, uint64_t seed) {
  const float a = std::sqrt(3.0f) * stddev;
  const size_t es = dtype_size(dtype);
  constexpr size_t kBlock = 1 << 20;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  default_thread_pool().parallel_for(blocks, [&](size_t b, size_t e, int) {
    for (size_t blk = b; blk < e; ++blk) {
      Rng rng{seed * 0x100000001B3ull + blk};
      for (size_t i = blk * kBlock; i < std::min(n, (blk + 1) * kBlock); ++i) {
        const float v = stddev > 0 ? (2.0f * rng.uniform() - 1.0f) * a : constant;
        if (dtype == DType::F32) {
          std::memcpy(out + i * es, &v, 4);
        } else {
          const uint16_t h = dtype == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
          std::memcpy(out + i * es, &h, 2);
        }
      }
    }
  });
}

json config_json(const SynthShape& s, DType dtype) {
  json c = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"attention_bias", false},
            {"bos_token_id", 1},
            {"eos_token_id", 2},
            {"head_dim", s.hidden / s.heads},
            {"hidden_act", "silu"},
            {"hidden_size", s.hidden},
            {"initializer_range", 0.02},
            {"intermediate_size", s.intermediate},
            {"max_position_embeddings", s.max_positions},
            {"mlp_bias", false},
            {"num_attention_heads", s.heads},
            {"num_hidden_layers", s.layers},
            {"num_key_value_heads", s.kv_heads},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", s.rope_theta},
            {"tie_word_embeddings", s.tie_embeddings},
            {"torch_dtype", dtype == DType::F32 ? "float32" : dtype == DType::F16 ? "float16" : "bfloat16"},
            {"vocab_size", s.vocab},
            {"lowbit_synth", {{"shape", s.name}, {"note", "random weights for speed work"}}}};
  if (s.llama3_rope)
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 32.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  return c;
}

// GPT-2's byte-to-character map (bytes that print as themselves keep their code point; the others
// take 256, 257, ... in order): the alphabet of byte-level BPE.
std::string byte_token(int b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
  return out;
}

// A byte-level BPE tokenizer: <unk> <s> </s>, the 256 bytes, and placeholders up to the vocabulary
// size (never produced: no merges make them). Every text encodes (one token per byte).
json tokenizer_json(int vocab) {
  json v = json::object();
  const char* specials[] = {"<unk>", "<s>", "</s>"};
  json added = json::array();
  for (int i = 0; i < 3; ++i) {
    v[specials[i]] = i;
    added.push_back({{"id", i}, {"content", specials[i]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  for (int b = 0; b < 256; ++b) v[byte_token(b)] = 3 + b;
  for (int id = 259; id < vocab; ++id) v[fmt::format("<synth_{}>", id)] = id;
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", v},
            {"merges", json::array()}}}};
}

}  // namespace

void write_synthetic_model(const SynthOptions& o, const std::filesystem::path& out) {
  namespace fs = std::filesystem;
  if (o.arch != "llama") fail("synth: --arch '{}' is not supported; known: llama", o.arch);
  if (o.dtype != DType::F32 && o.dtype != DType::F16 && o.dtype != DType::BF16)
    fail("synth: --dtype must be f32, f16 or bf16");
  const SynthShape& s = find_synth_shape(o.shape);
  if (s.vocab < 259) fail("synth: shape '{}' needs a vocabulary of at least 259 tokens", s.name);
  if (fs::exists(out) && !o.force) fail("{}: already exists (use --force to replace it)", out.string());

  const int64_t h = s.hidden, hd = s.hidden / s.heads, inter = s.intermediate;
  SafetensorsWriter w;
  uint64_t index = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float stddev, float constant) {
    const uint64_t seed = o.seed * 1000003ull + index++;
    const DType dt = o.dtype;
    w.add_generated(name, dt, std::move(shape), [=](uint8_t* p, size_t bytes) {
      fill_values(p, bytes / dtype_size(dt), dt, stddev, constant, seed);
    });
  };
  add("model.embed_tokens.weight", {s.vocab, h}, 0.02f, 0);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    add(p + "input_layernorm.weight", {h}, 0, 1.0f);
    add(p + "self_attn.q_proj.weight", {s.heads * hd, h}, 0.02f, 0);
    add(p + "self_attn.k_proj.weight", {s.kv_heads * hd, h}, 0.02f, 0);
    add(p + "self_attn.v_proj.weight", {s.kv_heads * hd, h}, 0.02f, 0);
    add(p + "self_attn.o_proj.weight", {h, s.heads * hd}, 0.02f, 0);
    add(p + "post_attention_layernorm.weight", {h}, 0, 1.0f);
    add(p + "mlp.gate_proj.weight", {inter, h}, 0.02f, 0);
    add(p + "mlp.up_proj.weight", {inter, h}, 0.02f, 0);
    add(p + "mlp.down_proj.weight", {h, inter}, 0.02f, 0);
  }
  add("model.norm.weight", {h}, 0, 1.0f);
  if (!s.tie_embeddings) add("lm_head.weight", {s.vocab, h}, 0.02f, 0);
  w.set_metadata("format", "pt");

  remove_stale_temps(out);
  const fs::path tmp = make_temp_dir(out);
  try {
    w.write(tmp / "model.safetensors");
    write_file_atomic(tmp / "config.json", config_json(s, o.dtype).dump(2) + "\n");
    write_file_atomic(tmp / "tokenizer.json", tokenizer_json(s.vocab).dump() + "\n");
    const json tc = {{"add_bos_token", true},     {"add_eos_token", false}, {"bos_token", "<s>"},
                     {"eos_token", "</s>"},       {"unk_token", "<unk>"},   {"model_max_length", s.max_positions},
                     {"tokenizer_class", "PreTrainedTokenizerFast"}};
    write_file_atomic(tmp / "tokenizer_config.json", tc.dump(2) + "\n");
    publish_dir(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace lowbit

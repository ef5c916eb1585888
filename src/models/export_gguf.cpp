// lowbit export --to gguf: a float LLaMA-family checkpoint as a GGUF file llama.cpp runs (its
// llama-quantize then makes Q8_0 / Q4_0 / k-quants of the same weights). What goes where follows
// llama.cpp's own converter (convert_hf_to_gguf.py, class LlamaModel, read to learn the mapping):
//   - tensor names token_embd / blk.N.attn_q ... / output_norm / output, dimensions reversed;
//   - q_proj and k_proj rows permuted from HF's rotate-half RoPE layout to ggml's interleaved pairs:
//     within each head, new row 2j + s = old row s * head_dim/2 + j;
//   - 1-D tensors (norms) as F32; Llama-3 RoPE scaling as a rope_freqs tensor of per-pair factors;
//   - the vocabulary: tokenizer.model -> "llama" (pieces, scores, types); a byte-level BPE
//     tokenizer.json -> "gpt2" (tokens, merges).
#include "lowbit/models/export_gguf.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numbers>

#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/io/config.h"
#include "lowbit/io/gguf_writer.h"
#include "lowbit/io/json.h"
#include "lowbit/io/safetensors.h"

namespace lowbit {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// GGUF token types (llama.cpp's llama_token_type): normal 1, unknown 2, control 3, unused 5, byte 6.
void add_vocab_sentencepiece(GgufWriter& w, const fs::path& model_file, int vocab) {
  sentencepiece::SentencePieceProcessor sp;
  if (!sp.Load(model_file.string()).ok()) fail("{}: not a valid SentencePiece model", model_file.string());
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    tokens.push_back(sp.IdToPiece(id));
    scores.push_back(sp.GetScore(id));
    types.push_back(sp.IsUnknown(id) ? 2 : sp.IsControl(id) ? 3 : sp.IsUnused(id) ? 5 : sp.IsByte(id) ? 6 : 1);
  }
  for (int id = int(tokens.size()); id < vocab; ++id) {
    tokens.push_back(fmt::format("[PAD{}]", id));
    scores.push_back(-1000.0f);
    types.push_back(5);
  }
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set_f32s("tokenizer.ggml.scores", scores);
  w.set_i32s("tokenizer.ggml.token_type", types);
  if (sp.bos_id() >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(sp.bos_id()));
  if (sp.eos_id() >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(sp.eos_id()));
  if (sp.unk_id() >= 0) w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(sp.unk_id()));
  w.set_bool("tokenizer.ggml.add_bos_token", true);
}

void add_vocab_byte_level(GgufWriter& w, const fs::path& file, int vocab, const ModelConfig& cfg) {
  const json t = parse_json(read_file(file), file.string());
  const json* model = t.contains("model") ? &t["model"] : nullptr;
  const bool byte_level = t.contains("pre_tokenizer") && t["pre_tokenizer"].is_object() &&
                          t["pre_tokenizer"].value("type", "") == "ByteLevel";
  if (!model || !model->is_object() || model->value("type", "") != "BPE" || !byte_level)
    fail("{}: export needs tokenizer.model (SentencePiece) or a byte-level BPE tokenizer.json", file.string());
  std::vector<std::string> tokens(static_cast<size_t>(vocab));
  std::vector<int32_t> types(static_cast<size_t>(vocab), 5);
  auto place = [&](const std::string& s, int64_t id, int32_t type) {
    if (id < 0 || id >= vocab) fail("{}: token id {} is outside the model's vocabulary of {}", file.string(), id, vocab);
    tokens[size_t(id)] = s;
    types[size_t(id)] = type;
  };
  for (const auto& [s, id] : (*model)["vocab"].items()) place(s, id.get<int64_t>(), 1);
  if (t.contains("added_tokens"))
    for (const auto& a : t["added_tokens"]) place(a["content"].get<std::string>(), a["id"].get<int64_t>(), a.value("special", false) ? 3 : 1);
  for (int id = 0; id < vocab; ++id)
    if (types[size_t(id)] == 5) tokens[size_t(id)] = fmt::format("[PAD{}]", id);
  std::vector<std::string> merges;
  for (const auto& m : (*model)["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "default");
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set_i32s("tokenizer.ggml.token_type", types);
  w.set_strings("tokenizer.ggml.merges", merges);
  if (cfg.bos_token_id >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(cfg.bos_token_id));
  if (cfg.eos_token_id >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(cfg.eos_token_id));
}

// The per-pair RoPE divisors llama.cpp applies for Llama-3 scaling (frequency / factor).
std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  std::vector<float> out;
  const double low_wavelen = c.rope_original_max_positions / c.rope_low_freq_factor;
  const double high_wavelen = c.rope_original_max_positions / c.rope_high_freq_factor;
  for (int i = 0; i < c.head_dim / 2; ++i) {
    const double freq = 1.0 / std::pow(c.rope_theta, 2.0 * i / c.head_dim);
    const double wavelen = 2 * std::numbers::pi / freq;
    double f = 1.0;
    if (wavelen > low_wavelen) {
      f = c.rope_factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (c.rope_original_max_positions / wavelen - c.rope_low_freq_factor) /
                            (c.rope_high_freq_factor - c.rope_low_freq_factor);
      f = 1.0 / ((1 - smooth) / c.rope_factor + smooth);
    }
    out.push_back(float(f));
  }
  return out;
}

}  // namespace

void export_gguf(const fs::path& dir, const fs::path& out) {
  const ModelConfig c = load_config(dir);
  if (c.family != ModelFamily::Llama)
    fail("{}: export to GGUF supports the LLaMA family; this is {}", dir.string(), c.architecture);
  if (c.attention_bias) fail("{}: export to GGUF: attention_bias is not supported yet", dir.string());
  const TensorStore store(dir);
  for (const auto& v : store.all())
    if (v.info->dtype != DType::F32 && v.info->dtype != DType::F16 && v.info->dtype != DType::BF16)
      fail("{}: tensor '{}' is {}: export a float checkpoint (llama.cpp's llama-quantize makes its own formats)",
           dir.string(), v.info->name, dtype_name(v.info->dtype));

  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", dir.filename().string());
  w.set_u32("general.alignment", 32);
  w.set_u32("llama.context_length", uint32_t(c.max_positions));
  w.set_u32("llama.embedding_length", uint32_t(c.hidden_size));
  w.set_u32("llama.block_count", uint32_t(c.num_layers));
  w.set_u32("llama.feed_forward_length", uint32_t(c.intermediate_size));
  w.set_u32("llama.rope.dimension_count", uint32_t(c.head_dim));
  w.set_u32("llama.attention.head_count", uint32_t(c.num_heads));
  w.set_u32("llama.attention.head_count_kv", uint32_t(c.num_kv_heads));
  w.set_u32("llama.attention.key_length", uint32_t(c.head_dim));
  w.set_u32("llama.attention.value_length", uint32_t(c.head_dim));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", c.rms_eps);
  w.set_f32("llama.rope.freq_base", float(c.rope_theta));
  if (c.rope_type == RopeType::Linear) {
    w.set_string("llama.rope.scaling.type", "linear");
    w.set_f32("llama.rope.scaling.factor", float(c.rope_factor));
  }
  w.set_u32("llama.vocab_size", uint32_t(c.vocab_size));
  if (fs::exists(dir / "tokenizer.model")) {
    add_vocab_sentencepiece(w, dir / "tokenizer.model", c.vocab_size);
  } else if (fs::exists(dir / "tokenizer.json")) {
    add_vocab_byte_level(w, dir / "tokenizer.json", c.vocab_size, c);
  } else {
    fail("{}: no tokenizer.model or tokenizer.json to export", dir.string());
  }

  // One GGUF tensor from one checkpoint tensor; permute_heads > 0: q/k rows re-laid for ggml's RoPE.
  auto add = [&](const std::string& gguf_name, const std::string& hf_name, int permute_heads) {
    const TensorView v = store.get(hf_name);
    const auto& shape = v.info->shape;
    std::vector<uint64_t> ne(shape.rbegin(), shape.rend());
    const bool to_f32 = shape.size() == 1;
    const DType dt = v.info->dtype;
    const uint32_t type = to_f32 || dt == DType::F32 ? kGgmlF32 : dt == DType::F16 ? kGgmlF16 : kGgmlBF16;
    const uint64_t numel = uint64_t(v.info->numel());
    const uint64_t bytes = to_f32 ? numel * 4 : v.bytes();
    const int64_t head_dim = c.head_dim;
    w.add_tensor(gguf_name, ne, type, bytes, [v, to_f32, permute_heads, head_dim, dt](uint8_t* dst) {
      if (to_f32) {
        convert_to_f32(dt, v.data, reinterpret_cast<float*>(dst), size_t(v.info->numel()));
        return;
      }
      if (permute_heads == 0) {
        std::memcpy(dst, v.data, v.bytes());
        return;
      }
      const size_t row = size_t(v.info->shape[1]) * dtype_size(dt), half = size_t(head_dim / 2);
      for (int64_t h = 0; h < permute_heads; ++h)
        for (size_t j = 0; j < half; ++j)
          for (size_t s = 0; s < 2; ++s)
            std::memcpy(dst + (size_t(h * head_dim) + 2 * j + s) * row, v.data + (size_t(h * head_dim) + s * half + j) * row,
                        row);
    });
  };
  add("token_embd.weight", "model.embed_tokens.weight", 0);
  if (c.rope_type == RopeType::Llama3) {
    const std::vector<float> f = llama3_rope_factors(c);
    w.add_tensor("rope_freqs.weight", {uint64_t(f.size())}, kGgmlF32, f.size() * 4,
                 [f](uint8_t* dst) { std::memcpy(dst, f.data(), f.size() * 4); });
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l), b = fmt::format("blk.{}.", l);
    add(b + "attn_norm.weight", p + "input_layernorm.weight", 0);
    add(b + "attn_q.weight", p + "self_attn.q_proj.weight", c.num_heads);
    add(b + "attn_k.weight", p + "self_attn.k_proj.weight", c.num_kv_heads);
    add(b + "attn_v.weight", p + "self_attn.v_proj.weight", 0);
    add(b + "attn_output.weight", p + "self_attn.o_proj.weight", 0);
    add(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", 0);
    add(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", 0);
    add(b + "ffn_up.weight", p + "mlp.up_proj.weight", 0);
    add(b + "ffn_down.weight", p + "mlp.down_proj.weight", 0);
  }
  add("output_norm.weight", "model.norm.weight", 0);
  if (!c.tie_word_embeddings) add("output.weight", "lm_head.weight", 0);
  w.write(out);
}

}  // namespace lowbit

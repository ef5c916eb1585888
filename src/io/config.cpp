#include "lowbit/io/config.h"

#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "json_fields.h"

namespace lowbit {

using nlohmann::json;

const std::vector<std::string>& supported_architectures() {
  static const std::vector<std::string> kArchs = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                                  "GPT2LMHeadModel", "OPTForCausalLM"};
  return kArchs;
}

namespace {

constexpr int64_t kMaxDim = 1 << 20;  // no real model has a hidden size, vocab or layer count above this

using Reader = detail::JsonFields;


// Reads the bos / eos ids (an id, a list of ids, or null).
void parse_special_ids(const Reader& r, ModelConfig& c) {
  c.bos_token_id = r.get_int("bos_token_id", -1, c.vocab_size - 1, -1);
  if (const json* eos = r.find("eos_token_id")) {
    auto take = [&](const json& v) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c.vocab_size)
        fail("{}: field 'eos_token_id' must be token ids below vocab_size {}, found {}", r.file, c.vocab_size, v.dump());
      c.eos_token_ids.push_back(v.get<int>());
    };
    if (eos->is_array())
      for (const auto& v : *eos) take(v);
    else
      take(*eos);
    if (!c.eos_token_ids.empty()) c.eos_token_id = c.eos_token_ids[0];
  }
}

// LLaMA family (Llama, Mistral, Qwen2): RMSNorm, RoPE, SwiGLU, grouped-query attention.
void parse_llama(const Reader& r, ModelConfig& c) {
  c.family = ModelFamily::Llama;
  c.activation = "silu";

  c.vocab_size = r.get_int("vocab_size", 1, kMaxDim * 4);
  c.hidden_size = r.get_int("hidden_size", 1, kMaxDim);
  c.num_layers = r.get_int("num_hidden_layers", 1, 4096);
  c.num_heads = r.get_int("num_attention_heads", 1, 4096);
  c.num_kv_heads = r.get_int("num_key_value_heads", 1, 4096, c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", r.file, c.num_heads, c.num_kv_heads);
  if (!r.find("head_dim") && c.hidden_size % c.num_heads != 0)
    fail("{}: hidden_size {} is not a multiple of num_attention_heads {} (and no head_dim is given)", r.file,
         c.hidden_size, c.num_heads);
  c.head_dim = r.get_int("head_dim", 2, 4096, c.hidden_size / c.num_heads);
  if (c.head_dim % 2 != 0) fail("{}: head_dim {} must be even for RoPE", r.file, c.head_dim);
  c.intermediate_size = r.get_int("intermediate_size", 1, kMaxDim);
  c.max_positions = r.get_int("max_position_embeddings", 1, 1 << 24, 2048);
  c.rms_eps = float(r.get_num(r.j, "rms_norm_eps", 0.0, 1.0, 1e-6, ""));
  std::string act = r.get_str("hidden_act", "silu");
  if (act != "silu") fail("{}: hidden_act '{}' is not supported (expected 'silu')", r.file, act);

  // RoPE: top-level rope_theta / rope_scaling (older files) or rope_parameters (transformers 5).
  const json* rope = r.find("rope_parameters");
  const json* scaling = r.find("rope_scaling");
  if (rope && !rope->is_object()) fail("{}: field 'rope_parameters' must be an object", r.file);
  if (scaling && !scaling->is_object()) fail("{}: field 'rope_scaling' must be an object or null", r.file);
  c.rope_theta = r.get_num(r.j, "rope_theta", 1.0, 1e12, 10000.0, "");
  const json* params = rope ? rope : scaling;
  const char* where = rope ? "rope_parameters." : "rope_scaling.";
  if (rope) c.rope_theta = r.get_num(*rope, "rope_theta", 1.0, 1e12, c.rope_theta, where);
  if (params) {
    std::string type = "default";
    for (const char* key : {"rope_type", "type"}) {
      auto it = params->find(key);
      if (it != params->end() && it->is_string()) type = it->get<std::string>();
    }
    if (type == "default") {
      c.rope_type = RopeType::Default;
    } else if (type == "linear") {
      c.rope_type = RopeType::Linear;
      c.rope_factor = r.get_num(*params, "factor", 1e-3, 1e6, 1.0, where);
    } else if (type == "llama3") {
      c.rope_type = RopeType::Llama3;
      c.rope_factor = r.get_num(*params, "factor", 1e-3, 1e6, 8.0, where);
      c.rope_low_freq_factor = r.get_num(*params, "low_freq_factor", 1e-6, 1e6, 1.0, where);
      c.rope_high_freq_factor = r.get_num(*params, "high_freq_factor", 1e-6, 1e6, 4.0, where);
      c.rope_original_max_positions =
          int(r.get_num(*params, "original_max_position_embeddings", 1, 1 << 24, 8192, where));
      if (c.rope_high_freq_factor <= c.rope_low_freq_factor)
        fail("{}: {}high_freq_factor must exceed low_freq_factor", r.file, where);
    } else {
      fail("{}: {}rope_type '{}' is not supported (expected default, linear or llama3)", r.file, where, type);
    }
  }

  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", false);
  c.attention_bias = r.get_bool("attention_bias", c.architecture == "Qwen2ForCausalLM");
  c.mlp_bias = r.get_bool("mlp_bias", false);
  parse_special_ids(r, c);
  if (c.architecture != "Qwen2ForCausalLM" || r.get_bool("use_sliding_window", false))
    c.sliding_window = r.get_int("sliding_window", 0, 1 << 24, 0);
}

// GPT-2 (GPT2LMHeadModel): learned positions, pre-LayerNorm blocks, fused c_attn, GELU (tanh), tied head.
void parse_gpt2(const Reader& r, ModelConfig& c) {
  c.family = ModelFamily::GPT2;
  c.vocab_size = r.get_int("vocab_size", 1, kMaxDim * 4);
  c.hidden_size = r.get_int("n_embd", 1, kMaxDim);
  c.num_layers = r.get_int("n_layer", 1, 4096);
  c.num_heads = r.get_int("n_head", 1, 4096);
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = r.get_int("n_inner", 1, kMaxDim, 4 * c.hidden_size);
  c.max_positions = r.get_int("n_positions", 1, 1 << 24, 1024);
  c.norm_eps = float(r.get_num(r.j, "layer_norm_epsilon", 0.0, 1.0, 1e-5, ""));
  c.activation = r.get_str("activation_function", "gelu_new");
  if (c.activation != "gelu_new" && c.activation != "gelu" && c.activation != "relu" && c.activation != "gelu_pytorch_tanh")
    fail("{}: activation_function '{}' is not supported (expected gelu_new, gelu_pytorch_tanh, gelu or relu)", r.file, c.activation);
  if (r.get_bool("scale_attn_by_inverse_layer_idx", false))
    fail("{}: scale_attn_by_inverse_layer_idx = true is not supported", r.file);
  if (!r.get_bool("scale_attn_weights", true)) fail("{}: scale_attn_weights = false is not supported", r.file);
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", true);
  c.attention_bias = c.mlp_bias = true;
  parse_special_ids(r, c);
}

// OPT (OPTForCausalLM): learned positions offset by 2, pre- or post-LayerNorm (do_layer_norm_before),
// ReLU MLP (fc1, fc2), optional project_in / project_out when word_embed_proj_dim != hidden_size.
void parse_opt(const Reader& r, ModelConfig& c) {
  c.family = ModelFamily::OPT;
  c.vocab_size = r.get_int("vocab_size", 1, kMaxDim * 4);
  c.hidden_size = r.get_int("hidden_size", 1, kMaxDim);
  c.num_layers = r.get_int("num_hidden_layers", 1, 4096);
  c.num_heads = r.get_int("num_attention_heads", 1, 4096);
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = r.get_int("ffn_dim", 1, kMaxDim);
  c.max_positions = r.get_int("max_position_embeddings", 1, 1 << 24, 2048);
  c.norm_eps = 1e-5f;  // nn.LayerNorm's default, which OPT uses
  c.activation = r.get_str("activation_function", "relu");
  if (c.activation != "relu" && c.activation != "gelu" && c.activation != "gelu_new")
    fail("{}: activation_function '{}' is not supported (expected relu, gelu or gelu_new)", r.file, c.activation);
  c.norm_before = r.get_bool("do_layer_norm_before", true);
  c.word_embed_proj_dim = r.get_int("word_embed_proj_dim", 1, kMaxDim, c.hidden_size);
  if (!r.get_bool("enable_bias", true)) fail("{}: enable_bias = false is not supported", r.file);
  if (!r.get_bool("layer_norm_elementwise_affine", true))
    fail("{}: layer_norm_elementwise_affine = false is not supported", r.file);
  c.final_norm = c.norm_before && !r.get_bool("_remove_final_layer_norm", false);
  c.position_offset = 2;
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", true);
  c.attention_bias = c.mlp_bias = true;
  parse_special_ids(r, c);
}

}  // namespace

ModelConfig parse_config(const std::string& text, const std::filesystem::path& path) {
  const std::string file = path.string();
  const json j = detail::parse_json_object(text, file);
  Reader r{j, file};
  ModelConfig c;
  c.path = path;
  c.architecture = r.architecture();
  const auto& sup = supported_architectures();
  if (std::find(sup.begin(), sup.end(), c.architecture) == sup.end())
    fail("{}: architecture '{}' is not supported; supported: {}", file, c.architecture, fmt::join(sup, ", "));
  c.model_type = r.get_str("model_type", "");

  // dtype: transformers 5 writes "dtype", older versions "torch_dtype".
  c.dtype = r.get_str("dtype", r.get_str("torch_dtype", "float32"));
  if (c.dtype != "float32" && c.dtype != "float16" && c.dtype != "bfloat16")
    fail("{}: dtype '{}' is not supported (expected float32, float16 or bfloat16)", file, c.dtype);
  if (c.architecture == "GPT2LMHeadModel")
    parse_gpt2(r, c);
  else if (c.architecture == "OPTForCausalLM")
    parse_opt(r, c);
  else
    parse_llama(r, c);
  if (c.hidden_size != c.num_heads * c.head_dim && c.family != ModelFamily::Llama)
    fail("{}: hidden size {} is not a multiple of the {} attention heads", file, c.hidden_size, c.num_heads);
  return c;
}

ModelConfig load_config(const std::filesystem::path& dir_or_file) {
  namespace fs = std::filesystem;
  fs::path p = fs::is_directory(dir_or_file) ? dir_or_file / "config.json" : dir_or_file;
  if (!fs::exists(p)) fail("{}: no config.json (is this a Hugging Face checkpoint folder?)", p.string());
  return parse_config(read_file(p, 16u << 20), p);
}

}  // namespace lowbit

#pragma once
// config.json of a Hugging Face checkpoint, for the architectures lowbit runs.
#include <filesystem>
#include <string>
#include <vector>

namespace lowbit {

enum class RopeType { Default, Linear, Llama3 };
enum class ModelFamily { Llama, GPT2, OPT };

struct ModelConfig {
  std::filesystem::path path;  // the config.json it came from
  std::string architecture;    // "LlamaForCausalLM", ...
  std::string model_type;      // "llama", "mistral", "qwen2", "gpt2", "opt"
  ModelFamily family = ModelFamily::Llama;
  std::string activation = "silu";  // MLP activation: silu (SwiGLU), gelu_new, gelu, relu
  std::string dtype = "float32";  // torch_dtype / dtype as saved
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int intermediate_size = 0;  // MLP width (GPT-2 n_inner, OPT ffn_dim)
  int max_positions = 0;
  float rms_eps = 1e-6f;    // LLaMA family: RMSNorm epsilon
  float norm_eps = 1e-5f;   // GPT-2 / OPT: LayerNorm epsilon
  bool norm_before = true;  // OPT do_layer_norm_before (pre-LN); false: post-LN (OPT-350m)
  bool final_norm = true;   // OPT: the decoder's final LayerNorm exists
  int word_embed_proj_dim = 0;  // OPT: embedding width (project_in / project_out when != hidden_size)
  int position_offset = 0;      // OPT: learned positions are looked up at position + 2
  double rope_theta = 10000.0;
  RopeType rope_type = RopeType::Default;
  double rope_factor = 1.0;  // linear / llama3 scaling
  double rope_low_freq_factor = 1.0, rope_high_freq_factor = 4.0;
  int rope_original_max_positions = 8192;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2)
  bool mlp_bias = false;
  int bos_token_id = -1, eos_token_id = -1;
  std::vector<int> eos_token_ids;
  int sliding_window = 0;  // 0: none (Mistral's, when set, limits attention to this many positions)
};

// The architectures load_config accepts.
const std::vector<std::string>& supported_architectures();

// Reads and validates `dir`/config.json (or a config.json path). Errors name the file and field.
ModelConfig load_config(const std::filesystem::path& dir_or_file);
ModelConfig parse_config(const std::string& json_text, const std::filesystem::path& path);

}  // namespace lowbit

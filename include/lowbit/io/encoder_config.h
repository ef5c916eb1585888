#pragma once
// config.json of the encoder classifiers lowbit runs: BertForSequenceClassification and
// DistilBertForSequenceClassification, read into one shape-and-head description.
//
// The two families name the same things differently (transformers' BertConfig / DistilBertConfig):
//   field              BERT                      DistilBERT
//   hidden size        hidden_size               dim
//   layers             num_hidden_layers         n_layers
//   heads              num_attention_heads       n_heads
//   FFN width          intermediate_size         hidden_dim
//   activation         hidden_act                activation
//   LayerNorm eps      layer_norm_eps            (fixed 1e-12 in modeling_distilbert.py)
//   token types        type_vocab_size           (none)
#include <filesystem>
#include <string>
#include <vector>

namespace lowbit {

enum class EncoderArch { bert, distilbert };

// The feed-forward activation. gelu is the exact erf form (transformers "gelu"); gelu_tanh is the
// tanh approximation ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"): all three compute
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
enum class EncoderActivation { gelu, gelu_tanh, relu };

// What the logits mean (config.json "problem_type"; absent: single_label for num_labels > 1,
// regression for 1 label, as transformers decides in its loss).
enum class ProblemType { single_label, multi_label, regression };

struct EncoderConfig {
  std::filesystem::path path;  // the config.json it came from
  std::string architecture;    // "BertForSequenceClassification", ...
  EncoderArch arch = EncoderArch::bert;
  std::string dtype = "float32";  // dtype / torch_dtype as saved
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int head_dim = 0;            // hidden_size / num_heads
  int intermediate_size = 0;
  int max_positions = 0;       // max_position_embeddings: the longest sequence the model takes
  int type_vocab_size = 0;     // BERT segment types (2 for BERT); 0 for DistilBERT
  float layer_norm_eps = 1e-12f;
  EncoderActivation activation = EncoderActivation::gelu;
  bool sinusoidal_positions = false;  // DistilBERT sinusoidal_pos_embds
  int num_labels = 0;
  std::vector<std::string> labels;    // id2label names in id order; "LABEL_<i>" when not given
  int pad_token_id = 0;
  ProblemType problem_type = ProblemType::single_label;

  // The label id of a name in id2label, or -1.
  int label_id(const std::string& name) const;
};

const char* problem_type_name(ProblemType t);  // "single_label_classification", ...

// The architectures load_encoder_config accepts.
const std::vector<std::string>& supported_encoder_architectures();
bool is_encoder_architecture(const std::string& architecture);

// Reads `dir`/config.json (or a config.json path) of an encoder classifier and validates every field
// it uses. Errors name the file and the field; an unsupported architecture lists the supported ones.
EncoderConfig load_encoder_config(const std::filesystem::path& dir_or_file);
EncoderConfig parse_encoder_config(const std::string& json_text, const std::filesystem::path& path);

// architectures[0] of a config.json, without validating anything else ("" when absent): lets callers
// pick between the causal-LM and encoder loaders.
std::string read_architecture(const std::filesystem::path& dir_or_file);

}  // namespace lowbit

// config.json of BERT / DistilBERT sequence classifiers (see encoder_config.h for the field names).
// Defaults are transformers' BertConfig / DistilBertConfig defaults, so an old or minimal config.json
// reads as transformers would read it.
#include "lowbit/io/encoder_config.h"
#include "lowbit/io/json.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>

#include "json_fields.h"
#include "lowbit/core/error.h"
#include "lowbit/core/file.h"

namespace lowbit {

using nlohmann::json;
namespace fs = std::filesystem;

const std::vector<std::string>& supported_encoder_architectures() {
  static const std::vector<std::string> kArchs = {"BertForSequenceClassification",
                                                  "DistilBertForSequenceClassification"};
  return kArchs;
}

bool is_encoder_architecture(const std::string& architecture) {
  const auto& a = supported_encoder_architectures();
  return std::find(a.begin(), a.end(), architecture) != a.end();
}

const char* problem_type_name(ProblemType t) {
  switch (t) {
    case ProblemType::single_label: return "single_label_classification";
    case ProblemType::multi_label: return "multi_label_classification";
    case ProblemType::regression: return "regression";
  }
  return "?";
}

int EncoderConfig::label_id(const std::string& name) const {
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] == name) return int(i);
  return -1;
}

namespace {

constexpr int64_t kMaxDim = 1 << 20;  // no real encoder has a hidden size, vocab or FFN width above this

using Fields = detail::JsonFields;

EncoderActivation parse_activation(const std::string& name, const std::string& file, const char* key) {
  // transformers' ACT2FN names (activations.py) that lowbit computes.
  if (name == "gelu") return EncoderActivation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return EncoderActivation::gelu_tanh;
  if (name == "relu") return EncoderActivation::relu;
  fail("{}: field '{}' = '{}' is not supported (lowbit computes gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu)",
       file, key, name);
}

// id2label {"0": "negative", ...} and num_labels: the label names in id order.
void parse_labels(const Fields& f, EncoderConfig* c) {
  std::optional<int> num_labels;
  if (f.find("num_labels")) num_labels = f.get_int("num_labels", 1, 1 << 20);
  if (const json* m = f.find("id2label")) {
    if (!m->is_object() || m->empty())
      fail("{}: field 'id2label' must be a non-empty object of \"id\": \"name\", found {}", f.file, m->dump());
    std::vector<std::optional<std::string>> names(m->size());
    for (auto it = m->begin(); it != m->end(); ++it) {
      const std::string& key = it.key();
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || key.empty() || id < 0 || id >= (long long)names.size())
        fail("{}: field 'id2label' has key \"{}\"; the keys must be the ids 0..{} of its {} labels", f.file, key,
             names.size() - 1, names.size());
      if (!it.value().is_string()) fail("{}: field 'id2label.{}' must be a string, found {}", f.file, key, it.value().dump());
      if (names[size_t(id)]) fail("{}: field 'id2label' names id {} twice", f.file, id);
      names[size_t(id)] = it.value().get<std::string>();
    }
    for (auto& n : names) c->labels.push_back(*n);  // every id 0..n-1 is present (n keys, no repeats)
    if (num_labels && *num_labels != int(c->labels.size()))
      fail("{}: field 'num_labels' = {} but 'id2label' names {} labels", f.file, *num_labels, c->labels.size());
  } else {
    // transformers' default: num_labels 2, named LABEL_0, LABEL_1, ...
    const int n = num_labels.value_or(2);
    for (int i = 0; i < n; ++i) c->labels.push_back(fmt::format("LABEL_{}", i));
  }
  c->num_labels = int(c->labels.size());
}

}  // namespace

EncoderConfig parse_encoder_config(const std::string& text, const fs::path& path) {
  const std::string file = path.string();
  const json j = detail::parse_json_object(text, file);
  Fields f{j, file};
  EncoderConfig c;
  c.path = path;
  c.architecture = f.architecture();
  if (!is_encoder_architecture(c.architecture))
    fail("{}: architecture '{}' is not a supported encoder classifier; supported: {}", file, c.architecture,
         fmt::join(supported_encoder_architectures(), ", "));
  c.arch = c.architecture == "DistilBertForSequenceClassification" ? EncoderArch::distilbert : EncoderArch::bert;

  c.vocab_size = f.get_int("vocab_size", 1, kMaxDim * 4);
  const char* heads_key;
  if (c.arch == EncoderArch::bert) {
    c.hidden_size = f.get_int("hidden_size", 1, kMaxDim);
    c.num_layers = f.get_int("num_hidden_layers", 1, 4096);
    c.num_heads = f.get_int("num_attention_heads", 1, 4096);
    c.intermediate_size = f.get_int("intermediate_size", 1, kMaxDim);
    c.max_positions = f.get_int("max_position_embeddings", 1, 1 << 20, 512);
    c.type_vocab_size = f.get_int("type_vocab_size", 1, 1 << 16, 2);
    c.layer_norm_eps = float(f.get_num("layer_norm_eps", 0.0, 1.0, 1e-12));
    c.activation = parse_activation(f.get_str("hidden_act", "gelu"), file, "hidden_act");
    const std::string pos = f.get_str("position_embedding_type", "absolute");
    if (pos != "absolute")
      fail("{}: field 'position_embedding_type' = '{}' is not supported (lowbit implements 'absolute')", file, pos);
    if (f.get_bool("is_decoder", false))
      fail("{}: field 'is_decoder' is true: a sequence classifier must be an encoder (bidirectional attention)", file);
    heads_key = "num_attention_heads";
  } else {
    c.hidden_size = f.get_int("dim", 1, kMaxDim);
    c.num_layers = f.get_int("n_layers", 1, 4096);
    c.num_heads = f.get_int("n_heads", 1, 4096);
    c.intermediate_size = f.get_int("hidden_dim", 1, kMaxDim);
    c.max_positions = f.get_int("max_position_embeddings", 1, 1 << 20, 512);
    c.layer_norm_eps = 1e-12f;  // nn.LayerNorm(config.dim, eps=1e-12) in modeling_distilbert.py
    c.activation = parse_activation(f.get_str("activation", "gelu"), file, "activation");
    c.sinusoidal_positions = f.get_bool("sinusoidal_pos_embds", false);
    heads_key = "n_heads";
  }
  if (c.hidden_size % c.num_heads != 0)
    fail("{}: hidden size {} is not a multiple of '{}' = {}", file, c.hidden_size, heads_key, c.num_heads);
  c.head_dim = c.hidden_size / c.num_heads;
  c.pad_token_id = f.get_int("pad_token_id", 0, c.vocab_size - 1, 0);

  c.dtype = f.get_str("dtype", f.get_str("torch_dtype", "float32"));
  if (c.dtype != "float32" && c.dtype != "float16" && c.dtype != "bfloat16")
    fail("{}: field 'dtype' = '{}' is not supported (expected float32, float16 or bfloat16)", file, c.dtype);

  parse_labels(f, &c);
  const std::string problem = f.get_str("problem_type", "");
  if (problem.empty())
    c.problem_type = c.num_labels == 1 ? ProblemType::regression : ProblemType::single_label;
  else if (problem == "single_label_classification")
    c.problem_type = ProblemType::single_label;
  else if (problem == "multi_label_classification")
    c.problem_type = ProblemType::multi_label;
  else if (problem == "regression")
    c.problem_type = ProblemType::regression;
  else
    fail("{}: field 'problem_type' = '{}' is not one of single_label_classification, multi_label_classification, "
         "regression", file, problem);
  if (c.problem_type == ProblemType::single_label && c.num_labels < 2)
    fail("{}: a single_label_classification model needs at least 2 labels, found {}", file, c.num_labels);
  return c;
}

namespace {
fs::path config_path(const fs::path& dir_or_file) {
  fs::path p = fs::is_directory(dir_or_file) ? dir_or_file / "config.json" : dir_or_file;
  if (!fs::exists(p)) fail("{}: no config.json (is this a Hugging Face checkpoint folder?)", p.string());
  return p;
}
}  // namespace

EncoderConfig load_encoder_config(const fs::path& dir_or_file) {
  const fs::path p = config_path(dir_or_file);
  return parse_encoder_config(read_file(p, 16u << 20), p);
}

std::string read_architecture(const fs::path& dir_or_file) {
  const fs::path p = config_path(dir_or_file);
  json j;
  try {
    j = parse_json(read_file(p, 16u << 20), p.string());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", p.string(), e.what());
  }
  if (!j.is_object()) return "";
  auto it = j.find("architectures");
  if (it == j.end() || !it->is_array() || it->empty() || !(*it)[0].is_string()) return "";
  return (*it)[0].get<std::string>();
}

}  // namespace lowbit

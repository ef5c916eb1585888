// lowbit inspect MODEL: architecture, every tensor (name, dtype or quantized format, shape, bytes),
// parameter count, bytes, bits per weight; for a quantized model also each tensor's quantization error.
#include "commands.h"
#include "lowbit/formats/weights.h"
#include "lowbit/io/config.h"
#include "lowbit/io/encoder_config.h"
#include "lowbit/io/model_path.h"

namespace lowbit::cli {

namespace {

std::string format_label(const LogicalTensor& t) {
  if (t.format.empty()) return std::string(dtype_name(t.dtype));
  std::string g = t.spec.group == 0 ? "row" : t.spec.group < 0 ? "tensor" : fmt::format("g{}", t.spec.group);
  return fmt::format("{}{}:{}{}", t.format, t.spec.bits, g, t.spec.double_quant ? "+dq" : "");
}

// The model's shape in a few fields, from whichever config loader fits the architecture.
struct Summary {
  std::string architecture, model_type, dtype;
  json config;
  std::vector<std::string> lines;
};

Summary summarize(const std::filesystem::path& dir) {
  Summary s;
  if (is_encoder_architecture(read_architecture(dir))) {
    EncoderConfig e = load_encoder_config(dir);
    s.architecture = e.architecture;
    s.model_type = e.arch == EncoderArch::bert ? "bert" : "distilbert";
    s.dtype = e.dtype;
    s.config = {{"hidden_size", e.hidden_size}, {"num_layers", e.num_layers},         {"num_heads", e.num_heads},
                {"head_dim", e.head_dim},       {"intermediate_size", e.intermediate_size}, {"vocab_size", e.vocab_size},
                {"max_positions", e.max_positions}, {"num_labels", e.num_labels},     {"labels", e.labels}};
    s.lines.push_back(fmt::format("shape         hidden {}, {} layers, {} heads of {}, FFN {}, vocab {}, {} positions",
                                  e.hidden_size, e.num_layers, e.num_heads, e.head_dim, e.intermediate_size,
                                  e.vocab_size, e.max_positions));
    s.lines.push_back(fmt::format("labels        {}", fmt::join(e.labels, ", ")));
    return s;
  }
  ModelConfig cfg = load_config(dir);
  s.architecture = cfg.architecture;
  s.model_type = cfg.model_type;
  s.dtype = cfg.dtype;
  s.config = {{"hidden_size", cfg.hidden_size},
              {"num_layers", cfg.num_layers},
              {"num_heads", cfg.num_heads},
              {"num_kv_heads", cfg.num_kv_heads},
              {"head_dim", cfg.head_dim},
              {"intermediate_size", cfg.intermediate_size},
              {"vocab_size", cfg.vocab_size},
              {"max_positions", cfg.max_positions},
              {"rope_theta", cfg.rope_theta},
              {"rms_eps", cfg.rms_eps},
              {"tie_word_embeddings", cfg.tie_word_embeddings}};
  s.lines.push_back(fmt::format(
      "shape         hidden {}, {} layers, {} heads / {} KV heads of {}, MLP {}, vocab {}, {} positions",
      cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size,
      cfg.vocab_size, cfg.max_positions));
  if (cfg.family == ModelFamily::Llama)
    s.lines.push_back(fmt::format("rope          theta {}, rms eps {}, tied embeddings: {}", cfg.rope_theta, cfg.rms_eps,
                                  cfg.tie_word_embeddings ? "yes" : "no"));
  else
    s.lines.push_back(fmt::format("layers        {}, activation {}, layer norm eps {}, tied embeddings: {}",
                                  cfg.norm_before ? "pre-LN" : "post-LN", cfg.activation, cfg.norm_eps,
                                  cfg.tie_word_embeddings ? "yes" : "no"));
  return s;
}

int inspect(const Common& c) {
  auto dir = resolve_model_path(c.model);
  const Summary sum = summarize(dir);
  WeightStore weights(dir);
  int64_t params = 0;
  uint64_t bytes = 0;
  json tensors = json::array();
  const auto all = weights.tensors();
  for (const auto& t : all) {
    params += t.numel();
    bytes += t.bytes;
    json j = {{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"bytes", t.bytes}};
    if (!t.format.empty()) {
      j["format"] = t.format;
      j["bits"] = t.spec.bits;
      j["group"] = t.spec.group;
      j["bits_per_weight"] = 8.0 * double(t.bytes) / double(t.numel());
      if (t.error) j["error"] = {{"mse", t.error->mse}, {"sqnr_db", t.error->sqnr_db}, {"max_abs_err", t.error->max_abs}};
    }
    tensors.push_back(j);
  }
  const double bpw = params ? 8.0 * double(bytes) / double(params) : 0.0;
  if (c.json) {
    json out = {{"model", dir.string()},        {"architecture", sum.architecture}, {"params", params},
                {"bytes", bytes},               {"bits_per_weight", bpw},           {"quantized", weights.quantized()},
                {"dtype", sum.dtype},           {"config", sum.config},             {"tensors", tensors}};
    fmt::print("{}\n", out.dump(1));
    return 0;
  }
  fmt::print("model         {}\n", dir.string());
  fmt::print("architecture  {} ({}), dtype {}{}\n", sum.architecture, sum.model_type, sum.dtype,
             weights.quantized() ? ", quantized" : "");
  for (const auto& line : sum.lines) fmt::print("{}\n", line);
  fmt::print("\n{:<48} {:<16} {:<13} {:>10} {:>6} {:>9}\n", "tensor", "dtype/format", "shape", "bytes", "bpw",
             weights.quantized() ? "SQNR dB" : "");
  for (const auto& t : all) {
    std::string sq = t.error ? fmt::format("{:.1f}", t.error->sqnr_db) : "";
    fmt::print("{:<48} {:<16} {:<13} {:>10} {:>6.2f} {:>9}\n", t.name, format_label(t), shape_str(t.shape), t.bytes,
               8.0 * double(t.bytes) / double(std::max<int64_t>(1, t.numel())), sq);
  }
  fmt::print("\n{} tensors, {} parameters ({:.2f} M), {} bytes ({:.2f} MB), {:.2f} bits per weight\n", all.size(),
             params, params / 1e6, bytes, bytes / 1e6, bpw);
  return 0;
}

}  // namespace

void register_inspect(CLI::App& app, std::function<int()>& run) {
  auto c = std::make_shared<Common>();
  auto* cmd = app.add_subcommand("inspect", "architecture, tensors, parameter count, bytes, bits per weight");
  add_common(cmd, *c);
  cmd->callback([c, &run] { run = [c] { return inspect(*c); }; });
}

}  // namespace lowbit::cli

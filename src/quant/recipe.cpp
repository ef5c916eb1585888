#include "lowbit/quant/recipe.h"

#include <fnmatch.h>

#include <cstdlib>

#include "lowbit/core/error.h"
#include "lowbit/formats/format.h"

namespace lowbit {

bool glob_match(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

ResolvedScheme resolve_scheme(const std::string& text, int64_t group_override) {
  const auto at = text.find('@');
  const Scheme& s = find_scheme(text.substr(0, at));
  ResolvedScheme r{text, std::string(s.format), s.spec};
  int64_t group = group_override;
  if (at != std::string::npos && (text.substr(at + 1) == "row" || text.substr(at + 1) == "tensor")) {
    if (r.format == "f16" || r.format == "bf16")
      fail("scheme '{}': a group size does not apply to the {} format", text, r.format);
    r.spec.group = text.substr(at + 1) == "row" ? 0 : -1;
    return r;
  }
  if (at != std::string::npos) {
    const std::string g = text.substr(at + 1);
    char* end = nullptr;
    group = std::strtoll(g.c_str(), &end, 10);
    if (g.empty() || *end != '\0' || group < 1 || group > (int64_t(1) << 30))
      fail("scheme '{}': '@{}' must be a group size of at least 1 input", text, g);
  }
  if (group > 0) {
    if (r.format == "f16" || r.format == "bf16" || r.format == "kmeans")
      fail("scheme '{}': a group size does not apply to the {} format", text, r.format);
    r.spec.group = group;
  }
  return r;
}

Recipe::Recipe(std::string default_scheme, bool quantize_embeddings, bool quantize_lm_head,
               std::vector<RecipeRule> user_rules)
    : rules_(std::move(user_rules)) {
  resolve_scheme(default_scheme);  // throws for an unknown name
  for (const auto& r : rules_)
    if (r.scheme != "keep") resolve_scheme(r.scheme);
  const std::string emb = quantize_embeddings ? default_scheme : "keep";
  const std::string head = quantize_lm_head ? default_scheme : "keep";
  // Names across the families lowbit reads (LLaMA family; GPT-2, OPT, BERT names for later models).
  for (const char* p : {"*embed_tokens.weight", "*.wte.weight", "*.wpe.weight", "*embed_positions.weight",
                        "*word_embeddings.weight", "*position_embeddings.weight", "*token_type_embeddings.weight"})
    rules_.push_back({p, emb, "default (embeddings)"});
  rules_.push_back({"lm_head.weight", head, "default (lm_head)"});
  for (const char* p : {"*classifier.weight", "*pooler.dense.weight"})  // encoder heads: small, kept like lm_head
    rules_.push_back({p, head, "default (classifier head)"});
  rules_.push_back({"*norm*", "keep", "default (norms)"});
  rules_.push_back({"*", default_scheme, "default"});
}

std::optional<std::string> Recipe::scheme_for(const std::string& name, size_t rank) const {
  if (rank != 2) return std::nullopt;  // norms, biases: never
  for (const auto& r : rules_) {
    if (!glob_match(r.pattern, name)) continue;
    if (r.scheme == "keep") return std::nullopt;
    return r.scheme;
  }
  return std::nullopt;
}

RecipeRule parse_override(const std::string& arg) {
  auto eq = arg.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    fail("--override '{}': expected PATTERN=SCHEME, e.g. '*.down_proj.weight=int8'", arg);
  RecipeRule r{arg.substr(0, eq), arg.substr(eq + 1), "--override"};
  if (r.scheme != "keep") resolve_scheme(r.scheme);
  return r;
}

bool stored_in_out(const std::string& architecture, const std::string& name) {
  // GPT-2's linear layers are transformers' Conv1D: y = x W + b with W [in, out].
  static const std::vector<std::pair<const char*, const char*>> kInOut = {
      {"GPT2LMHeadModel", "*.attn.c_attn.weight"},
      {"GPT2LMHeadModel", "*.attn.c_proj.weight"},
      {"GPT2LMHeadModel", "*.mlp.c_fc.weight"},
      {"GPT2LMHeadModel", "*.mlp.c_proj.weight"},
  };
  for (const auto& [arch, pattern] : kInOut)
    if (architecture == arch && glob_match(pattern, name)) return true;
  return false;
}

std::string tensor_class(const std::string& name) {
  static const std::vector<std::pair<const char*, const char*>> kClasses = {
      {"*norm*", "norms"},         {"*ln_*", "norms"},          {"lm_head*", "lm_head"},
      {"*embed*", "embeddings"},   {"*.wte.*", "embeddings"},   {"*.wpe.*", "embeddings"},
      {"*classifier*", "head"},    {"*pooler*", "head"},
      {"*attn*", "attention"},     {"*attention*", "attention"}, {"*mlp*", "mlp"},
      {"*ffn*", "mlp"},            {"*intermediate*", "mlp"},    {"*.output.dense.*", "mlp"},
      {"*fc1*", "mlp"},            {"*fc2*", "mlp"},             {"*", "other"},
  };
  for (const auto& [pattern, cls] : kClasses)
    if (glob_match(pattern, name)) return cls;
  return "other";
}

}  // namespace lowbit

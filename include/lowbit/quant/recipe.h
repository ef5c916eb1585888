#pragma once
// A recipe decides, per tensor, whether it is quantized and with which scheme: a rule table of
// (glob pattern, action) looked up first-match-wins, not a ladder of ifs on tensor names.
// Built-in policy: tensors that are not 2-D (norm weights, biases) are never quantized; embeddings
// and lm_head (and encoder classifier heads) are kept unless asked for; every other 2-D weight gets
// the default scheme.
#include <optional>
#include <string>
#include <vector>

#include "lowbit/formats/format.h"

namespace lowbit {

struct RecipeRule {
  std::string pattern;  // fnmatch glob over the tensor name, e.g. "*.mlp.down_proj.weight"
  std::string scheme;   // a scheme name, or "keep" (leave the tensor as it is)
  std::string origin;   // "--keep", "--override", "default", ... (for messages)
};

class Recipe {
 public:
  // default_scheme applies to linear weights; user rules (in order) take precedence over the defaults.
  Recipe(std::string default_scheme, bool quantize_embeddings, bool quantize_lm_head,
         std::vector<RecipeRule> user_rules);

  // The scheme for a tensor of this name and rank, or nullopt to keep it as stored.
  std::optional<std::string> scheme_for(const std::string& name, size_t rank) const;
  const std::vector<RecipeRule>& rules() const { return rules_; }

 private:
  std::vector<RecipeRule> rules_;
};

// A scheme as written on the command line: a scheme_registry() name, optionally with "@G" for
// groups of G inputs (e.g. "int4@32"), "@row" (one group per output channel) or "@tensor";
// group_override > 0 (--group-size) applies when no "@..." is given.
struct ResolvedScheme {
  std::string name;  // as written
  std::string format;
  QuantSpec spec;
};
ResolvedScheme resolve_scheme(const std::string& text, int64_t group_override = 0);

// "PATTERN=SCHEME" from --override; the scheme must exist (throws otherwise).
RecipeRule parse_override(const std::string& arg);

// The class of a tensor for size tables: "attention", "mlp", "embeddings", "lm_head", "head"
// (classifier / pooler), "norms", "other".
std::string tensor_class(const std::string& name);

// Whether a weight of this architecture is stored [in, out] (GPT-2's Conv1D) rather than [out, in].
bool stored_in_out(const std::string& architecture, const std::string& name);

bool glob_match(const std::string& pattern, const std::string& name);

}  // namespace lowbit

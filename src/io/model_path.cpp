#include "lowbit/io/model_path.h"

#include <cstdlib>
#include <vector>

#include "lowbit/core/error.h"

namespace lowbit {

std::filesystem::path resolve_model_path(const std::string& name) {
  namespace fs = std::filesystem;
  if (name.empty()) fail("no model given (pass MODEL or --model)");
  if (fs::is_directory(name)) return name;
  std::vector<fs::path> bases;
  if (const char* env = std::getenv("LOWBIT_MODELS"); env && *env) bases.emplace_back(env);
  bases.emplace_back("../shared/models");
  bases.emplace_back(fs::path(LOWBIT_SHARED_DIR) / "models");
  std::string searched = name;
  for (const auto& b : bases) {
    if (fs::is_directory(b / name)) return b / name;
    searched += ", " + (b / name).string();
  }
  fail("model '{}' not found (searched: {}); give a checkpoint folder or set $LOWBIT_MODELS", name, searched);
}

}  // namespace lowbit

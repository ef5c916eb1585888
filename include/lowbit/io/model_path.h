#pragma once
#include <filesystem>
#include <string>

namespace lowbit {

// Finds a model folder: `name` as a path if it exists, else name under $LOWBIT_MODELS, under
// ../shared/models (from the working directory), and under the source tree's ../shared/models.
// The error lists every place searched.
std::filesystem::path resolve_model_path(const std::string& name);

}  // namespace lowbit

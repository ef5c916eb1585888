#pragma once
// Export of a float LLaMA-family checkpoint to GGUF (llama.cpp's format); see export_gguf.cpp.
#include <filesystem>

namespace lowbit {

// Writes `out` (atomically): F32/F16/BF16 tensors as stored (norms as F32), the model's
// hyper-parameters and its vocabulary. Throws lowbit::Error for quantized checkpoints and for
// architectures or tokenizers it does not map.
void export_gguf(const std::filesystem::path& dir, const std::filesystem::path& out);

}  // namespace lowbit

#pragma once
// Synthetic checkpoints for speed work: a real model's shape (config.json as Hugging Face ships it)
// with random weights, plus a byte-level BPE tokenizer covering every byte, so that every lowbit
// command (quantize, run, bench, eval) works on it. Speed does not depend on the values.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/core/dtype.h"

namespace lowbit {

struct SynthShape {
  std::string_view name, description;
  int hidden, intermediate, layers, heads, kv_heads, vocab, max_positions;
  double rope_theta;
  bool tie_embeddings;
  bool llama3_rope;  // rope_scaling of Llama 3.1 / 3.2 (factor 32, original 8192 positions)
};

const std::vector<SynthShape>& synth_shapes();
const SynthShape& find_synth_shape(std::string_view name);  // throws, listing the known names

struct SynthOptions {
  std::string arch = "llama";
  std::string shape;
  DType dtype = DType::BF16;  // F32, F16 or BF16
  uint64_t seed = 0;
  bool force = false;  // replace an existing output folder
};

// Writes the checkpoint folder `out` atomically (assembled beside it, then renamed into place).
// Weights: uniform with the standard deviation 0.02 of HF's initializer_range; norms 1.
void write_synthetic_model(const SynthOptions& options, const std::filesystem::path& out);

}  // namespace lowbit

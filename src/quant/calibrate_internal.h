#pragma once
// Pieces of the layer-by-layer pipeline shared by calibrate.cpp (GPTQ, AWQ) and
// act_calibrate.cpp (w8a8, LLM.int8()).
#include <cstdint>
#include <vector>

#include "lowbit/models/model.h"

namespace lowbit {

// Embeds the windows: the first layer's inputs, [windows][tokens × hidden]; `tokens` their count.
// Fails for architectures without layer-by-layer access.
std::vector<std::vector<float>> embed_windows(CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
                                              int64_t& tokens);

// The layer's outputs become the next layer's inputs.
void advance_inputs(CausalLM& model, int l, std::vector<std::vector<float>>& x,
                    const std::vector<std::vector<int32_t>>& windows);

}  // namespace lowbit

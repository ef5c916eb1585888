#pragma once
// Pieces of the layer-by-layer pipeline shared by calibrate.cpp (GPTQ, AWQ) and
// act_calibrate.cpp (w8a8, LLM.int8()).
#include <cstdint>
#include <map>
#include <set>
#include <string>
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

// The scale folds of one layer (AWQ, SmoothQuant): what they did to each weight, to report the
// quantized weights in their input's terms, and which float tensors (norms, biases, kept weights)
// they changed.
class LayerFolds {
 public:
  // fold_input_scales, remembered. Returns s per input column.
  std::vector<float> fold(CausalLM& model, const std::vector<std::string>& readers,
                          const CausalLM::InputProducer& producer, const std::vector<float>& s);
  // A folded weight w [rows][cols] back in its input's terms: columns ÷ their scale, rows × theirs.
  void to_input_terms(const std::string& name, std::vector<float>& w, int64_t cols) const;
  // `name` is stored quantized (not among the float tensors that changed).
  void quantized(const std::string& name) { quantized_.insert(name); }
  // The float tensors the folds changed, as the model holds them now.
  void collect(const CausalLM& model, std::map<std::string, std::vector<float>>& folded) const;

 private:
  std::set<std::string> touched_, quantized_;
  std::map<std::string, std::vector<float>> col_scale_, row_scale_;
};

}  // namespace lowbit

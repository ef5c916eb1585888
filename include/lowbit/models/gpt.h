#pragma once
// Decoders with learned positions and LayerNorm: GPT-2 (GPT2LMHeadModel) and OPT (OPTForCausalLM),
// float32, as Hugging Face's modeling_gpt2 / modeling_opt compute them:
//   x = E[tokens] (OPT: through project_in when word_embed_proj_dim != hidden) + P[position + offset]
//   per layer (pre-LN; OPT-350m style post-LN when do_layer_norm_before is false):
//     x = x + attn_out(attn(ln_1(x)))        attention heads without RoPE, q/k/v and output with biases
//     x = x + fc2(act(fc1(ln_2(x))))          GELU (tanh) for GPT-2, ReLU for OPT
//   logits = lm_head(project_out(ln_f(x)))    lm_head tied to E unless stored
// GPT-2 stores its linear layers as Conv1D, weight [in, out]; they are transposed to [out, in] at load.
#include <optional>
#include <string>
#include <utility>
#include <memory>
#include <vector>

#include "lowbit/formats/weights.h"
#include "lowbit/models/lazy_layers.h"
#include "lowbit/models/model.h"

namespace lowbit {

class GptModel : public CausalLM {
 public:
  // lazy_layers (layer-by-layer calibration, load_causal_lm_layerwise): each layer's linear weights
  // are loaded as float32 on first use and freed by release_layer.
  GptModel(ModelConfig config, const WeightStore& weights, bool lazy_layers = false);

  const ModelConfig& config() const override { return cfg_; }
  std::unique_ptr<Session> new_session(int max_tokens, KVCacheType kv = KVCacheType::f16) const override;
  void forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_rows) const override;
  uint64_t weight_bytes() const override;

  // Layer-by-layer access. Weights by checkpoint name; GPT-2's Conv1D weights ([in, out] in the file)
  // are read and replaced as [out, in] like every other linear weight. Biases and LayerNorm
  // weights / biases of the layers are readable and replaceable too (AWQ and SmoothQuant divide them).
  bool supports_layerwise() const override { return true; }
  void embed(std::span<const int32_t> tokens, float* x) const override;
  void run_layer(int layer, float* x, int n, const LinearObserver* observer) const override;
  std::vector<float> weight(const std::string& name) const override;
  void replace_weight(const std::string& name, const std::vector<float>& w) override;
  std::optional<InputProducer> input_producer(const std::string& linear_name) const override;
  void release_layer(int layer) override;

 private:
  struct Norm {
    std::vector<float> weight, bias;  // [hidden]
  };
  struct Layer {
    Norm ln_attn, ln_mlp;
    LinearWeights wqkv;  // [3 hidden, hidden]: q, k, v rows stacked
    LinearWeights wo;    // [hidden, hidden]
    LinearWeights w1;    // [inner, hidden]
    LinearWeights w2;    // [hidden, inner]
    std::vector<float> bqkv, bo, b1, b2;
  };
  // A tensor of a layer as the pipeline sees it: values [offset, offset + rows * cols) of *data.
  struct Slot {
    std::vector<float>* data;
    int64_t offset, rows, cols;
  };
  void layer_norm(const Norm& norm, const float* x, float* out, int n) const;
  void load_linears(Layer& L, int l, const WeightStore& w) const;
  std::vector<std::string> linear_names(int l) const;  // checkpoint names of layer l's linear weights
  Layer& layer(int l) const;                           // loaded first where lazy; fails once released
  std::string layer_name(int l) const { return layer_prefix_ + std::to_string(l) + "."; }
  // (layer, suffix after the layer's prefix) of a layer tensor's name; layer -1 when not one.
  std::pair<int, std::string> split_name(const std::string& name) const;
  Slot slot(const std::string& name) const;
  // Token (through project_in when narrower) plus learned position embeddings, positions pos0...
  void embed_at(std::span<const int32_t> tokens, int pos0, float* x) const;
  struct Work;
  void layer_forward(int l, int cache_layer, float* x, int n, int pos0, class KVSession& s, Work& w,
                     const LinearObserver* obs) const;
  // run_layer's keys / values and Work, kept for the next call with as many rows: calibration makes
  // thousands of calls, and fresh buffers (page faults, clearing) were ~40 % of an imatrix run.
  // run_layer is not reentrant (neither are the models' other entry points).
  struct RunScratch;
  mutable std::shared_ptr<RunScratch> run_scratch_;

  ModelConfig cfg_;
  int embed_dim_ = 0;                 // width of the token embeddings (OPT word_embed_proj_dim)
  std::vector<float> embed_;          // [vocab, embed_dim]
  std::vector<float> positions_;      // [max_positions + offset, hidden]
  std::vector<float> project_in_;     // [hidden, embed_dim] or empty
  std::vector<float> project_out_;    // [embed_dim, hidden] or empty
  std::vector<float> lm_head_;        // [vocab, embed_dim]; empty when tied
  Norm final_norm_;                   // empty when absent
  mutable std::vector<Layer> layers_;  // mutable: lazily loaded layers (a cache of the file)
  mutable LazyLayers lazy_;
  std::string layer_prefix_;          // "transformer.h." / "model.decoder.layers.": names layers in errors
};

}  // namespace lowbit

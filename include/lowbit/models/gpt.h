#pragma once
// Decoders with learned positions and LayerNorm: GPT-2 (GPT2LMHeadModel) and OPT (OPTForCausalLM),
// float32, as Hugging Face's modeling_gpt2 / modeling_opt compute them:
//   x = E[tokens] (OPT: through project_in when word_embed_proj_dim != hidden) + P[position + offset]
//   per layer (pre-LN; OPT-350m style post-LN when do_layer_norm_before is false):
//     x = x + attn_out(attn(ln_1(x)))        attention heads without RoPE, q/k/v and output with biases
//     x = x + fc2(act(fc1(ln_2(x))))          GELU (tanh) for GPT-2, ReLU for OPT
//   logits = lm_head(project_out(ln_f(x)))    lm_head tied to E unless stored
// GPT-2 stores its linear layers as Conv1D, weight [in, out]; they are transposed to [out, in] at load.
#include <vector>

#include "lowbit/formats/weights.h"
#include "lowbit/models/model.h"

namespace lowbit {

class GptModel : public CausalLM {
 public:
  GptModel(ModelConfig config, const WeightStore& weights);

  const ModelConfig& config() const override { return cfg_; }
  std::unique_ptr<Session> new_session(int max_tokens) const override;
  void forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_rows) const override;
  uint64_t weight_bytes() const override;

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
  void layer_norm(const Norm& norm, const float* x, float* out, int n) const;

  ModelConfig cfg_;
  int embed_dim_ = 0;                 // width of the token embeddings (OPT word_embed_proj_dim)
  std::vector<float> embed_;          // [vocab, embed_dim]
  std::vector<float> positions_;      // [max_positions + offset, hidden]
  std::vector<float> project_in_;     // [hidden, embed_dim] or empty
  std::vector<float> project_out_;    // [embed_dim, hidden] or empty
  std::vector<float> lm_head_;        // [vocab, embed_dim]; empty when tied
  Norm final_norm_;                   // empty when absent
  std::vector<Layer> layers_;
  std::string layer_prefix_;          // "transformer.h." / "model.decoder.layers.": names layers in errors
};

}  // namespace lowbit

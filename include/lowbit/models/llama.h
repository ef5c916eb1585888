#pragma once
// The LLaMA family (Llama 1-3, Mistral, Qwen2) in float32, as Hugging Face's modeling_llama computes it:
//   x = embed[tokens]
//   per layer: h = x + o_proj(attn(rope(q_proj(rms(x))), rope(k_proj(rms(x))), v_proj(rms(x))))
//              x = h + down_proj(silu(gate_proj(rms(h))) * up_proj(rms(h)))
//   logits = lm_head(rms(x))
// RoPE uses the rotate-half convention (pairs (i, i + head_dim/2)); attention is causal with
// grouped-query heads (num_heads / num_kv_heads query heads share one KV head).
#include <optional>
#include <memory>
#include <vector>

#include "lowbit/formats/weights.h"
#include "lowbit/models/lazy_layers.h"
#include "lowbit/models/model.h"

namespace lowbit {

class KVSession;

class LlamaModel : public CausalLM {
 public:
  // Float or quantized: linear weights packed (used where the file maps them) when the store allows.
  // lazy_layers (layer-by-layer calibration, load_causal_lm_layerwise): each layer's linear weights
  // are loaded as float32 on first use and freed by release_layer.
  LlamaModel(ModelConfig config, const WeightStore& weights, bool lazy_layers = false);

  const ModelConfig& config() const override { return cfg_; }
  std::unique_ptr<Session> new_session(int max_tokens, KVCacheType kv = KVCacheType::f16) const override;
  void forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_rows) const override;
  uint64_t weight_bytes() const override;
  uint64_t decode_weight_bytes() const override;

  bool supports_layerwise() const override { return true; }
  void embed(std::span<const int32_t> tokens, float* x) const override;
  void run_layer(int layer, float* x, int n, const LinearObserver* observer) const override;
  std::vector<float> weight(const std::string& name) const override;
  void replace_weight(const std::string& name, const std::vector<float>& w) override;
  std::optional<InputProducer> input_producer(const std::string& linear_name) const override;
  void release_layer(int layer) override;
  // Threads a decode step is split over by heads and MLP channels (llama_split.cpp), or 0 where it
  // runs layer by layer, each product split over the threads by rows (LOWBIT_DECODE=rows; or float
  // weights, one thread, or heads / channels that do not divide over the threads).
  int decode_split_threads() const { return split_; }

 private:
  struct Layer {
    std::vector<float> attn_norm, ffn_norm;  // [hidden]
    LinearWeights wqkv;                      // [(heads + 2 kv_heads) * head_dim, hidden]: q, k, v rows stacked
    std::vector<float> bqkv;                 // [(heads + 2 kv_heads) * head_dim] or empty
    LinearWeights wo;                        // [hidden, heads * head_dim]
    LinearWeights w_gate_up;                 // [2 * intermediate, hidden]: gate rows then up rows
    LinearWeights w_down;                    // [hidden, intermediate]
  };

  // Where a linear weight lives: matrix, first row, rows, columns (fused matrices hold several).
  struct Slot {
    std::vector<float>* matrix;
    int64_t row0, rows, cols;
  };
  Slot slot(const std::string& name) const;
  // Layer l, its linear weights loaded first where they are lazy; fails for a released layer.
  Layer& layer(int l) const;
  void load_linears(Layer& L, int l, const WeightStore& store) const;

  // Scratch buffers and rotary tables of one call, sized for n rows.
  struct Work;
  void layer_forward(int l, int cache_layer, float* x, int n, int pos0, KVSession& s, Work& w,
                     const LinearObserver* obs) const;
  // run_layer's keys / values and Work, kept for the next call with as many rows: calibration makes
  // thousands of calls, and fresh buffers (page faults, clearing) were ~40 % of an imatrix run.
  // run_layer is not reentrant (neither are the models' other entry points).
  struct RunScratch;
  mutable std::shared_ptr<RunScratch> run_scratch_;

  // Decode (one new token) split over the pool's threads by heads and MLP channels, one pool job
  // for all layers (llama_split.cpp): each thread computes q, k, v and attention for its own KV
  // heads, then o_proj over its heads' columns, and gate / up / SiLU for its own channels, then
  // down_proj over those channels; the threads' partial sums meet twice per layer. o_proj and
  // down_proj are then held split over their columns, one part per thread (split_columns).
  struct DecodeSplit;
  int split_parts() const;       // the threads a split decode would use (0: not this model or machine)
  bool split_layer(Layer& L);  // o / down split for it, where every weight of L allows
  // Once every layer is split: each thread's rows of q / k / v / gate / up (as segments of their own,
  // wqkv = q parts, k parts, v parts; w_gate_up = gate parts, up parts) and its parts of o / down,
  // copied into one allocation per thread in the order its decode step reads them.
  void arrange_split();
  // With `logits`, also the final norm and the output head in the same job where the head is an
  // integer lanes matrix (each thread its own range of vocabulary rows, balanced at run time);
  // returns whether it wrote the logits.
  bool decode_split(float* x, int pos, KVSession& s, const Work& w, float* logits) const;
  int split_ = 0;  // > 1: every layer is split over this many threads and decode_split runs
  std::vector<int64_t> split_channels_;  // where threads 1.. start on the intermediate channels
  mutable std::shared_ptr<DecodeSplit> split_scratch_;

  ModelConfig cfg_;
  LinearWeights embed_;    // [vocab, hidden] (rows read one at a time for the look-up)
  LinearWeights lm_head_;  // [vocab, hidden]; no rows when tied to embed_
  std::vector<float> final_norm_;
  std::vector<float> inv_freq_;  // [head_dim / 2] RoPE frequencies
  mutable std::vector<Layer> layers_;  // mutable: lazily loaded layers (a cache of the file)
  mutable LazyLayers lazy_;            // lazy_layers: the checkpoint, read as float32
};

}  // namespace lowbit

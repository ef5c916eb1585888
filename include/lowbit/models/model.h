#pragma once
// A causal language model: tokens in, next-token logits out, with a per-sequence state (KV cache).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/io/config.h"

namespace lowbit {

// The state of one sequence: its KV cache and how many positions it holds.
class Session {
 public:
  virtual ~Session() = default;
  int position() const { return position_; }  // tokens already in the cache
  int capacity() const { return capacity_; }
  virtual void reset() { position_ = 0; }

 protected:
  int position_ = 0, capacity_ = 0;
};

// The element type of a session's KV cache (models/attention.h): f16 halves its memory and decode
// attention's traffic; f32 keeps keys and values exact.
enum class KVCacheType { f16, f32 };

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  virtual const ModelConfig& config() const = 0;
  int vocab_size() const { return config().vocab_size; }

  // A new sequence state able to hold max_tokens positions (at most config().max_positions), its
  // cache of `kv` elements.
  virtual std::unique_ptr<Session> new_session(int max_tokens, KVCacheType kv = KVCacheType::f16) const = 0;

  // Appends tokens to the session at positions session.position().. and writes their logits:
  // all_rows ? [tokens.size()][vocab] : only the last token's [vocab].
  virtual void forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_rows) const = 0;

  // Bytes of weights held in memory (or mapped).
  virtual uint64_t weight_bytes() const = 0;
  // Bytes of weights one decoded token reads (all but the embedding rows it does not look up).
  virtual uint64_t decode_weight_bytes() const { return weight_bytes(); }

  // Layer-by-layer access for calibrated quantization (GPTQ, ...). The default says the
  // architecture does not offer it.
  //
  // Input rows of linear layers as a layer runs: `names` are the checkpoint names of every weight
  // that reads these rows (q/k/v share one input), rows [n][cols]. Returns whether the layer should
  // go on: false stops it after this input (its output is then left incomplete), for passes that
  // only need the inputs up to one point.
  using LinearObserver = std::function<bool(const std::vector<std::string>& names, const float* rows, int n, int cols)>;
  virtual bool supports_layerwise() const { return false; }
  // Token embeddings of one sequence: x [n][hidden].
  virtual void embed(std::span<const int32_t> tokens, float* x) const;
  // Decoder layer `layer` applied in place to the hidden states of one sequence at positions 0..n-1.
  virtual void run_layer(int layer, float* x, int n, const LinearObserver* observer) const;
  // A linear weight as the model holds it ([out][in] row-major, by checkpoint name), and its replacement
  // (e.g. the dequantized weight after GPTQ).
  virtual std::vector<float> weight(const std::string& name) const;
  virtual void replace_weight(const std::string& name, const std::vector<float>& w);
  // What computes the input of linear weight `name`, so that scales of its input channels can be
  // folded into it (AWQ): a norm's weight (its elements divided) or a linear weight (its rows
  // divided), both readable and replaceable through weight() / replace_weight(). tie[c]: the
  // producer's channel of input column c (empty: the same index). nullopt: nothing to fold into.
  // first / width: the producer's channels are rows first.. of `tensor` ([rows][width]; width 0: the
  // tensor holds exactly the producer's rows), e.g. the value rows of GPT-2's fused q/k/v weight.
  // bias: a bias the producer adds after `tensor`, divided with it (its elements first..), or empty.
  struct InputProducer {
    std::string tensor;
    bool rows = false;
    std::vector<int> tie;
    int64_t first = 0, width = 0;
    std::string bias;

    static InputProducer norm(std::string tensor, std::string bias = {}) {
      InputProducer p;
      p.tensor = std::move(tensor);
      p.bias = std::move(bias);
      return p;
    }
    static InputProducer linear_rows(std::string tensor, std::string bias = {}, int64_t first = 0, int64_t width = 0,
                                     std::vector<int> tie = {}) {
      InputProducer p = norm(std::move(tensor), std::move(bias));
      p.rows = true;
      p.first = first;
      p.width = width;
      p.tie = std::move(tie);
      return p;
    }
  };
  virtual std::optional<InputProducer> input_producer(const std::string& linear_name) const;
  // The pipeline is done with layer `layer` (its outputs computed): a model loaded layer by layer
  // (load_causal_lm_layerwise) frees its float weights, and the layer cannot run again.
  virtual void release_layer(int /*layer*/) {}
};

// A float model with the layer-by-layer hooks (the checkpoint must be unquantized). A layer's
// linear weights are read from the mapped file as float32 copies when the layer is first used (their
// pages in the map then released) and freed by release_layer: a pass over the model holds one
// layer's weights, whatever the model's size (embeddings and norms stay as stored).
std::unique_ptr<CausalLM> load_causal_lm_layerwise(const std::filesystem::path& dir);

// Loads the model of a checkpoint folder (architecture from config.json). packed: linear weights
// stay in the mapped files where a kernel computes on their stored format; false: float32 copies.
std::unique_ptr<CausalLM> load_causal_lm(const std::filesystem::path& dir, bool packed = true);

}  // namespace lowbit

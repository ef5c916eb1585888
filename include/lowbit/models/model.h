#pragma once
// A causal language model: tokens in, next-token logits out, with a per-sequence state (KV cache).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

#include "lowbit/io/config.h"

namespace lowbit {

// The state of one sequence: its KV cache and how many positions it holds.
class Session {
 public:
  virtual ~Session() = default;
  int position() const { return position_; }  // tokens already in the cache
  int capacity() const { return capacity_; }
  void reset() { position_ = 0; }

 protected:
  int position_ = 0, capacity_ = 0;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  virtual const ModelConfig& config() const = 0;
  int vocab_size() const { return config().vocab_size; }

  // A new sequence state able to hold max_tokens positions (at most config().max_positions).
  virtual std::unique_ptr<Session> new_session(int max_tokens) const = 0;

  // Appends tokens to the session at positions session.position().. and writes their logits:
  // all_rows ? [tokens.size()][vocab] : only the last token's [vocab].
  virtual void forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_rows) const = 0;

  // Bytes of weights held in memory.
  virtual uint64_t weight_bytes() const = 0;
};

// Loads the model of a checkpoint folder (architecture from config.json).
std::unique_ptr<CausalLM> load_causal_lm(const std::filesystem::path& dir);

}  // namespace lowbit

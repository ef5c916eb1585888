#pragma once
// Encoder sequence classifiers: BERT (BertForSequenceClassification) and DistilBERT
// (DistilBertForSequenceClassification) in float32, as transformers' modeling_bert.py and
// modeling_distilbert.py compute them (dropout off):
//
//   BERT        x = LN(word[id] + position[p] + token_type[t])                      [tokens, hidden]
//               per layer (post-LN):  x = LN(x + O(attention(Q x, K x, V x)))
//                                     x = LN(x + W2 act(W1 x))
//               logits = classifier(tanh(pooler(x[CLS])))                           [labels]
//   DistilBERT  x = LN(word[id] + position[p]), the same layers (q_lin, k_lin, v_lin, out_lin,
//               sa_layer_norm, ffn.lin1, ffn.lin2, output_layer_norm),
//               logits = classifier(relu(pre_classifier(x[CLS])))
//
// Attention is bidirectional within a sequence, softmax(Q Kᵀ / sqrt(head_dim)) V per head. Padding
// (attention_mask 0) is never attended to: a padded batch gives the logits of each sequence run alone.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/io/encoder_config.h"
#include "lowbit/io/tokenizer.h"

namespace lowbit {

// A batch in Hugging Face's padded layout (what tokenizer(texts, padding=True) returns).
struct EncoderBatch {
  int batch = 0, seq_len = 0;
  std::vector<int32_t> input_ids;       // [batch][seq_len]
  std::vector<int32_t> attention_mask;  // [batch][seq_len]: 1 a token, 0 padding; empty: all tokens
  std::vector<int32_t> token_type_ids;  // [batch][seq_len] segment ids (BERT); empty: all 0
};

// Right-pads `sequences` with pad_id into one batch (mask 1 on tokens, 0 on padding).
EncoderBatch make_encoder_batch(std::span<const std::vector<int32_t>> sequences, int pad_id);

class SequenceClassifier {
 public:
  virtual ~SequenceClassifier() = default;
  virtual const EncoderConfig& config() const = 0;
  int num_labels() const { return config().num_labels; }
  const std::vector<std::string>& labels() const { return config().labels; }

  // Writes logits [batch][num_labels]. Every row must start with a token (position 0 is the [CLS]
  // the heads read); positions are 0..seq_len-1 as in transformers, padded or not.
  virtual void forward(const EncoderBatch& batch, float* logits) const = 0;
  // Logits [sequences.size()][num_labels] of token-id sequences of any lengths.
  std::vector<float> classify(std::span<const std::vector<int32_t>> sequences) const;

  virtual uint64_t weight_bytes() const = 0;  // float32 weights held in memory
  bool from_quantized() const { return from_quantized_; }  // the checkpoint held quantized weights

 protected:
  bool from_quantized_ = false;
};

// Loads the classifier of a checkpoint folder (config.json's architecture must be a supported
// encoder); float or quantized weights (dequantized once to float32).
std::unique_ptr<SequenceClassifier> load_sequence_classifier(const std::filesystem::path& dir);

// What a classifier reads for one text: the tokenizer's special-token template around the text's
// ids ([CLS] text [SEP] for BERT), with text ids dropped from the end so that at most max_len ids
// remain (transformers' truncation=True, max_length=max_len). max_len <= 0: no limit. *truncated,
// when given, says whether ids were dropped.
std::vector<int32_t> encode_for_classifier(const Tokenizer& tok, std::string_view text, int max_len,
                                           bool* truncated = nullptr);

// Scores from one row of logits: softmax for single-label classification, per-label sigmoid for
// multi-label, the logits themselves for regression.
std::vector<float> label_scores(const EncoderConfig& cfg, const float* logits);

}  // namespace lowbit

#pragma once
// Tokenizers: SentencePiece (tokenizer.model, through libsentencepiece), Hugging Face tokenizer.json
// with BPE models (SentencePiece-style: Metaspace "▁" + byte fallback; GPT-2 byte-level), and
// vocabularies read from GGUF files (llama.cpp's tokenizer.ggml.* keys).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text to ids as Hugging Face's tokenizer does with add_special_tokens=False: no BOS/EOS is added;
  // special-token strings inside the text (e.g. "<s>", "<|endoftext|>") become their ids.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // As HF's add_special_tokens=True: encode() then the post-processor's template (tokenizer.json
  // TemplateProcessing for one sequence; e.g. [CLS] A [SEP] for BERT, nothing for the llama/gpt2 files).
  virtual std::vector<int32_t> encode_with_special(std::string_view text) const { return encode(text); }
  // Ids to text; skip_special drops special (control / added special) tokens, as HF's skip_special_tokens.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special = true) const = 0;

  virtual int vocab_size() const = 0;
  virtual std::string token_text(int32_t id) const = 0;  // the raw vocabulary entry
  virtual bool is_special(int32_t id) const = 0;

  int bos_id() const { return bos_id_; }  // -1 when none
  int eos_id() const { return eos_id_; }
  // Whether a language model's input starts with BOS (LlamaTokenizer-style: yes; GPT-2: no).
  bool add_bos() const { return add_bos_; }

 protected:
  int bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = false;
};

// Picks the tokenizer of a checkpoint folder: tokenizer.json, else tokenizer.model, else
// vocab.json + merges.txt (GPT-2 byte-level). tokenizer_config.json, when present, supplies
// add_bos_token and the BOS/EOS strings. Errors name the file and what is wrong.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir);

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::filesystem::path& tokenizer_json);
std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& tokenizer_model);
std::unique_ptr<Tokenizer> load_gpt2_vocab_merges(const std::filesystem::path& vocab_json,
                                                  const std::filesystem::path& merges_txt);
// From a GGUF file's tokenizer.ggml.model ("llama": SentencePiece-style BPE/unigram scores,
// "gpt2": byte-level BPE with tokenizer.ggml.merges), tokens, scores, token_type, bos/eos ids.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::filesystem::path& gguf);

}  // namespace lowbit

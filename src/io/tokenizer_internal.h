#pragma once
// Private to src/io/tokenizer*.cpp and gguf.cpp: the shared base of lowbit's tokenizers, UTF-8
// helpers, and the description of a Hugging Face style BPE pipeline (added tokens, normalizer,
// pre-tokenizer, BPE model, decoder, post-processor) that both tokenizer.json and GGUF files
// are turned into.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/io/tokenizer.h"

namespace lowbit::detail {

// ---- UTF-8 -------------------------------------------------------------------------------------

// Decodes the code point at s[*pos] and advances *pos. An invalid or truncated sequence yields
// U+FFFD and advances by its maximal invalid subpart (at least one byte), as Unicode recommends
// (and as Python's errors="replace" and Rust's from_utf8_lossy do).
char32_t next_code_point(std::string_view s, size_t* pos);
void append_utf8(std::string* out, char32_t cp);
// Invalid sequences replaced by U+FFFD (so the result is valid UTF-8).
std::string utf8_lossy(std::string_view s);
bool is_valid_utf8(std::string_view s);

// ---- the shared base ---------------------------------------------------------------------------

class TokenizerBase : public Tokenizer {
 public:
  // Exact vocabulary lookup (added tokens included); -1 when absent.
  virtual int32_t token_to_id(std::string_view token) const = 0;
  void set_bos_eos(int bos, int eos) { bos_id_ = bos, eos_id_ = eos; }
  void set_add_bos(bool add) { add_bos_ = add; }
  // The file the tokenizer came from, for error messages.
  std::string source;
};

// ---- a Hugging Face style BPE pipeline -----------------------------------------------------------

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false, lstrip = false, rstrip = false;
  bool normalized = false;  // matched on the normalized text (else on the original text)
};

struct NormalizerStep {
  enum class Kind { prepend, replace, nfc, nfkc, nfd, nfkd, lowercase, strip };
  Kind kind;
  std::string a, b;                        // prepend: a; replace: a -> b
  bool left = false, right = false;        // strip
};

struct PreTokenizerStep {
  enum class Kind { metaspace, byte_level, split_string, digits, whitespace_split };
  Kind kind;
  // metaspace
  std::string replacement = "\xe2\x96\x81";  // U+2581 "▁"
  enum class Prepend { always, first, never } prepend = Prepend::always;
  bool split = true;
  // byte_level
  bool add_prefix_space = false, use_regex = true;
  // split_string: pattern, behaviour (HF SplitDelimiterBehavior), invert unsupported
  std::string pattern;
  enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous } behavior =
      Behavior::isolated;
  // digits
  bool individual_digits = false;
};

struct DecoderStep {
  enum class Kind { replace, byte_fallback, fuse, strip, byte_level, metaspace };
  Kind kind;
  std::string a, b;             // replace: a -> b; strip: a is the content char; metaspace: a is the replacement
  int start = 0, stop = 0;      // strip
  bool prepend_first = true;    // metaspace: drop the replacement in the first token (prepend_scheme != never)
};

// Everything a BpeTokenizer needs, already parsed and checked for well-formedness (the BPE
// constructor still checks that merges name known tokens).
struct BpeSpec {
  std::string source;                         // file name for error messages
  std::vector<std::pair<std::string, int32_t>> vocab;  // token -> id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::optional<std::string> unk_token;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::string continuing_subword_prefix, end_of_word_suffix;
  std::vector<AddedToken> added_tokens;
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<DecoderStep> decoder;
  // TemplateProcessing "single": ids before and after the sequence.
  std::vector<int32_t> template_prefix, template_suffix;
};

std::unique_ptr<TokenizerBase> make_bpe_tokenizer(BpeSpec spec);

// Loaders behind the public load_* functions (tokenizer.cpp adds tokenizer_config.json handling).
std::unique_ptr<TokenizerBase> load_hf_tokenizer_json_impl(const std::filesystem::path& path);
std::unique_ptr<TokenizerBase> load_gpt2_vocab_merges_impl(const std::filesystem::path& vocab_json,
                                                           const std::filesystem::path& merges_txt);
std::unique_ptr<TokenizerBase> load_sentencepiece_impl(const std::filesystem::path& path);
std::unique_ptr<TokenizerBase> load_gguf_tokenizer_impl(const std::filesystem::path& path);

// The pieces of a GGUF vocabulary that make a tokenizer (see load_gguf_tokenizer).
struct GgufVocab {
  std::string source;
  std::string model;                       // tokenizer.ggml.model
  std::vector<std::string> tokens;
  std::vector<float> scores;               // may be empty
  std::vector<int32_t> token_types;        // may be empty; 1 normal, 2 unknown, 3 control, 4 user, 5 unused, 6 byte
  std::vector<std::string> merges;         // "a b"
  int bos = -1, eos = -1, unk = -1;
  std::optional<bool> add_bos, add_space_prefix;
};
// llama.cpp's SentencePiece-style tokenizer: merges adjacent pieces by highest vocabulary score,
// byte fallback through <0xXX> tokens.
std::unique_ptr<TokenizerBase> make_spm_scores_tokenizer(GgufVocab vocab);

// GPT-2's bytes-to-unicode table: byte b maps to this code point (printable bytes to themselves,
// the rest to 256 + n).
char32_t byte_to_unicode(uint8_t b);

// Splits text on added tokens as HF's AddedVocabulary::find_matches does (leftmost-longest match,
// single_word / lstrip / rstrip). Returns (token id or -1 for plain text, begin, end) in byte offsets.
struct AddedTokenMatcher {
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  struct Span {
    int32_t id;
    size_t begin, end;
  };
  std::vector<Span> split(std::string_view text) const;

 private:
  std::vector<AddedToken> tokens_;                 // sorted by content length, longest first
  std::vector<std::vector<uint32_t>> by_first_byte_;  // [256] indices into tokens_
};

// Ids 0 .. size-1 from a vocabulary (token -> id) and added tokens: every id checked against a cap
// that a hostile file cannot push past (16 M entries).
template <typename Vocab, typename Added>
int64_t checked_vocab_size(const Vocab& vocab, const Added& added, const std::string& source, const char* kind) {
  constexpr int64_t kMaxVocab = int64_t(1) << 24;
  if (vocab.empty()) fail("{}: the {} vocabulary is empty", source, kind);
  int64_t size = 0;
  for (const auto& [tok, id] : vocab) {
    if (id < 0 || id >= kMaxVocab) fail("{}: token '{}' has id {}, outside [0, {})", source, tok, id, kMaxVocab);
    size = std::max<int64_t>(size, int64_t(id) + 1);
  }
  for (const auto& t : added) {
    if (t.id < 0 || t.id >= kMaxVocab)
      fail("{}: added token '{}' has id {}, outside [0, {})", source, t.content, t.id, kMaxVocab);
    size = std::max<int64_t>(size, int64_t(t.id) + 1);
  }
  return size;
}

}  // namespace lowbit::detail

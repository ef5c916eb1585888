// WordPiece, the tokenizer of BERT-family models, as Hugging Face `tokenizers` runs it, from a
// tokenizer.json (model type "WordPiece") or from vocab.txt + tokenizer_config.json.
//
// Behaviour follows the Rust sources of huggingface/tokenizers (read, not copied):
//   normalizers/bert.rs            BertNormalizer: clean_text, handle_chinese_chars, strip_accents, lowercase
//   pre_tokenizers/bert.rs         BertPreTokenizer: split on whitespace (dropped), punctuation (isolated)
//   models/wordpiece/mod.rs        greedy longest-match-first pieces, "##" continuation, and a word of
//                                  more than max_input_chars_per_word characters (or with no
//                                  segmentation) becomes one [UNK]
//   decoders/wordpiece.rs          WordPiece decoder with its per-token cleanup
//   tokenizer/added_vocabulary.rs  added tokens split out before normalization
// and transformers' BertTokenizer (models/bert/tokenization_bert.py, convert_slow_tokenizer.py
// BertConverter) for what vocab.txt + tokenizer_config.json mean. Unicode classes come from ICU.
//
// The pipeline for one text (encode):
//   raw text -> split on added tokens matched on the raw text ([CLS], [SEP], ... are normalized: false)
//            -> each plain part: BertNormalizer -> split on normalized added tokens
//            -> BertPreTokenizer words -> WordPiece ids
#include "tokenizer_wordpiece.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <mutex>
#include <optional>
#include <unordered_map>

#include "lowbit/core/error.h"
#include "lowbit/io/json.h"
#include "lowbit/core/file.h"

namespace lowbit::detail {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// ---- Unicode classes, as BertNormalizer / BertPreTokenizer see them ----------------------------------

// '\t', '\n', '\r' and Rust char::is_whitespace (the Unicode White_Space property).
bool is_bert_whitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_isUWhiteSpace(UChar32(c));
}

// General category C (Cc, Cf, Cn, Co, Cs) except '\t', '\n', '\r': what clean_text removes.
bool is_bert_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  if (c < 0x80) return c < 0x20 || c == 0x7F;
  const int8_t t = u_charType(UChar32(c));
  return t == U_CONTROL_CHAR || t == U_FORMAT_CHAR || t == U_UNASSIGNED || t == U_PRIVATE_USE_CHAR || t == U_SURROGATE;
}

// The CJK Unified Ideograph blocks BERT puts spaces around (tokenization_bert.py _is_chinese_char).
// Hiragana, Katakana and Hangul are not among them: those stay inside words.
bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// ASCII punctuation (all of !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~, symbols included) or general category P.
bool is_bert_punctuation(char32_t c) {
  if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  return (U_GET_GC_MASK(UChar32(c)) & U_GC_P_MASK) != 0;
}

// Rust char::to_lowercase: the full (one-to-many) lower-case mapping of one character, without
// context (so 'Σ' always becomes 'σ', and 'İ' becomes "i̇").
void append_lowercase(std::string* out, char32_t c) {
  if (c < 0x80) {
    out->push_back(char(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c));
    return;
  }
  UChar src[2];
  int32_t n = 0;
  U16_APPEND_UNSAFE(src, n, UChar32(c));
  UChar dst[8];
  UErrorCode err = U_ZERO_ERROR;
  const int32_t m = u_strToLower(dst, 8, src, n, "", &err);
  if (U_FAILURE(err) || m > 8) {  // no mapping is longer than 3 code points; keep the character
    append_utf8(out, c);
    return;
  }
  for (int32_t i = 0; i < m;) {
    UChar32 d;
    U16_NEXT(dst, i, m, d);
    append_utf8(out, char32_t(d));
  }
}

bool is_ascii(std::string_view s) {
  for (char ch : s)
    if (uint8_t(ch) >= 0x80) return false;
  return true;
}

// NFD, then every non-spacing mark (Mn) removed: "é" -> "e", "İ" -> "I".
std::string strip_accents(const std::string& s) {
  if (is_ascii(s)) return s;
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(err);
  if (U_FAILURE(err)) fail("ICU: cannot load the NFD normalizer: {}", u_errorName(err));
  const icu::UnicodeString decomposed = nfd->normalize(icu::UnicodeString::fromUTF8(s), err);
  if (U_FAILURE(err)) fail("ICU: NFD normalization failed: {}", u_errorName(err));
  std::string out;
  out.reserve(s.size());
  for (int32_t i = 0; i < decomposed.length();) {
    const UChar32 c = decomposed.char32At(i);
    i += U16_LENGTH(c);
    if (u_charType(c) != U_NON_SPACING_MARK) append_utf8(&out, char32_t(c));
  }
  return out;
}

// HF's WordPiece decoder cleanup (decoders/wordpiece.rs), applied to each token separately.
void cleanup_token(std::string* s) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},   {" ?", "?"},   {" !", "!"},          {" ,", ","},     {" ' ", "'"},   {" n't", "n't"},
      {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
  };
  for (const auto& [from, to] : kRules) {
    const std::string_view f(from), t(to);
    size_t pos = 0;
    while ((pos = s->find(f, pos)) != std::string::npos) {
      s->replace(pos, f.size(), t);
      pos += t.size();
    }
  }
}

// unordered_map<std::string, int32_t> that can be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Everything a WordPieceTokenizer needs, already parsed.
struct WordPieceSpec {
  std::string source;                                   // file name(s) for error messages
  std::vector<std::pair<std::string, int32_t>> vocab;   // the model's token -> id
  std::vector<AddedToken> added_tokens;
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  int64_t max_input_chars_per_word = 100;
  // BertNormalizer (absent: the text is used as it is).
  bool has_normalizer = true;
  bool clean_text = true, handle_chinese_chars = true, lowercase = true;
  std::optional<bool> strip_accents;  // unset: follows lowercase
  enum class PreTokenizer { bert, whitespace_split, none } pre_tokenizer = PreTokenizer::bert;
  // WordPiece decoder (absent: tokens joined with spaces).
  bool has_decoder = true;
  std::string decoder_prefix = "##";
  bool decoder_cleanup = true;
  std::vector<int32_t> template_prefix, template_suffix;  // post-processor, one sequence
};

class WordPieceTokenizer final : public TokenizerBase {
 public:
  explicit WordPieceTokenizer(WordPieceSpec spec);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_with_special(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override;
  int vocab_size() const override { return int(id_to_token_.size()); }
  std::string token_text(int32_t id) const override {
    if (id < 0 || size_t(id) >= id_to_token_.size())
      fail("{}: token id {} is outside the vocabulary [0, {})", source, id, id_to_token_.size());
    return id_to_token_[size_t(id)];
  }
  bool is_special(int32_t id) const override { return id >= 0 && size_t(id) < special_.size() && special_[size_t(id)]; }
  int32_t token_to_id(std::string_view token) const override {
    auto it = all_tokens_.find(token);
    return it == all_tokens_.end() ? -1 : it->second;
  }

 private:
  std::string normalize(std::string_view text) const;
  void encode_plain(std::string_view text, std::vector<int32_t>* ids) const;
  void encode_word(std::string_view word, std::vector<int32_t>* ids) const;
  void encode_word_cached(std::string_view word, std::vector<int32_t>* ids) const;

  Vocab word_start_;    // model pieces that may start a word
  Vocab continuation_;  // model pieces that continue a word, keyed without the "##" prefix
  Vocab all_tokens_;    // model vocabulary plus added tokens, for token_to_id
  std::vector<std::string> id_to_token_;
  std::vector<bool> special_;
  int32_t unk_id_ = -1;
  int64_t max_chars_;
  AddedTokenMatcher raw_added_, normalized_added_;
  bool has_normalizer_, clean_text_, chinese_, strip_accents_, lowercase_;
  WordPieceSpec::PreTokenizer pre_tokenizer_;
  bool has_decoder_, decoder_cleanup_;
  std::string decoder_prefix_;
  std::vector<int32_t> template_prefix_, template_suffix_;

  // word -> ids for short words (reviews repeat words a lot).
  static constexpr size_t kCacheMaxWordBytes = 48, kCacheMaxEntries = size_t(1) << 18;
  mutable std::mutex cache_mutex_;
  mutable Vocab cache_index_;                       // word -> index into cache_ids_
  mutable std::vector<std::vector<int32_t>> cache_ids_;
};

std::vector<AddedToken> added_with(const std::vector<AddedToken>& all, bool normalized) {
  std::vector<AddedToken> out;
  for (const auto& t : all)
    if (t.normalized == normalized) out.push_back(t);
  return out;
}

WordPieceTokenizer::WordPieceTokenizer(WordPieceSpec spec)
    : max_chars_(spec.max_input_chars_per_word),
      raw_added_(added_with(spec.added_tokens, false)),
      normalized_added_(added_with(spec.added_tokens, true)),
      has_normalizer_(spec.has_normalizer),
      clean_text_(spec.clean_text),
      chinese_(spec.handle_chinese_chars),
      strip_accents_(spec.strip_accents.value_or(spec.lowercase)),
      lowercase_(spec.lowercase),
      pre_tokenizer_(spec.pre_tokenizer),
      has_decoder_(spec.has_decoder),
      decoder_cleanup_(spec.decoder_cleanup),
      decoder_prefix_(std::move(spec.decoder_prefix)),
      template_prefix_(std::move(spec.template_prefix)),
      template_suffix_(std::move(spec.template_suffix)) {
  source = spec.source;
  const int64_t size = detail::checked_vocab_size(spec.vocab, spec.added_tokens, source, "WordPiece");
  id_to_token_.resize(size_t(size));
  special_.assign(size_t(size), false);
  std::vector<bool> seen(size_t(size), false);
  const std::string& prefix = spec.continuing_subword_prefix;
  for (auto& [tok, id] : spec.vocab) {
    if (seen[size_t(id)]) fail("{}: id {} is given to both '{}' and '{}'", source, id, id_to_token_[size_t(id)], tok);
    seen[size_t(id)] = true;
    id_to_token_[size_t(id)] = tok;
    all_tokens_.emplace(tok, id);
    word_start_.emplace(tok, id);
    if (tok.size() > prefix.size() && tok.compare(0, prefix.size(), prefix) == 0)
      continuation_.emplace(tok.substr(prefix.size()), id);
  }
  for (const auto& t : spec.added_tokens) {
    id_to_token_[size_t(t.id)] = t.content;  // HF decodes an added token's id to its content
    all_tokens_[t.content] = t.id;
    special_[size_t(t.id)] = t.special;
  }
  auto unk = word_start_.find(spec.unk_token);
  if (unk == word_start_.end())
    fail("{}: the unknown token '{}' is not in the vocabulary (WordPiece needs it for words it cannot split)", source,
         spec.unk_token);
  unk_id_ = unk->second;
  for (int32_t id : template_prefix_)
    if (id < 0 || id >= size) fail("{}: post-processor token id {} is outside the vocabulary [0, {})", source, id, size);
  for (int32_t id : template_suffix_)
    if (id < 0 || id >= size) fail("{}: post-processor token id {} is outside the vocabulary [0, {})", source, id, size);
}

// BertNormalizer::normalize: clean_text, then handle_chinese_chars, then strip_accents, then lowercase.
std::string WordPieceTokenizer::normalize(std::string_view text) const {
  if (!has_normalizer_) return std::string(text);
  std::string s;
  s.reserve(text.size() + 8);
  for (size_t i = 0; i < text.size();) {
    char32_t c;
    if (uint8_t(text[i]) < 0x80) {
      c = char32_t(uint8_t(text[i++]));
    } else {
      c = next_code_point(text, &i);
    }
    if (clean_text_) {
      if (c == 0 || c == 0xFFFD || is_bert_control(c)) continue;
      if (is_bert_whitespace(c)) c = ' ';
    }
    if (chinese_ && c >= 0x3400 && is_chinese_char(c)) {
      s.push_back(' ');
      append_utf8(&s, c);
      s.push_back(' ');
    } else {
      append_utf8(&s, c);
    }
  }
  if (strip_accents_) s = strip_accents(s);
  if (lowercase_) {
    if (is_ascii(s)) {
      for (char& ch : s)
        if (ch >= 'A' && ch <= 'Z') ch = char(ch + ('a' - 'A'));
    } else {
      std::string lower;
      lower.reserve(s.size());
      for (size_t i = 0; i < s.size();) append_lowercase(&lower, next_code_point(s, &i));
      s = std::move(lower);
    }
  }
  return s;
}

// models/wordpiece: the longest vocabulary piece at the start of what is left, "##"-prefixed after
// the first; if some rest has no piece, or the word is longer than max_input_chars_per_word
// characters, the whole word is one [UNK].
void WordPieceTokenizer::encode_word(std::string_view word, std::vector<int32_t>* ids) const {
  int64_t chars = 0;
  for (char ch : word) chars += (uint8_t(ch) & 0xC0) != 0x80;
  if (chars > max_chars_) {
    ids->push_back(unk_id_);
    return;
  }
  const size_t first = ids->size();
  size_t start = 0;
  while (start < word.size()) {
    const Vocab& vocab = start == 0 ? word_start_ : continuation_;
    size_t end = word.size();
    int32_t found = -1;
    while (start < end) {
      auto it = vocab.find(word.substr(start, end - start));
      if (it != vocab.end()) {
        found = it->second;
        break;
      }
      do --end;  // back one character
      while (end > start && (uint8_t(word[end]) & 0xC0) == 0x80);
    }
    if (found < 0) {
      ids->resize(first);
      ids->push_back(unk_id_);
      return;
    }
    ids->push_back(found);
    start = end;
  }
}

void WordPieceTokenizer::encode_word_cached(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.size() > kCacheMaxWordBytes) {
    encode_word(word, ids);
    return;
  }
  {
    std::lock_guard lock(cache_mutex_);
    auto it = cache_index_.find(word);
    if (it != cache_index_.end()) {
      const auto& cached = cache_ids_[size_t(it->second)];
      ids->insert(ids->end(), cached.begin(), cached.end());
      return;
    }
  }
  const size_t before = ids->size();
  encode_word(word, ids);
  std::lock_guard lock(cache_mutex_);
  if (cache_ids_.size() >= kCacheMaxEntries) {
    cache_index_.clear();
    cache_ids_.clear();
  }
  cache_index_.emplace(std::string(word), int32_t(cache_ids_.size()));
  cache_ids_.emplace_back(ids->begin() + std::ptrdiff_t(before), ids->end());
}

// Normalized text -> pre-tokenized words -> ids.
void WordPieceTokenizer::encode_plain(std::string_view text, std::vector<int32_t>* ids) const {
  if (pre_tokenizer_ == WordPieceSpec::PreTokenizer::none) {
    if (!text.empty()) encode_word_cached(text, ids);
    return;
  }
  const bool split_punct = pre_tokenizer_ == WordPieceSpec::PreTokenizer::bert;
  size_t word_begin = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    char32_t c;
    if (uint8_t(text[i]) < 0x80) {
      c = char32_t(uint8_t(text[i++]));
    } else {
      c = next_code_point(text, &i);
    }
    if (is_bert_whitespace(c)) {  // a delimiter, removed
      if (word_begin < at) encode_word_cached(text.substr(word_begin, at - word_begin), ids);
      word_begin = i;
    } else if (split_punct && is_bert_punctuation(c)) {  // a word of its own
      if (word_begin < at) encode_word_cached(text.substr(word_begin, at - word_begin), ids);
      encode_word_cached(text.substr(at, i - at), ids);
      word_begin = i;
    }
  }
  if (word_begin < text.size()) encode_word_cached(text.substr(word_begin), ids);
}

std::vector<int32_t> WordPieceTokenizer::encode(std::string_view input) const {
  const std::string text = utf8_lossy(input);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 4);
  for (const auto& span : raw_added_.split(text)) {
    if (span.id >= 0) {
      ids.push_back(span.id);
      continue;
    }
    const std::string norm = normalize(std::string_view(text).substr(span.begin, span.end - span.begin));
    if (normalized_added_.empty()) {
      encode_plain(norm, &ids);
      continue;
    }
    for (const auto& sub : normalized_added_.split(norm)) {
      if (sub.id >= 0) ids.push_back(sub.id);
      else encode_plain(std::string_view(norm).substr(sub.begin, sub.end - sub.begin), &ids);
    }
  }
  return ids;
}

std::vector<int32_t> WordPieceTokenizer::encode_with_special(std::string_view text) const {
  std::vector<int32_t> ids = template_prefix_;
  const auto body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), template_suffix_.begin(), template_suffix_.end());
  return ids;
}

// decoders/wordpiece.rs: a token that starts with the prefix joins the previous one, any other is
// preceded by a space (except the first); cleanup then removes spaces before . ? ! , per token.
std::string WordPieceTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  size_t n = 0;  // tokens emitted so far
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    if (id < 0 || size_t(id) >= id_to_token_.size())
      fail("{}: cannot decode id {} at position {}: outside the vocabulary [0, {})", source, id, k, id_to_token_.size());
    if (skip_special && special_[size_t(id)]) continue;
    const std::string& tok = id_to_token_[size_t(id)];
    if (!has_decoder_) {  // HF joins with spaces when there is no decoder
      if (n++) out.push_back(' ');
      out += tok;
      continue;
    }
    std::string piece;
    if (n == 0) {
      piece = tok;
    } else if (!decoder_prefix_.empty() && tok.compare(0, decoder_prefix_.size(), decoder_prefix_) == 0) {
      piece = tok.substr(decoder_prefix_.size());
    } else {
      piece = " " + tok;
    }
    if (decoder_cleanup_) cleanup_token(&piece);
    out += piece;
    ++n;
  }
  return out;
}

// ---- tokenizer.json --------------------------------------------------------------------------------

struct JsonFields {
  const json& j;
  std::string file, where;  // where: "normalizer", "model", ... for messages

  const json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  bool get_bool(const char* key, bool dflt) const {
    const json* v = find(key);
    if (!v) return dflt;
    if (!v->is_boolean()) fail("{}: {} field '{}' must be true or false, found {}", file, where, key, v->dump());
    return v->get<bool>();
  }
  std::string get_string(const char* key, const std::string& dflt) const {
    const json* v = find(key);
    if (!v) return dflt;
    if (!v->is_string()) fail("{}: {} field '{}' must be a string, found {}", file, where, key, v->dump());
    return v->get<std::string>();
  }
};

std::string type_of(const json& j, const std::string& file, const char* where) {
  if (!j.is_object()) fail("{}: '{}' must be an object or null, found {}", file, where, j.type_name());
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) fail("{}: '{}' has no 'type' string", file, where);
  return it->get<std::string>();
}

std::vector<AddedToken> parse_added_tokens(const json& j, const std::string& file) {
  std::vector<AddedToken> out;
  auto it = j.find("added_tokens");
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) fail("{}: 'added_tokens' must be an array, found {}", file, it->type_name());
  for (const json& a : *it) {
    if (!a.is_object()) fail("{}: each added token must be an object, found {}", file, a.dump());
    AddedToken t;
    auto id = a.find("id");
    if (id == a.end() || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() > INT32_MAX)
      fail("{}: added token {} has no valid 'id'", file, a.dump());
    t.id = id->get<int32_t>();
    JsonFields f{a, file, "added token " + std::to_string(t.id)};
    if (!f.find("content")) fail("{}: added token {} has no 'content'", file, t.id);
    t.content = f.get_string("content", "");
    t.special = f.get_bool("special", false);
    t.single_word = f.get_bool("single_word", false);
    t.lstrip = f.get_bool("lstrip", false);
    t.rstrip = f.get_bool("rstrip", false);
    t.normalized = f.get_bool("normalized", !t.special);
    out.push_back(std::move(t));
  }
  return out;
}

// TemplateProcessing "single" ([CLS] $A [SEP]) or BertProcessing: the ids around one sequence.
void parse_post_processor(const json& j, const std::string& file, WordPieceSpec* spec) {
  if (j.is_null()) return;
  const std::string type = type_of(j, file, "post_processor");
  if (type == "TemplateProcessing") {
    auto single = j.find("single");
    if (single == j.end() || !single->is_array())
      fail("{}: post_processor TemplateProcessing needs a 'single' array", file);
    const json specials = j.value("special_tokens", json::object());
    int sequences = 0;
    for (const json& item : *single) {
      if (item.is_object() && item.contains("Sequence")) {
        ++sequences;
      } else if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object() &&
                 item["SpecialToken"].contains("id") && item["SpecialToken"]["id"].is_string()) {
        const std::string name = item["SpecialToken"]["id"].get<std::string>();
        if (!specials.is_object() || !specials.contains(name) || !specials[name].is_object() ||
            !specials[name].contains("ids") || !specials[name]["ids"].is_array())
          fail("{}: post_processor template names special token '{}' that its special_tokens do not define", file, name);
        auto& dst = sequences ? spec->template_suffix : spec->template_prefix;
        for (const json& v : specials[name]["ids"]) {
          if (!v.is_number_integer()) fail("{}: post_processor special token '{}' has a non-integer id {}", file, name, v.dump());
          dst.push_back(v.get<int32_t>());
        }
      } else {
        fail("{}: post_processor TemplateProcessing has an unknown item {} in 'single'", file, item.dump());
      }
    }
    if (sequences != 1) fail("{}: post_processor TemplateProcessing 'single' must hold one Sequence, found {}", file, sequences);
  } else if (type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {  // ["[CLS]", 101]
      auto v = j.find(key);
      if (v == j.end() || !v->is_array() || v->size() != 2 || !(*v)[1].is_number_integer())
        fail("{}: post_processor BertProcessing field '{}' must be [token, id]", file, key);
      (std::string(key) == "cls" ? spec->template_prefix : spec->template_suffix).push_back((*v)[1].get<int32_t>());
    }
  } else {
    fail("{}: post_processor type '{}' is not supported with a WordPiece model (lowbit reads TemplateProcessing "
         "and BertProcessing)", file, type);
  }
}

}  // namespace

std::unique_ptr<TokenizerBase> load_wordpiece_tokenizer_json(const json& j, const fs::path& path) {
  const std::string file = path.string();
  WordPieceSpec spec;
  spec.source = file;
  const json& model = j.at("model");
  JsonFields m{model, file, "model"};
  const json* vocab = m.find("vocab");
  if (!vocab || !vocab->is_object() || vocab->empty())
    fail("{}: WordPiece model 'vocab' must be a non-empty object of token -> id", file);
  spec.vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      fail("{}: vocab entry '{}' must have a non-negative integer id, found {}", file, it.key(), it.value().dump());
    spec.vocab.emplace_back(it.key(), it.value().get<int32_t>());
  }
  spec.unk_token = m.get_string("unk_token", "[UNK]");
  spec.continuing_subword_prefix = m.get_string("continuing_subword_prefix", "##");
  if (const json* v = m.find("max_input_chars_per_word")) {
    if (!v->is_number_integer() || v->get<int64_t>() < 0)
      fail("{}: model field 'max_input_chars_per_word' must be a non-negative integer, found {}", file, v->dump());
    spec.max_input_chars_per_word = v->get<int64_t>();
  }
  spec.added_tokens = parse_added_tokens(j, file);

  const json normalizer = j.value("normalizer", json());
  if (normalizer.is_null()) {
    spec.has_normalizer = false;
  } else {
    const std::string type = type_of(normalizer, file, "normalizer");
    if (type != "BertNormalizer")
      fail("{}: normalizer type '{}' is not supported with a WordPiece model (lowbit implements BertNormalizer)", file, type);
    JsonFields n{normalizer, file, "normalizer"};
    spec.clean_text = n.get_bool("clean_text", true);
    spec.handle_chinese_chars = n.get_bool("handle_chinese_chars", true);
    spec.lowercase = n.get_bool("lowercase", true);
    if (n.find("strip_accents")) spec.strip_accents = n.get_bool("strip_accents", false);
  }
  const json pre = j.value("pre_tokenizer", json());
  if (pre.is_null()) {
    spec.pre_tokenizer = WordPieceSpec::PreTokenizer::none;
  } else {
    const std::string type = type_of(pre, file, "pre_tokenizer");
    if (type == "BertPreTokenizer") spec.pre_tokenizer = WordPieceSpec::PreTokenizer::bert;
    else if (type == "WhitespaceSplit") spec.pre_tokenizer = WordPieceSpec::PreTokenizer::whitespace_split;
    else
      fail("{}: pre_tokenizer type '{}' is not supported with a WordPiece model (lowbit implements BertPreTokenizer "
           "and WhitespaceSplit)", file, type);
  }
  const json decoder = j.value("decoder", json());
  if (decoder.is_null()) {
    spec.has_decoder = false;
  } else {
    const std::string type = type_of(decoder, file, "decoder");
    if (type != "WordPiece")
      fail("{}: decoder type '{}' is not supported with a WordPiece model (lowbit implements the WordPiece decoder)",
           file, type);
    JsonFields d{decoder, file, "decoder"};
    spec.decoder_prefix = d.get_string("prefix", "##");
    spec.decoder_cleanup = d.get_bool("cleanup", true);
  }
  parse_post_processor(j.value("post_processor", json()), file, &spec);
  auto tok = std::make_unique<WordPieceTokenizer>(std::move(spec));
  tok->set_bos_eos(-1, -1);  // BERT-style inputs have [CLS]/[SEP] from the template, no BOS/EOS
  tok->set_add_bos(false);
  return tok;
}

// ---- vocab.txt + tokenizer_config.json -----------------------------------------------------------------

std::unique_ptr<TokenizerBase> load_wordpiece_vocab_txt(const fs::path& vocab_txt, const fs::path& config_json) {
  const std::string file = vocab_txt.string();
  WordPieceSpec spec;
  spec.source = file;

  // One token per line; the line number (from 0) is its id. Lines end in "\n" or "\r\n".
  const std::string text = read_file(vocab_txt, size_t(256) << 20);
  std::unordered_map<std::string_view, size_t> line_of;
  size_t pos = 0, line = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view tok(text.data() + pos, end - pos);
    pos = end + 1;
    ++line;
    if (!tok.empty() && tok.back() == '\r') tok.remove_suffix(1);
    if (tok.empty()) fail("{}: line {} is empty; vocab.txt must hold one token per line", file, line);
    if (!is_valid_utf8(tok)) fail("{}: line {} is not valid UTF-8", file, line);
    auto [it, inserted] = line_of.emplace(tok, line);
    if (!inserted) fail("{}: line {} repeats the token '{}' of line {}; each token must appear once", file, line, tok, it->second);
    spec.vocab.emplace_back(std::string(tok), int32_t(line - 1));
  }
  if (spec.vocab.empty()) fail("{}: the vocabulary is empty (expected one token per line)", file);

  // tokenizer_config.json: BertTokenizer's arguments (defaults as in tokenization_bert.py).
  json cfg = json::object();
  std::error_code ec;
  const std::string cfg_file = config_json.string();
  const bool have_cfg = !config_json.empty() && fs::exists(config_json, ec);
  if (have_cfg) {
    try {
      cfg = parse_json(read_file(config_json, size_t(64) << 20), config_json.string());
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", cfg_file, e.what());
    }
    if (!cfg.is_object()) fail("{}: must be a JSON object, found {}", cfg_file, cfg.type_name());
    spec.source = file + " + " + cfg_file;
  }
  JsonFields c{cfg, cfg_file, "tokenizer_config"};
  spec.lowercase = c.get_bool("do_lower_case", true);
  if (c.find("strip_accents")) spec.strip_accents = c.get_bool("strip_accents", false);
  spec.handle_chinese_chars = c.get_bool("tokenize_chinese_chars", true);
  auto token_string = [&](const char* key, const char* dflt) -> std::string {
    const json* v = c.find(key);
    if (!v) return dflt;
    if (v->is_string()) return v->get<std::string>();
    if (v->is_object() && v->contains("content") && (*v)["content"].is_string()) return (*v)["content"].get<std::string>();
    fail("{}: '{}' must be a string or an object with a 'content' string, found {}", cfg_file, key, v->dump());
  };
  spec.unk_token = token_string("unk_token", "[UNK]");
  const std::string cls = token_string("cls_token", "[CLS]"), sep = token_string("sep_token", "[SEP]");
  const std::string pad = token_string("pad_token", "[PAD]"), mask = token_string("mask_token", "[MASK]");

  std::unordered_map<std::string_view, int32_t> id_of;
  for (const auto& [tok, id] : spec.vocab) id_of.emplace(tok, id);
  // added_tokens_decoder {"id": {"content", "special", ...}} as transformers saves it.
  if (const json* added = c.find("added_tokens_decoder")) {
    if (!added->is_object()) fail("{}: 'added_tokens_decoder' must be an object of id -> token", cfg_file);
    for (auto it = added->begin(); it != added->end(); ++it) {
      char* end = nullptr;
      const long long id = std::strtoll(it.key().c_str(), &end, 10);
      if (it.key().empty() || *end != '\0' || id < 0 || id > INT32_MAX)
        fail("{}: added_tokens_decoder key '{}' is not a token id", cfg_file, it.key());
      if (!it.value().is_object()) fail("{}: added_tokens_decoder '{}' must be an object", cfg_file, it.key());
      JsonFields f{it.value(), cfg_file, "added_tokens_decoder " + it.key()};
      AddedToken t;
      t.id = int32_t(id);
      t.content = f.get_string("content", "");
      if (t.content.empty()) fail("{}: added_tokens_decoder '{}' has no 'content'", cfg_file, it.key());
      t.special = f.get_bool("special", false);
      t.single_word = f.get_bool("single_word", false);
      t.lstrip = f.get_bool("lstrip", false);
      t.rstrip = f.get_bool("rstrip", false);
      t.normalized = f.get_bool("normalized", !t.special);
      spec.added_tokens.push_back(std::move(t));
    }
  }
  // The special tokens are split out of the raw text (special, not normalized), as BertTokenizer does.
  const std::string unk = spec.unk_token;
  for (const std::string* name : {&pad, &unk, &cls, &sep, &mask}) {
    auto it = id_of.find(*name);
    if (it == id_of.end()) continue;
    bool listed = false;
    for (const auto& t : spec.added_tokens) listed |= t.content == *name;
    if (!listed) spec.added_tokens.push_back({it->second, *name, true, false, false, false, false});
  }
  for (const auto& [name, key] : {std::pair{&cls, "cls_token"}, std::pair{&sep, "sep_token"}})
    if (!id_of.count(*name))
      fail("{}: {} '{}' is not in the vocabulary ({}); BERT inputs need it", file, key, *name,
           have_cfg ? cfg_file : "the default");
  spec.template_prefix = {id_of.at(cls)};
  spec.template_suffix = {id_of.at(sep)};
  auto tok = std::make_unique<WordPieceTokenizer>(std::move(spec));
  tok->set_bos_eos(-1, -1);
  tok->set_add_bos(false);
  return tok;
}

}  // namespace lowbit::detail

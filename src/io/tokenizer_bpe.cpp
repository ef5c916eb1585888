// Byte-pair encoding as Hugging Face `tokenizers` does it, for tokenizer.json files (BPE model with
// SentencePiece-style Metaspace + byte fallback, or GPT-2 byte-level) and for vocab.json + merges.txt.
//
// Behaviour follows the Rust sources of huggingface/tokenizers (read, not copied):
//   tokenizer/added_vocabulary.rs  find_matches, extract_and_normalize (added tokens first)
//   pre_tokenizers/metaspace.rs    replace ' ', prepend_scheme always/first/never, split
//   pre_tokenizers/byte_level.rs   bytes_char table, GPT-2 regex, add_prefix_space
//   models/bpe/model.rs            merge_word (byte fallback, unk / fuse_unk, subword prefix)
//   models/bpe/word.rs             Word::merge_all (heap ordered by (rank, position))
//   decoders/*.rs                  Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace
// Text that is not valid UTF-8 is first repaired (invalid bytes become U+FFFD), since HF only ever
// sees valid Rust strings.
#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "lowbit/core/error.h"
#include "lowbit/io/json.h"
#include "lowbit/core/file.h"
#include "tokenizer_internal.h"
#include "tokenizer_wordpiece.h"

namespace lowbit {
namespace detail {

using nlohmann::json;

// ---- UTF-8 -------------------------------------------------------------------------------------

char32_t next_code_point(std::string_view s, size_t* pos) {
  const size_t n = s.size();
  size_t i = *pos;
  const auto b0 = uint8_t(s[i]);
  if (b0 < 0x80) {
    *pos = i + 1;
    return b0;
  }
  int need;            // continuation bytes still to read
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    *pos = i + 1;
    return 0xFFFD;
  }
  ++i;
  for (int k = 0; k < need; ++k, ++i) {
    if (i >= n) {
      *pos = i;
      return 0xFFFD;
    }
    const auto b = uint8_t(s[i]);
    if (b < lo || b > hi) {  // maximal subpart ends before this byte
      *pos = i;
      return 0xFFFD;
    }
    lo = 0x80, hi = 0xBF;
    cp = (cp << 6) | (b & 0x3F);
  }
  *pos = i;
  return cp;
}

void append_utf8(std::string* out, char32_t cp) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t at = i;
    if (uint8_t(s[i]) < 0x80) {
      ++i;
      continue;
    }
    // A genuine U+FFFD in the input is fine; only a replacement produced by an error is not.
    const char32_t cp = next_code_point(s, &i);
    if (cp == 0xFFFD && !(i - at == 3 && s.substr(at, 3) == "\xEF\xBF\xBD")) return false;
  }
  return true;
}

std::string utf8_lossy(std::string_view s) {
  if (is_valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) append_utf8(&out, next_code_point(s, &i));
  return out;
}

namespace {

std::vector<char32_t> to_code_points(std::string_view s, std::vector<uint32_t>* offsets = nullptr) {
  std::vector<char32_t> cps;
  cps.reserve(s.size());
  if (offsets) offsets->clear();
  size_t i = 0;
  while (i < s.size()) {
    if (offsets) offsets->push_back(uint32_t(i));
    cps.push_back(next_code_point(s, &i));
  }
  if (offsets) offsets->push_back(uint32_t(s.size()));
  return cps;
}

// ---- Unicode classes (ICU), as Oniguruma / Rust see them -----------------------------------------

bool is_letter(char32_t c) {  // \p{L}
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  const int8_t t = u_charType(UChar32(c));
  return t == U_UPPERCASE_LETTER || t == U_LOWERCASE_LETTER || t == U_TITLECASE_LETTER ||
         t == U_MODIFIER_LETTER || t == U_OTHER_LETTER;
}
bool is_number(char32_t c) {  // \p{N}
  if (c < 0x80) return c >= '0' && c <= '9';
  const int8_t t = u_charType(UChar32(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}
bool is_space(char32_t c) {  // \s (Unicode White_Space), Rust char::is_whitespace
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_hasBinaryProperty(UChar32(c), UCHAR_WHITE_SPACE);
}
bool is_alphanumeric(char32_t c) {  // Rust char::is_alphanumeric: Alphabetic or Numeric
  return u_hasBinaryProperty(UChar32(c), UCHAR_ALPHABETIC) || is_number(c);
}

}  // namespace

// ---- added tokens --------------------------------------------------------------------------------

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  std::erase_if(tokens_, [](const AddedToken& t) { return t.content.empty(); });
  std::stable_sort(tokens_.begin(), tokens_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  by_first_byte_.resize(256);
  for (uint32_t i = 0; i < tokens_.size(); ++i) by_first_byte_[uint8_t(tokens_[i].content[0])].push_back(i);
}

std::vector<AddedTokenMatcher::Span> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Span> spans;
  size_t start_offset = 0;  // end of the last emitted match
  size_t cursor = 0;        // where the search for the next match starts (non-overlapping matches)
  while (cursor < text.size()) {
    // Leftmost-longest match at or after cursor.
    const AddedToken* hit = nullptr;
    size_t at = cursor;
    for (; at < text.size() && !hit; ++at) {
      for (uint32_t i : by_first_byte_[uint8_t(text[at])]) {
        const std::string& c = tokens_[i].content;
        if (text.compare(at, c.size(), c) == 0) {
          hit = &tokens_[i];  // longest first
          break;
        }
      }
      if (hit) break;
    }
    if (!hit) break;
    size_t begin = at, end = at + hit->content.size();
    cursor = end;
    if (hit->single_word) {  // must not touch a word character on either side
      bool start_ok = true, stop_ok = true;
      if (begin > 0) {  // last code point before the match
        size_t p = begin - 1;
        while (p > 0 && (uint8_t(text[p]) & 0xC0) == 0x80) --p;
        size_t q = p;
        start_ok = !is_alphanumeric(next_code_point(text, &q));
      }
      if (end < text.size()) {
        size_t q = end;
        stop_ok = !is_alphanumeric(next_code_point(text, &q));
      }
      if (!start_ok || !stop_ok) continue;
    }
    if (hit->lstrip) {  // swallow the whitespace before the match (not what an earlier match took)
      size_t p = begin;
      while (p > 0) {
        size_t q = p - 1;
        while (q > 0 && (uint8_t(text[q]) & 0xC0) == 0x80) --q;
        size_t r = q;
        if (!is_space(next_code_point(text, &r))) break;
        p = q;
      }
      begin = std::max(p, start_offset);
    }
    if (hit->rstrip) {
      size_t p = end;
      while (p < text.size()) {
        size_t q = p;
        if (!is_space(next_code_point(text, &q))) break;
        p = q;
      }
      end = p;
    }
    if (start_offset < begin) spans.push_back({-1, start_offset, begin});
    spans.push_back({hit->id, begin, end});
    start_offset = end;
    cursor = std::max(cursor, end);
  }
  if (start_offset < text.size()) spans.push_back({-1, start_offset, text.size()});
  return spans;
}

// ---- GPT-2 byte level ------------------------------------------------------------------------------

char32_t byte_to_unicode(uint8_t b) {
  // Printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves, the other 68 to 256, 257, ...
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
      t[i] = printable ? char32_t(i) : next++;
    }
    return t;
  }();
  return table[b];
}

namespace {

// Inverse of byte_to_unicode; -1 for code points outside the table.
int unicode_to_byte(char32_t cp) {
  static const std::array<int16_t, 324> table = [] {
    std::array<int16_t, 324> t{};
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_unicode(uint8_t(b))] = int16_t(b);
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

// GPT-2's pre-tokenizer regex, matched by hand on code points (Oniguruma semantics):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Returns the byte ranges of the matches; together they cover the whole text.
std::vector<std::pair<size_t, size_t>> split_gpt2(std::string_view text) {
  std::vector<uint32_t> off;
  const std::vector<char32_t> cp = to_code_points(text, &off);
  const size_t n = cp.size();
  std::vector<std::pair<size_t, size_t>> out;
  auto is_other = [](char32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); };
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    const char32_t c = cp[i];
    if (c == '\'' && i + 1 < n) {  // contractions (case-sensitive, as in GPT-2)
      const char32_t d = cp[i + 1];
      if (d == 's' || d == 't' || d == 'm' || d == 'd') {
        j = i + 2;
      } else if (i + 2 < n && ((d == 'r' && cp[i + 2] == 'e') || (d == 'v' && cp[i + 2] == 'e') ||
                               (d == 'l' && cp[i + 2] == 'l'))) {
        j = i + 3;
      }
    }
    if (j == i) {
      const size_t k = (c == ' ' && i + 1 < n) ? i + 1 : i;  // the optional leading space
      if (is_letter(cp[k])) {
        j = k;
        while (j < n && is_letter(cp[j])) ++j;
      } else if (is_number(cp[k])) {
        j = k;
        while (j < n && is_number(cp[j])) ++j;
      } else if (is_other(cp[k])) {
        j = k;
        while (j < n && is_other(cp[j])) ++j;
      } else {
        // c is whitespace: \s+(?!\S) takes the run but leaves its last character when a non-space
        // follows; a single whitespace character before a non-space falls to \s+.
        size_t e = i;
        while (e < n && is_space(cp[e])) ++e;
        j = (e < n && e - i > 1) ? e - 1 : e;
      }
    }
    out.emplace_back(off[i], off[j]);
    i = j;
  }
  return out;
}

// ---- normalizers -------------------------------------------------------------------------------

void replace_all(std::string* s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s->find(from, pos);
    if (hit == std::string::npos) break;
    out.append(*s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  if (pos == 0) return;
  out.append(*s, pos);
  *s = std::move(out);
}

std::string icu_normalize(const std::string& s, NormalizerStep::Kind kind) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = nullptr;
  switch (kind) {
    case NormalizerStep::Kind::nfc: norm = icu::Normalizer2::getNFCInstance(status); break;
    case NormalizerStep::Kind::nfkc: norm = icu::Normalizer2::getNFKCInstance(status); break;
    case NormalizerStep::Kind::nfd: norm = icu::Normalizer2::getNFDInstance(status); break;
    default: norm = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status)) fail("ICU: cannot load the Unicode normalizer: {}", u_errorName(status));
  std::string out;
  icu::StringByteSink<std::string> sink(&out, int32_t(s.size()));
  norm->normalizeUTF8(0, icu::StringPiece(s.data(), int32_t(s.size())), sink, nullptr, status);
  if (U_FAILURE(status)) fail("ICU: Unicode normalization failed: {}", u_errorName(status));
  return out;
}

void apply_normalizer(const std::vector<NormalizerStep>& steps, std::string* s) {
  for (const NormalizerStep& st : steps) {
    if (s->empty()) return;
    switch (st.kind) {
      case NormalizerStep::Kind::prepend: s->insert(0, st.a); break;
      case NormalizerStep::Kind::replace: replace_all(s, st.a, st.b); break;
      case NormalizerStep::Kind::lowercase: {
        std::string out;
        icu::UnicodeString::fromUTF8(*s).toLower(icu::Locale::getRoot()).toUTF8String(out);
        *s = std::move(out);
        break;
      }
      case NormalizerStep::Kind::strip: {
        std::vector<uint32_t> off;
        const auto cps = to_code_points(*s, &off);
        size_t b = 0, e = cps.size();
        if (st.left)
          while (b < e && is_space(cps[b])) ++b;
        if (st.right)
          while (e > b && is_space(cps[e - 1])) --e;
        *s = s->substr(off[b], off[e] - off[b]);
        break;
      }
      default: *s = icu_normalize(*s, st.kind); break;
    }
  }
}

// ---- pre-tokenizers ------------------------------------------------------------------------------

struct Piece {
  std::string text;
  bool at_start;  // begins at offset 0 of the original text (Metaspace prepend_scheme "first")
};

// Splits p on occurrences of delim (HF SplitDelimiterBehavior), appending the non-empty parts.
void split_on(const Piece& p, std::string_view delim, PreTokenizerStep::Behavior behavior, std::vector<Piece>* out) {
  using B = PreTokenizerStep::Behavior;
  std::vector<std::pair<size_t, size_t>> parts;  // byte ranges
  size_t pos = 0, start = 0;
  std::vector<std::pair<size_t, size_t>> hits;
  while (!delim.empty() && (pos = p.text.find(delim, pos)) != std::string::npos) {
    hits.emplace_back(pos, pos + delim.size());
    pos += delim.size();
  }
  if (behavior == B::contiguous) {  // merge adjacent delimiters into one
    std::vector<std::pair<size_t, size_t>> merged;
    for (auto h : hits) {
      if (!merged.empty() && merged.back().second == h.first) merged.back().second = h.second;
      else merged.push_back(h);
    }
    hits = std::move(merged);
  }
  size_t carry = 0;  // merged_with_next: start of the pending delimiter
  bool pending = false;
  for (auto [hb, he] : hits) {
    switch (behavior) {
      case B::removed: parts.emplace_back(start, hb); break;
      case B::isolated:
      case B::contiguous:
        parts.emplace_back(start, hb);
        parts.emplace_back(hb, he);
        break;
      case B::merged_with_previous: parts.emplace_back(start, he); break;
      case B::merged_with_next:
        parts.emplace_back(pending ? carry : start, hb);
        carry = hb, pending = true;
        break;
    }
    start = he;
  }
  parts.emplace_back(behavior == B::merged_with_next && pending ? carry : start, p.text.size());
  for (auto [b, e] : parts)
    if (e > b) out->push_back({p.text.substr(b, e - b), p.at_start && b == 0});
}

void pre_tokenize_step(const PreTokenizerStep& st, std::vector<Piece>* pieces) {
  using K = PreTokenizerStep::Kind;
  std::vector<Piece> out;
  out.reserve(pieces->size());
  for (Piece& p : *pieces) {
    switch (st.kind) {
      case K::metaspace: {
        replace_all(&p.text, " ", st.replacement);
        const bool starts = p.text.compare(0, st.replacement.size(), st.replacement) == 0;
        if (!starts && (st.prepend == PreTokenizerStep::Prepend::always ||
                        (st.prepend == PreTokenizerStep::Prepend::first && p.at_start)))
          p.text.insert(0, st.replacement);
        if (st.split) split_on(p, st.replacement, PreTokenizerStep::Behavior::merged_with_next, &out);
        else out.push_back(std::move(p));
        break;
      }
      case K::byte_level: {
        if (st.add_prefix_space && p.text[0] != ' ') p.text.insert(0, " ");
        std::vector<std::pair<size_t, size_t>> ranges;
        if (st.use_regex) ranges = split_gpt2(p.text);
        else ranges.emplace_back(0, p.text.size());
        for (auto [b, e] : ranges) {
          Piece q{std::string(), p.at_start && b == 0};
          q.text.reserve((e - b) * 2);
          for (size_t i = b; i < e; ++i) append_utf8(&q.text, byte_to_unicode(uint8_t(p.text[i])));
          out.push_back(std::move(q));
        }
        break;
      }
      case K::split_string: split_on(p, st.pattern, st.behavior, &out); break;
      case K::digits: {
        std::vector<uint32_t> off;
        const auto cps = to_code_points(p.text, &off);
        size_t i = 0;
        while (i < cps.size()) {
          size_t j = i + 1;
          const bool digit = is_number(cps[i]);  // HF uses char::is_numeric
          if (!digit || !st.individual_digits)
            while (j < cps.size() && is_number(cps[j]) == digit) ++j;
          out.push_back({p.text.substr(off[i], off[j] - off[i]), p.at_start && i == 0});
          i = j;
        }
        break;
      }
      case K::whitespace_split: {
        std::vector<uint32_t> off;
        const auto cps = to_code_points(p.text, &off);
        size_t i = 0;
        while (i < cps.size()) {
          while (i < cps.size() && is_space(cps[i])) ++i;
          size_t j = i;
          while (j < cps.size() && !is_space(cps[j])) ++j;
          if (j > i) out.push_back({p.text.substr(off[i], off[j] - off[i]), p.at_start && i == 0});
          i = j;
        }
        break;
      }
    }
  }
  *pieces = std::move(out);
}

// ---- the BPE tokenizer -------------------------------------------------------------------------

class BpeTokenizer final : public TokenizerBase {
 public:
  explicit BpeTokenizer(BpeSpec spec);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_with_special(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override;
  int vocab_size() const override { return int(id_to_token_.size()); }
  std::string token_text(int32_t id) const override {
    if (id < 0 || size_t(id) >= id_to_token_.size()) fail("{}: token id {} is outside the vocabulary [0, {})", source, id, id_to_token_.size());
    return id_to_token_[id];
  }
  bool is_special(int32_t id) const override { return id >= 0 && size_t(id) < special_.size() && special_[id]; }
  int32_t token_to_id(std::string_view token) const override {
    auto it = vocab_.find(std::string(token));
    return it == vocab_.end() ? -1 : it->second;
  }

 private:
  void encode_word(const std::string& word, std::vector<int32_t>* out) const;
  void merge_all(std::vector<int32_t>* ids) const;

  struct MergeTarget {
    int32_t rank, new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  std::unordered_map<std::string, int32_t> vocab_;  // model vocabulary plus added tokens
  std::vector<std::string> id_to_token_;
  std::vector<bool> special_;
  std::unordered_map<uint64_t, MergeTarget> merges_;
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> tokens, -1 when absent
  int32_t unk_id_ = -1;
  bool fuse_unk_, byte_fallback_, ignore_merges_;
  std::string prefix_, suffix_;
  AddedTokenMatcher raw_added_, normalized_added_;
  std::vector<NormalizerStep> normalizer_;
  std::vector<PreTokenizerStep> pre_tokenizer_;
  std::vector<DecoderStep> decoder_;
  std::vector<int32_t> template_prefix_, template_suffix_;

  // word -> ids for short words (pre-tokenized text repeats words a lot).
  static constexpr size_t kCacheMaxWordBytes = 64, kCacheMaxEntries = size_t(1) << 18;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

std::vector<AddedToken> filter_added(const std::vector<AddedToken>& all, bool normalized) {
  std::vector<AddedToken> out;
  for (const auto& t : all)
    if (t.normalized == normalized) out.push_back(t);
  return out;
}

BpeTokenizer::BpeTokenizer(BpeSpec spec)
    : fuse_unk_(spec.fuse_unk),
      byte_fallback_(spec.byte_fallback),
      ignore_merges_(spec.ignore_merges),
      prefix_(std::move(spec.continuing_subword_prefix)),
      suffix_(std::move(spec.end_of_word_suffix)),
      raw_added_(filter_added(spec.added_tokens, false)),
      normalized_added_(filter_added(spec.added_tokens, true)),
      normalizer_(std::move(spec.normalizer)),
      pre_tokenizer_(std::move(spec.pre_tokenizer)),
      decoder_(std::move(spec.decoder)),
      template_prefix_(std::move(spec.template_prefix)),
      template_suffix_(std::move(spec.template_suffix)) {
  source = spec.source;
  const int64_t size = detail::checked_vocab_size(spec.vocab, spec.added_tokens, source, "BPE");
  id_to_token_.resize(size_t(size));
  special_.assign(size_t(size), false);
  std::vector<bool> seen(size_t(size), false);
  vocab_.reserve(spec.vocab.size() * 2);
  for (auto& [tok, id] : spec.vocab) {
    if (seen[id]) fail("{}: id {} is given to both '{}' and '{}'", source, id, id_to_token_[id], tok);
    seen[id] = true;
    id_to_token_[id] = tok;
    vocab_.emplace(tok, id);
  }
  for (const auto& t : spec.added_tokens) {
    id_to_token_[t.id] = t.content;  // HF decodes an added token's id to its content
    vocab_[t.content] = t.id;
    special_[t.id] = t.special;
  }
  if (spec.unk_token) {
    auto it = vocab_.find(*spec.unk_token);
    if (it == vocab_.end()) fail("{}: unk_token '{}' is not in the vocabulary", source, *spec.unk_token);
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  // Merges: (left id, right id) -> (rank, id of the merged token). The merged token drops the
  // right part's continuing_subword_prefix, as HF does.
  merges_.reserve(spec.merges.size() * 2);
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [a, b] = spec.merges[rank];
    auto ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia == vocab_.end()) fail("{}: merge {} ('{} {}') names unknown token '{}'", source, rank, a, b, a);
    if (ib == vocab_.end()) fail("{}: merge {} ('{} {}') names unknown token '{}'", source, rank, a, b, b);
    std::string merged = a;
    merged += (!prefix_.empty() && b.compare(0, prefix_.size(), prefix_) == 0) ? b.substr(prefix_.size()) : b;
    auto im = vocab_.find(merged);
    if (im == vocab_.end()) fail("{}: merge {} ('{} {}') makes '{}', which is not in the vocabulary", source, rank, a, b, merged);
    merges_[pair_key(ia->second, ib->second)] = {int32_t(rank), im->second};  // a later duplicate wins, as in HF
  }
}

// HF Word::merge_all: repeatedly merge the adjacent pair of lowest rank (leftmost among equals),
// with a heap of candidate merges that are checked for staleness when popped. O(n log n).
void BpeTokenizer::merge_all(std::vector<int32_t>* ids) const {
  const size_t n = ids->size();
  if (n < 2 || merges_.empty()) return;
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  std::vector<Symbol> sym(n);
  for (size_t i = 0; i < n; ++i) sym[i] = {(*ids)[i], int32_t(i) - 1, i + 1 < n ? int32_t(i + 1) : -1, true};
  struct Candidate {
    int32_t rank, pos, new_id;
  };
  // std heap functions keep the largest on top: "larger" = higher rank, then higher position.
  auto later = [](const Candidate& x, const Candidate& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
  std::vector<Candidate> heap;
  heap.reserve(n);
  for (size_t i = 0; i + 1 < n; ++i) {
    auto it = merges_.find(pair_key(sym[i].id, sym[i + 1].id));
    if (it != merges_.end()) heap.push_back({it->second.rank, int32_t(i), it->second.new_id});
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& cur = sym[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    const int32_t right = cur.next;
    auto it = merges_.find(pair_key(cur.id, sym[right].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    sym[right].alive = false;
    cur.next = sym[right].next;
    if (cur.next >= 0) sym[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      auto m = merges_.find(pair_key(sym[cur.prev].id, cur.id));
      if (m != merges_.end()) {
        heap.push_back({m->second.rank, cur.prev, m->second.new_id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (cur.next >= 0) {
      auto m = merges_.find(pair_key(cur.id, sym[cur.next].id));
      if (m != merges_.end()) {
        heap.push_back({m->second.rank, top.pos, m->second.new_id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  ids->clear();
  for (const Symbol& s : sym)
    if (s.alive) ids->push_back(s.id);
}

// HF BPE::merge_word + Word::merge_all for one pre-tokenized word.
void BpeTokenizer::encode_word(const std::string& word, std::vector<int32_t>* out) const {
  if (ignore_merges_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  int32_t pending_unk = -1;  // fused unknown run waiting to be emitted
  std::string key;
  size_t i = 0;
  while (i < word.size()) {
    const size_t begin = i;
    next_code_point(word, &i);
    key.assign(word, begin, i - begin);
    if (begin > 0 && !prefix_.empty()) key.insert(0, prefix_);
    if (i == word.size() && !suffix_.empty()) key += suffix_;
    auto it = vocab_.find(key);
    if (it != vocab_.end()) {
      if (pending_unk >= 0) ids.push_back(pending_unk), pending_unk = -1;
      ids.push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : key) all = all && byte_ids_[b] >= 0;
      if (all) {  // (HF does not flush a pending unk here either)
        for (unsigned char b : key) ids.push_back(byte_ids_[b]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk >= 0 && !fuse_unk_) ids.push_back(pending_unk);
      pending_unk = unk_id_;
    }
    // With no unk token HF drops the character.
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
  merge_all(&ids);
  out->insert(out->end(), ids.begin(), ids.end());
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view input) const {
  const std::string text = utf8_lossy(input);
  std::vector<int32_t> ids;
  std::vector<Piece> pieces;
  auto encode_plain = [&](std::string s, bool at_start) {
    apply_normalizer(normalizer_, &s);
    for (const auto& span : normalized_added_.split(s)) {
      if (span.id >= 0) {
        ids.push_back(span.id);
        continue;
      }
      pieces.clear();
      pieces.push_back({s.substr(span.begin, span.end - span.begin), at_start && span.begin == 0});
      for (const auto& st : pre_tokenizer_) pre_tokenize_step(st, &pieces);
      for (const Piece& p : pieces) {
        if (p.text.empty()) continue;
        if (p.text.size() > kCacheMaxWordBytes) {
          encode_word(p.text, &ids);
          continue;
        }
        {
          std::lock_guard<std::mutex> lock(cache_mutex_);
          auto it = cache_.find(p.text);
          if (it != cache_.end()) {
            ids.insert(ids.end(), it->second.begin(), it->second.end());
            continue;
          }
        }
        const size_t before = ids.size();
        encode_word(p.text, &ids);
        std::lock_guard<std::mutex> lock(cache_mutex_);
        if (cache_.size() >= kCacheMaxEntries) cache_.clear();
        cache_.emplace(p.text, std::vector<int32_t>(ids.begin() + before, ids.end()));
      }
    }
  };
  for (const auto& span : raw_added_.split(text)) {
    if (span.id >= 0) ids.push_back(span.id);
    else encode_plain(text.substr(span.begin, span.end - span.begin), span.begin == 0);
  }
  return ids;
}

std::vector<int32_t> BpeTokenizer::encode_with_special(std::string_view text) const {
  std::vector<int32_t> ids = template_prefix_;
  const auto body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), template_suffix_.begin(), template_suffix_.end());
  return ids;
}

// ---- decoders ----------------------------------------------------------------------------------

void decode_step(const DecoderStep& st, std::vector<std::string>* tokens) {
  using K = DecoderStep::Kind;
  switch (st.kind) {
    case K::replace:
      for (auto& t : *tokens) replace_all(&t, st.a, st.b);
      break;
    case K::byte_fallback: {  // runs of <0xXX> become their bytes if valid UTF-8, else one U+FFFD each
      std::vector<std::string> out;
      std::string bytes;
      auto flush = [&] {
        if (bytes.empty()) return;
        if (is_valid_utf8(bytes)) out.push_back(bytes);
        else
          for (size_t k = 0; k < bytes.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
        bytes.clear();
      };
      for (auto& t : *tokens) {
        auto hex = [](char c) { return std::isxdigit(uint8_t(c)) != 0; };
        if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3]) && hex(t[4])) {
          bytes.push_back(char(std::stoi(t.substr(3, 2), nullptr, 16)));
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      *tokens = std::move(out);
      break;
    }
    case K::fuse: {
      std::string all;
      for (const auto& t : *tokens) all += t;
      tokens->assign(1, std::move(all));
      break;
    }
    case K::strip: {  // per token: up to `start` leading and `stop` trailing copies of the content char
      for (auto& t : *tokens) {
        std::vector<uint32_t> off;
        const auto cps = to_code_points(t, &off);
        size_t tmp = 0;
        const char32_t c = st.a.empty() ? U' ' : next_code_point(st.a, &tmp);
        size_t b = 0, e = cps.size();
        for (int k = 0; k < st.start && b < e && cps[b] == c; ++k) ++b;
        for (int k = 0; k < st.stop && e > b && cps[e - 1] == c; ++k) --e;
        t = t.substr(off[b], off[e] - off[b]);
      }
      break;
    }
    case K::byte_level: {  // map the GPT-2 characters back to bytes; tokens with other characters stay raw
      std::string bytes;
      for (const auto& t : *tokens) {
        std::string mapped;
        bool ok = true;
        size_t i = 0;
        while (i < t.size() && ok) {
          const int b = unicode_to_byte(next_code_point(t, &i));
          if (b < 0) ok = false;
          else mapped.push_back(char(b));
        }
        bytes += ok ? mapped : t;
      }
      tokens->assign(1, utf8_lossy(bytes));
      break;
    }
    case K::metaspace: {  // replacement -> ' ', dropped entirely in the first token (HF metaspace.rs)
      for (size_t k = 0; k < tokens->size(); ++k) {
        std::string& t = (*tokens)[k];
        replace_all(&t, st.a, (k == 0 && st.prepend_first) ? "" : " ");
      }
      break;
    }
  }
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    if (id < 0 || size_t(id) >= id_to_token_.size())
      fail("{}: cannot decode id {} at position {}: outside the vocabulary [0, {})", source, id, k, id_to_token_.size());
    if (skip_special && special_[id]) continue;
    tokens.push_back(id_to_token_[id]);
  }
  if (decoder_.empty()) {  // HF joins with spaces when there is no decoder
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k) out += (k ? " " : "") + tokens[k];
    return out;
  }
  for (const auto& st : decoder_) decode_step(st, &tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

// ---- tokenizer.json ----------------------------------------------------------------------------

const json& need(const json& j, const char* key, const std::string& file, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}: {} has no '{}' field", file, where, key);
  return *it;
}

std::string get_string(const json& j, const char* key, const std::string& file, const std::string& where) {
  const json& v = need(j, key, file, where);
  if (!v.is_string()) fail("{}: {} field '{}' must be a string, found {}", file, where, key, v.type_name());
  return v.get<std::string>();
}

bool get_bool(const json& j, const char* key, bool dflt, const std::string& file, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) fail("{}: {} field '{}' must be true or false, found {}", file, where, key, it->type_name());
  return it->get<bool>();
}

std::string get_type(const json& j, const std::string& file, const std::string& where) {
  if (!j.is_object()) fail("{}: {} must be an object, found {}", file, where, j.type_name());
  return get_string(j, "type", file, where);
}

// {"String": "x"} patterns only; regular expressions are not supported.
std::string string_pattern(const json& j, const std::string& file, const std::string& where) {
  const json& p = need(j, "pattern", file, where);
  if (p.is_object() && p.contains("String") && p["String"].is_string()) return p["String"].get<std::string>();
  fail("{}: {} has pattern {}; only {{\"String\": ...}} patterns are supported (no regular expressions)", file,
       where, p.dump());
}

// "Sequence" steps may nest; a hostile file nesting them thousands deep would exhaust the stack.
constexpr int kMaxSequenceNesting = 16;
void check_nesting(int depth, const std::string& file, const char* what) {
  if (depth > kMaxSequenceNesting)
    fail("{}: {} Sequence steps nest more than {} deep (corrupt or hostile file)", file, what, kMaxSequenceNesting);
}

void parse_normalizer(const json& j, const std::string& file, std::vector<NormalizerStep>* out, int depth = 0) {
  check_nesting(depth, file, "normalizer");
  if (j.is_null()) return;
  const std::string type = get_type(j, file, "normalizer");
  using K = NormalizerStep::Kind;
  const std::string where = "normalizer '" + type + "'";
  if (type == "Sequence") {
    const json& list = need(j, "normalizers", file, where);
    if (!list.is_array()) fail("{}: {} field 'normalizers' must be an array", file, where);
    for (const json& sub : list) parse_normalizer(sub, file, out, depth + 1);
  } else if (type == "Prepend") {
    out->push_back({K::prepend, get_string(j, "prepend", file, where), {}});
  } else if (type == "Replace") {
    out->push_back({K::replace, string_pattern(j, file, where), get_string(j, "content", file, where)});
  } else if (type == "NFC") {
    out->push_back({K::nfc, {}, {}});
  } else if (type == "NFKC") {
    out->push_back({K::nfkc, {}, {}});
  } else if (type == "NFD") {
    out->push_back({K::nfd, {}, {}});
  } else if (type == "NFKD") {
    out->push_back({K::nfkd, {}, {}});
  } else if (type == "Lowercase") {
    out->push_back({K::lowercase, {}, {}});
  } else if (type == "Strip") {
    NormalizerStep st{K::strip, {}, {}};
    st.left = get_bool(j, "strip_left", true, file, where);
    st.right = get_bool(j, "strip_right", true, file, where);
    out->push_back(st);
  } else {
    fail("{}: normalizer type '{}' is not supported (lowbit knows Sequence, Prepend, Replace, NFC, NFKC, NFD, "
         "NFKD, Lowercase, Strip)", file, type);
  }
}

PreTokenizerStep::Prepend parse_prepend_scheme(const json& j, const std::string& file, const std::string& where) {
  using P = PreTokenizerStep::Prepend;
  auto it = j.find("prepend_scheme");
  if (it != j.end() && !it->is_null()) {
    const std::string s = it->is_string() ? it->get<std::string>() : "";
    if (s == "always") return P::always;
    if (s == "first") return P::first;
    if (s == "never") return P::never;
    fail("{}: {} has prepend_scheme {}; expected \"always\", \"first\" or \"never\"", file, where, it->dump());
  }
  return get_bool(j, "add_prefix_space", true, file, where) ? P::always : P::never;  // older files
}

void parse_pre_tokenizer(const json& j, const std::string& file, std::vector<PreTokenizerStep>* out, int depth = 0) {
  check_nesting(depth, file, "pre_tokenizer");
  if (j.is_null()) return;
  const std::string type = get_type(j, file, "pre_tokenizer");
  const std::string where = "pre_tokenizer '" + type + "'";
  using K = PreTokenizerStep::Kind;
  PreTokenizerStep st{};
  if (type == "Sequence") {
    const json& list = need(j, "pretokenizers", file, where);
    if (!list.is_array()) fail("{}: {} field 'pretokenizers' must be an array", file, where);
    for (const json& sub : list) parse_pre_tokenizer(sub, file, out, depth + 1);
    return;
  } else if (type == "Metaspace") {
    st.kind = K::metaspace;
    st.replacement = get_string(j, "replacement", file, where);
    if (st.replacement.empty()) fail("{}: {} has an empty replacement", file, where);
    st.prepend = parse_prepend_scheme(j, file, where);
    st.split = get_bool(j, "split", true, file, where);
  } else if (type == "ByteLevel") {
    st.kind = K::byte_level;
    st.add_prefix_space = get_bool(j, "add_prefix_space", true, file, where);
    st.use_regex = get_bool(j, "use_regex", true, file, where);
  } else if (type == "Split") {
    st.kind = K::split_string;
    st.pattern = string_pattern(j, file, where);
    if (get_bool(j, "invert", false, file, where)) fail("{}: {} with invert=true is not supported", file, where);
    const std::string b = get_string(j, "behavior", file, where);
    using B = PreTokenizerStep::Behavior;
    if (b == "Removed") st.behavior = B::removed;
    else if (b == "Isolated") st.behavior = B::isolated;
    else if (b == "MergedWithPrevious") st.behavior = B::merged_with_previous;
    else if (b == "MergedWithNext") st.behavior = B::merged_with_next;
    else if (b == "Contiguous") st.behavior = B::contiguous;
    else fail("{}: {} has unknown behavior '{}'", file, where, b);
  } else if (type == "Digits") {
    st.kind = K::digits;
    st.individual_digits = get_bool(j, "individual_digits", false, file, where);
  } else if (type == "WhitespaceSplit") {
    st.kind = K::whitespace_split;
  } else {
    fail("{}: pre_tokenizer type '{}' is not supported (lowbit knows Sequence, Metaspace, ByteLevel, Split with a "
         "string pattern, Digits, WhitespaceSplit)", file, type);
  }
  out->push_back(st);
}

void parse_decoder(const json& j, const std::string& file, std::vector<DecoderStep>* out, int depth = 0) {
  check_nesting(depth, file, "decoder");
  if (j.is_null()) return;
  const std::string type = get_type(j, file, "decoder");
  const std::string where = "decoder '" + type + "'";
  using K = DecoderStep::Kind;
  DecoderStep st{};
  if (type == "Sequence") {
    const json& list = need(j, "decoders", file, where);
    if (!list.is_array()) fail("{}: {} field 'decoders' must be an array", file, where);
    for (const json& sub : list) parse_decoder(sub, file, out, depth + 1);
    return;
  } else if (type == "Replace") {
    st.kind = K::replace;
    st.a = string_pattern(j, file, where);
    st.b = get_string(j, "content", file, where);
  } else if (type == "ByteFallback") {
    st.kind = K::byte_fallback;
  } else if (type == "Fuse") {
    st.kind = K::fuse;
  } else if (type == "Strip") {
    st.kind = K::strip;
    st.a = get_string(j, "content", file, where);
    const json& s0 = need(j, "start", file, where);
    const json& s1 = need(j, "stop", file, where);
    if (!s0.is_number_unsigned() || !s1.is_number_unsigned() || s0.get<uint64_t>() > 1000 || s1.get<uint64_t>() > 1000)
      fail("{}: {} start/stop must be small non-negative integers", file, where);
    st.start = s0.get<int>(), st.stop = s1.get<int>();
  } else if (type == "ByteLevel") {
    st.kind = K::byte_level;
  } else if (type == "Metaspace") {
    st.kind = K::metaspace;
    st.a = get_string(j, "replacement", file, where);
    st.prepend_first = parse_prepend_scheme(j, file, where) != PreTokenizerStep::Prepend::never;
  } else {
    fail("{}: decoder type '{}' is not supported (lowbit knows Sequence, Replace, ByteFallback, Fuse, Strip, "
         "ByteLevel, Metaspace)", file, type);
  }
  out->push_back(st);
}

// ids of a special token named in a post-processor
std::vector<int32_t> template_ids(const json& specials, const std::string& name, const std::string& file) {
  if (!specials.is_object() || !specials.contains(name))
    fail("{}: post_processor template names special token '{}' that its special_tokens do not define", file, name);
  const json& ids = need(specials[name], "ids", file, "post_processor special token '" + name + "'");
  std::vector<int32_t> out;
  if (!ids.is_array()) fail("{}: post_processor special token '{}' ids must be an array", file, name);
  for (const json& v : ids) {
    if (!v.is_number_integer()) fail("{}: post_processor special token '{}' has a non-integer id", file, name);
    out.push_back(v.get<int32_t>());
  }
  return out;
}

void parse_post_processor(const json& j, const std::string& file, BpeSpec* spec, int depth = 0) {
  check_nesting(depth, file, "post_processor");
  if (j.is_null()) return;
  const std::string type = get_type(j, file, "post_processor");
  const std::string where = "post_processor '" + type + "'";
  auto pair_id = [&](const char* key) {  // Bert/Roberta: ["[CLS]", 101]
    const json& v = need(j, key, file, where);
    if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer()) fail("{}: {} field '{}' must be [token, id]", file, where, key);
    return v[1].get<int32_t>();
  };
  if (type == "Sequence") {
    const json& list = need(j, "processors", file, where);
    if (!list.is_array()) fail("{}: {} field 'processors' must be an array", file, where);
    for (const json& sub : list) parse_post_processor(sub, file, spec, depth + 1);
  } else if (type == "TemplateProcessing") {
    const json& single = need(j, "single", file, where);
    if (!single.is_array()) fail("{}: {} field 'single' must be an array", file, where);
    const json specials = j.value("special_tokens", json::object());
    bool seen_sequence = false;
    for (const json& item : single) {
      if (item.is_object() && item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object()) {
        const std::string name = get_string(item["SpecialToken"], "id", file, where + " SpecialToken");
        auto ids = template_ids(specials, name, file);
        auto& dst = seen_sequence ? spec->template_suffix : spec->template_prefix;
        dst.insert(dst.end(), ids.begin(), ids.end());
      } else {
        fail("{}: {} has an unknown item {} in 'single'", file, where, item.dump());
      }
    }
  } else if (type == "BertProcessing") {
    spec->template_prefix = {pair_id("cls")};
    spec->template_suffix = {pair_id("sep")};
  } else if (type == "RobertaProcessing") {
    spec->template_prefix = {pair_id("cls")};
    spec->template_suffix = {pair_id("sep")};
  } else if (type == "ByteLevel") {
    // only adjusts offsets
  } else {
    fail("{}: post_processor type '{}' is not supported", file, type);
  }
}

}  // namespace

std::unique_ptr<TokenizerBase> make_bpe_tokenizer(BpeSpec spec) { return std::make_unique<BpeTokenizer>(std::move(spec)); }

// Reads a tokenizer.json into a BpeSpec. Exposed to tokenizer.cpp through load_hf_tokenizer_json.
std::unique_ptr<TokenizerBase> load_hf_tokenizer_json_impl(const std::filesystem::path& path) {
  const std::string file = path.string();
  json j;
  try {
    j = parse_json(read_file(path, size_t(1) << 30), path.string());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", file, e.what());
  }
  if (!j.is_object()) fail("{}: a tokenizer.json must be a JSON object, found {}", file, j.type_name());
  BpeSpec spec;
  spec.source = file;
  const json& model = need(j, "model", file, "tokenizer.json");
  if (!model.is_object()) fail("{}: 'model' must be an object, found {}", file, model.type_name());
  const std::string type = model.contains("type") ? get_string(model, "type", file, "model") : "BPE";
  if (type == "WordPiece") return load_wordpiece_tokenizer_json(j, path);  // BERT family: tokenizer_wordpiece.cpp
  if (type != "BPE")
    fail("{}: model type '{}' is not supported (lowbit reads BPE and WordPiece tokenizer.json files; Unigram "
         "and WordLevel are not supported)", file, type);
  const json& vocab = need(model, "vocab", file, "model");
  if (!vocab.is_object()) fail("{}: model 'vocab' must be an object of token -> id, found {}", file, vocab.type_name());
  spec.vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) fail("{}: vocab entry '{}' must have an integer id, found {}", file, it.key(), it.value().dump());
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > INT32_MAX) fail("{}: vocab entry '{}' has id {}, out of range", file, it.key(), id);
    spec.vocab.emplace_back(it.key(), int32_t(id));
  }
  const json& merges = need(model, "merges", file, "model");
  if (!merges.is_array()) fail("{}: model 'merges' must be an array, found {}", file, merges.type_name());
  spec.merges.reserve(merges.size());
  for (size_t k = 0; k < merges.size(); ++k) {
    const json& m = merges[k];
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail("{}: merge {} \"{}\" must be two tokens separated by one space", file, k, s);
      spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      fail("{}: merge {} must be \"a b\" or [\"a\", \"b\"], found {}", file, k, m.dump());
    }
  }
  auto opt_string = [&](const char* key) -> std::string {
    auto it = model.find(key);
    if (it == model.end() || it->is_null()) return {};
    if (!it->is_string()) fail("{}: model field '{}' must be a string", file, key);
    return it->get<std::string>();
  };
  if (std::string unk = opt_string("unk_token"); !unk.empty()) spec.unk_token = unk;
  spec.continuing_subword_prefix = opt_string("continuing_subword_prefix");
  spec.end_of_word_suffix = opt_string("end_of_word_suffix");
  spec.fuse_unk = get_bool(model, "fuse_unk", false, file, "model");
  spec.byte_fallback = get_bool(model, "byte_fallback", false, file, "model");
  spec.ignore_merges = get_bool(model, "ignore_merges", false, file, "model");
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0.0)
    fail("{}: BPE dropout is not supported (it makes encoding random)", file);

  if (auto it = j.find("added_tokens"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) fail("{}: 'added_tokens' must be an array", file);
    for (const json& a : *it) {
      if (!a.is_object()) fail("{}: each added token must be an object, found {}", file, a.dump());
      AddedToken t;
      const json& id = need(a, "id", file, "added token");
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        fail("{}: added token has invalid id {}", file, id.dump());
      t.id = id.get<int32_t>();
      t.content = get_string(a, "content", file, "added token");
      const std::string where = "added token '" + t.content + "'";
      t.special = get_bool(a, "special", false, file, where);
      t.single_word = get_bool(a, "single_word", false, file, where);
      t.lstrip = get_bool(a, "lstrip", false, file, where);
      t.rstrip = get_bool(a, "rstrip", false, file, where);
      t.normalized = get_bool(a, "normalized", !t.special, file, where);
      spec.added_tokens.push_back(std::move(t));
    }
  }
  parse_normalizer(j.value("normalizer", json()), file, &spec.normalizer);
  parse_pre_tokenizer(j.value("pre_tokenizer", json()), file, &spec.pre_tokenizer);
  parse_decoder(j.value("decoder", json()), file, &spec.decoder);
  parse_post_processor(j.value("post_processor", json()), file, &spec);

  // Defaults for BOS/EOS and add_bos (tokenizer_config.json may override them in load_tokenizer):
  // SentencePiece-style files (Metaspace or a "▁" prepend) are LlamaTokenizer-like and start with BOS.
  bool sentencepiece_style = false;
  for (const auto& st : spec.pre_tokenizer) sentencepiece_style |= st.kind == PreTokenizerStep::Kind::metaspace;
  for (const auto& st : spec.normalizer)
    sentencepiece_style |= st.kind == NormalizerStep::Kind::prepend && st.a == "\xe2\x96\x81";
  const bool prefix_from_template = !spec.template_prefix.empty();
  auto tok = make_bpe_tokenizer(std::move(spec));
  int bos = tok->token_to_id("<s>"), eos = tok->token_to_id("</s>");
  if (bos < 0 && eos < 0) bos = eos = tok->token_to_id("<|endoftext|>");
  tok->set_bos_eos(bos, eos);
  tok->set_add_bos(sentencepiece_style && !prefix_from_template && bos >= 0);
  return tok;
}

std::unique_ptr<TokenizerBase> load_gpt2_vocab_merges_impl(const std::filesystem::path& vocab_json,
                                                           const std::filesystem::path& merges_txt) {
  BpeSpec spec;
  spec.source = fmt::format("{} + {}", vocab_json.string(), merges_txt.string());
  json j;
  try {
    j = parse_json(read_file(vocab_json, size_t(1) << 30), vocab_json.string());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", vocab_json.string(), e.what());
  }
  if (!j.is_object()) fail("{}: vocab.json must be an object of token -> id, found {}", vocab_json.string(), j.type_name());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      fail("{}: entry '{}' must have a non-negative integer id, found {}", vocab_json.string(), it.key(), it.value().dump());
    spec.vocab.emplace_back(it.key(), it.value().get<int32_t>());
  }
  const std::string text = read_file(merges_txt, size_t(1) << 30);
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
      fail("{}: line {} \"{}\" must be two tokens separated by one space", merges_txt.string(), line_no, line);
    spec.merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  PreTokenizerStep pre{};
  pre.kind = PreTokenizerStep::Kind::byte_level;
  pre.add_prefix_space = false;
  spec.pre_tokenizer.push_back(pre);
  DecoderStep dec{};
  dec.kind = DecoderStep::Kind::byte_level;
  spec.decoder.push_back(dec);
  for (const auto& [tok, id] : spec.vocab)
    if (tok == "<|endoftext|>") spec.added_tokens.push_back({id, tok, true, false, false, false, false});
  auto tok = make_bpe_tokenizer(std::move(spec));
  const int eot = tok->token_to_id("<|endoftext|>");
  tok->set_bos_eos(eot, eot);
  tok->set_add_bos(false);
  return tok;
}

}  // namespace detail
}  // namespace lowbit

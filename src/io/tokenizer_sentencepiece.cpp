// SentencePiece tokenizers:
//  - SentencePieceTokenizer wraps libsentencepiece for tokenizer.model files (as HF's slow
//    LlamaTokenizer with legacy=True: control-token strings in the text are split out first and each
//    remaining piece of text is encoded by SentencePiece on its own).
//  - SpmScoresTokenizer is llama.cpp's "SPM" tokenizer for GGUF vocabularies (llama-vocab.cpp,
//    llm_tokenizer_spm_session, read not copied): spaces become "▁", a "▁" is put in front of
//    the text, and adjacent pieces are merged by the highest vocabulary score, leftmost first, as
//    long as the merged text is a token; what is left that is not a token falls back to <0xXX>.
#include <sentencepiece_processor.h>

#include <array>
#include <queue>
#include <unordered_map>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "tokenizer_internal.h"

namespace lowbit::detail {

namespace {

constexpr std::string_view kSpace = "\xe2\x96\x81";  // "▁"

class SentencePieceTokenizer final : public TokenizerBase {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& path) {
    source = path.string();
    const std::string bytes = read_file(path, size_t(1) << 30);
    if (bytes.empty()) fail("{}: empty file, not a SentencePiece model", source);
    sentencepiece::util::Status status;
    try {
      status = sp_.LoadFromSerializedProto(bytes);
    } catch (const std::exception& e) {
      // libsentencepiece checks the protobuf but not every piece: e.g. an empty piece makes its trie
      // builder (darts-clone) throw. Found by fuzz_sentencepiece (fuzz/regressions).
      fail("{}: not a valid SentencePiece model: {}", source, e.what());
    }
    if (!status.ok()) fail("{}: not a valid SentencePiece model: {}", source, status.ToString());
    if (sp_.GetPieceSize() <= 0) fail("{}: the SentencePiece model has no pieces", source);
    std::vector<AddedToken> specials;
    for (int id = 0; id < sp_.GetPieceSize(); ++id) {
      if (sp_.IsControl(id) || sp_.IsUnknown(id)) {
        AddedToken t;
        t.id = id;
        t.content = sp_.IdToPiece(id);
        t.special = true;
        specials.push_back(std::move(t));
      }
    }
    matcher_ = std::make_unique<AddedTokenMatcher>(std::move(specials));
    set_bos_eos(sp_.bos_id(), sp_.eos_id());
    set_add_bos(true);
  }

  std::vector<int32_t> encode(std::string_view input) const override {
    const std::string text = utf8_lossy(input);
    std::vector<int32_t> out;
    std::vector<int> ids;
    for (const auto& span : matcher_->split(text)) {
      if (span.id >= 0) {
        out.push_back(span.id);
        continue;
      }
      const auto status = sp_.Encode(std::string_view(text).substr(span.begin, span.end - span.begin), &ids);
      if (!status.ok()) fail("{}: SentencePiece could not encode the text: {}", source, status.ToString());
      out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special) const override {
    std::string out, part;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      const auto status = sp_.Decode(run, &part);
      if (!status.ok()) fail("{}: SentencePiece could not decode: {}", source, status.ToString());
      out += part;
      run.clear();
    };
    for (size_t k = 0; k < ids.size(); ++k) {
      const int32_t id = ids[k];
      if (id < 0 || id >= sp_.GetPieceSize())
        fail("{}: cannot decode id {} at position {}: outside the vocabulary [0, {})", source, id, k, sp_.GetPieceSize());
      if (is_special(id)) {
        if (skip_special) continue;
        flush();
        out += sp_.IdToPiece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }

  int vocab_size() const override { return sp_.GetPieceSize(); }
  std::string token_text(int32_t id) const override {
    if (id < 0 || id >= sp_.GetPieceSize()) fail("{}: token id {} is outside the vocabulary [0, {})", source, id, sp_.GetPieceSize());
    return sp_.IdToPiece(id);
  }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < sp_.GetPieceSize() && (sp_.IsControl(id) || sp_.IsUnknown(id));
  }
  int32_t token_to_id(std::string_view token) const override {
    const int id = sp_.PieceToId(token);  // returns the unk id for unknown pieces
    return (id >= 0 && sp_.IdToPiece(id) == token) ? id : -1;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::unique_ptr<AddedTokenMatcher> matcher_;
};

// ---- llama.cpp's SPM tokenizer over a GGUF vocabulary ---------------------------------------------

class SpmScoresTokenizer final : public TokenizerBase {
 public:
  explicit SpmScoresTokenizer(GgufVocab v) : vocab_(std::move(v)) {
    source = vocab_.source;
    const size_t n = vocab_.tokens.size();
    if (n == 0) fail("{}: the vocabulary is empty", source);
    if (vocab_.scores.empty()) fail("{}: a SentencePiece-style (llama) vocabulary needs tokenizer.ggml.scores", source);
    if (vocab_.token_types.empty()) vocab_.token_types.assign(n, 1);
    lookup_.reserve(n * 2);
    for (size_t id = 0; id < n; ++id) lookup_.emplace(vocab_.tokens[id], int32_t(id));  // first wins on duplicates
    byte_ids_.fill(-1);
    std::vector<AddedToken> added;
    for (size_t id = 0; id < n; ++id) {
      const int type = vocab_.token_types[id];
      const std::string& t = vocab_.tokens[id];
      if (type == 6 && t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>')
        byte_ids_[std::stoi(t.substr(3, 2), nullptr, 16)] = int32_t(id);
      if (type == 2 || type == 3 || type == 4) {  // unknown, control, user-defined: split out of the text
        AddedToken a;
        a.id = int32_t(id);
        a.content = t;
        a.special = type != 4;
        added.push_back(std::move(a));
      }
    }
    matcher_ = std::make_unique<AddedTokenMatcher>(std::move(added));
    set_bos_eos(vocab_.bos, vocab_.eos);
    set_add_bos(vocab_.add_bos.value_or(true));
  }

  std::vector<int32_t> encode(std::string_view input) const override {
    const std::string text = utf8_lossy(input);
    std::vector<int32_t> out;
    bool prev_special = true;  // a "▁" goes in front of the first text and of text after a special token
    for (const auto& span : matcher_->split(text)) {
      if (span.id >= 0) {
        out.push_back(span.id);
        prev_special = true;
        continue;
      }
      std::string s = (vocab_.add_space_prefix.value_or(true) && prev_special) ? " " : "";
      s.append(text, span.begin, span.end - span.begin);
      std::string t;
      for (char c : s) {
        if (c == ' ') t += kSpace;
        else t += c;
      }
      encode_text(t, &out);
      prev_special = false;
    }
    return out;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special) const override {
    std::string bytes;
    for (size_t k = 0; k < ids.size(); ++k) {
      const int32_t id = ids[k];
      if (id < 0 || size_t(id) >= vocab_.tokens.size())
        fail("{}: cannot decode id {} at position {}: outside the vocabulary [0, {})", source, id, k, vocab_.tokens.size());
      const std::string& t = vocab_.tokens[id];
      const int type = vocab_.token_types[id];
      if (is_special(id)) {
        if (!skip_special) bytes += t;
      } else if (type == 6 && t.size() == 6) {
        bytes.push_back(char(std::stoi(t.substr(3, 2), nullptr, 16)));
      } else {
        for (size_t i = 0; i < t.size();) {
          if (t.compare(i, kSpace.size(), kSpace) == 0) bytes += ' ', i += kSpace.size();
          else bytes += t[i++];
        }
      }
    }
    std::string out = utf8_lossy(bytes);
    if (vocab_.add_space_prefix.value_or(true) && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  int vocab_size() const override { return int(vocab_.tokens.size()); }
  std::string token_text(int32_t id) const override {
    if (id < 0 || size_t(id) >= vocab_.tokens.size()) fail("{}: token id {} is outside the vocabulary", source, id);
    return vocab_.tokens[id];
  }
  bool is_special(int32_t id) const override {
    if (id < 0 || size_t(id) >= vocab_.tokens.size()) return false;
    const int type = vocab_.token_types[id];
    return type == 2 || type == 3;
  }
  int32_t token_to_id(std::string_view token) const override {
    auto it = lookup_.find(std::string(token));
    return it == lookup_.end() ? -1 : it->second;
  }

 private:
  struct Symbol {
    int32_t prev, next;
    size_t begin, len;  // byte span in the text; len 0 once merged away
  };
  struct Bigram {
    int32_t left, right;
    float score;
    size_t len;
  };
  struct BigramOrder {  // highest score first, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  void encode_text(const std::string& text, std::vector<int32_t>* out) const {
    std::vector<Symbol> sym;
    for (size_t i = 0; i < text.size();) {
      const size_t b = i;
      next_code_point(text, &i);
      sym.push_back({int32_t(sym.size()) - 1, -1, b, i - b});
    }
    for (size_t k = 0; k + 1 < sym.size(); ++k) sym[k].next = int32_t(k + 1);
    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
    auto try_add = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0) return;
      const std::string piece = text.substr(sym[l].begin, sym[l].len + sym[r].len);
      auto it = lookup_.find(piece);
      if (it == lookup_.end()) return;
      queue.push({l, r, vocab_.scores[it->second], piece.size()});
    };
    for (size_t k = 1; k < sym.size(); ++k) try_add(int32_t(k - 1), int32_t(k));
    while (!queue.empty()) {
      const Bigram bg = queue.top();
      queue.pop();
      Symbol& l = sym[bg.left];
      Symbol& r = sym[bg.right];
      if (l.len == 0 || r.len == 0 || l.len + r.len != bg.len) continue;  // stale
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = bg.left;
      try_add(l.prev, bg.left);
      try_add(bg.left, l.next);
    }
    // Merges only ever make tokens, so a symbol that is not a token is a single character that is
    // not in the vocabulary: it falls back to its bytes (or <unk>).
    for (int32_t k = sym.empty() ? -1 : 0; k >= 0; k = sym[k].next) {
      const std::string piece = text.substr(sym[k].begin, sym[k].len);
      auto it = lookup_.find(piece);
      if (it != lookup_.end()) {
        out->push_back(it->second);
        continue;
      }
      for (unsigned char c : piece) {
        const int32_t id = byte_ids_[c] >= 0 ? byte_ids_[c] : vocab_.unk;
        if (id >= 0) out->push_back(id);
      }
    }
  }

  GgufVocab vocab_;
  std::unordered_map<std::string, int32_t> lookup_;
  std::array<int32_t, 256> byte_ids_{};
  std::unique_ptr<AddedTokenMatcher> matcher_;
};

}  // namespace

std::unique_ptr<TokenizerBase> load_sentencepiece_impl(const std::filesystem::path& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

std::unique_ptr<TokenizerBase> make_spm_scores_tokenizer(GgufVocab vocab) {
  return std::make_unique<SpmScoresTokenizer>(std::move(vocab));
}

}  // namespace lowbit::detail

// Tokenizer loading: which file of a checkpoint folder to read, what tokenizer_config.json adds
// (add_bos_token, the BOS/EOS strings), and tokenizers built from GGUF vocabularies.
#include "lowbit/io/tokenizer.h"
#include "lowbit/io/json.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/io/gguf.h"
#include "tokenizer_internal.h"
#include "tokenizer_wordpiece.h"

namespace lowbit {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A special token in tokenizer_config.json: "<s>", {"content": "<s>", ...} or null.
std::optional<std::string> config_token(const json& cfg, const char* key, const std::string& file) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return std::nullopt;
  if (it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  fail("{}: '{}' must be a string, an object with a 'content' string, or null; found {}", file, key, it->dump());
}

// Applies tokenizer_config.json on top of the tokenizer's own defaults.
void apply_tokenizer_config(const fs::path& path, detail::TokenizerBase* tok) {
  const std::string file = path.string();
  json cfg;
  try {
    cfg = parse_json(read_file(path, size_t(64) << 20), path.string());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", file, e.what());
  }
  if (!cfg.is_object()) fail("{}: must be a JSON object, found {}", file, cfg.type_name());
  int bos = tok->bos_id(), eos = tok->eos_id();
  auto resolve = [&](const char* key, int* id) {
    auto name = config_token(cfg, key, file);
    if (!name) return;
    if (name->empty()) {
      *id = -1;
      return;
    }
    const int32_t found = tok->token_to_id(*name);
    if (found < 0) fail("{}: {} '{}' is not in the tokenizer's vocabulary ({})", file, key, *name, tok->source);
    *id = found;
  };
  resolve("bos_token", &bos);
  resolve("eos_token", &eos);
  tok->set_bos_eos(bos, eos);
  if (auto it = cfg.find("add_bos_token"); it != cfg.end() && !it->is_null()) {
    if (!it->is_boolean()) fail("{}: 'add_bos_token' must be true or false, found {}", file, it->dump());
    tok->set_add_bos(it->get<bool>() && bos >= 0);
  } else if (auto cls = cfg.find("tokenizer_class"); cls != cfg.end() && cls->is_string()) {
    // transformers' defaults when the config does not say: LlamaTokenizer adds BOS, GPT2Tokenizer does not.
    const std::string c = cls->get<std::string>();
    if (c.rfind("LlamaTokenizer", 0) == 0) tok->set_add_bos(bos >= 0);
    if (c.rfind("GPT2Tokenizer", 0) == 0) tok->set_add_bos(false);
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const fs::path& tokenizer_json) {
  return detail::load_hf_tokenizer_json_impl(tokenizer_json);
}

std::unique_ptr<Tokenizer> load_sentencepiece(const fs::path& tokenizer_model) {
  return detail::load_sentencepiece_impl(tokenizer_model);
}

std::unique_ptr<Tokenizer> load_gpt2_vocab_merges(const fs::path& vocab_json, const fs::path& merges_txt) {
  return detail::load_gpt2_vocab_merges_impl(vocab_json, merges_txt);
}

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const fs::path& gguf) { return detail::load_gguf_tokenizer_impl(gguf); }

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& dir) {
  std::unique_ptr<detail::TokenizerBase> tok;
  std::error_code ec;
  if (fs::exists(dir / "tokenizer.json", ec)) {
    tok = detail::load_hf_tokenizer_json_impl(dir / "tokenizer.json");
  } else if (fs::exists(dir / "tokenizer.model", ec)) {
    tok = detail::load_sentencepiece_impl(dir / "tokenizer.model");
  } else if (fs::exists(dir / "vocab.json", ec) && fs::exists(dir / "merges.txt", ec)) {
    tok = detail::load_gpt2_vocab_merges_impl(dir / "vocab.json", dir / "merges.txt");
  } else if (fs::exists(dir / "vocab.txt", ec)) {  // BERT-style WordPiece (tokenizer_wordpiece.cpp)
    tok = detail::load_wordpiece_vocab_txt(dir / "vocab.txt", dir / "tokenizer_config.json");
  } else {
    fail("{}: no tokenizer found (looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt, vocab.txt)",
         dir.string());
  }
  if (fs::exists(dir / "tokenizer_config.json", ec)) apply_tokenizer_config(dir / "tokenizer_config.json", tok.get());
  return tok;
}

namespace detail {

// GGUF vocabularies (llama.cpp's convert_hf_to_gguf.py keys):
//   tokenizer.ggml.model   "llama" (SentencePiece-style scores) or "gpt2" (byte-level BPE)
//   tokenizer.ggml.tokens  [string], .scores [float32], .token_type [int32], .merges ["a b"]
//   tokenizer.ggml.{bos,eos,unknown}_token_id, .add_bos_token, .add_space_prefix, .pre
std::unique_ptr<TokenizerBase> load_gguf_tokenizer_impl(const fs::path& path) {
  GgufFile g(path);
  const std::string file = path.string();
  GgufVocab v;
  v.source = file;
  v.model = g.get_string("tokenizer.ggml.model");
  v.tokens = g.get_string_array("tokenizer.ggml.tokens");
  const size_t n = v.tokens.size();
  if (n == 0) fail("{}: tokenizer.ggml.tokens is empty", file);
  if (n > size_t(INT32_MAX)) fail("{}: tokenizer.ggml.tokens has {} entries, too many", file, n);
  if (g.find("tokenizer.ggml.scores")) {
    for (double s : g.get_float_array("tokenizer.ggml.scores")) v.scores.push_back(float(s));
    if (v.scores.size() != n) fail("{}: tokenizer.ggml.scores has {} entries but there are {} tokens", file, v.scores.size(), n);
  }
  if (g.find("tokenizer.ggml.token_type")) {
    for (int64_t t : g.get_int_array("tokenizer.ggml.token_type")) {
      if (t < 0 || t > 6) fail("{}: tokenizer.ggml.token_type holds {}, not a known token type (0-6)", file, t);
      v.token_types.push_back(int32_t(t));
    }
    if (v.token_types.size() != n)
      fail("{}: tokenizer.ggml.token_type has {} entries but there are {} tokens", file, v.token_types.size(), n);
  }
  if (g.find("tokenizer.ggml.merges")) v.merges = g.get_string_array("tokenizer.ggml.merges");
  auto id_key = [&](const char* key) -> int {
    if (!g.find(key)) return -1;
    const uint64_t id = g.get_uint(key);
    if (id >= n) fail("{}: {} is {}, outside the vocabulary of {} tokens", file, key, id, n);
    return int(id);
  };
  v.bos = id_key("tokenizer.ggml.bos_token_id");
  v.eos = id_key("tokenizer.ggml.eos_token_id");
  v.unk = id_key("tokenizer.ggml.unknown_token_id");
  if (g.find("tokenizer.ggml.add_bos_token")) v.add_bos = g.get_bool("tokenizer.ggml.add_bos_token");
  if (g.find("tokenizer.ggml.add_space_prefix")) v.add_space_prefix = g.get_bool("tokenizer.ggml.add_space_prefix");

  if (v.model == "llama") return make_spm_scores_tokenizer(std::move(v));
  if (v.model != "gpt2")
    fail("{}: tokenizer.ggml.model '{}' is not supported (lowbit reads \"llama\" and \"gpt2\")", file, v.model);

  // GPT-2 byte-level BPE. Other pre-tokenizer regexes (llama3, qwen2, ...) are not implemented.
  if (g.find("tokenizer.ggml.pre")) {
    const std::string pre = g.get_string("tokenizer.ggml.pre");
    if (pre != "gpt-2" && pre != "default")
      fail("{}: tokenizer.ggml.pre '{}' is not supported (lowbit implements GPT-2's pre-tokenizer only)", file, pre);
  }
  if (v.merges.empty()) fail("{}: a gpt2 tokenizer needs tokenizer.ggml.merges", file);
  BpeSpec spec;
  spec.source = file;
  spec.vocab.reserve(n);
  std::unordered_map<std::string, int32_t> seen;
  for (size_t id = 0; id < n; ++id)
    if (seen.emplace(v.tokens[id], int32_t(id)).second) spec.vocab.emplace_back(v.tokens[id], int32_t(id));
  for (size_t k = 0; k < v.merges.size(); ++k) {
    const std::string& m = v.merges[k];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || m.find(' ', sp + 1) != std::string::npos)
      fail("{}: tokenizer.ggml.merges[{}] \"{}\" must be two tokens separated by one space", file, k, m);
    spec.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }
  for (size_t id = 0; id < v.token_types.size(); ++id) {
    const int type = v.token_types[id];
    if (type == 3 || type == 4) {  // control / user-defined tokens are split out of the text
      AddedToken a;
      a.id = int32_t(id);
      a.content = v.tokens[id];
      a.special = type == 3;
      spec.added_tokens.push_back(std::move(a));
    }
  }
  PreTokenizerStep pre{};
  pre.kind = PreTokenizerStep::Kind::byte_level;
  pre.add_prefix_space = false;
  spec.pre_tokenizer.push_back(pre);
  DecoderStep dec{};
  dec.kind = DecoderStep::Kind::byte_level;
  spec.decoder.push_back(dec);
  auto tok = make_bpe_tokenizer(std::move(spec));
  tok->set_bos_eos(v.bos, v.eos);
  tok->set_add_bos(v.add_bos.value_or(false) && v.bos >= 0);
  return tok;
}

}  // namespace detail
}  // namespace lowbit

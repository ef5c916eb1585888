// Tokenizers against goldens from independent implementations: Hugging Face tokenizers
// (models/*/tokenizer_goldens.json, WikiText-2 token counts in training_info.json), karpathy's
// tok512 ids (stories260K/reference) and llama.cpp's tokenizer test vectors (tokenizer-tests/).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/io/tokenizer.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kShared = LOWBIT_SHARED_DIR;

std::vector<int32_t> read_i32(const fs::path& path) {
  const std::string bytes = read_file(path);
  std::vector<int32_t> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

// A fresh folder under the test temp dir for malformed files.
fs::path temp_dir(const std::string& name) {
  fs::path dir = fs::path(testing::TempDir()) / "lowbit_tokenizer_tests" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write(const fs::path& path, std::string_view content) {
  std::ofstream f(path, std::ios::binary);
  f.write(content.data(), std::streamsize(content.size()));
}

// Expects a lowbit::Error whose message contains each of the given fragments.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "expected a lowbit::Error containing '" << *fragments.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << "message: " << msg << "\nmissing: " << frag;
  }
}

// ---- Hugging Face goldens ------------------------------------------------------------------------

void check_goldens(const Tokenizer& tok, const fs::path& goldens_json) {
  const json goldens = json::parse(read_file(goldens_json));
  ASSERT_GE(goldens.size(), 10u);
  for (const json& g : goldens) {
    const std::string text = g["text"].get<std::string>();
    const auto want = g["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(ids_to_string(tok.encode_with_special(text)), ids_to_string(want)) << "text: " << json(text).dump();
    EXPECT_EQ(tok.decode(want, true), g["decoded"].get<std::string>()) << "ids of " << json(text).dump();
  }
}

TEST(Tokenizer, LlamaWikiGoldens) {
  const fs::path dir = kShared / "models/llama-16m-wiki";
  auto tok = load_tokenizer(dir);
  check_goldens(*tok, dir / "tokenizer_goldens.json");
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->vocab_size(), 8192);
  EXPECT_TRUE(tok->is_special(1));
  EXPECT_FALSE(tok->is_special(8062));
  EXPECT_EQ(tok->token_text(1), "<s>");
  // Without tokenizer_config.json the Metaspace style still means BOS first.
  auto bare = load_hf_tokenizer_json(dir / "tokenizer.json");
  EXPECT_TRUE(bare->add_bos());
  EXPECT_EQ(bare->bos_id(), 1);
  check_goldens(*bare, dir / "tokenizer_goldens.json");
}

TEST(Tokenizer, Gpt2WikiGoldens) {
  const fs::path dir = kShared / "models/gpt2-7m-wiki";
  auto tok = load_tokenizer(dir);
  check_goldens(*tok, dir / "tokenizer_goldens.json");
  EXPECT_FALSE(tok->add_bos());
  EXPECT_EQ(tok->eos_id(), 0);
  EXPECT_TRUE(tok->is_special(0));
  // The same tokenizer from vocab.json + merges.txt.
  auto files = load_gpt2_vocab_merges(dir / "vocab.json", dir / "merges.txt");
  check_goldens(*files, dir / "tokenizer_goldens.json");
  EXPECT_FALSE(files->add_bos());
}

TEST(Tokenizer, DecodeKeepsSpecialTokensWhenAsked) {
  auto llama = load_tokenizer(kShared / "models/llama-16m-wiki");
  const auto ids = llama->encode("<s> Hi");
  ASSERT_EQ(ids.front(), 1);
  EXPECT_EQ(llama->decode(ids, false).find("<s>"), 0u);
  auto gpt2 = load_tokenizer(kShared / "models/gpt2-7m-wiki");
  EXPECT_EQ(gpt2->decode(gpt2->encode("a<|endoftext|>b"), false), "a<|endoftext|>b");
  EXPECT_EQ(gpt2->decode(gpt2->encode("a<|endoftext|>b"), true), "ab");
}

TEST(Tokenizer, Gpt2RoundTripsArbitraryUtf8) {
  auto tok = load_tokenizer(kShared / "models/gpt2-7m-wiki");
  for (std::string s : {"  multiple   spaces\n\n\t tabs ", "東京 🙂🙂 naïve", "x's 're 'VE 123abc ...!!", "\xc2\xa0nbsp\xe2\x80\x83"})
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  // Invalid UTF-8 is repaired to U+FFFD, never crashes.
  EXPECT_EQ(tok->decode(tok->encode("a\xff" "b")), "a\xEF\xBF\xBD" "b");
}

// ---- WikiText-2: token counts (training_info.json) and the first 64 tokens (golden_tokens_64) ----

void check_wikitext(const fs::path& dir, bool bos_first, size_t expect_tokens) {
  auto tok = load_tokenizer(dir);
  const std::string text = read_file(kShared / "datasets/wikitext-2/wiki.test.raw");
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok->encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ timing ] %s: encoded wiki.test.raw (%zu bytes) into %zu tokens in %.3f s\n",
              dir.filename().c_str(), text.size(), ids.size(), seconds);
  const json info = json::parse(read_file(dir / "training_info.json"));
  EXPECT_EQ(ids.size(), expect_tokens);
  EXPECT_EQ(int64_t(ids.size()), info["wikitext2_test_tokens"].get<int64_t>());
  EXPECT_LT(seconds, 10.0);  // ~1 s in Release; generous for sanitizer builds
  auto golden = read_i32(dir / "golden_tokens_64.i32");
  ASSERT_EQ(golden.size(), 64u);
  std::vector<int32_t> first(ids.begin(), ids.begin() + (bos_first ? 63 : 64));
  if (bos_first) first.insert(first.begin(), tok->bos_id());
  EXPECT_EQ(ids_to_string(first), ids_to_string(golden));
}

// Under Metaspace split=false the whole file is one 1.3 MB "word": this checks the O(n log n) merge.
TEST(Tokenizer, LlamaWikiText2Count) { check_wikitext(kShared / "models/llama-16m-wiki", true, 363135); }

TEST(Tokenizer, Gpt2WikiText2Count) { check_wikitext(kShared / "models/gpt2-7m-wiki", false, 346679); }

// ---- SentencePiece: stories260K -------------------------------------------------------------------

TEST(Tokenizer, Stories260KSentencePiece) {
  const fs::path dir = kShared / "models/stories260K";
  auto tok = load_tokenizer(dir / "hf");  // tokenizer.model (+ tokenizer_config.json)
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // tokens_64.i32 = BOS + the first 63 ids of the file: any prefix long enough gives them (2000 bytes
  // hold ~600 tokens), and so does the whole file.
  const auto golden = read_i32(dir / "reference/tokens_64.i32");
  ASSERT_EQ(golden.size(), 64u);
  const std::string text = read_file(kShared / "datasets/tinystories/tinystories_val_head.txt");
  for (size_t prefix : {size_t(2000), text.size()}) {
    auto ids = tok->encode(text.substr(0, prefix));
    ASSERT_GE(ids.size(), 63u);
    ids.resize(63);
    ids.insert(ids.begin(), tok->bos_id());
    EXPECT_EQ(ids_to_string(ids), ids_to_string(golden)) << "prefix of " << prefix << " bytes";
  }
  const json ref = json::parse(read_file(dir / "reference/reference.json"));
  const auto prompt_ids = ref["prompt_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(std::vector<int32_t>(golden.begin(), golden.begin() + 16), prompt_ids);
  auto greedy = ref["greedy_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(greedy.front(), 1);
  EXPECT_EQ(tok->decode(greedy, true), ref["greedy_text"].get<std::string>());
  EXPECT_EQ(tok->decode(std::span(greedy).subspan(1)), ref["greedy_text"].get<std::string>());
  // The greedy prompt encodes to BOS + the ids the reference generation started from.
  auto prompt = tok->encode(ref["greedy_prompt"].get<std::string>());
  prompt.insert(prompt.begin(), 1);
  EXPECT_EQ(ids_to_string(prompt), ids_to_string(std::vector<int32_t>(greedy.begin(), greedy.begin() + prompt.size())));
  EXPECT_EQ(tok->encode("<s>Once")[0], 1);  // control strings in the text become their ids
  EXPECT_EQ(tok->decode(std::vector<int32_t>{1, 403}, false).rfind("<s>", 0), 0u);
}

// ---- llama.cpp tokenizer test vectors -------------------------------------------------------------

struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<VocabCase> read_vocab_cases(const fs::path& base) {
  const std::string inp = read_file(base.string() + ".inp"), out = read_file(base.string() + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  size_t pos = 0;
  for (size_t hit; (hit = inp.find(sep, pos)) != std::string::npos; pos = hit + sep.size()) texts.push_back(inp.substr(pos, hit - pos));
  if (pos < inp.size()) texts.push_back(inp.substr(pos));  // a last string without a separator after it
  std::vector<VocabCase> cases;
  size_t line_start = 0;
  for (const std::string& t : texts) {
    const size_t nl = out.find('\n', line_start);
    EXPECT_NE(nl, std::string::npos) << "fewer lines in .out than strings in .inp";
    if (nl == std::string::npos) break;
    VocabCase c{t, {}};
    std::istringstream line(out.substr(line_start, nl - line_start));
    for (int32_t id; line >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
    line_start = nl + 1;
  }
  return cases;
}

void check_vocab_cases(const Tokenizer& tok, const fs::path& base, size_t expect_cases) {
  const auto cases = read_vocab_cases(base);
  EXPECT_EQ(cases.size(), expect_cases);
  size_t ok = 0;
  for (const auto& c : cases) {
    const auto got = tok.encode(c.text);
    EXPECT_EQ(ids_to_string(got), ids_to_string(c.ids)) << "text: " << json(c.text).dump();
    ok += got == c.ids;
  }
  std::printf("[ vectors] %s: %zu / %zu match\n", base.filename().c_str(), ok, cases.size());
}

TEST(Tokenizer, LlamaCppVectorsSpmThroughSentencePiece) {
  auto tok = load_sentencepiece(kShared / "tokenizer-tests/llama2-tokenizer/tokenizer.model");
  EXPECT_EQ(tok->vocab_size(), 32000);
  check_vocab_cases(*tok, kShared / "tokenizer-tests/ggml-vocab-llama-spm.gguf", 46);
}

TEST(Tokenizer, LlamaCppVectorsSpmThroughGguf) {
  auto tok = load_gguf_tokenizer(kShared / "tokenizer-tests/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_TRUE(tok->add_bos());
  check_vocab_cases(*tok, kShared / "tokenizer-tests/ggml-vocab-llama-spm.gguf", 46);
}

TEST(Tokenizer, LlamaCppVectorsGpt2ThroughGguf) {
  auto tok = load_gguf_tokenizer(kShared / "tokenizer-tests/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_FALSE(tok->add_bos());
  check_vocab_cases(*tok, kShared / "tokenizer-tests/ggml-vocab-gpt-2.gguf", 46);
  // and decoding gives the text back
  for (const auto& c : read_vocab_cases(kShared / "tokenizer-tests/ggml-vocab-gpt-2.gguf"))
    EXPECT_EQ(tok->decode(c.ids), c.text);
}

// ---- pipeline pieces on small hand-made tokenizer.json files --------------------------------------

// A tiny tokenizer.json: characters a b c ▁ plus merges, with the given pipeline parts.
std::string tiny_json(const std::string& extra, const std::string& model_extra = "") {
  return R"({"added_tokens": [{"id": 0, "content": "<unk>", "special": true, "normalized": false},
                              {"id": 9, "content": "<X>", "special": false, "normalized": false, "lstrip": true, "rstrip": true},
                              {"id": 10, "content": "cc", "special": false, "normalized": false, "single_word": true}],
            "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true,)" + model_extra + R"(
              "vocab": {"<unk>": 0, "a": 1, "b": 2, "c": 3, "▁": 4, "ab": 5, "▁ab": 6, "abc": 7, "▁a": 8, "<X>": 9},
              "merges": ["a b", ["▁", "ab"], "ab c", "▁ a"]})" + extra + "}";
}

std::unique_ptr<Tokenizer> load_tiny(const std::string& name, const std::string& content) {
  const fs::path dir = temp_dir(name);
  write(dir / "tokenizer.json", content);
  return load_hf_tokenizer_json(dir / "tokenizer.json");
}

TEST(Tokenizer, MetaspacePrependSchemes) {
  const std::string dec = R"(, "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})";
  auto always = load_tiny("always", tiny_json(R"(, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true})" + dec));
  // "ab ab" -> "▁ab", "▁ab" (merge order: a b (rank 0) then ▁ ab (rank 1))
  EXPECT_EQ(ids_to_string(always->encode("ab ab")), "6 6");
  EXPECT_EQ(always->decode(always->encode("ab ab")), "ab ab");
  // after an added token "always" prepends again, "first" does not; lstrip/rstrip eat the spaces
  EXPECT_EQ(ids_to_string(always->encode("ab <X> ab")), "6 9 6");
  auto first = load_tiny("first", tiny_json(R"(, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})"));
  EXPECT_EQ(ids_to_string(first->encode("ab <X> ab")), "6 9 5");
  EXPECT_EQ(ids_to_string(first->encode(" ab")), "6");  // already starts with ▁: no second one
  auto never = load_tiny("never", tiny_json(R"(, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": true})"));
  EXPECT_EQ(ids_to_string(never->encode("ab ab")), "5 6");
  EXPECT_EQ(ids_to_string(never->encode("abc")), "7");
  // unknown characters fuse into one <unk>; no decoder joins tokens with spaces
  EXPECT_EQ(ids_to_string(never->encode("xyab")), "0 5");
  EXPECT_EQ(never->decode(std::vector<int32_t>{5, 7}), "ab abc");
  // single_word: "cc" is only split out when no word character touches it
  EXPECT_EQ(ids_to_string(never->encode("abcc")), "7 3");
  EXPECT_EQ(ids_to_string(never->encode("ab cc")), "5 4 10");
}

TEST(Tokenizer, NormalizersAndSplit) {
  auto tok = load_tiny("norm", tiny_json(R"(,
      "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"},
                     {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, {"type": "Prepend", "prepend": "▁"}]},
      "pre_tokenizer": {"type": "Split", "pattern": {"String": "▁"}, "behavior": "MergedWithNext", "invert": false},
      "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                  {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})"));
  // NFKC folds the fullwidth Ａ; Lowercase; spaces become ▁; "▁" prepended
  EXPECT_EQ(ids_to_string(tok->encode("\xEF\xBC\xA1" "B aB")), "6 6");
  EXPECT_EQ(tok->decode(tok->encode("ab ab")), "ab ab");
  EXPECT_TRUE(tok->add_bos() == false);  // no BOS token in this vocabulary
}

TEST(Tokenizer, ByteFallbackAndTemplate) {
  std::string vocab = R"("<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "▁": 4, "▁a": 5)";
  for (int b = 0; b < 256; ++b) vocab += fmt::format(R"(, "<0x{:02X}>": {})", b, 6 + b);
  const std::string j = R"({"added_tokens": [{"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
    "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "vocab": {)" + vocab + R"(}, "merges": ["▁ a"]},
    "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}})";
  auto tok = load_tiny("bytefallback", j);
  // é = C3 A9 -> <0xC3> <0xA9>
  EXPECT_EQ(ids_to_string(tok->encode_with_special("aé")), fmt::format("1 5 {} {} 2", 6 + 0xC3, 6 + 0xA9));
  EXPECT_EQ(tok->decode(tok->encode_with_special("a é a")), "a é a");
  // a lone continuation byte decodes to U+FFFD
  EXPECT_EQ(tok->decode(std::vector<int32_t>{5, 6 + 0xA9}), "a\xEF\xBF\xBD");
}

// ---- malformed inputs -----------------------------------------------------------------------------

TEST(Tokenizer, RejectsMalformedTokenizerJson) {
  const fs::path dir = temp_dir("bad_json");
  const fs::path p = dir / "tokenizer.json";
  write(p, "{\"model\": {\"type\": \"BPE\", ");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "not valid JSON"});
  write(p, R"({"model": {"type": "Mystery", "vocab": {}}})");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "model type 'Mystery'"});
  write(p, R"({"model": {"type": "BPE", "merges": []}})");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "'vocab'"});
  write(p, R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a zz"]}})");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "unknown token 'zz'"});
  write(p, R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "makes 'ab'"});
  write(p, R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": -4}, "merges": []}})");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "id -4"});
  write(p, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "Precompiled"}})");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "normalizer type 'Precompiled'"});
  write(p, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\s"}, "behavior": "Isolated"}})");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "Regex"});
  write(p, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "CTC"}})");
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "decoder type 'CTC'"});
  // Sequence inside Sequence: 20 deep is refused by the tokenizer's own limit, 10,000 deep by the
  // JSON depth scan before anything recursive (copying, printing) can exhaust the stack.
  auto nested = [](int levels) {
    std::string s;
    for (int i = 0; i < levels; ++i) s += R"({"type": "Sequence", "normalizers": [)";
    s += R"({"type": "NFC"})";
    for (int i = 0; i < levels; ++i) s += "]}";
    return R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": )" + s + "}";
  };
  write(p, nested(20));
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "nest more than 16 deep"});
  write(p, nested(10000));
  expect_error([&] { load_hf_tokenizer_json(p); }, {p.string(), "JSON nests deeper than 64 levels"});
  expect_error([&] { load_hf_tokenizer_json(dir / "missing.json"); }, {"missing.json"});
  write(dir / "vocab.json", R"({"a": 0, "b": 1, "ab": 2})");
  write(dir / "merges.txt", "#version: 0.2\na b\na q\n");
  expect_error([&] { load_gpt2_vocab_merges(dir / "vocab.json", dir / "merges.txt"); }, {"merges.txt", "unknown token 'q'"});
  write(dir / "merges.txt", "#version: 0.2\na b c\n");
  expect_error([&] { load_gpt2_vocab_merges(dir / "vocab.json", dir / "merges.txt"); }, {"merges.txt", "line 2"});
  expect_error([&] { load_tokenizer(dir / "nothing_here"); }, {"no tokenizer found"});
}

TEST(Tokenizer, RejectsBadTokenizerConfig) {
  const fs::path dir = temp_dir("bad_config");
  fs::copy_file(kShared / "models/gpt2-7m-wiki/tokenizer.json", dir / "tokenizer.json");
  write(dir / "tokenizer_config.json", R"({"bos_token": "<nope>"})");
  expect_error([&] { load_tokenizer(dir); }, {"tokenizer_config.json", "bos_token '<nope>'"});
  write(dir / "tokenizer_config.json", R"({"add_bos_token": "yes"})");
  expect_error([&] { load_tokenizer(dir); }, {"tokenizer_config.json", "add_bos_token"});
  write(dir / "tokenizer_config.json", R"({"add_bos_token": true, "bos_token": {"content": "<|endoftext|>"}})");
  auto tok = load_tokenizer(dir);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->bos_id(), 0);
}

TEST(Tokenizer, DecodeRejectsOutOfRangeIds) {
  auto gpt2 = load_tokenizer(kShared / "models/gpt2-7m-wiki");
  expect_error([&] { gpt2->decode(std::vector<int32_t>{40, 8192}); }, {"tokenizer.json", "8192", "position 1"});
  expect_error([&] { gpt2->decode(std::vector<int32_t>{-1}); }, {"-1"});
  expect_error([&] { gpt2->token_text(99999); }, {"99999"});
  auto sp = load_tokenizer(kShared / "models/stories260K/hf");
  expect_error([&] { sp->decode(std::vector<int32_t>{1, 512}); }, {"tokenizer.model", "512"});
  auto gguf = load_gguf_tokenizer(kShared / "tokenizer-tests/ggml-vocab-llama-spm.gguf");
  expect_error([&] { gguf->decode(std::vector<int32_t>{32000}); }, {"ggml-vocab-llama-spm.gguf", "32000"});
}

TEST(Tokenizer, RejectsBadSentencePieceModel) {
  const fs::path dir = temp_dir("bad_spm");
  write(dir / "tokenizer.model", "this is not a protobuf \x01\x02\x03\xff\xff\xff\xff");
  expect_error([&] { load_sentencepiece(dir / "tokenizer.model"); }, {"tokenizer.model", "SentencePiece"});
  write(dir / "empty.model", "");
  expect_error([&] { load_sentencepiece(dir / "empty.model"); }, {"empty.model", "empty"});
  const std::string good = read_file(kShared / "models/stories260K/hf/tokenizer.model");
  write(dir / "truncated.model", good.substr(0, good.size() / 2));
  expect_error([&] { load_sentencepiece(dir / "truncated.model"); }, {"truncated.model"});
  expect_error([&] { load_sentencepiece(dir / "absent.model"); }, {"absent.model", "cannot open"});
  // A well-formed protobuf whose third piece starts with a NUL byte (found by fuzz_sentencepiece):
  // libsentencepiece accepts the proto and then throws from its trie builder.
  auto piece = [](const std::string& text, int type) {  // ModelProto.pieces: {1: piece, 2: score, 3: type}
    std::string m = "\x0a" + std::string(1, char(text.size())) + text + std::string("\x15\0\0\0\0", 5) + "\x18" + char(type);
    return "\x0a" + std::string(1, char(m.size())) + m;
  };
  write(dir / "nul.model", piece("<unk>", 2) + piece("<s>", 3) + piece(std::string("\0-s>", 4), 1));
  expect_error([&] { load_sentencepiece(dir / "nul.model"); }, {"nul.model", "not a valid SentencePiece model"});
  expect_error([&] { load_tokenizer(dir); }, {"tokenizer.model"});  // via the folder
}

TEST(Tokenizer, RejectsBadGgufTokenizer) {
  const fs::path dir = temp_dir("bad_gguf");
  const std::string good = read_file(kShared / "tokenizer-tests/ggml-vocab-gpt-2.gguf");
  write(dir / "truncated.gguf", good.substr(0, good.size() / 3));
  expect_error([&] { load_gguf_tokenizer(dir / "truncated.gguf"); }, {"truncated.gguf"});
  write(dir / "garbage.gguf", "not a gguf file at all, just text");
  expect_error([&] { load_gguf_tokenizer(dir / "garbage.gguf"); }, {"garbage.gguf", "not a GGUF file"});
  // tokenizer.ggml.model = "gpt2" patched to "gptX": key (20 bytes), u32 type, u64 length, value.
  std::string patched = good;
  const size_t key = patched.find("tokenizer.ggml.model");
  ASSERT_NE(key, std::string::npos);
  ASSERT_EQ(patched.substr(key + 32, 4), "gpt2");
  patched[key + 35] = 'X';
  write(dir / "unknown_model.gguf", patched);
  expect_error([&] { load_gguf_tokenizer(dir / "unknown_model.gguf"); }, {"unknown_model.gguf", "gptX"});
}

}  // namespace
}  // namespace lowbit

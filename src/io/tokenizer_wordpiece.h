#pragma once
// Private to src/io: the WordPiece tokenizer of BERT-family models (tokenizer_wordpiece.cpp), and the
// two ways of loading it, called from load_hf_tokenizer_json_impl (tokenizer.json whose model type is
// "WordPiece") and load_tokenizer (a folder with vocab.txt and no tokenizer.json).
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "tokenizer_internal.h"

namespace lowbit::detail {

// tokenizer.json, already parsed (`j`), whose model.type is "WordPiece".
std::unique_ptr<TokenizerBase> load_wordpiece_tokenizer_json(const nlohmann::json& j, const std::filesystem::path& path);

// vocab.txt (one token per line, the line number is the id) plus, when the file exists,
// tokenizer_config.json (do_lower_case, strip_accents, tokenize_chinese_chars, the special-token
// strings, added_tokens_decoder): the tokenizer transformers' BertTokenizer builds from them.
std::unique_ptr<TokenizerBase> load_wordpiece_vocab_txt(const std::filesystem::path& vocab_txt,
                                                        const std::filesystem::path& tokenizer_config_json);

}  // namespace lowbit::detail

#pragma once
// JSON from files lowbit did not write: parsed only after a cheap scan refuses nesting deeper than
// kMaxJsonDepth. nlohmann's parser itself is iterative, but copying, printing or walking a parsed
// value recurses once per level, so a few megabytes of "[[[[..." would exhaust the stack later.
#include <nlohmann/json.hpp>
#include <string_view>

namespace lowbit {

inline constexpr int kMaxJsonDepth = 64;  // real configs and tokenizers nest fewer than 10 levels

// Throws lowbit::Error naming `file` when the text nests deeper than kMaxJsonDepth, and
// nlohmann::json::parse_error when it is not JSON (callers turn that into their own message).
nlohmann::json parse_json(std::string_view text, std::string_view file);

}  // namespace lowbit

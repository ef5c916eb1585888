#include "lowbit/io/json.h"

#include "lowbit/core/error.h"

namespace lowbit {

nlohmann::json parse_json(std::string_view text, std::string_view file) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxJsonDepth)
        fail("{}: JSON nests deeper than {} levels (corrupt or hostile file)", file, kMaxJsonDepth);
    } else if (ch == ']' || ch == '}') {
      --depth;  // unbalanced text is the parser's to report
    }
  }
  return nlohmann::json::parse(text);
}

}  // namespace lowbit

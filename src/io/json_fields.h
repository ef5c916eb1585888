#pragma once
// Typed, validated access to the fields of a JSON config file (config.json of every model family);
// every error names the file and the field. Private to src/io.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "lowbit/core/error.h"
#include "lowbit/io/json.h"

namespace lowbit::detail {

struct JsonFields {
  const nlohmann::json& j;
  std::string file;

  const nlohmann::json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  int get_int(const char* key, int64_t lo, int64_t hi, std::optional<int64_t> dflt = std::nullopt) const {
    const nlohmann::json* v = find(key);
    if (!v) {
      if (dflt) return int(*dflt);
      fail("{}: missing field '{}' (an integer)", file, key);
    }
    if (!v->is_number_integer()) fail("{}: field '{}' must be an integer, found {}", file, key, v->dump());
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) fail("{}: field '{}' = {} is out of range [{}, {}]", file, key, x, lo, hi);
    return int(x);
  }
  // A number of `obj` (this file's object or one nested in it, named by `where`, e.g. "rope_parameters.").
  double get_num(const nlohmann::json& obj, const char* key, double lo, double hi, double dflt, const char* where) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return dflt;
    if (!it->is_number()) fail("{}: field '{}{}' must be a number, found {}", file, where, key, it->dump());
    const double x = it->get<double>();
    if (!(x >= lo && x <= hi)) fail("{}: field '{}{}' = {} is out of range [{}, {}]", file, where, key, x, lo, hi);
    return x;
  }
  double get_num(const char* key, double lo, double hi, double dflt) const { return get_num(j, key, lo, hi, dflt, ""); }
  bool get_bool(const char* key, bool dflt) const {
    const nlohmann::json* v = find(key);
    if (!v) return dflt;
    if (!v->is_boolean()) fail("{}: field '{}' must be true or false, found {}", file, key, v->dump());
    return v->get<bool>();
  }
  std::string get_str(const char* key, const std::string& dflt) const {
    const nlohmann::json* v = find(key);
    if (!v) return dflt;
    if (!v->is_string()) fail("{}: field '{}' must be a string, found {}", file, key, v->dump());
    return v->get<std::string>();
  }
  // architectures[0].
  std::string architecture() const {
    const nlohmann::json* archs = find("architectures");
    if (!archs || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
      fail("{}: field 'architectures' must be a non-empty list of names", file);
    return (*archs)[0].get<std::string>();
  }
};

// The text parsed as a JSON object, or an error naming the file.
inline nlohmann::json parse_json_object(const std::string& text, const std::string& file) {
  nlohmann::json j;
  try {
    j = parse_json(text, file);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", file, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object, found {}", file, j.type_name());
  return j;
}

}  // namespace lowbit::detail

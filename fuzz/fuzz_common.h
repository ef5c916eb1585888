#pragma once
// Shared by the libFuzzer targets: each input is written to a file in a private scratch folder and
// handed to the loader exactly as a user's file would be. A lowbit::Error is the expected answer to a
// bad file; any other exception, a crash, a sanitizer report, a leak, a hang or a huge allocation is a
// finding (libFuzzer stops and saves the input).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/io/tokenizer.h"

namespace lowbit::fuzz {

inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::exists("/dev/shm", ec) ? "/dev/shm" : std::filesystem::temp_directory_path();
    auto d = base / ("lowbit-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] { std::error_code e; std::filesystem::remove_all(scratch_dir(), e); });
    return d;
  }();
  return dir;
}

// A fresh, empty sub-folder of the scratch folder.
inline std::filesystem::path fresh_dir(const std::string& name) {
  auto d = scratch_dir() / name;
  std::error_code ec;
  std::filesystem::remove_all(d, ec);
  std::filesystem::create_directories(d);
  return d;
}

inline std::filesystem::path put(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.close();
  if (!out) std::abort();  // the scratch folder itself failed: not a finding about lowbit
  return path;
}

// Splits `data` at NUL bytes into at most `max_parts` parts (the last one keeps any further NULs).
inline std::vector<std::string_view> split_parts(std::string_view data, size_t max_parts) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    size_t z = data.find('\0');
    if (z == std::string_view::npos) break;
    parts.push_back(data.substr(0, z));
    data.remove_prefix(z + 1);
  }
  parts.push_back(data);
  return parts;
}

template <typename F>
void expect_clean(F&& fn) {
  try {
    fn();
  } catch (const lowbit::Error&) {
    // Rejected with lowbit's own error (message names file and field): the wanted outcome.
  }
}

// A tokenizer that loaded must also work: encode `text` (with the special-token template when asked),
// every id inside the vocabulary, and decode the ids both ways.
inline void exercise_tokenizer(const Tokenizer& tok, std::string_view text, bool with_special) {
  const std::vector<int32_t> ids = with_special ? tok.encode_with_special(text) : tok.encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) std::abort();  // an id outside the vocabulary
  tok.decode(ids, false);
  tok.decode(ids, true);
}

inline std::string_view as_view(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace lowbit::fuzz

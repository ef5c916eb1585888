#pragma once
// Shared test helpers: paths to ../shared, temporary folders, reading golden binaries.
#include <gtest/gtest.h>

#include "lowbit/core/error.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lowbit::test {

inline std::filesystem::path shared_dir() { return LOWBIT_SHARED_DIR; }
inline std::filesystem::path model_dir(const std::string& name) { return shared_dir() / "models" / name; }

// A fresh empty folder under gtest's temporary directory, unique per test.
inline std::filesystem::path temp_dir(const std::string& tag) {
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::path(testing::TempDir()) /
             ("lowbit_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" + tag);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

template <typename T>
std::vector<T> read_binary(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  f.seekg(0, std::ios::end);
  size_t bytes = size_t(f.tellg());
  f.seekg(0);
  std::vector<T> v(bytes / sizeof(T));
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
  return v;
}

inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// Expects `fn` to throw lowbit::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << *parts.begin() << "', got none";
  } catch (const lowbit::Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
  }
}

}  // namespace lowbit::test

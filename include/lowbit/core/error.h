#pragma once
// Errors: every failure lowbit reports is a lowbit::Error whose message says what went wrong,
// where (file, tensor, field) and, where it helps, what to do about it.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace lowbit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// fail("{}: tensor '{}' has {} bytes, expected {}", path, name, got, want)
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Overflow-checked size arithmetic for sizes read from untrusted files.
bool checked_mul(uint64_t a, uint64_t b, uint64_t* out);
bool checked_add(uint64_t a, uint64_t b, uint64_t* out);

}  // namespace lowbit

#pragma once
// Progress on stderr: a bar with ETA when stderr is a terminal, plain lines (at most one every few
// seconds, plus the last) otherwise. Silent when disabled.
#include <chrono>
#include <cstddef>
#include <string>

namespace lowbit {

class Progress {
 public:
  Progress(std::string label, size_t total, bool enabled = true);
  void update(size_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");

 private:
  std::string label_;
  size_t total_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
  bool finished_ = false;
};

}  // namespace lowbit

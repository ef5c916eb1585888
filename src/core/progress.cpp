#include "lowbit/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace lowbit {

Progress::Progress(std::string label, size_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(2) != 0) {
  start_ = last_ = std::chrono::steady_clock::now();
}

void Progress::update(size_t done, const std::string& extra) {
  if (!enabled_ || finished_) return;
  auto now = std::chrono::steady_clock::now();
  double since_last = std::chrono::duration<double>(now - last_).count();
  bool last = done >= total_;
  if (!last && since_last < (tty_ ? 0.1 : 5.0)) return;
  last_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double frac = total_ ? double(done) / double(total_) : 1.0;
  double eta = frac > 0 ? elapsed * (1 - frac) / frac : 0;
  if (tty_) {
    constexpr int kWidth = 30;
    int filled = int(frac * kWidth);
    std::string bar(size_t(filled), '#');
    bar.resize(kWidth, '.');
    fmt::print(stderr, "\r{} [{}] {}/{} {:.0f}s elapsed, ETA {:.0f}s {}\x1b[K", label_, bar, done, total_, elapsed,
               eta, extra);
    if (last) fmt::print(stderr, "\n");
  } else {
    fmt::print(stderr, "{}: {}/{} ({:.0f}%), {:.0f}s elapsed, ETA {:.0f}s {}\n", label_, done, total_, 100 * frac,
               elapsed, eta, extra);
  }
  if (last) finished_ = true;
  std::fflush(stderr);
}

void Progress::finish(const std::string& extra) { update(total_, extra); }

}  // namespace lowbit

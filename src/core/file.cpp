#include "lowbit/core/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>  // renameat2, RENAME_EXCHANGE (glibc, _GNU_SOURCE)
#include <cstring>
#include <random>

#include "lowbit/core/error.h"

namespace lowbit {

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path.string());
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail("{}: mmap failed: {}", path.string(), std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::release(const void* p, size_t n) const {
  const auto b = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(data_);
  if (n == 0 || b < base || b + n > base + size_) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = (b + page - 1) / page * page, last = (b + n) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);  // advice: failure is harmless
}

std::string read_file(const std::filesystem::path& path, size_t max_bytes) {
  MappedFile f(path);
  if (f.size() > max_bytes) fail("{}: file is {} bytes, more than the limit of {}", path.string(), f.size(), max_bytes);
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

AtomicFileWriter::AtomicFileWriter(const std::filesystem::path& path) : path_(path) {
  std::random_device rd;
  auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  tmp_ = dir / fmt::format(".{}.tmp-{:08x}", path.filename().string(), rd());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot create temporary file {}: {}", path.string(), tmp_.string(), std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", path_.string(), std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
}

void AtomicFileWriter::commit() {
  if (::fsync(fd_) != 0) fail("{}: fsync failed: {}", path_.string(), std::strerror(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail("{}: close failed: {}", path_.string(), std::strerror(errno));
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("{}: rename failed: {}", path_.string(), std::strerror(errno));
  committed_ = true;
  auto dir = path_.parent_path().empty() ? std::filesystem::path(".") : path_.parent_path();
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::filesystem::path& path, std::string_view content) {
  AtomicFileWriter w(path);
  w.write(content);
  w.commit();
}

namespace {
namespace fs = std::filesystem;

fs::path parent_of(const fs::path& p) { return p.parent_path().empty() ? fs::path(".") : p.parent_path(); }

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Whether `name` is ".<base>.tmp-" or ".<base>.old-" followed by exactly 8 hex digits (the random suffix).
bool is_temp_sibling(const std::string& name, const std::string& base) {
  for (const char* kind : {".tmp-", ".old-"}) {
    const std::string prefix = "." + base + kind;
    if (name.size() == prefix.size() + 8 && name.compare(0, prefix.size(), prefix) == 0 &&
        name.find_first_not_of("0123456789abcdef", prefix.size()) == std::string::npos)
      return true;
  }
  return false;
}
}  // namespace

fs::path make_temp_dir(const fs::path& dest) {
  const fs::path parent = parent_of(dest);
  fs::create_directories(parent);
  std::random_device rd;
  for (int attempt = 0; attempt < 16; ++attempt) {
    fs::path tmp = parent / fmt::format(".{}.tmp-{:08x}", dest.filename().string(), rd());
    if (::mkdir(tmp.c_str(), 0755) == 0) return tmp;
    if (errno != EEXIST) fail("{}: cannot create temporary folder {}: {}", dest.string(), tmp.string(), std::strerror(errno));
  }
  fail("{}: cannot find a free temporary folder name", dest.string());
}

void publish_dir(const fs::path& tmp, const fs::path& dest) {
  const fs::path parent = parent_of(dest);
  fsync_dir(tmp);
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) == 0) {
    fsync_dir(parent);
    return;
  }
  if (errno == EEXIST) {
    // Swap: `dest` becomes the new folder and `tmp` the old one, in one step.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_EXCHANGE) == 0) {
      fsync_dir(parent);
      std::error_code ec;
      fs::remove_all(tmp, ec);
      return;
    }
    if (errno != EINVAL && errno != ENOSYS)
      fail("{}: cannot replace it with {}: {}", dest.string(), tmp.string(), std::strerror(errno));
    // A file system without RENAME_EXCHANGE: move the old folder aside first. A kill between the two
    // renames leaves the old folder under its ".old-" name and the new one under its ".tmp-" name.
    std::random_device rd;
    const fs::path old = parent / fmt::format(".{}.old-{:08x}", dest.filename().string(), rd());
    if (::rename(dest.c_str(), old.c_str()) != 0)
      fail("{}: cannot move it aside: {}", dest.string(), std::strerror(errno));
    if (::rename(tmp.c_str(), dest.c_str()) != 0) {
      const int err = errno;
      ::rename(old.c_str(), dest.c_str());
      fail("{}: cannot rename {} into place: {}", dest.string(), tmp.string(), std::strerror(err));
    }
    fsync_dir(parent);
    std::error_code ec;
    fs::remove_all(old, ec);
    return;
  }
  if (errno == EINVAL || errno == ENOSYS) {  // no renameat2 flags here: plain rename onto a missing folder
    if (::rename(tmp.c_str(), dest.c_str()) == 0) {
      fsync_dir(parent);
      return;
    }
  }
  fail("{}: cannot rename {} into place: {}", dest.string(), tmp.string(), std::strerror(errno));
}

void remove_stale_temps(const fs::path& dest) {
  const fs::path parent = parent_of(dest);
  const std::string base = dest.filename().string();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    if (is_temp_sibling(e.path().filename().string(), base)) fs::remove_all(e.path(), ec);
  }
}

}  // namespace lowbit

#include <sys/resource.h>

namespace lowbit {
double peak_rss_mb() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KB on Linux
}
}  // namespace lowbit

#pragma once
// Files: read-only memory maps of inputs, whole-file reads, and atomic writes of outputs.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace lowbit {

// A read-only private mapping of a whole file. The file is opened O_RDONLY: inputs are never modified.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }
  // Drops the whole pages of [p, p + n) (a range inside this map) from this process's memory: a
  // private read-only file mapping reads them back from the file if they are touched again. For
  // bytes copied elsewhere at load (re-laid weights), so that they do not count twice.
  void release(const void* p, size_t n) const;

 private:
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (text) file; refuses files larger than max_bytes.
std::string read_file(const std::filesystem::path& path, size_t max_bytes = size_t(1) << 30);

// Writes through a temporary file in the destination folder, flushed and renamed into place only
// when complete: readers see either the old file or the whole new one.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::filesystem::path& path);
  ~AtomicFileWriter();  // removes the temporary file unless commit() succeeded
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();  // fsync, rename over the destination, fsync the folder

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

void write_file_atomic(const std::filesystem::path& path, std::string_view content);

// Output folders. A folder is assembled under a temporary sibling name (make_temp_dir) and published
// with publish_dir: a plain rename when `dest` does not exist; otherwise the two are swapped in one
// step (renameat2 RENAME_EXCHANGE) and the old contents removed, so at every instant `dest` is either
// the old folder or the whole new one, even if the process is killed in between.
std::filesystem::path make_temp_dir(const std::filesystem::path& dest);
void publish_dir(const std::filesystem::path& tmp, const std::filesystem::path& dest);
// Removes what an earlier, killed run left beside `dest` (its ".NAME.tmp-*" / ".NAME.old-*" siblings).
void remove_stale_temps(const std::filesystem::path& dest);

}  // namespace lowbit

namespace lowbit {
// Peak resident set size of this process so far, in MB (from getrusage).
double peak_rss_mb();
}  // namespace lowbit

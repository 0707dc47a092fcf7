// Read-only memory mapping of a whole file (RAII: munmap on destruction). POSIX only;
// `MappedFile::supported()` is false elsewhere and callers read the file instead.
// The mapping is MAP_SHARED + PROT_READ, so processes mapping the same index share one
// copy in the page cache. Caveat of every mmap: if another program truncates the file in
// place while it is mapped, touching the lost pages raises SIGBUS. pypatch itself never
// rewrites in place (writes go to a temporary file renamed over the old one).
#pragma once

#include <cstddef>  // size_t
#include <cstdint>  // uint8_t
#include <string>   // std::string

namespace pypatch {
namespace io {

class MappedFile {
 public:
  /// True where mmap is available (POSIX builds).
  static bool supported() noexcept;

  /// Map `path` read-only. Throws IoError if it cannot be opened, stat-ed or mapped.
  /// An empty file gives an empty MappedFile (data() == nullptr, size() == 0).
  static MappedFile map(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }

 private:
  void release() noexcept;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace io
}  // namespace pypatch

// POSIX mmap wrapper; see mapped_file.h.
#include "pypatch/io/mapped_file.h"

#include <cerrno>    // errno
#include <cstring>   // std::strerror
#include <utility>   // std::swap

#include "pypatch/io/io_errors.h"  // IoError
#include "pypatch/io/open_file.h"  // open_regular_file

#if defined(__unix__) || defined(__APPLE__)
#define PYPATCH_IO_HAVE_MMAP 1
#include <sys/mman.h>  // mmap, munmap
#include <unistd.h>    // close
#else
#define PYPATCH_IO_HAVE_MMAP 0
#endif

namespace pypatch {
namespace io {

bool MappedFile::supported() noexcept { return PYPATCH_IO_HAVE_MMAP != 0; }

MappedFile::MappedFile(MappedFile&& other) noexcept { *this = std::move(other); }

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

#if PYPATCH_IO_HAVE_MMAP

namespace {
[[noreturn]] void fail(const std::string& path, const char* step, int err) {
  throw IoError(path + ": cannot " + step + ": " + std::strerror(err), err);
}
}  // namespace

MappedFile MappedFile::map(const std::string& path) {
  uint64_t size;
  const int fd = open_regular_file(path, &size);  // never blocks (FIFO), regular files only
  MappedFile out;
  if (size > 0) {
    void* p = ::mmap(nullptr, size_t(size), PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail(path, "mmap", err);
    }
    out.data_ = static_cast<const uint8_t*>(p);
    out.size_ = size_t(size);
  }
  ::close(fd);  // the mapping keeps its own reference to the file
  return out;
}

void MappedFile::release() noexcept {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

#else  // no mmap: callers check supported() and read the file instead

MappedFile MappedFile::map(const std::string& path) {
  throw IoError(path + ": memory mapping is not supported on this platform", 0);
}

void MappedFile::release() noexcept {
  data_ = nullptr;
  size_ = 0;
}

#endif

}  // namespace io
}  // namespace pypatch

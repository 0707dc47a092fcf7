// See open_file.h.
#include "pypatch/io/open_file.h"

#include <cerrno>   // errno
#include <cstring>  // std::strerror

#include "pypatch/io/io_errors.h"  // IoError

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>     // open, fcntl
#include <sys/stat.h>  // fstat, S_IS*
#include <unistd.h>    // close

namespace pypatch {
namespace io {
namespace {

const char* file_kind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

[[noreturn]] void fail(int fd, const std::string& path, const std::string& what, int err) {
  if (fd >= 0) ::close(fd);
  throw IoError(path + ": " + what, err);
}

}  // namespace

int open_regular_file(const std::string& path, uint64_t* size) {
  int fd;
  do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) fail(-1, path, std::string("cannot open for reading: ") + std::strerror(errno), errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) fail(fd, path, std::string("cannot stat: ") + std::strerror(errno), errno);
  if (!S_ISREG(st.st_mode))
    fail(fd, path, std::string("cannot load an index from ") + file_kind(st.st_mode) +
                       ": an index is a regular file", EINVAL);
  // O_NONBLOCK means nothing to a regular file on Linux, but clear it for other systems.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

}  // namespace io
}  // namespace pypatch

#endif

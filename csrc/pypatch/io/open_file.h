// Opening an index file for reading: regular files only, and never blocking on the way
// (open(2) on a FIFO waits for a writer forever; O_NONBLOCK returns at once, then fstat refuses).
#pragma once
#include <cstdint>  // uint64_t
#include <string>   // path

namespace pypatch {
namespace io {

/// POSIX: a read-only descriptor (O_CLOEXEC, blocking mode restored) of the regular file at
/// `path`, followed through symlinks, and its size. Throws IoError (errno) if it cannot be
/// opened, and IoError EINVAL naming the kind (FIFO, directory, device, socket) for anything
/// that is not a regular file. The caller closes the descriptor.
int open_regular_file(const std::string& path, uint64_t* size);

}  // namespace io
}  // namespace pypatch

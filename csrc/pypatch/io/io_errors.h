// Errors raised by the index file container (pypatch::io), tied into the core's
// hierarchy in pypatch/errors.h so the bindings map them without knowing about IO:
//   io::FormatError  = pypatch::FormatError -> pypatch.IndexFormatError (ValueError):
//                      not a valid container (bad magic, truncated, CRC mismatch, bad table).
//   io::VersionError : pypatch::VersionError (itself a FormatError) -> IndexVersionError:
//                      a valid container of a major format version this build cannot read.
//   io::IoError      : pypatch::IoError -> OSError: the OS refused (open, read, write,
//                      fsync, rename, mmap); carries errno.
// All are std::runtime_error; messages name the file, the section and what was expected
// versus found.
#pragma once

#include <string>  // std::string

#include "pypatch/errors.h"  // pypatch::FormatError, VersionError, IoError

namespace pypatch {
namespace io {

using FormatError = ::pypatch::FormatError;

class VersionError : public ::pypatch::VersionError {
 public:
  VersionError(const std::string& what, int file_major, int file_minor)
      : ::pypatch::VersionError(what), file_major_(file_major), file_minor_(file_minor) {}
  int file_major() const noexcept { return file_major_; }
  int file_minor() const noexcept { return file_minor_; }

 private:
  int file_major_;
  int file_minor_;
};

class IoError : public ::pypatch::IoError {
 public:
  IoError(const std::string& what, int err) : ::pypatch::IoError(what), errno_(err) {}
  /// The errno value that caused it (0 if none).
  int error_code() const noexcept { return errno_; }

 private:
  int errno_;
};

}  // namespace io
}  // namespace pypatch

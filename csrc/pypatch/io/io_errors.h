// Errors raised by the index file container (pypatch::io).
//
// Three kinds, so the bindings can map each to its Python type:
//   FormatError  -> pypatch.IndexFormatError (ValueError): the bytes are not a valid
//                   container (bad magic, truncated, CRC mismatch, bad section table).
//   VersionError -> pypatch.IndexVersionError: a valid container of a major format
//                   version this build cannot read. Derives from FormatError so that
//                   `catch (FormatError&)` sees every "cannot read this file" case.
//   IoError      -> OSError: the operating system refused (open, read, write, fsync,
//                   rename, mmap); carries errno.
// All derive from std::runtime_error; messages name the file, the section and what
// was expected versus found.
#pragma once

#include <stdexcept>  // std::runtime_error
#include <string>     // std::string

namespace pypatch {
namespace io {

class FormatError : public std::runtime_error {
 public:
  explicit FormatError(const std::string& what) : std::runtime_error(what) {}
};

class VersionError : public FormatError {
 public:
  VersionError(const std::string& what, int file_major, int file_minor)
      : FormatError(what), file_major_(file_major), file_minor_(file_minor) {}
  int file_major() const noexcept { return file_major_; }
  int file_minor() const noexcept { return file_minor_; }

 private:
  int file_major_;
  int file_minor_;
};

class IoError : public std::runtime_error {
 public:
  IoError(const std::string& what, int err) : std::runtime_error(what), errno_(err) {}
  /// The errno value that caused it (0 if none).
  int error_code() const noexcept { return errno_; }

 private:
  int errno_;
};

}  // namespace io
}  // namespace pypatch

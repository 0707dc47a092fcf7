// Exception types thrown by the pypatch core. The Python bindings translate each to the
// class of the same role in pypatch/errors.py (see csrc/bindings/module.cpp).
#pragma once
#include <stdexcept>  // std::runtime_error base
#include <string>     // messages

namespace pypatch {

/// Base of every error thrown on purpose by the core.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Wrong value, shape or dimension of an argument (Python: InvalidArgumentError).
struct InvalidArgument : Error {
  using Error::Error;
};
/// A quantizer or index used before training (Python: NotTrainedError).
struct NotTrained : Error {
  using Error::Error;
};
/// A file is truncated, corrupted or not a pypatch file (Python: IndexFormatError).
struct FormatError : Error {
  using Error::Error;
};
/// A file written by an incompatible (newer major) format version (Python: IndexVersionError).
struct VersionError : FormatError {
  using FormatError::FormatError;
};
/// The operating system refused a file operation (Python: OSError).
struct IoError : Error {
  using Error::Error;
};
/// A long call was interrupted by the caller (Python: KeyboardInterrupt).
struct Interrupted : Error {
  using Error::Error;
};

}  // namespace pypatch

/// Throws InvalidArgument with the message when cond is false.
#define PTCH_CHECK(cond, msg)                                              \
  do {                                                                     \
    if (!(cond)) throw ::pypatch::InvalidArgument(std::string(msg));       \
  } while (0)

// pypatch index container: one versioned file of typed, 64-byte aligned, CRC-checked
// sections, written atomically and readable through mmap without copying.
// Layout: README.md in this folder. Errors: io_errors.h (FormatError, VersionError,
// IoError, all in the pypatch::Error hierarchy); writer misuse (a kind added twice, a
// too-small write_to buffer) throws pypatch::InvalidArgument. Pure C++17, no Python.
// Thread safety: a Container's const methods may be called concurrently; a writer's
// write_atomic/to_bytes are const and may run concurrently on different paths.
//
// Writing (sections are referenced, not copied, until write_atomic/to_bytes returns):
//
//   using namespace pypatch::io;
//   ContainerWriter w;                                   // format kFormatMajor.kFormatMinor
//   w.add_string(kind::kMeta, meta_json);                // owned copy
//   w.add_view(kind::kCodes, codes.data(), codes.size()); // caller keeps codes alive
//   w.add_producer(kind::kLevels, n_patches, [&](SectionSink& out) {
//     out.write(levels_chunk, n);                         // streamed; exactly n_patches bytes
//   });
//   w.write_atomic("index.ptch");   // tmp file, fsync, rename, fsync dir; old file kept on error
//   std::vector<uint8_t> blob = w.to_bytes();             // same bytes, in memory
//
// Reading (views stay valid while the Container lives; it is movable, not copyable):
//
//   Container c = Container::open("index.ptch", /*mmap=*/true);
//   std::string_view meta = c.string(kind::kMeta);
//   const uint8_t* codes = c.array<uint8_t>(kind::kCodes, n_patches * m);  // checks size
//   if (const SectionView* s = c.find(kind::kImageIds)) { ... }            // optional section
//   c.verify_crc(kind::kCodes);     // big sections are CRC-checked on demand (see OpenOptions)
//
// Every structural check (magic, endian tag, header CRC, file size, table CRC and bounds,
// alignment, overlaps, duplicate kinds, section CRCs) runs before a section is returned,
// and nothing is allocated from an unchecked header value: the only allocation sized by
// the file is the eager read buffer, sized by the file's real size after the header checks.
// Unknown section kinds are kept in sections() and otherwise ignored (forward compatible
// minor versions). A different major version raises VersionError.
#pragma once

#include <cstddef>      // size_t
#include <cstdint>      // fixed-width integers
#include <functional>   // std::function (producers)
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <vector>       // std::vector

#include "pypatch/io/aligned_buffer.h"  // AlignedBuffer (eager storage)
#include "pypatch/io/format.h"          // kFormatMajor, kind::*, fourcc
#include "pypatch/io/io_errors.h"       // FormatError, VersionError, IoError
#include "pypatch/io/mapped_file.h"     // MappedFile (mmap storage)

namespace pypatch {
namespace io {

// ------------------------------------------------------------------------- reading

/// A section as seen by the reader: pointer into the mapping or the owned buffer.
struct SectionView {
  uint32_t kind = 0;
  uint32_t flags = 0;     // as given to the writer
  uint64_t offset = 0;    // from the start of the file; multiple of 64
  const uint8_t* data = nullptr;  // 64-byte aligned; never null (empty: points at offset)
  uint64_t size = 0;      // bytes
  uint32_t crc32 = 0;     // stored CRC-32 (zlib.crc32 of the bytes)
  bool crc_verified = false;
};

struct OpenOptions {
  bool mmap = true;                 // map read-only; falls back to reading off POSIX
  bool verify_all = false;          // CRC-check every section at open, whatever its size
  uint64_t verify_below = 1u << 20;  // sections up to this size are always CRC-checked
  uint16_t supported_major = kFormatMajor;  // any other major -> VersionError
};

class Container {
 public:
  /// Open a file. Throws IoError (cannot open/read/map), FormatError, VersionError.
  static Container open(const std::string& path, const OpenOptions& opts);
  static Container open(const std::string& path, bool mmap = true, bool verify_all = false);

  /// Parse an in-memory image (copied once into a 64-byte aligned buffer; the header is
  /// validated before the copy). `name` is used in error messages.
  static Container from_bytes(const void* data, size_t size, const OpenOptions& opts = {},
                              const std::string& name = "<bytes>");

  Container(Container&&) noexcept = default;
  Container& operator=(Container&&) noexcept = default;
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;

  const std::string& name() const noexcept { return name_; }
  uint16_t major() const noexcept { return major_; }
  uint16_t minor() const noexcept { return minor_; }
  uint32_t flags() const noexcept { return flags_; }
  bool is_mapped() const noexcept { return map_.data() != nullptr; }
  uint64_t file_bytes() const noexcept { return size_; }

  /// All sections, in file order, including unknown kinds.
  const std::vector<SectionView>& sections() const noexcept { return sections_; }
  /// nullptr if absent.
  const SectionView* find(uint32_t kind) const noexcept;
  bool has(uint32_t kind) const noexcept { return find(kind) != nullptr; }
  /// Throws FormatError "<file>: required section CODES is missing" if absent.
  const SectionView& section(uint32_t kind) const;

  /// Typed view of a section that must hold exactly `count` elements of T; throws
  /// FormatError naming the file, the section, expected and found byte counts.
  template <class T>
  const T* array(uint32_t kind, uint64_t count) const {
    const SectionView& s = section(kind);
    check_size(s, count, sizeof(T));
    return reinterpret_cast<const T*>(s.data);  // 64-aligned, so aligned for any T
  }
  /// The section as text (e.g. META JSON); no UTF-8 validation here.
  std::string_view string(uint32_t kind) const;

  /// Check the CRC of one section now (if not yet checked); FormatError on mismatch.
  /// Not safe to call concurrently with itself (it records the result).
  void verify_crc(uint32_t kind);
  void verify_all_crcs();

 private:
  Container() = default;
  static Container parse(const uint8_t* base, size_t size, const OpenOptions& opts,
                         const std::string& name);
  void check_size(const SectionView& s, uint64_t count, size_t elem) const;
  void verify(SectionView& s);

  std::string name_;
  uint16_t major_ = 0, minor_ = 0;
  uint32_t flags_ = 0;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  std::vector<SectionView> sections_;
  MappedFile map_;      // storage when mapped
  AlignedBuffer buf_;   // storage when read eagerly
};

// ------------------------------------------------------------------------- writing

/// Destination of a producer section: write() exactly the declared number of bytes,
/// in as many pieces as convenient.
class SectionSink {
 public:
  virtual void write(const void* data, size_t size) = 0;

 protected:
  ~SectionSink() = default;
};

namespace detail {
class ByteOut;  // where serialised bytes go (memory or file); writer.cpp
}

class ContainerWriter {
 public:
  using Producer = std::function<void(SectionSink&)>;

  explicit ContainerWriter(uint16_t major = kFormatMajor, uint16_t minor = kFormatMinor,
                           uint32_t flags = 0)
      : major_(major), minor_(minor), flags_(flags) {}

  /// Reference caller-owned bytes; they must stay alive and unchanged until written.
  void add_view(uint32_t kind, const void* data, size_t size, uint32_t flags = 0);
  /// Take ownership of the bytes.
  void add_owned(uint32_t kind, std::vector<uint8_t> bytes, uint32_t flags = 0);
  void add_string(uint32_t kind, std::string text, uint32_t flags = 0);
  /// Stream `size` bytes from a callback at write time. If the callback throws, the
  /// write is abandoned (temporary file removed, old file intact) and the exception
  /// propagates; writing more or fewer than `size` bytes throws std::logic_error.
  void add_producer(uint32_t kind, uint64_t size, Producer produce, uint32_t flags = 0);

  /// Size of the serialised container in bytes.
  uint64_t serialized_size() const;
  /// Serialise into dst (capacity must be >= serialized_size()); zero-fills padding.
  void write_to(void* dst, size_t capacity) const;
  std::vector<uint8_t> to_bytes() const;
  /// Write to `path + ".tmp.<pid>.<n>"`, fsync, rename over `path`, fsync the folder.
  /// On failure the temporary file is removed, `path` is untouched, and IoError (or the
  /// producer's exception) is thrown.
  void write_atomic(const std::string& path) const;

  size_t section_count() const noexcept { return entries_.size(); }

 private:
  struct Entry {
    uint32_t kind, flags;
    uint64_t size;
    const uint8_t* view;        // caller-owned bytes (add_view)
    std::vector<uint8_t> owned;  // used when view == nullptr and !produce
    Producer produce;            // streamed section
    const uint8_t* bytes() const { return view ? view : owned.data(); }
  };
  void check_new_kind(uint32_t kind) const;
  void serialize(detail::ByteOut& out) const;

  uint16_t major_, minor_;
  uint32_t flags_;
  std::vector<Entry> entries_;
};

}  // namespace io
}  // namespace pypatch

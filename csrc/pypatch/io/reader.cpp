// Container reader. The file is untrusted input: every header and table value is checked
// against the real size before it is used, in this order: signature, version, endian
// tag, header CRC, file size, table bounds and CRC, then each section's alignment,
// bounds, overlap and uniqueness, then section CRCs. The only allocation sized by the file
// is the eager read buffer, and it is sized by the real file size after the header passed.
#include <algorithm>  // std::sort
#include <cerrno>     // errno
#include <climits>    // SIZE_MAX
#include <cstring>    // std::memcmp, std::strerror

#include "pypatch/io/container.h"
#include "pypatch/io/crc32.h"          // crc32
#include "pypatch/io/little_endian.h"  // le::load*
#include "pypatch/io/open_file.h"      // open_regular_file

#if defined(__unix__) || defined(__APPLE__)
#define PYPATCH_IO_POSIX 1
#include <unistd.h>    // pread, close
#else
#define PYPATCH_IO_POSIX 0
#include <fstream>     // std::ifstream fallback
#endif

namespace pypatch {
namespace io {
namespace {

struct Header {
  uint16_t major, minor;
  uint32_t flags, count;
  uint64_t table_offset, file_bytes;
  uint32_t table_crc;
};

[[noreturn]] void bad(const std::string& name, const std::string& what) {
  throw FormatError(name + ": " + what);
}

std::string version_text(uint16_t major, uint16_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

std::string bytes_text(uint64_t n) { return std::to_string(n) + " bytes"; }

// Checks what the first min(avail, 128) bytes can tell about a file of `actual` bytes.
Header check_header(const uint8_t* p, size_t avail, uint64_t actual, const OpenOptions& opts,
                    const std::string& name) {
  if (avail < sizeof kMagic || std::memcmp(p, kMagic, sizeof kMagic) != 0) {
    if (avail >= 5 && std::memcmp(p + 1, "PTCH", 4) == 0)
      bad(name, "pypatch index signature is damaged (was the file transferred in text mode, "
                "converting line endings?)");
    bad(name, "not a pypatch index (bad magic: expected \\x89PTCH\\r\\n\\x1a, " +
                  bytes_text(actual) + " file)");
  }
  if (avail < 12)
    bad(name, "file truncated: " + bytes_text(actual) + ", the header needs " +
                  bytes_text(kHeaderBytes));
  Header h{};
  h.major = le::load16(p + hdr::kMajorOff);
  h.minor = le::load16(p + hdr::kMinorOff);
  const bool full = avail >= kHeaderBytes;
  bool crc_ok = false;
  if (full) {
    uint8_t copy[kHeaderBytes];
    std::memcpy(copy, p, kHeaderBytes);
    le::store32(copy + hdr::kHeaderCrcOff, 0);
    crc_ok = crc32(copy, kHeaderBytes) == le::load32(p + hdr::kHeaderCrcOff);
  }
  // Version before CRC: a future major may lay out (and checksum) its header differently.
  if (h.major != opts.supported_major) {
    const std::string v = version_text(h.major, h.minor);
    const std::string hint =
        full && !crc_ok ? " (its header checksum also fails: the file may be corrupted)" : "";
    if (h.major > opts.supported_major)
      throw VersionError(name + ": file format " + v + " is newer than this pypatch (reads " +
                             std::to_string(opts.supported_major) + ".x); upgrade pypatch" + hint,
                         h.major, h.minor);
    throw VersionError(name + ": file format " + v + " is older than this pypatch reads (" +
                           std::to_string(opts.supported_major) + ".x); rebuild the index" + hint,
                       h.major, h.minor);
  }
  if (!full)
    bad(name, "file truncated: " + bytes_text(actual) + ", the header needs " +
                  bytes_text(kHeaderBytes));
  const uint32_t endian = le::load32(p + hdr::kEndianOff);
  if (endian != kEndianTag)
    bad(name, endian == 0x04030201u ? "byte order is big-endian; only little-endian is supported"
                                    : "header endian tag is corrupted");
  if (!crc_ok) bad(name, "header checksum mismatch: the file is corrupted");
  const uint32_t header_bytes = le::load32(p + hdr::kHeaderBytesOff);
  if (header_bytes != kHeaderBytes)
    bad(name, "header size " + std::to_string(header_bytes) + ", expected " +
                  std::to_string(kHeaderBytes));
  h.flags = le::load32(p + hdr::kFlagsOff);
  h.count = le::load32(p + hdr::kCountOff);
  h.table_offset = le::load64(p + hdr::kTableOffsetOff);
  h.file_bytes = le::load64(p + hdr::kFileBytesOff);
  h.table_crc = le::load32(p + hdr::kTableCrcOff);
  if (h.file_bytes > actual)
    bad(name, "file truncated: header says " + bytes_text(h.file_bytes) + ", file has " +
                  bytes_text(actual));
  if (h.file_bytes < actual)
    bad(name, "file has " + bytes_text(actual) + " but its header says " +
                  bytes_text(h.file_bytes) + " (trailing data appended?)");
  if (h.count > kMaxSections)
    bad(name, "section table claims " + std::to_string(h.count) + " sections (at most " +
                  std::to_string(kMaxSections) + ")");
  // Bounds in this form cannot overflow: count * 32 <= actual - table_offset.
  if (h.table_offset < kHeaderBytes || h.table_offset > actual ||
      h.count > (actual - h.table_offset) / kTableEntryBytes)
    bad(name, "section table (" + std::to_string(h.count) + " entries at offset " +
                  std::to_string(h.table_offset) + ") does not fit in the " +
                  bytes_text(actual) + " file");
  return h;
}

}  // namespace

Container Container::parse(const uint8_t* base, size_t size, const OpenOptions& opts,
                           const std::string& name) {
  const Header h = check_header(base, size, size, opts, name);
  const uint8_t* table = base + h.table_offset;
  const uint64_t table_end = h.table_offset + uint64_t(h.count) * kTableEntryBytes;
  if (crc32(table, size_t(table_end - h.table_offset)) != h.table_crc)
    bad(name, "section table checksum mismatch: the file is corrupted");

  Container c;
  c.name_ = name;
  c.major_ = h.major;
  c.minor_ = h.minor;
  c.flags_ = h.flags;
  c.base_ = base;
  c.size_ = size;
  c.sections_.reserve(h.count);  // bounded by size / 32 above
  for (uint32_t i = 0; i < h.count; ++i) {
    const uint8_t* t = table + uint64_t(i) * kTableEntryBytes;
    SectionView s;
    s.kind = le::load32(t + ent::kKindOff);
    s.flags = le::load32(t + ent::kFlagsOff);
    s.offset = le::load64(t + ent::kOffsetOff);
    s.size = le::load64(t + ent::kBytesOff);
    s.crc32 = le::load32(t + ent::kCrcOff);
    const std::string where = "section " + kind_name(s.kind) + " at offset " +
                              std::to_string(s.offset) + " (len " + std::to_string(s.size) + ")";
    if (s.offset > size || s.size > size - s.offset)
      bad(name, where + " runs past end of file (" + bytes_text(size) + "): file truncated?");
    if (s.offset % kSectionAlign != 0) bad(name, where + " is not 64-byte aligned");
    if (s.offset < table_end) bad(name, where + " overlaps the header or section table");
    s.data = base + s.offset;
    c.sections_.push_back(s);
  }
  std::vector<const SectionView*> by_offset;
  by_offset.reserve(c.sections_.size());
  for (const SectionView& s : c.sections_) by_offset.push_back(&s);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SectionView* a, const SectionView* b) { return a->offset < b->offset; });
  std::vector<uint32_t> kinds;
  kinds.reserve(c.sections_.size());
  for (const SectionView& s : c.sections_) kinds.push_back(s.kind);
  std::sort(kinds.begin(), kinds.end());
  for (size_t i = 1; i < kinds.size(); ++i)
    if (kinds[i - 1] == kinds[i]) bad(name, "section " + kind_name(kinds[i]) + " appears twice");
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->size > by_offset[i]->offset)
      bad(name, "sections " + kind_name(by_offset[i - 1]->kind) + " and " +
                    kind_name(by_offset[i]->kind) + " overlap");
  for (SectionView& s : c.sections_)
    if (opts.verify_all || s.size <= opts.verify_below) c.verify(s);
  return c;
}

void Container::verify(SectionView& s) {
  if (s.crc_verified) return;
  const uint32_t got = crc32(s.data, size_t(s.size));
  if (got != s.crc32)
    bad(name_, "section " + kind_name(s.kind) + " at offset " + std::to_string(s.offset) +
                   " (len " + std::to_string(s.size) + ") checksum mismatch: the file is corrupted");
  s.crc_verified = true;
}

void Container::verify_crc(uint32_t kind) {
  const SectionView& s = section(kind);
  verify(sections_[size_t(&s - sections_.data())]);
}

void Container::verify_all_crcs() {
  for (SectionView& s : sections_) verify(s);
}

const SectionView* Container::find(uint32_t kind) const noexcept {
  for (const SectionView& s : sections_)
    if (s.kind == kind) return &s;
  return nullptr;
}

const SectionView& Container::section(uint32_t kind) const {
  const SectionView* s = find(kind);
  if (!s) bad(name_, "required section " + kind_name(kind) + " is missing");
  return *s;
}

void Container::check_size(const SectionView& s, uint64_t count, size_t elem) const {
  if (elem == 0 || count > UINT64_MAX / elem || s.size != count * elem)
    bad(name_, "section " + kind_name(s.kind) + " has " + bytes_text(s.size) + ", expected " +
                   std::to_string(count) + " x " + std::to_string(elem) + " bytes");
}

std::string_view Container::string(uint32_t kind) const {
  const SectionView& s = section(kind);
  return std::string_view(reinterpret_cast<const char*>(s.data), size_t(s.size));
}

// ------------------------------------------------------------------------- opening

Container Container::from_bytes(const void* data, size_t size, const OpenOptions& opts,
                                const std::string& name) {
  const uint8_t* src = static_cast<const uint8_t*>(data);
  check_header(src, size, size, opts, name);  // fail cheaply before copying
  AlignedBuffer buf(size, /*zero=*/false);
  if (size) std::memcpy(buf.data(), src, size);
  Container c = parse(buf.data(), size, opts, name);
  c.buf_ = std::move(buf);  // the bytes do not move, views stay valid
  return c;
}

Container Container::open(const std::string& path, bool mmap, bool verify_all) {
  OpenOptions opts;
  opts.mmap = mmap;
  opts.verify_all = verify_all;
  return open(path, opts);
}

#if PYPATCH_IO_POSIX

namespace {

[[noreturn]] void os_fail(const std::string& path, const char* step, int err) {
  throw IoError(path + ": cannot " + step + ": " + std::strerror(err), err);
}

// Reads up to `size` bytes at `offset`; returns how many were read (short only at EOF).
size_t pread_full(int fd, uint8_t* dst, size_t size, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < size) {
    const size_t chunk = std::min<size_t>(size - done, size_t(1) << 30);
    const ssize_t n = ::pread(fd, dst + done, chunk, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) os_fail(path, "read", errno);
    if (n == 0) break;
    done += size_t(n);
  }
  return done;
}

}  // namespace

Container Container::open(const std::string& path, const OpenOptions& opts) {
  if (opts.mmap) {
    MappedFile map = MappedFile::map(path);
    Container c = parse(map.data(), map.size(), opts, path);
    c.map_ = std::move(map);  // the mapping does not move, views stay valid
    return c;
  }
  uint64_t actual;
  const int fd = open_regular_file(path, &actual);  // never blocks (FIFO), regular files only
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  uint8_t head[kHeaderBytes];
  const size_t got = pread_full(fd, head, size_t(std::min<uint64_t>(actual, kHeaderBytes)), 0, path);
  check_header(head, got, actual, opts, path);  // before allocating anything file-sized
  if (actual > SIZE_MAX) bad(path, "file of " + bytes_text(actual) + " does not fit in memory");
  AlignedBuffer buf(size_t(actual), /*zero=*/false);
  const size_t n = pread_full(fd, buf.data(), buf.size(), 0, path);
  if (n != actual)
    bad(path, "file shrank while being read (" + bytes_text(n) + " of " + bytes_text(actual) + ")");
  Container c = parse(buf.data(), n, opts, path);
  c.buf_ = std::move(buf);
  return c;
}

#else  // no POSIX: read the whole file with iostreams, never map

Container Container::open(const std::string& path, const OpenOptions& opts) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError(path + ": cannot open for reading", errno);
  const uint64_t actual = uint64_t(in.tellg());
  uint8_t head[kHeaderBytes];
  const size_t want = size_t(std::min<uint64_t>(actual, kHeaderBytes));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(head), std::streamsize(want));
  check_header(head, size_t(in.gcount()), actual, opts, path);
  if (actual > SIZE_MAX) bad(path, "file of " + bytes_text(actual) + " does not fit in memory");
  AlignedBuffer buf(size_t(actual), /*zero=*/false);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(buf.data()), std::streamsize(actual));
  if (uint64_t(in.gcount()) != actual) throw IoError(path + ": read failed", errno);
  Container c = parse(buf.data(), buf.size(), opts, path);
  c.buf_ = std::move(buf);
  return c;
}

#endif

}  // namespace io
}  // namespace pypatch

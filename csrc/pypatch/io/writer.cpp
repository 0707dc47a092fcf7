// ContainerWriter: lays sections out at 64-byte aligned offsets after the header and the
// section table, streams them to memory or to a temporary file while computing their
// CRCs, and writes the table and header last (so a half-written file has no valid
// header). The file path is the classic atomic replace: tmp, fsync, rename, fsync dir
// (through symlinks, keeping the replaced file's mode; save_path.h).
#include <algorithm>  // std::min
#include <atomic>     // temp-name counter
#include <cerrno>     // errno
#include <cstring>    // std::memcpy, std::strerror
#include <stdexcept>  // std::logic_error (producer size bugs)

#include "pypatch/io/container.h"
#include "pypatch/io/crc32.h"          // section and header CRCs
#include "pypatch/io/little_endian.h"  // le::store*
#include "pypatch/io/save_path.h"      // symlink rule, temp names, stale temps

#if defined(__unix__) || defined(__APPLE__)
#define PYPATCH_IO_POSIX 1
#include <fcntl.h>     // open
#include <sys/file.h>  // flock (marks a live writer's temporary)
#include <sys/stat.h>  // stat, fchmod (keep the replaced file's mode)
#include <unistd.h>    // pwrite, fsync, close, unlink, getpid
#else
#define PYPATCH_IO_POSIX 0
#include <cstdio>      // std::FILE fallback
#endif

namespace pypatch {
namespace io {

namespace {

constexpr uint64_t align_up(uint64_t x) { return (x + kSectionAlign - 1) / kSectionAlign * kSectionAlign; }
const uint8_t kZeros[kSectionAlign] = {};

}  // namespace

// Byte destination, written at explicit offsets (the header goes in last).
class detail::ByteOut {
 public:
  virtual void put(uint64_t offset, const void* data, size_t size) = 0;

 protected:
  ~ByteOut() = default;
};

namespace {

class MemoryOut final : public detail::ByteOut {
 public:
  explicit MemoryOut(uint8_t* dst) : dst_(dst) {}
  void put(uint64_t offset, const void* data, size_t size) override {
    if (size) std::memcpy(dst_ + offset, data, size);
  }

 private:
  uint8_t* dst_;
};

// Hands a producer's pieces to Out at consecutive offsets, counting and CRC-ing them.
class StreamSink final : public SectionSink {
 public:
  StreamSink(detail::ByteOut& out, uint64_t offset, uint64_t size, uint32_t kind)
      : out_(out), pos_(offset), left_(size), kind_(kind) {}
  void write(const void* data, size_t size) override {
    if (size > left_)
      throw std::logic_error("pypatch container: producer of section " + kind_name(kind_) +
                             " wrote more bytes than it declared");
    out_.put(pos_, data, size);
    crc_ = crc32_update(crc_, data, size);
    pos_ += size;
    left_ -= size;
  }
  uint64_t left() const { return left_; }
  uint32_t crc() const { return crc_; }

 private:
  detail::ByteOut& out_;
  uint64_t pos_, left_;
  uint32_t kind_;
  uint32_t crc_ = 0;
};

}  // namespace

void ContainerWriter::check_new_kind(uint32_t kind) const {
  if (entries_.size() >= kMaxSections)
    throw ::pypatch::InvalidArgument("pypatch container: more than " +
                                     std::to_string(kMaxSections) + " sections");
  for (const Entry& e : entries_)
    if (e.kind == kind)
      throw ::pypatch::InvalidArgument("pypatch container: section " + kind_name(kind) +
                                  " added twice");
}

void ContainerWriter::add_view(uint32_t kind, const void* data, size_t size, uint32_t flags) {
  check_new_kind(kind);
  if (data == nullptr && size != 0)
    throw ::pypatch::InvalidArgument("pypatch container: section " + kind_name(kind) +
                                " has a null data pointer");
  entries_.push_back(Entry{kind, flags, size, static_cast<const uint8_t*>(data), {}, {}});
  if (entries_.back().view == nullptr) entries_.back().view = kZeros;  // empty view
}

void ContainerWriter::add_owned(uint32_t kind, std::vector<uint8_t> bytes, uint32_t flags) {
  check_new_kind(kind);
  const uint64_t size = bytes.size();
  entries_.push_back(Entry{kind, flags, size, nullptr, std::move(bytes), {}});
}

void ContainerWriter::add_string(uint32_t kind, std::string text, uint32_t flags) {
  add_owned(kind, std::vector<uint8_t>(text.begin(), text.end()), flags);
}

void ContainerWriter::add_producer(uint32_t kind, uint64_t size, Producer produce,
                                   uint32_t flags) {
  check_new_kind(kind);
  if (!produce)
    throw ::pypatch::InvalidArgument("pypatch container: section " + kind_name(kind) +
                                " has an empty producer");
  entries_.push_back(Entry{kind, flags, size, nullptr, {}, std::move(produce)});
}

uint64_t ContainerWriter::serialized_size() const {
  uint64_t pos = align_up(uint64_t(kHeaderBytes) + uint64_t(kTableEntryBytes) * entries_.size());
  for (const Entry& e : entries_) {
    if (e.size > UINT64_MAX - kSectionAlign - pos)  // cannot happen with real memory
      throw ::pypatch::InvalidArgument("pypatch container: sections too large");
    pos = align_up(pos + e.size);
  }
  return pos;
}

void ContainerWriter::serialize(detail::ByteOut& out) const {
  const uint64_t total = serialized_size();
  const uint64_t table_end = uint64_t(kHeaderBytes) + uint64_t(kTableEntryBytes) * entries_.size();
  std::vector<uint8_t> head(table_end, 0);  // header + table, written last
  uint64_t pos = table_end;                 // end of what has been written so far
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    const uint64_t offset = align_up(pos);
    out.put(pos, kZeros, size_t(offset - pos));  // padding
    uint32_t crc;
    if (e.produce) {
      StreamSink sink(out, offset, e.size, e.kind);
      e.produce(sink);
      if (sink.left() != 0)
        throw std::logic_error("pypatch container: producer of section " + kind_name(e.kind) +
                               " wrote " + std::to_string(e.size - sink.left()) +
                               " bytes, declared " + std::to_string(e.size));
      crc = sink.crc();
    } else {
      out.put(offset, e.bytes(), size_t(e.size));
      crc = crc32(e.bytes(), size_t(e.size));
    }
    uint8_t* t = head.data() + kHeaderBytes + kTableEntryBytes * i;
    le::store32(t + ent::kKindOff, e.kind);
    le::store32(t + ent::kFlagsOff, e.flags);
    le::store64(t + ent::kOffsetOff, offset);
    le::store64(t + ent::kBytesOff, e.size);
    le::store32(t + ent::kCrcOff, crc);
    pos = offset + e.size;
  }
  out.put(pos, kZeros, size_t(total - pos));  // trailing padding to a multiple of 64

  uint8_t* h = head.data();
  std::memcpy(h + hdr::kMagicOff, kMagic, sizeof kMagic);
  le::store16(h + hdr::kMajorOff, major_);
  le::store16(h + hdr::kMinorOff, minor_);
  le::store32(h + hdr::kHeaderBytesOff, kHeaderBytes);
  le::store32(h + hdr::kEndianOff, kEndianTag);
  le::store32(h + hdr::kFlagsOff, flags_);
  le::store32(h + hdr::kCountOff, uint32_t(entries_.size()));
  le::store64(h + hdr::kTableOffsetOff, kHeaderBytes);
  le::store64(h + hdr::kFileBytesOff, total);
  le::store32(h + hdr::kTableCrcOff, crc32(h + kHeaderBytes, size_t(table_end - kHeaderBytes)));
  le::store32(h + hdr::kHeaderCrcOff, crc32(h, kHeaderBytes));  // field itself still zero
  out.put(0, h, head.size());
}

void ContainerWriter::write_to(void* dst, size_t capacity) const {
  if (capacity < serialized_size())
    throw ::pypatch::InvalidArgument("pypatch container: write_to buffer of " +
                                std::to_string(capacity) + " bytes is smaller than the " +
                                std::to_string(serialized_size()) + " bytes needed");
  MemoryOut out(static_cast<uint8_t*>(dst));
  serialize(out);
}

std::vector<uint8_t> ContainerWriter::to_bytes() const {
  std::vector<uint8_t> bytes(static_cast<size_t>(serialized_size()));
  write_to(bytes.data(), bytes.size());
  return bytes;
}

// ------------------------------------------------------------------ atomic file write

namespace {

std::atomic<unsigned> g_tmp_counter{0};  // distinct temp names for threads of one process

std::string errno_text(int err) { return std::strerror(err); }

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

#if PYPATCH_IO_POSIX
class FileOut final : public detail::ByteOut {
 public:
  FileOut(int fd, const std::string& path) : fd_(fd), path_(path) {}
  void put(uint64_t offset, const void* data, size_t size) override {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      const size_t chunk = std::min<size_t>(size, size_t(1) << 30);
      const ssize_t n = ::pwrite(fd_, p, chunk, off_t(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        throw IoError(path_ + ": write failed: " + errno_text(err), err);
      }
      p += n;
      offset += uint64_t(n);
      size -= size_t(n);
    }
  }

 private:
  int fd_;
  const std::string& path_;
};
#endif

}  // namespace

#if PYPATCH_IO_POSIX

void ContainerWriter::write_atomic(const std::string& path) const {
  // Through a symlink: replace the file it points to, keep the link (save_path.h).
  const std::string target = resolve_save_target(path);
  remove_stale_temps(target);  // of killed saves; best effort, before this one needs the space
  const std::string tmp = temp_name(target, static_cast<long>(::getpid()), g_tmp_counter.fetch_add(1));
  int fd;
  do fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    throw IoError(path + ": cannot create temporary file " + tmp + ": " + errno_text(err), err);
  }
  // Held until after the rename: tells remove_stale_temps of other processes (even in another
  // PID namespace) that this temporary's writer is alive. Best effort (some NFS lack flock).
  ::flock(fd, LOCK_EX | LOCK_NB);
  try {
    FileOut out(fd, tmp);
    serialize(out);
    // Replacing a file keeps its permissions (a 0600 index stays private).
    struct stat old;
    if (::stat(target.c_str(), &old) == 0 && S_ISREG(old.st_mode) && ::fchmod(fd, old.st_mode & 07777) != 0) {
      const int err = errno;
      throw IoError(tmp + ": cannot copy the mode of " + target + ": " + errno_text(err), err);
    }
    if (::fsync(fd) != 0) {
      const int err = errno;
      throw IoError(tmp + ": fsync failed: " + errno_text(err), err);
    }
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
      const int err = errno;
      throw IoError(path + ": cannot replace " + target + " with " + tmp + ": " + errno_text(err), err);
    }
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());  // the old file at `target` was never touched
    throw;
  }
  ::close(fd);  // after fsync, a close error cannot lose data; the file is in place
  // Make the rename itself durable. Best effort: the new file is already in place, and
  // some filesystems refuse fsync on directories.
  const int dfd = ::open(parent_dir(target).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

#else  // portable fallback: same steps without fsync (std::FILE has no durable flush)

void ContainerWriter::write_atomic(const std::string& path) const {
  const std::string tmp = path + ".tmp." + std::to_string(g_tmp_counter.fetch_add(1));
  std::vector<uint8_t> bytes = to_bytes();
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw IoError(path + ": cannot create temporary file " + tmp, errno);
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    throw IoError(tmp + ": write failed", errno);
  }
  std::remove(path.c_str());  // rename does not replace on every platform
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw IoError(path + ": cannot replace with " + tmp, errno);
  }
}

#endif

}  // namespace io
}  // namespace pypatch

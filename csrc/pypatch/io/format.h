// On-disk constants of the pypatch index container (".ptch"). The byte layout is
// documented in README.md next to this file; all integers are little-endian.
//
//   offset 0    header (128 bytes, kHeaderBytes)
//   offset 128  section table: section_count x 32-byte entries
//   then        sections, each starting at a multiple of 64 (kSectionAlign), zero padding
#pragma once

#include <cstdint>  // fixed-width integers
#include <string>   // kind_name

namespace pypatch {
namespace io {

/// Format version written by this build. A reader accepts any minor of its major.
constexpr uint16_t kFormatMajor = 1;
constexpr uint16_t kFormatMinor = 0;

/// PNG-style signature: a high byte (catches 7-bit transfers), the name, CR LF (catches
/// newline conversion), ^Z (stops DOS `type`), LF.
constexpr unsigned char kMagic[8] = {0x89, 'P', 'T', 'C', 'H', '\r', '\n', 0x1A};
constexpr uint32_t kEndianTag = 0x01020304u;  // reads 0x04030201 if byte-swapped
constexpr uint32_t kHeaderBytes = 128;
constexpr uint32_t kTableEntryBytes = 32;
constexpr uint32_t kSectionAlign = 64;  // cache line; enough for any SIMD load
/// Upper bound on sections per file (format 1 uses under 10); keeps a crafted table from
/// costing more than a few microseconds to check.
constexpr uint32_t kMaxSections = 4096;

// Header field offsets (bytes from the start of the file).
namespace hdr {
constexpr int kMagicOff = 0;          // u8[8]
constexpr int kMajorOff = 8;          // u16
constexpr int kMinorOff = 10;         // u16
constexpr int kHeaderBytesOff = 12;   // u32, = 128
constexpr int kEndianOff = 16;        // u32, = kEndianTag
constexpr int kFlagsOff = 20;         // u32, file-level flags (opaque to the container)
constexpr int kCountOff = 24;         // u32, number of sections
constexpr int kReserved0Off = 28;     // u32, zero
constexpr int kTableOffsetOff = 32;   // u64, offset of the section table (= 128)
constexpr int kFileBytesOff = 40;     // u64, total file size
constexpr int kTableCrcOff = 48;      // u32, CRC-32 of the whole section table
constexpr int kHeaderCrcOff = 52;     // u32, CRC-32 of the 128 header bytes with this field 0
// bytes 56..127 reserved, zero when written, covered by the header CRC.
}  // namespace hdr

// Section table entry field offsets (bytes from the start of the entry).
namespace ent {
constexpr int kKindOff = 0;     // u32 fourcc
constexpr int kFlagsOff = 4;    // u32, opaque to the container
constexpr int kOffsetOff = 8;   // u64, multiple of 64
constexpr int kBytesOff = 16;   // u64
constexpr int kCrcOff = 24;     // u32, CRC-32 of the section bytes
constexpr int kReservedOff = 28;  // u32, zero
}  // namespace ent

/// Four-character code, stored so the file shows the characters in order:
/// fourcc("META") is the bytes 'M' 'E' 'T' 'A' on disk.
constexpr uint32_t fourcc(const char (&s)[5]) {
  return uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 |
         uint32_t(uint8_t(s[2])) << 16 | uint32_t(uint8_t(s[3])) << 24;
}

/// Section kinds of format 1 (DESIGN.md §4.11). The container itself treats kinds as
/// opaque; these are here so writer and reader of PatchIndex share one list.
namespace kind {
constexpr uint32_t kMeta = fourcc("META");          // UTF-8 JSON
constexpr uint32_t kPqCentroids = fourcc("PQCB");   // f32 (m, 2^nbits, dsub)
constexpr uint32_t kRqCentroids = fourcc("RQCB");   // f32 (m, 2^nbits, dim): residual codebooks
constexpr uint32_t kCodes = fourcc("CODE");         // u8 (n_patches, code_bytes)
constexpr uint32_t kImageOffsets = fourcc("IOFF");  // u64 (n_images + 1), CSR
constexpr uint32_t kImageSizes = fourcc("ISIZ");    // u32 (n_images, 2)
constexpr uint32_t kLevels = fourcc("LEVL");        // u8 (n_patches)
constexpr uint32_t kImageIds = fourcc("IIDS");      // u64 offsets + UTF-8 blob
constexpr uint32_t kVectors = fourcc("VECS");       // f32/f16 flat vectors (no-PQ mode)
}  // namespace kind

/// Human-readable name for messages: "CODES" for known kinds, else "'ABCD'" or hex.
std::string kind_name(uint32_t kind);

}  // namespace io
}  // namespace pypatch

// PatchIndex file format 1 (on the io::Container, csrc/pypatch/io/README.md):
//   PIDX  64-byte binary header, little-endian u32/u64 fields (layout below; authoritative)
//   META  UTF-8 JSON: {"format": "pypatch.PatchIndex", ...counts and settings for humans and
//         tools..., "user": <the index's metadata JSON>}; "user" is always the last key
//   PQCB  f32 (m, ksub, dsub) centroids (PQ store, when trained)
//   CODE  u8 PQ codes, layout "blocked64" (code_layout.h; PIDX code_layout = 1, padded to
//         whole blocks) or row-major (n_patches, m) (code_layout = 0, converted on load);
//         4-bit codes (nbits = 4) in layout "blocked32_fs4" (code_layout_fs4.h; code_layout =
//         2, two codes a byte, padded to whole 32-patch blocks; written since the fast scan).
//         Older 4-bit files (layout 0 or 1, one code a byte) load by conversion into memory.
//   VECS  f32/f16 (n_patches, dim) row-major vectors (flat store)
//   IOFF  u64 (n_images + 1) CSR image offsets
//   TOMB  u8 (n_images) removed mask
//   XFRM  optional LinearTransform: 64-byte header (u32 version = 1, u32 kind = 1 "centre,
//         project, L2-normalise", u32 dim_in, u32 dim_out = the index dim, zeros), then f32
//         mean (dim_in) and f32 matrix (dim_out, dim_in) row-major, packed (no padding)
//   Inverted file (PIDX version 3, written only for an IVF index, so an older pypatch refuses
//   it with "upgrade pypatch"; version 1 files are exhaustive and load as before):
//   PIDX  bytes 56..59 u32 nlist (>= 1), 60..63 u32 default nprobe (1..nlist)
//   IVFC  f32 (nlist, dim) coarse centroids (present once trained)
//   IVFN  u64 (nlist + 1) list offsets in entries (little-endian): list l holds entries
//         [off[l], off[l+1]) of IVFP; off[nlist] = n_patches
//   IVFP  64-byte header (u32 version = 1, u32 ord_bits in 0..8, zeros), then u32 (n_patches)
//         ids, image << ord_bits | patch ordinal, lists concatenated; strictly ascending within
//         a list, ordinal < that image's patch count, every patch exactly once
//   CODE  each list's codes in the index's layout (blocked64 / blocked32_fs4) from entry 0 of
//         the list, padded to whole blocks, lists concatenated in order
//   IVFC/IVFN/IVFP are CRC-checked and validated on every load (O(n_patches), 4 bytes a patch:
//   an entry pointing outside its image would make the scan read past a code list).
//   Residual codebooks (PIDX version 4, written only for an index whose quantizer is a
//   ResidualQuantizer, so an older pypatch refuses it with "upgrade pypatch"):
//   PIDX  128 bytes: the version-3 fields (bytes 56..63 nlist/nprobe, nlist = 0 when
//         exhaustive), then 64..67 u32 codebooks (0 product, 1 residual), zeros to 127
//   RQCB  f32 (m, ksub, dim) residual codebooks, in place of PQCB (when trained)
//   PIDX version 2 (the first inverted files) held IVFI (u32 image a patch) and IVFO (u8
//   ordinal a patch) instead of IVFP; such files load by conversion into memory (not mapped).
// PIDX and IOFF are read and written byte by byte in little-endian (io/little_endian.h), so a
// file means the same on any host. PQCB/CODE/VECS are the host's floats and bytes as-is (they
// are viewed in place; every supported host is little-endian).
// Loading validates every count against the section sizes before using them, and the offsets
// (start 0, non-decreasing, end n_patches) before any search can read through them. The small
// sections that steer reads or queries (IOFF, TOMB, META, PQCB, XFRM) are always CRC-checked,
// whatever their size and the verify flag (~1 ms per 10 MB); only CODE/VECS are left to
// verify=True on a map. A file without XFRM loads with no transform (files before XFRM).
#include <cstring>  // memcpy
#include <limits>   // numeric_limits
#include <memory>   // shared_ptr (transform)
#include <utility>  // move

#include "pypatch/errors.h"              // InvalidArgument
#include "pypatch/index/code_layout.h"   // blocked64 <-> rows
#include "pypatch/index/code_layout_fs4.h"  // blocked32_fs4 (4-bit codes)
#include "pypatch/index/patch_index.h"
#include "pypatch/pq/product_quantizer.h"   // codebooks of a loaded PQ store
#include "pypatch/pq/residual_quantizer.h"  // ... or residual ones (PIDX version 4)
#include "pypatch/io/container.h"        // ContainerWriter, Container
#include "pypatch/io/io_errors.h"        // io::FormatError, io::VersionError
#include "pypatch/io/little_endian.h"    // le::load32/store64: host-independent PIDX, IOFF
#include "pypatch/util/value_limits.h"    // |x| <= 1e15 for centroids and vectors

namespace pypatch {
namespace {

constexpr uint32_t kKindHeader = io::fourcc("PIDX");
constexpr uint32_t kKindRemoved = io::fourcc("TOMB");
constexpr uint32_t kKindTransform = io::fourcc("XFRM");
// Newest read: 1 exhaustive, 2-3 inverted file, 4 either with residual codebooks.
constexpr uint32_t kHeaderVersion = 4;
constexpr uint32_t kIvfCentroids = io::fourcc("IVFC");
constexpr uint32_t kIvfListOffsets = io::fourcc("IVFN");
constexpr uint32_t kIvfImages = io::fourcc("IVFI");
constexpr uint32_t kIvfOrdinals = io::fourcc("IVFO");
constexpr uint32_t kIvfPackedIds = io::fourcc("IVFP");
constexpr uint32_t kIvfPackedVersion = 1;
constexpr size_t kIvfPackedHeader = 64;
constexpr size_t kHeaderSize = 64;
constexpr size_t kHeaderSizeV4 = 128;  // + u32 codebooks at 64
// XFRM header: version, transform kind (1 = LinearTransform), dim_in, dim_out; 64 bytes so
// the floats that follow start 64-aligned.
constexpr uint32_t kTransformVersion = 1;
constexpr uint32_t kTransformLinear = 1;
constexpr size_t kTransformHeaderSize = 64;

// PIDX layout (byte offsets).
struct HeaderFields {
  uint32_t version;     // 0
  uint32_t kind;        // 4: StoreKind
  uint32_t dim;         // 8
  uint32_t m;           // 12 (0 for flat)
  uint32_t nbits;       // 16 (0 for flat)
  uint32_t code_size;   // 20
  uint32_t trained;     // 24: PQCB present
  uint32_t code_layout; // 28: 0 row-major, 1 blocked64 (PQ only), 2 blocked32_fs4 (4-bit PQ)
  uint64_t n_images;    // 32
  uint64_t n_patches;   // 40
  uint64_t n_removed;   // 48
  uint32_t nlist;       // 56 (versions 2, 3 only)
  uint32_t nprobe;      // 60 (versions 2-4; version 4: nlist 0 = exhaustive)
  uint32_t codebooks;   // 64 (version 4 only): CodebookKind, 0 product, 1 residual
};

void put32(std::vector<uint8_t>& b, size_t off, uint32_t v) { io::le::store32(b.data() + off, v); }
void put64(std::vector<uint8_t>& b, size_t off, uint64_t v) { io::le::store64(b.data() + off, v); }
uint32_t get32(const uint8_t* b, size_t off) { return io::le::load32(b + off); }
uint64_t get64(const uint8_t* b, size_t off) { return io::le::load64(b + off); }

[[noreturn]] void bad(const std::string& name, const std::string& what) {
  throw io::FormatError(name + ": " + what);
}

const char* store_name(StoreKind k) {
  return k == StoreKind::PQ ? "pq" : k == StoreKind::FlatF32 ? "flat_float32" : "flat_float16";
}

uint64_t transform_section_bytes(uint64_t dim_in, uint64_t dim_out) {
  return kTransformHeaderSize + 4 * (dim_in + dim_in * dim_out);  // dims <= 2^20: no overflow
}

// XFRM: header then the host's floats as-is (like PQCB: every supported host is little-endian).
void add_transform_section(io::ContainerWriter& w, std::shared_ptr<const LinearTransform> t) {
  const uint64_t bytes = transform_section_bytes(t->dim_in(), t->dim_out());
  // Streamed at write time from the (immutable, shared) transform: no copy of the matrix.
  w.add_producer(kKindTransform, bytes, [t](io::SectionSink& out) {
    std::vector<uint8_t> h(kTransformHeaderSize, 0);
    put32(h, 0, kTransformVersion);
    put32(h, 4, kTransformLinear);
    put32(h, 8, static_cast<uint32_t>(t->dim_in()));
    put32(h, 12, static_cast<uint32_t>(t->dim_out()));
    out.write(h.data(), h.size());
    out.write(t->mean().data(), t->mean().size() * 4);
    out.write(t->matrix().data(), t->matrix().size() * 4);
  });
}

// Reads and checks XFRM (already CRC-checked): every size against the dims before a copy.
std::shared_ptr<const LinearTransform> read_transform(const io::Container& c, uint32_t index_dim) {
  const std::string& name = c.name();
  const io::SectionView& s = c.section(kKindTransform);
  if (s.size < kTransformHeaderSize)
    bad(name, "XFRM section holds " + std::to_string(s.size) + " bytes, less than its " +
                  std::to_string(kTransformHeaderSize) + "-byte header");
  const uint32_t version = get32(s.data, 0), kind = get32(s.data, 4);
  const uint32_t dim_in = get32(s.data, 8), dim_out = get32(s.data, 12);
  if (version > kTransformVersion)
    throw io::VersionError(name + ": XFRM transform version " + std::to_string(version) +
                               " is newer than this pypatch reads (" + std::to_string(kTransformVersion) +
                               "); upgrade pypatch",
                           c.major(), c.minor());
  if (version != kTransformVersion) bad(name, "invalid XFRM version " + std::to_string(version));
  if (kind != kTransformLinear) bad(name, "unknown XFRM transform kind " + std::to_string(kind));
  if (dim_out != index_dim)
    bad(name, "XFRM transform maps to " + std::to_string(dim_out) + " dims but the index stores " +
                  std::to_string(index_dim));
  if (dim_in < 1 || dim_in > static_cast<uint32_t>(LinearTransform::kMaxDim))
    bad(name, "implausible XFRM dim_in " + std::to_string(dim_in));
  const uint64_t want = transform_section_bytes(dim_in, dim_out);
  if (s.size != want)
    bad(name, "XFRM section holds " + std::to_string(s.size) + " bytes; a " + std::to_string(dim_in) +
                  " -> " + std::to_string(dim_out) + " transform needs " + std::to_string(want));
  std::vector<float> mean(dim_in), matrix(static_cast<size_t>(dim_in) * dim_out);
  std::memcpy(mean.data(), s.data + kTransformHeaderSize, mean.size() * 4);
  std::memcpy(matrix.data(), s.data + kTransformHeaderSize + mean.size() * 4, matrix.size() * 4);
  try {
    return std::make_shared<const LinearTransform>(static_cast<int>(dim_in), static_cast<int>(dim_out),
                                                   std::move(mean), std::move(matrix));
  } catch (const InvalidArgument& e) {
    bad(name, std::string("invalid XFRM transform: ") + e.what());
  }
}

// The "user" entry of META (always its last key).
std::string user_metadata(const io::Container& c) {
  const std::string_view meta = c.string(io::kind::kMeta);
  const size_t key = meta.find("\"user\": ");
  const size_t end = meta.rfind('}');
  if (key == std::string_view::npos || end == std::string_view::npos || end < key + 8)
    bad(c.name(), "META has no \"user\" entry");
  return std::string(meta.substr(key + 8, end - key - 8));
}

}  // namespace

class PatchIndex::Writer {
 public:
  // offsets_le: storage for IOFF (little-endian u64), kept alive by the caller until written.
  // IVFC, IVFN, IVFP, CODE: the lists streamed straight from memory (no copy).
  static void add_ivf_sections(const PatchIndex& ix, io::ContainerWriter& w, std::vector<uint8_t>& list_off_le) {
    const int nl = ix.nlist_;
    const IvfLists& L = ix.lists_;
    if (ix.cq_) w.add_view(kIvfCentroids, ix.cq_->centroids().data(), ix.cq_->centroids().size() * 4);
    list_off_le.assign(static_cast<size_t>(nl + 1) * 8, 0);
    uint64_t acc = 0, code_bytes = 0;
    for (int l = 0; l < nl; ++l) {
      acc += static_cast<uint64_t>(L.size[l]);
      code_bytes += static_cast<uint64_t>(ix.storage_bytes(L.size[l]));
      io::le::store64(list_off_le.data() + 8 * (l + 1), acc);
    }
    w.add_view(kIvfListOffsets, list_off_le.data(), list_off_le.size());
    // (empty lists are skipped: their pointers may be null)
    w.add_producer(kIvfPackedIds, kIvfPackedHeader + acc * 4, [&ix](io::SectionSink& out) {
      std::vector<uint8_t> h(kIvfPackedHeader, 0);
      put32(h, 0, kIvfPackedVersion);
      put32(h, 4, static_cast<uint32_t>(ix.lists_.ord_bits));
      out.write(h.data(), h.size());
      for (int l = 0; l < ix.nlist_; ++l)
        if (ix.lists_.size[l]) out.write(ix.lists_.ids[l], static_cast<size_t>(ix.lists_.size[l]) * 4);
    });
    w.add_producer(io::kind::kCodes, code_bytes, [&ix](io::SectionSink& out) {
      for (int l = 0; l < ix.nlist_; ++l)
        if (ix.lists_.size[l]) out.write(ix.lists_.codes[l], static_cast<size_t>(ix.storage_bytes(ix.lists_.size[l])));
    });
  }

  // Reads and validates the IVF sections of a version-2 or -3 file into ix: views into c for
  // version 3 (IVFP); owned, converted lists for version 2 (IVFI + IVFO; returns false: the
  // index must not keep c as its backing file).
  static bool read_ivf(io::Container& c, PatchIndex& ix, const std::vector<int64_t>& off, uint64_t n_patches,
                       uint32_t version) {
    const std::string& name = c.name();
    const int nl = ix.nlist_;
    const bool packed = version >= 3;
    c.verify_crc(kIvfListOffsets);
    if (packed) {
      c.verify_crc(kIvfPackedIds);
    } else {
      c.verify_crc(kIvfImages);
      c.verify_crc(kIvfOrdinals);
    }
    if (c.has(kIvfCentroids)) {
      c.verify_crc(kIvfCentroids);
      const uint64_t n = static_cast<uint64_t>(nl) * ix.dim_;
      const float* cents = c.array<float>(kIvfCentroids, n);
      if (first_out_of_range(cents, static_cast<int64_t>(n)) != static_cast<int64_t>(n))
        bad(name, "IVFC holds a NaN, infinite or too large centroid value (|x| must be <= 1e15)");
      ix.cq_ = std::make_shared<const CoarseQuantizer>(nl, ix.dim_, cents);
    } else if (n_patches > 0) {
      bad(name, "inverted lists without coarse centroids (no IVFC section)");
    }
    const uint8_t* loff = reinterpret_cast<const uint8_t*>(c.array<uint64_t>(kIvfListOffsets, static_cast<uint64_t>(nl) + 1));
    std::vector<int64_t> lo(static_cast<size_t>(nl) + 1);
    for (int l = 0; l <= nl; ++l) {
      const uint64_t v = io::le::load64(loff + 8 * static_cast<size_t>(l));
      if (v > n_patches) bad(name, "IVFN list offset " + std::to_string(l) + " exceeds the patch count");
      lo[l] = static_cast<int64_t>(v);
      if (l > 0 && lo[l] < lo[l - 1]) bad(name, "IVFN list offsets decrease at list " + std::to_string(l - 1));
    }
    if (lo[0] != 0 || static_cast<uint64_t>(lo[nl]) != n_patches) bad(name, "IVFN list offsets do not span the patches");
    const int64_t n_images = static_cast<int64_t>(off.size()) - 1;
    int64_t most = 0;
    for (int64_t i = 0; i < n_images; ++i) most = std::max(most, off[i + 1] - off[i]);
    const uint32_t* ids = nullptr;  // version 3
    const uint32_t* images = nullptr;  // version 2
    const uint8_t* ords = nullptr;
    int bits;
    if (packed) {
      const uint8_t* sec = c.array<uint8_t>(kIvfPackedIds, kIvfPackedHeader + n_patches * 4);
      if (get32(sec, 0) != kIvfPackedVersion) bad(name, "unknown IVFP version " + std::to_string(get32(sec, 0)));
      const uint32_t b = get32(sec, 4);
      if (b > 8 || b < static_cast<uint32_t>(ivf_ord_bits_for(most)))
        bad(name, "IVFP ordinal bits " + std::to_string(b) + " cannot hold images of " + std::to_string(most) + " patches");
      bits = static_cast<int>(b);
      if (n_images > ivf_max_images(bits)) bad(name, "more images than " + std::to_string(32 - bits) + "-bit image ids hold");
      ids = reinterpret_cast<const uint32_t*>(sec + kIvfPackedHeader);  // 64-aligned section + 64
    } else {
      images = c.array<uint32_t>(kIvfImages, n_patches);
      ords = c.array<uint8_t>(kIvfOrdinals, n_patches);
      bits = ivf_ord_bits_for(most);
      if (n_images > ivf_max_images(bits))
        bad(name, "more images than 4-byte ids with " + std::to_string(bits) + " ordinal bits hold");
    }
    // Every entry inside its image, (image, ordinal) strictly ascending in a list, and every
    // patch exactly once (a bit per patch).
    std::vector<uint64_t> seen((n_patches + 63) / 64, 0);
    for (int l = 0; l < nl; ++l)
      for (int64_t e = lo[l]; e < lo[l + 1]; ++e) {
        const uint32_t im = packed ? ivf_image(ids[e], bits) : images[e];
        const uint32_t o = packed ? ivf_ord(ids[e], bits) : ords[e];
        if (static_cast<int64_t>(im) >= n_images)
          bad(name, std::string(packed ? "IVFP" : "IVFI") + " entry " + std::to_string(e) + " names image " +
                        std::to_string(im) + " of " + std::to_string(n_images));
        if (o >= off[im + 1] - off[im])
          bad(name, std::string(packed ? "IVFP" : "IVFO") + " entry " + std::to_string(e) + ": ordinal " +
                        std::to_string(o) + " but image " + std::to_string(im) + " has " +
                        std::to_string(off[im + 1] - off[im]) + " patches");
        const bool ascending = packed ? ids[e] > ids[e - 1]
                                      : (im > images[e - 1] || (im == images[e - 1] && o > ords[e - 1]));
        if (e > lo[l] && !ascending)
          bad(name, "inverted list " + std::to_string(l) + " is not sorted by (image, ordinal) at entry " + std::to_string(e));
        const uint64_t p = static_cast<uint64_t>(off[im] + o);
        if (seen[p / 64] >> (p % 64) & 1) bad(name, "patch " + std::to_string(p) + " is in two inverted lists");
        seen[p / 64] |= uint64_t{1} << (p % 64);
      }
    // n_patches entries, each a distinct patch of [0, n_patches): every patch is there.
    uint64_t code_bytes = 0;
    for (int l = 0; l < nl; ++l) code_bytes += static_cast<uint64_t>(ix.storage_bytes(lo[l + 1] - lo[l]));
    const uint8_t* codes = c.array<uint8_t>(io::kind::kCodes, code_bytes);
    IvfLists& L = ix.lists_;
    L.owned.assign(nl, IvfLists::Owned{});
    L.size.resize(nl);
    L.codes.resize(nl);
    L.ids.resize(nl);
    L.ord_bits = bits;
    uint64_t at = 0;
    for (int l = 0; l < nl; ++l) {
      L.size[l] = lo[l + 1] - lo[l];
      const int64_t nbytes = ix.storage_bytes(L.size[l]);
      if (packed) {
        L.codes[l] = codes + at;
        L.ids[l] = ids + lo[l];
      } else {
        IvfLists::Owned& o = L.owned[l];
        o.codes.assign(codes + at, codes + at + nbytes);
        o.ids.resize(static_cast<size_t>(L.size[l]));
        for (int64_t e = 0; e < L.size[l]; ++e)
          o.ids[e] = ivf_id(images[lo[l] + e], ords[lo[l] + e], bits);
      }
      at += static_cast<uint64_t>(nbytes);
    }
    if (!packed) L.point_at_owned();
    return packed;
  }

  static io::ContainerWriter build(const PatchIndex& ix, std::vector<uint8_t>& offsets_le,
                                   std::vector<uint8_t>& list_off_le) {
    const bool pq = ix.kind_ == StoreKind::PQ;
    const bool trained = pq && ix.pq_->is_trained();
    const bool residual = pq && ix.pq_->kind() == CodebookKind::Residual;
    std::vector<uint8_t> h(residual ? kHeaderSizeV4 : kHeaderSize, 0);
    const bool ivf = ix.nlist_ > 0;
    put32(h, 0, residual ? 4 : ivf ? 3 : 1);  // product codebooks keep the files older readers read
    if (residual) put32(h, 64, static_cast<uint32_t>(CodebookKind::Residual));
    if (ivf) {
      put32(h, 56, static_cast<uint32_t>(ix.nlist_));
      put32(h, 60, static_cast<uint32_t>(ix.nprobe_.load()));
    }
    put32(h, 4, static_cast<uint32_t>(ix.kind_));
    put32(h, 8, static_cast<uint32_t>(ix.dim_));
    put32(h, 12, pq ? ix.pq_->m() : 0);
    put32(h, 16, pq ? ix.pq_->nbits() : 0);
    put32(h, 20, static_cast<uint32_t>(ix.code_size_));
    put32(h, 24, trained ? 1 : 0);
    put32(h, 28, pq ? (ix.fs4_() ? 2 : 1) : 0);
    put64(h, 32, static_cast<uint64_t>(ix.images_()));
    put64(h, 40, static_cast<uint64_t>(ix.patches_()));
    put64(h, 48, static_cast<uint64_t>(ix.n_removed_));
    std::string meta = std::string("{\"format\": \"pypatch.PatchIndex\", \"store\": \"") +
                       store_name(ix.kind_) + "\", \"dim\": " + std::to_string(ix.dim_) +
                       ", \"m\": " + std::to_string(pq ? ix.pq_->m() : 0) +
                       ", \"nbits\": " + std::to_string(pq ? ix.pq_->nbits() : 0) +
                       // only for residual codebooks: product files keep their bytes
                       (residual ? std::string(", \"codebooks\": \"residual\"") : std::string()) +
                       ", \"n_images\": " + std::to_string(ix.images_()) +
                       ", \"n_patches\": " + std::to_string(ix.patches_()) +
                       ", \"code_layout\": \"" + std::string(!pq ? "row_major" : ix.fs4_() ? "blocked32_fs4" : "blocked64_u8") + "\"" +
                       (ivf ? ", \"ivf\": {\"nlist\": " + std::to_string(ix.nlist_) + ", \"nprobe\": " +
                                  std::to_string(ix.nprobe_.load()) + ", \"ids\": \"u32 image << " +
                                  std::to_string(ix.lists_.ord_bits) + " | ordinal\"}"
                            : std::string()) +
                       ", \"user\": " + ix.metadata_ + "}";
    offsets_le.assign(ix.offsets_.size() * 8, 0);
    for (size_t i = 0; i < ix.offsets_.size(); ++i)
      io::le::store64(offsets_le.data() + 8 * i, static_cast<uint64_t>(ix.offsets_[i]));
    io::ContainerWriter w;
    w.add_owned(kKindHeader, std::move(h));
    w.add_string(io::kind::kMeta, std::move(meta));
    if (trained)
      w.add_view(residual ? io::kind::kRqCentroids : io::kind::kPqCentroids, ix.pq_->centroids().data(),
                 ix.pq_->centroids().size() * 4);
    if (ix.transform_) add_transform_section(w, ix.transform_);
    if (ivf) {
      add_ivf_sections(ix, w, list_off_le);
    } else {
      w.add_view(pq ? io::kind::kCodes : io::kind::kVectors, ix.view_,
                 static_cast<size_t>(ix.storage_bytes(ix.patches_())));
    }
    w.add_view(io::kind::kImageOffsets, offsets_le.data(), offsets_le.size());
    w.add_view(kKindRemoved, ix.removed_.data(), ix.removed_.size());
    return w;
  }
};

void PatchIndex::save(const std::string& path) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  std::vector<uint8_t> off, loff;
  Writer::build(*this, off, loff).write_atomic(path);
}

std::vector<uint8_t> PatchIndex::to_bytes() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  std::vector<uint8_t> off, loff;
  return Writer::build(*this, off, loff).to_bytes();
}

uint64_t PatchIndex::serialized_size() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  std::vector<uint8_t> off, loff;
  return Writer::build(*this, off, loff).serialized_size();
}

bool PatchIndex::write_to(void* dst, uint64_t size) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  std::vector<uint8_t> off, loff;
  const io::ContainerWriter w = Writer::build(*this, off, loff);
  if (w.serialized_size() != size) return false;  // changed since serialized_size(): caller retries
  w.write_to(dst, static_cast<size_t>(size));
  return true;
}

std::unique_ptr<PatchIndex> PatchIndex::load(const std::string& path, bool mmap, bool verify) {
  // An eager load reads every byte anyway, so it checks every CRC too.
  auto c = std::make_shared<io::Container>(io::Container::open(path, mmap, verify || !mmap));
  return from_container(std::move(c));
}

std::unique_ptr<PatchIndex> PatchIndex::from_bytes(const void* data, size_t size) {
  io::OpenOptions opts;
  opts.verify_all = true;
  auto c = std::make_shared<io::Container>(io::Container::from_bytes(data, size, opts));
  return from_container(std::move(c));
}

std::unique_ptr<PatchIndex> PatchIndex::from_container(std::shared_ptr<io::Container> c) {
  const std::string& name = c->name();
  if (!c->has(kKindHeader)) bad(name, "not a PatchIndex file (no PIDX section)");
  const io::SectionView& hs = c->section(kKindHeader);
  if (hs.size < 4) bad(name, "PIDX header shorter than its version field");
  const uint32_t version = get32(hs.data, 0);  // which sets the header's size
  if (version > kHeaderVersion)  // written by a newer pypatch: same rule as a newer container major
    throw io::VersionError(name + ": PatchIndex header version " + std::to_string(version) +
                               " is newer than this pypatch reads (" + std::to_string(kHeaderVersion) +
                               "); upgrade pypatch",
                           c->major(), c->minor());
  const uint8_t* h = c->array<uint8_t>(kKindHeader, version >= 4 ? kHeaderSizeV4 : kHeaderSize);
  // Whatever verify says: these steer every read (offsets, removed mask, centroids, metadata).
  // Missing required ones raise "required section ... is missing" here.
  for (uint32_t k : {io::kind::kImageOffsets, kKindRemoved, io::kind::kMeta}) c->verify_crc(k);
  if (c->has(io::kind::kPqCentroids)) c->verify_crc(io::kind::kPqCentroids);
  if (c->has(io::kind::kRqCentroids)) c->verify_crc(io::kind::kRqCentroids);
  if (c->has(kKindTransform)) c->verify_crc(kKindTransform);  // callers map queries with it
  const uint32_t kind = get32(h, 4);
  const uint32_t dim = get32(h, 8), m = get32(h, 12), nbits = get32(h, 16);
  const uint32_t code_size = get32(h, 20), trained = get32(h, 24);
  const uint32_t layout = get32(h, 28);
  const uint64_t n_images = get64(h, 32), n_patches = get64(h, 40);
  const bool ivf = version == 2 || version == 3 || (version == 4 && get32(h, 56) != 0);
  const uint32_t nlist = ivf ? get32(h, 56) : 0, nprobe = ivf ? get32(h, 60) : 0;
  const uint32_t codebooks = version >= 4 ? get32(h, 64) : 0;
  if (codebooks > 1) bad(name, "unknown codebook kind " + std::to_string(codebooks));
  const bool residual = codebooks == static_cast<uint32_t>(CodebookKind::Residual);
  const uint32_t cb_section = residual ? io::kind::kRqCentroids : io::kind::kPqCentroids;
  if (version < 1) bad(name, "invalid PIDX header version " + std::to_string(version));
  if (ivf) {  // inverted file
    if (kind != static_cast<uint32_t>(StoreKind::PQ)) bad(name, "an inverted file needs a PQ store");
    if (nlist < 1 || nlist > static_cast<uint32_t>(kMaxNlist)) bad(name, "implausible nlist " + std::to_string(nlist));
    if (nprobe < 1 || nprobe > nlist) bad(name, "nprobe " + std::to_string(nprobe) + " outside 1..nlist");
    if (layout != 1 && layout != 2) bad(name, "an inverted file needs code layout 1 or 2; got " + std::to_string(layout));
    if (n_images > ivf_max_images(0)) bad(name, "an inverted file holds at most 2**32 images");
  }
  if (kind > 2) bad(name, "unknown store kind " + std::to_string(kind));
  if (residual && kind != static_cast<uint32_t>(StoreKind::PQ)) bad(name, "residual codebooks need a PQ store");
  if (dim < 1 || dim > static_cast<uint32_t>(kMaxDim)) bad(name, "implausible dim " + std::to_string(dim));
  // Counts must fit the file before anything is sized from them.
  if (n_images >= c->file_bytes() || n_patches > c->file_bytes())
    bad(name, "image/patch counts exceed the file size");

  std::unique_ptr<PatchIndex> ix;
  const StoreKind sk = static_cast<StoreKind>(kind);
  try {
    if (sk == StoreKind::PQ) {
      std::shared_ptr<Quantizer> pq;
      if (residual)
        pq = std::make_shared<ResidualQuantizer>(static_cast<int>(dim), static_cast<int>(m), static_cast<int>(nbits));
      else
        pq = std::make_shared<ProductQuantizer>(static_cast<int>(dim), static_cast<int>(m), static_cast<int>(nbits));
      if (trained) {
        const uint64_t n = static_cast<uint64_t>(m) * pq->ksub() * pq->codeword_dim();
        const float* cents = c->array<float>(cb_section, n);
        if (first_out_of_range(cents, static_cast<int64_t>(n)) != static_cast<int64_t>(n))
          bad(name, std::string(residual ? "RQCB" : "PQCB") + " holds a NaN, infinite or too large centroid value (|x| must be <= 1e15)");
        pq->set_centroids(cents);
      }
      ix.reset(new PatchIndex(static_cast<int>(dim), StoreKind::PQ, std::move(pq), static_cast<int>(nlist)));
    } else {
      ix.reset(new PatchIndex(static_cast<int>(dim), sk, nullptr));
    }
  } catch (const InvalidArgument& e) {
    bad(name, std::string("invalid index settings: ") + e.what());
  }
  if (static_cast<uint32_t>(ix->code_size_) != code_size) bad(name, "code size does not match the settings");
  if (!trained && n_patches > 0 && sk == StoreKind::PQ) bad(name, "codes without centroids");
  if (sk == StoreKind::PQ && n_patches > 0) ix->pq_->freeze();  // its codes are in the file
  if (c->has(kKindTransform)) ix->transform_ = read_transform(*c, dim);

  // array<uint64_t> checks the size; the values are read as little-endian bytes.
  const uint8_t* off_le = reinterpret_cast<const uint8_t*>(
      c->array<uint64_t>(io::kind::kImageOffsets, n_images + 1));
  std::vector<int64_t> off(static_cast<size_t>(n_images + 1));
  for (uint64_t i = 0; i <= n_images; ++i) {
    const uint64_t v = io::le::load64(off_le + 8 * i);
    if (v > n_patches) bad(name, "image offset " + std::to_string(i) + " exceeds the patch count");
    off[i] = static_cast<int64_t>(v);  // <= n_patches < file size: fits
  }
  if (off[0] != 0 || static_cast<uint64_t>(off[n_images]) != n_patches)
    bad(name, "image offsets do not span the patches");
  for (uint64_t i = 0; i < n_images; ++i) {
    if (off[i + 1] < off[i]) bad(name, "image offsets decrease at image " + std::to_string(i));
    if (off[i + 1] - off[i] > (nlist ? kIvfMaxPatchesPerImage : static_cast<int64_t>(std::numeric_limits<int32_t>::max())))
      bad(name, "image " + std::to_string(i) + " has too many patches");
  }
  if (nlist > 0) {
    ix->nprobe_ = static_cast<int>(nprobe);
    if (layout == 2 && nbits != 4) bad(name, "code layout 2 (blocked32_fs4) needs nbits = 4");
    if (layout == 1 && nbits != 8) bad(name, "an inverted file of 4-bit codes needs code layout 2");
    const bool mapped = Writer::read_ivf(*c, *ix, off, n_patches, version);
    const uint8_t* removed = c->array<uint8_t>(kKindRemoved, n_images);
    ix->offsets_.assign(off.begin(), off.end());
    ix->removed_.assign(removed, removed + n_images);
    ix->n_removed_ = 0;
    for (uint64_t i = 0; i < n_images; ++i) ix->n_removed_ += ix->removed_[i] ? 1 : 0;
    ix->metadata_ = user_metadata(*c);
    if (mapped) ix->file_ = std::move(c);
    return ix;
  }
  const uint32_t data_kind = sk == StoreKind::PQ ? io::kind::kCodes : io::kind::kVectors;
  if (layout > 2 || (layout >= 1 && sk != StoreKind::PQ))
    bad(name, "unknown code layout " + std::to_string(layout));
  if (layout == 2 && nbits != 4) bad(name, "code layout 2 (blocked32_fs4) needs nbits = 4");
  const bool blocked = layout == 1, fs4 = layout == 2;
  const uint8_t* data = c->array<uint8_t>(
      data_kind, fs4       ? static_cast<uint64_t>(fs4_bytes(static_cast<int64_t>(n_patches), m))
                 : blocked ? static_cast<uint64_t>(blocked_bytes(static_cast<int64_t>(n_patches), m))
                           : n_patches * code_size);
  const uint8_t* removed = c->array<uint8_t>(kKindRemoved, n_images);
  // Flat vectors obey the add() rule (util/value_limits.h) whenever the payload is read anyway
  // for its CRC (eager and bytes loads, verify=True, sections <= 1 MiB): a plain map stays
  // O(1) in the payload, and its scan is robust to any bytes (NaN never ranks; io/README.md).
  if (sk != StoreKind::PQ && c->section(data_kind).crc_verified) {
    const int64_t n = static_cast<int64_t>(n_patches) * dim;
    const bool ok = sk == StoreKind::FlatF32
                        ? first_out_of_range(reinterpret_cast<const float*>(data), n) == n
                        : first_nonfinite_half(reinterpret_cast<const uint16_t*>(data), n) == n;
    if (!ok) bad(name, "VECS holds a NaN, infinite or too large vector value (|x| must be <= 1e15)");
  }
  // fs4 nibbles are < 16 by construction; padding nibbles are never scored.
  if (sk == StoreKind::PQ && nbits < 8 && !fs4) {
    // The scan indexes lut[j * 2^nbits + code] unmasked, so a code >= 2^nbits would read the
    // next table or past the last one: check them all (O(codes), unlike the rest of a mapped
    // open). An OR over all bytes vectorises (memory speed) where a per-byte branch did not.
    const uint64_t n = blocked ? blocked_bytes(n_patches, m) : n_patches * code_size;
    uint8_t any = 0;
    for (uint64_t i = 0; i < n; ++i) any |= data[i];
    if (any >> nbits) bad(name, "a PQ code exceeds 2**nbits - 1 = " + std::to_string((1u << nbits) - 1));
  }

  ix->offsets_.assign(off.begin(), off.end());
  ix->removed_.assign(removed, removed + n_images);
  ix->n_removed_ = 0;
  for (uint64_t i = 0; i < n_images; ++i) ix->n_removed_ += ix->removed_[i] ? 1 : 0;
  ix->metadata_ = user_metadata(*c);
  if (sk == StoreKind::PQ && nbits == 4 && !fs4) {  // older one-code-a-byte 4-bit file
    ix->owned_.assign(static_cast<size_t>(fs4_bytes(n_patches, m)), 0);
    std::vector<uint8_t> row(m);
    for (uint64_t p = 0; p < n_patches; ++p) {
      for (uint32_t j = 0; j < m; ++j)
        row[j] = blocked ? data[blocked_pos(static_cast<int64_t>(p), static_cast<int>(j), static_cast<int>(m))]
                         : data[p * m + j];
      rows_to_fs4(row.data(), static_cast<int64_t>(p), 1, static_cast<int>(m), ix->owned_.data());
    }
    ix->view_ = ix->owned_.data();
    return ix;
  }
  if (sk == StoreKind::PQ && !blocked && !fs4) {  // older row-major layout: convert once into memory
    ix->owned_.assign(static_cast<size_t>(blocked_bytes(n_patches, m)), 0);
    rows_to_blocked(data, 0, static_cast<int64_t>(n_patches), static_cast<int>(m), ix->owned_.data());
    ix->view_ = ix->owned_.data();
    return ix;
  }
  ix->view_ = data;
  ix->file_ = std::move(c);
  return ix;
}

}  // namespace pypatch

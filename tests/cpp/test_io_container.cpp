// Index file container: round trips (eager, mmap, bytes), the documented byte layout, and
// every way a file can be wrong: truncated, any flipped byte, foreign, newer/older major,
// crafted headers claiming huge sizes (checked without large allocations), and atomic
// writes that fail (the old file must survive). Self-contained harness (plain checks,
// non-zero exit on failure) so it runs with or without the shared one.
#include <sys/stat.h>  // chmod
#include <unistd.h>    // geteuid

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "pypatch/io/container.h"
#include "pypatch/io/crc32.h"

namespace fs = std::filesystem;
using namespace pypatch::io;
using Bytes = std::vector<uint8_t>;

// ----------------------------------------------------------- allocation watch
// Replaces global new so tests can assert that crafted headers never cause big allocations.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC misreads replaced operators
#endif
static std::atomic<size_t> g_max_alloc{0};
static void note_alloc(size_t n) {
  size_t cur = g_max_alloc.load();
  while (n > cur && !g_max_alloc.compare_exchange_weak(cur, n)) {
  }
}
void* operator new(size_t n) {
  note_alloc(n);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(size_t n, std::align_val_t a) {
  note_alloc(n);
  void* p = nullptr;
  if (posix_memalign(&p, std::max(size_t(a), sizeof(void*)), n ? n : 1) != 0) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }

// ------------------------------------------------------------------ harness
static int g_failures = 0;
#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ++g_failures;                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                                \
  } while (0)

// Runs f; true if it throws E whose message contains every needle.
template <class E>
static bool throws(const std::function<void()>& f, std::vector<std::string> needles = {},
                   int line = 0) {
  try {
    f();
  } catch (const E& e) {
    for (const std::string& n : needles)
      if (std::string(e.what()).find(n) == std::string::npos) {
        std::fprintf(stderr, "line %d: message lacks '%s': %s\n", line, n.c_str(), e.what());
        return false;
      }
    return true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "line %d: wrong exception type: %s\n", line, e.what());
    return false;
  }
  std::fprintf(stderr, "line %d: nothing thrown\n", line);
  return false;
}
#define CHECK_THROWS(E, stmt, ...) CHECK(throws<E>([&] { stmt; }, {__VA_ARGS__}, __LINE__))

// ------------------------------------------------------------------ helpers
static fs::path g_dir;

static Bytes random_bytes(size_t n, uint64_t seed) {
  Bytes b(n);
  for (auto& x : b) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    x = uint8_t(seed >> 56);
  }
  return b;
}
static Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}
static void write_file(const fs::path& p, const Bytes& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
static Bytes section_bytes(const Container& c, uint32_t kind) {
  const SectionView& s = c.section(kind);
  return Bytes(s.data, s.data + s.size);
}
static uint32_t rd32(const Bytes& b, size_t off) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | b[off + i];
  return v;
}
static uint64_t rd64(const Bytes& b, size_t off) { return rd32(b, off) | uint64_t(rd32(b, off + 4)) << 32; }
static void wr32(Bytes& b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = uint8_t(v >> (8 * i));
}
static void wr64(Bytes& b, size_t off, uint64_t v) {
  wr32(b, off, uint32_t(v));
  wr32(b, off + 4, uint32_t(v >> 32));
}
// Recompute table and header CRCs after editing, so the structural checks behind the
// CRCs can be reached by crafted files.
static void reseal(Bytes& b) {
  const uint32_t count = rd32(b, 24);
  const uint64_t table = rd64(b, 32);
  if (table <= b.size() && uint64_t(count) * 32 <= b.size() - table)
    wr32(b, 48, crc32(b.data() + table, size_t(count) * 32));
  wr32(b, 52, 0);
  wr32(b, 52, crc32(b.data(), 128));
}

constexpr uint32_t kA = fourcc("AAAA"), kB = fourcc("BBBB"), kE = fourcc("EMPT");

// The small reference file: sections of awkward sizes around the 64-byte alignment.
struct Sample {
  std::string meta = R"({"n_images": 3, "code_layout": "row_major_u8"})";
  Bytes a = random_bytes(63, 1), b = random_bytes(65, 2), codes = random_bytes(200, 3);
  std::vector<float> floats = std::vector<float>(33, 0.5f);
  ContainerWriter writer(uint16_t major = kFormatMajor, uint16_t minor = kFormatMinor) const {
    ContainerWriter w(major, minor, 0xABCD);
    w.add_string(kind::kMeta, meta);
    w.add_view(kA, a.data(), a.size(), 7);
    w.add_view(kE, nullptr, 0);
    w.add_owned(kB, b);
    w.add_view(kind::kCodes, codes.data(), codes.size());
    w.add_view(kind::kPqCentroids, floats.data(), floats.size() * sizeof(float));
    return w;
  }
  void check(const Container& c) const {
    CHECK(c.string(kind::kMeta) == meta);
    CHECK(section_bytes(c, kA) == a);
    CHECK(c.section(kA).flags == 7u);
    CHECK(c.section(kE).size == 0u);
    CHECK(section_bytes(c, kB) == b);
    CHECK(section_bytes(c, kind::kCodes) == codes);
    const float* f = c.array<float>(kind::kPqCentroids, floats.size());
    CHECK(std::equal(floats.begin(), floats.end(), f));
    CHECK(c.flags() == 0xABCDu);
    for (const SectionView& s : c.sections()) {
      CHECK(reinterpret_cast<uintptr_t>(s.data) % 64 == 0);
      CHECK(s.crc_verified);  // all small: always verified at open
    }
  }
};

// ------------------------------------------------------------------ tests
static void test_layout_by_hand() {
  // One 2-byte section: header 128 + table 32 = 160 -> section at 192 -> file 256.
  ContainerWriter w;
  w.add_string(kind::kMeta, "{}");
  const Bytes f = w.to_bytes();
  CHECK(f.size() == 256 && w.serialized_size() == 256);
  CHECK(std::memcmp(f.data(), "\x89PTCH\r\n\x1a", 8) == 0);
  CHECK(f[8] == 1 && f[9] == 0 && f[10] == 0 && f[11] == 0);  // version 1.0
  CHECK(rd32(f, 12) == 128 && rd32(f, 16) == 0x01020304u && rd32(f, 24) == 1);
  CHECK(rd64(f, 32) == 128 && rd64(f, 40) == 256);
  CHECK(std::memcmp(f.data() + 128, "META", 4) == 0);
  CHECK(rd64(f, 136) == 192 && rd64(f, 144) == 2 && rd32(f, 152) == crc32("{}", 2));
  CHECK(rd32(f, 48) == crc32(f.data() + 128, 32));
  Bytes h(f.begin(), f.begin() + 128);
  wr32(h, 52, 0);
  CHECK(rd32(f, 52) == crc32(h.data(), 128));
  CHECK(f[192] == '{' && f[193] == '}');
  for (size_t i = 160; i < 192; ++i) CHECK(f[i] == 0);
  for (size_t i = 194; i < 256; ++i) CHECK(f[i] == 0);
  // No sections at all is a valid (128-byte) container.
  const Bytes empty = ContainerWriter().to_bytes();
  CHECK(empty.size() == 128 && Container::from_bytes(empty.data(), empty.size()).sections().empty());
}

static void test_round_trip() {
  const Sample s;
  const fs::path p = g_dir / "rt.ptch";
  s.writer().write_atomic(p.string());
  const Bytes file = read_file(p);
  CHECK(file == s.writer().to_bytes());
  for (bool mmap : {false, true}) {
    Container c = Container::open(p.string(), mmap);
    CHECK(c.is_mapped() == mmap);
    CHECK(c.major() == kFormatMajor && c.minor() == kFormatMinor && c.file_bytes() == file.size());
    s.check(c);
    CHECK(c.sections().size() == 6);
    CHECK(c.sections()[1].kind == kA);  // file order kept
    // Moving keeps the views valid (the storage does not move).
    const uint8_t* before = c.section(kA).data;
    Container moved = std::move(c);
    CHECK(moved.section(kA).data == before);
    s.check(moved);
  }
  Container b = Container::from_bytes(file.data(), file.size());
  CHECK(!b.is_mapped());
  s.check(b);
}

static void test_mmap_maps_the_file() {
  // The mmap view must point into a mapping of the file itself (zero-copy).
  const Sample s;
  const fs::path p = fs::canonical(g_dir) / "mapped.ptch";
  s.writer().write_atomic(p.string());
  Container c = Container::open(p.string(), true);
  const uintptr_t ptr = reinterpret_cast<uintptr_t>(c.section(kind::kCodes).data);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  bool found = false;
  while (std::getline(maps, line)) {
    if (line.size() < p.string().size() ||
        line.compare(line.size() - p.string().size(), std::string::npos, p.string()) != 0)
      continue;
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && lo <= ptr && ptr < hi) found = true;
  }
  CHECK(found);
}

static void test_big_sections_and_lazy_crc() {
  Bytes big = random_bytes(3u << 20, 9);  // above OpenOptions::verify_below
  Bytes small = random_bytes(1000, 10);
  uint64_t produced = 0;
  ContainerWriter w;
  w.add_view(kind::kCodes, big.data(), big.size());
  w.add_producer(kind::kLevels, small.size(), [&](SectionSink& out) {
    for (size_t i = 0; i < small.size(); i += 300) {
      out.write(small.data() + i, std::min<size_t>(300, small.size() - i));
      produced += std::min<size_t>(300, small.size() - i);
    }
  });
  const fs::path p = g_dir / "big.ptch";
  w.write_atomic(p.string());
  CHECK(produced == small.size());
  Bytes file = read_file(p);
  const uint64_t codes_off = rd64(file, 128 + 8);
  for (bool mmap : {false, true}) {
    Container c = Container::open(p.string(), mmap);
    CHECK(section_bytes(c, kind::kCodes) == big && section_bytes(c, kind::kLevels) == small);
    CHECK(!c.section(kind::kCodes).crc_verified && c.section(kind::kLevels).crc_verified);
    c.verify_crc(kind::kCodes);
    CHECK(c.section(kind::kCodes).crc_verified);
  }
  // Corrupt one byte deep inside CODES: the default open stays O(1) and succeeds, the
  // explicit check and a verify_all open both catch it.
  file[codes_off + big.size() / 2] ^= 0x10;
  const fs::path q = g_dir / "big_bad.ptch";
  write_file(q, file);
  for (bool mmap : {false, true}) {
    Container c = Container::open(q.string(), mmap);
    CHECK_THROWS(FormatError, c.verify_crc(kind::kCodes), "big_bad.ptch", "CODES", "checksum");
    CHECK_THROWS(FormatError, c.verify_all_crcs(), "CODES");
    CHECK_THROWS(FormatError, Container::open(q.string(), mmap, /*verify_all=*/true), "CODES");
  }
}

static void test_truncated() {
  const Bytes f = Sample().writer().to_bytes();
  for (size_t cut = 0; cut < f.size(); ++cut) {
    CHECK(throws<FormatError>([&] { Container::from_bytes(f.data(), cut); }, {}, int(cut)));
    if (cut % 41 == 0 || cut == 8 || cut == 127 || cut == 128 || cut == f.size() - 1) {
      const fs::path p = g_dir / "cut.ptch";
      write_file(p, Bytes(f.begin(), f.begin() + cut));
      for (bool mmap : {false, true})
        CHECK(throws<FormatError>([&] { Container::open(p.string(), mmap); }, {"cut.ptch"}, int(cut)));
    }
  }
  const fs::path p = g_dir / "cut.ptch";
  write_file(p, Bytes(f.begin(), f.end() - 64));
  CHECK_THROWS(FormatError, Container::open(p.string(), true), "truncated");
  Bytes longer = f;
  longer.push_back(0);
  CHECK_THROWS(FormatError, Container::from_bytes(longer.data(), longer.size()), "trailing");
}

static void test_every_flipped_byte() {
  const Sample s;
  const Bytes f = s.writer().to_bytes();
  // Bytes covered by nothing (alignment padding) are the only ones allowed to change silently.
  Container ref = Container::from_bytes(f.data(), f.size());
  std::vector<bool> covered(f.size(), false);
  const uint64_t table_end = 128 + 32 * ref.sections().size();
  for (size_t i = 0; i < table_end; ++i) covered[i] = true;
  for (const SectionView& sec : ref.sections())
    for (uint64_t i = sec.offset; i < sec.offset + sec.size; ++i) covered[i] = true;
  OpenOptions all;
  all.verify_all = true;
  size_t harmless = 0;
  for (uint8_t mask : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xFF)})
    for (size_t i = 0; i < f.size(); ++i) {
      Bytes g = f;
      g[i] ^= mask;
      try {
        Container c = Container::from_bytes(g.data(), g.size(), all);
        s.check(c);
        CHECK(!covered[i]);
        ++harmless;
      } catch (const FormatError&) {
        CHECK(covered[i]);
      } catch (...) {
        std::fprintf(stderr, "flip at %zu: unexpected exception\n", i);
        CHECK(false);
      }
    }
  CHECK(harmless > 0);  // the padding exists and is really skipped
  // The same through real files, eager and mapped, for a sample of positions.
  const fs::path p = g_dir / "flip.ptch";
  for (size_t i = 3; i < f.size(); i += 97) {
    Bytes g = f;
    g[i] ^= 0x01;
    write_file(p, g);
    for (bool mmap : {false, true})
      if (covered[i]) CHECK(throws<FormatError>([&] { Container::open(p.string(), mmap, true); }, {}, int(i)));
  }
}

static void test_foreign_files() {
  const Bytes f = Sample().writer().to_bytes();
  const auto open_bytes = [](const Bytes& b) { Container::from_bytes(b.data(), b.size(), {}, "x.ptch"); };
  CHECK_THROWS(FormatError, open_bytes(Bytes{}), "x.ptch", "bad magic");
  const std::string text = "hello, this is a text file and not an index\n";
  CHECK_THROWS(FormatError, open_bytes(Bytes(text.begin(), text.end())), "bad magic");
  CHECK_THROWS(FormatError, open_bytes(Bytes{0x7F, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0}), "bad magic");
  Bytes mangled;  // text-mode transfer: CR LF -> LF everywhere
  for (size_t i = 0; i < f.size(); ++i)
    if (!(f[i] == '\r' && i + 1 < f.size() && f[i + 1] == '\n')) mangled.push_back(f[i]);
  CHECK_THROWS(FormatError, open_bytes(mangled), "text mode");
  // A file of another kind that happens to be long: rejected from its first bytes.
  const fs::path p = g_dir / "foreign.bin";
  write_file(p, random_bytes(1 << 16, 5));
  g_max_alloc = 0;
  CHECK_THROWS(FormatError, Container::open(p.string(), false), "foreign.bin", "bad magic");
  CHECK(g_max_alloc < 4096);
  CHECK_THROWS(IoError, Container::open((g_dir / "missing.ptch").string(), true), "missing.ptch");
  CHECK_THROWS(IoError, Container::open((g_dir / "missing.ptch").string(), false), "missing.ptch");
  CHECK_THROWS(IoError, Container::open(g_dir.string(), true), "regular file");
  Bytes be = f;  // byte-swapped endian tag: written by a big-endian build
  wr32(be, 16, 0x04030201u);
  reseal(be);
  CHECK_THROWS(FormatError, open_bytes(be), "big-endian");
}

static void test_versions() {
  const Sample s;
  // Newer minor with an unknown section: readable, unknown kind kept and ignored.
  ContainerWriter w = s.writer(kFormatMajor, kFormatMinor + 7);
  const Bytes extra = random_bytes(100, 11);
  w.add_view(fourcc("ZZZZ"), extra.data(), extra.size(), 0xFFFFFFFFu);
  const Bytes f = w.to_bytes();
  Container c = Container::from_bytes(f.data(), f.size());
  CHECK(c.minor() == kFormatMinor + 7);
  s.check(c);
  CHECK(section_bytes(c, fourcc("ZZZZ")) == extra);
  // Newer major: VersionError naming both versions, also for files and even if the rest
  // of the header is laid out differently (checked before the header CRC).
  const Bytes v2 = s.writer(2, 3).to_bytes();
  CHECK_THROWS(VersionError, Container::from_bytes(v2.data(), v2.size()), "2.3", "1.x", "upgrade");
  try {
    Container::from_bytes(v2.data(), v2.size());
  } catch (const VersionError& e) {
    CHECK(e.file_major() == 2 && e.file_minor() == 3);
  }
  const fs::path p = g_dir / "v2.ptch";
  write_file(p, v2);
  for (bool mmap : {false, true}) CHECK_THROWS(VersionError, Container::open(p.string(), mmap), "v2.ptch", "newer");
  Bytes v2_odd = v2;
  v2_odd[60] ^= 1;  // reserved byte: header CRC now fails too
  CHECK_THROWS(VersionError, Container::from_bytes(v2_odd.data(), v2_odd.size()), "newer", "corrupted");
  const Bytes v0 = s.writer(0, 9).to_bytes();
  CHECK_THROWS(VersionError, Container::from_bytes(v0.data(), v0.size()), "0.9", "older");
  // A VersionError is a FormatError (one catch for "cannot read this file").
  CHECK_THROWS(FormatError, Container::from_bytes(v2.data(), v2.size()), "2.3");
  // A reader built for major 2 reads it.
  OpenOptions o2;
  o2.supported_major = 2;
  s.check(Container::from_bytes(v2.data(), v2.size(), o2));
}

static void test_crafted_headers() {
  const Bytes f = Sample().writer().to_bytes();
  const auto open_bytes = [](const Bytes& b) { Container::from_bytes(b.data(), b.size()); };
  const auto crafted = [&](const std::function<void(Bytes&)>& edit) {
    Bytes g = f;
    edit(g);
    reseal(g);
    return g;
  };
  g_max_alloc = 0;
  // A 128-byte file claiming to be 1 TB.
  Bytes tb(f.begin(), f.begin() + 128);
  wr32(tb, 24, 0);
  wr64(tb, 40, uint64_t(1) << 40);
  reseal(tb);
  CHECK_THROWS(FormatError, open_bytes(tb), "truncated", "1099511627776");
  const fs::path p = g_dir / "huge.ptch";
  write_file(p, tb);
  for (bool mmap : {false, true}) CHECK_THROWS(FormatError, Container::open(p.string(), mmap), "truncated");
  write_file(p, Bytes(tb.begin(), tb.begin() + 10));  // the 10-byte file
  for (bool mmap : {false, true}) CHECK_THROWS(FormatError, Container::open(p.string(), mmap), "truncated");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr32(g, 24, 0xFFFFFFFFu); })), "4294967295", "at most");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr32(g, 24, 1000); })), "section table", "1000 entries");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr64(g, 32, ~uint64_t(0) - 7); })), "section table");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr64(g, 32, 0); })), "section table");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr32(g, 12, 256); })), "header size");
  // Section entries (entry 1 is AAAA, entry 0 is META).
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr64(g, 160 + 16, uint64_t(1) << 63); })),
               "'AAAA'", "runs past end of file", "file truncated?");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) {
                 wr64(g, 160 + 8, ~uint64_t(0) - 63);
                 wr64(g, 160 + 16, 128);
               })),
               "runs past end");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr64(g, 160 + 8, rd64(g, 160 + 8) + 8); })), "64-byte aligned");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr64(g, 160 + 8, rd64(g, 128 + 8)); })), "overlap");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr64(g, 160 + 8, 128); })), "header or section table");
  CHECK_THROWS(FormatError, open_bytes(crafted([](Bytes& g) { wr32(g, 160, rd32(g, 128)); })), "META", "twice");
  CHECK(g_max_alloc < (1u << 16));  // nothing sized by a claimed value was allocated
  {  // The most sections allowed, all of the same kind: rejected quickly as duplicates.
    const uint64_t table_end = 128 + 32 * uint64_t(kMaxSections);
    Bytes many(table_end, 0);
    std::copy(f.begin(), f.begin() + 128, many.begin());
    wr32(many, 24, kMaxSections);
    wr64(many, 40, many.size());
    for (uint32_t i = 0; i < kMaxSections; ++i) {
      std::memcpy(many.data() + 128 + 32 * i, "DUPS", 4);
      wr64(many, 128 + 32 * i + 8, table_end);  // empty, at the end of the file
    }
    reseal(many);
    CHECK_THROWS(FormatError, open_bytes(many), "'DUPS'", "appears twice");
  }
  // Without resealing, table edits are caught by the table CRC, header edits by the header CRC.
  Bytes t = f;
  t[170] ^= 1;
  CHECK_THROWS(FormatError, open_bytes(t), "section table checksum");
  Bytes h = f;
  h[41] ^= 1;
  CHECK_THROWS(FormatError, open_bytes(h), "header checksum");
}

static void test_resealed_random_tables() {
  // Random edits to header and table fields with the CRCs recomputed, so only the
  // structural checks stand between the bytes and the reader: each open must either
  // succeed with every section inside the file or throw FormatError (run under ASan too).
  const Bytes f = Sample().writer().to_bytes();
  uint64_t seed = 12345;
  const auto next = [&] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return seed >> 33;
  };
  size_t opened = 0;
  for (int it = 0; it < 3000; ++it) {
    Bytes g = f;
    const int edits = 1 + int(next() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t field = 128 + 32 * (next() % 6) + 8 * (next() % 3);  // an entry's u64s
      const size_t at = next() % 4 == 0 ? 24 + 4 * (next() % 6) : field;  // or a header field
      const uint64_t v = next() % 2 ? next() % (f.size() + 200) : next() << 31 ^ next();
      wr64(g, at, v);
    }
    reseal(g);
    OpenOptions all;
    all.verify_all = true;
    try {
      Container c = Container::from_bytes(g.data(), g.size(), all);
      for (const SectionView& sec : c.sections())
        CHECK(sec.offset % 64 == 0 && sec.offset + sec.size <= c.file_bytes());
      ++opened;
    } catch (const FormatError&) {
    } catch (...) {
      CHECK(false);
    }
  }
  CHECK(opened < 3000);
}

static void test_accessors() {
  const Bytes f = Sample().writer().to_bytes();
  Container c = Container::from_bytes(f.data(), f.size(), {}, "acc.ptch");
  CHECK(c.has(kA) && !c.has(kind::kImageIds) && c.find(kind::kImageIds) == nullptr);
  CHECK_THROWS(FormatError, c.section(kind::kImageIds), "acc.ptch", "IMAGE_IDS", "missing");
  CHECK_THROWS(FormatError, c.array<float>(kind::kPqCentroids, 34), "PQ_CENTROIDS", "132 bytes", "34 x 4");
  CHECK_THROWS(FormatError, c.array<uint64_t>(kind::kPqCentroids, ~uint64_t(0) / 4), "PQ_CENTROIDS");
  CHECK(c.array<uint8_t>(kind::kCodes, 200)[0] == Sample().codes[0]);
  CHECK(kind_name(fourcc("ZZZZ")) == "'ZZZZ'" && kind_name(1) == "0x00000001");
  ContainerWriter w;
  w.add_string(kA, "x");
  CHECK_THROWS(pypatch::InvalidArgument, w.add_string(kA, "y"), "'AAAA'", "twice");
  Bytes small(10);
  CHECK_THROWS(pypatch::InvalidArgument, w.write_to(small.data(), small.size()), "smaller");
}

static void test_atomic_write_failures() {
  const Sample s;
  const fs::path dir = g_dir / "atomic";
  fs::create_directory(dir);
  const fs::path p = dir / "index.ptch";
  s.writer().write_atomic(p.string());
  const Bytes old = read_file(p);
  Container mapped_old = Container::open(p.string(), true);
  const auto only_index_left = [&] {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename() != "index.ptch" ? 100 : 1;
    return n == 1;
  };
  // A section whose producer throws: the exception propagates, the old file survives.
  ContainerWriter w = s.writer();
  w.add_producer(kind::kLevels, 1000, [](SectionSink& out) {
    const Bytes half(500, 1);
    out.write(half.data(), half.size());
    throw std::runtime_error("boom from producer");
  });
  CHECK_THROWS(std::runtime_error, w.write_atomic(p.string()), "boom");
  CHECK(read_file(p) == old && only_index_left());
  // A producer that writes too little or too much.
  for (size_t n : {999u, 1001u}) {
    ContainerWriter w2;
    w2.add_producer(kind::kLevels, 1000, [n](SectionSink& out) {
      const Bytes b(n, 2);
      out.write(b.data(), b.size());
    });
    CHECK_THROWS(std::logic_error, w2.write_atomic(p.string()), "LEVELS");
    CHECK(read_file(p) == old && only_index_left());
  }
  // The target is a directory: rename fails, nothing is left behind.
  const fs::path as_dir = dir / "sub";
  fs::create_directory(as_dir);
  CHECK_THROWS(IoError, s.writer().write_atomic(as_dir.string()), "sub");
  CHECK(fs::is_directory(as_dir));
  fs::remove(as_dir);
  CHECK(only_index_left());
  // The folder does not exist.
  CHECK_THROWS(IoError, s.writer().write_atomic((dir / "nope" / "x.ptch").string()), "nope", "temporary");
  // The folder is read-only (root ignores permissions, so only checked as a normal user).
  if (::geteuid() != 0) {
    ::chmod(dir.c_str(), 0555);
    CHECK_THROWS(IoError, s.writer().write_atomic(p.string()), "index.ptch");
    ::chmod(dir.c_str(), 0755);
    CHECK(read_file(p) == old && only_index_left());
  }
  // A successful replace; a container mapped before keeps seeing the old bytes.
  ContainerWriter w3;
  w3.add_string(kind::kMeta, "{\"new\": true}");
  w3.write_atomic(p.string());
  CHECK(Container::open(p.string(), false).string(kind::kMeta) == "{\"new\": true}");
  s.check(mapped_old);
  CHECK(only_index_left());
}

int main() {
  char tmpl[] = "/tmp/pypatch_test_io_XXXXXX";
  if (!::mkdtemp(tmpl)) return 2;
  g_dir = tmpl;
  const std::pair<const char*, void (*)()> tests[] = {
      {"layout_by_hand", test_layout_by_hand},
      {"round_trip", test_round_trip},
      {"mmap_maps_the_file", test_mmap_maps_the_file},
      {"big_sections_and_lazy_crc", test_big_sections_and_lazy_crc},
      {"truncated", test_truncated},
      {"every_flipped_byte", test_every_flipped_byte},
      {"foreign_files", test_foreign_files},
      {"versions", test_versions},
      {"crafted_headers", test_crafted_headers},
      {"resealed_random_tables", test_resealed_random_tables},
      {"accessors", test_accessors},
      {"atomic_write_failures", test_atomic_write_failures},
  };
  for (const auto& t : tests) {
    const int before = g_failures;
    try {
      t.second();
    } catch (const std::exception& e) {
      ++g_failures;
      std::fprintf(stderr, "%s: uncaught exception: %s\n", t.first, e.what());
    }
    std::printf("%-28s %s\n", t.first, g_failures == before ? "ok" : "FAILED");
  }
  std::error_code ec;
  fs::remove_all(g_dir, ec);
  if (g_failures) std::fprintf(stderr, "test_io_container: %d check(s) failed\n", g_failures);
  else std::printf("test_io_container: all checks passed\n");
  return g_failures ? 1 : 0;
}

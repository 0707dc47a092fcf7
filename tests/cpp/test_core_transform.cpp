// LinearTransform and the XFRM section: apply() on a hand-computed case, set_transform checks,
// save/load round trips (eager, mmap, bytes), files without XFRM, damaged XFRM sections.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/index/linear_transform.h"
#include "pypatch/index/patch_index.h"
#include "pypatch/io/container.h"
#include "pypatch/io/little_endian.h"
#include "test_data.h"
#include "test_main.h"

using namespace pypatch;

namespace {
using test_data::randn;
std::string tmp_path(const char* name) { return std::string("/tmp/pypatch_cpp_xfrm_") + name; }
const uint32_t kXfrm = io::fourcc("XFRM");

// A 6 -> 4 transform and a flat index of its outputs (3 images), saved to `path`.
std::shared_ptr<const LinearTransform> make_transform() {
  return std::make_shared<const LinearTransform>(6, 4, randn(6, 1), randn(24, 2));
}
std::unique_ptr<PatchIndex> make_index(const std::shared_ptr<const LinearTransform>& t) {
  auto ix = std::make_unique<PatchIndex>(4, StoreKind::FlatF32);
  auto x = randn(9 * 6, 3);
  std::vector<float> y(9 * 4);
  t->apply(9, x.data(), y.data());
  const int64_t counts[] = {2, 3, 4};
  ix->add(3, counts, y.data(), 1);
  ix->set_transform(t);
  return ix;
}

// Rewrites `path` with the XFRM section's bytes replaced by edit(bytes) (any size) and every
// CRC valid, so only the index loader's own checks can reject it.
void rewrite_xfrm(const std::string& src, const std::string& dst,
                  const std::function<void(std::vector<uint8_t>&)>& edit) {
  io::Container c = io::Container::open(src, /*mmap=*/false);
  std::vector<uint8_t> body;
  io::ContainerWriter w;
  for (const io::SectionView& s : c.sections()) {
    if (s.kind == kXfrm) {
      body.assign(s.data, s.data + s.size);
      edit(body);
      w.add_view(s.kind, body.data(), body.size(), s.flags);
    } else {
      w.add_view(s.kind, s.data, s.size, s.flags);
    }
  }
  w.write_atomic(dst);
}

// Flips one byte inside the XFRM section leaving its stored CRC stale.
void flip_xfrm_byte(const std::string& src, const std::string& dst, size_t at) {
  uint64_t offset = 0;
  {
    io::Container c = io::Container::open(src, false);
    offset = c.section(kXfrm).offset;
  }
  std::ifstream in(src, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes[offset + at] ^= 0x40;
  std::ofstream(dst, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
}  // namespace

TEST(apply_matches_a_hand_computed_case) {
  // mean (1, 2, 3); rows (1, 0, 0) and (0, 2, 0).
  LinearTransform t(3, 2, {1, 2, 3}, {1, 0, 0, 0, 2, 0});
  const float x[] = {4, 6, 100,   // centred (3, 4, 97) -> (3, 8) -> / sqrt(73)
                     1, 2, -5};   // centred (0, 0, -8) -> (0, 0): stays zero
  float out[4] = {-1, -1, -1, -1};
  t.apply(2, x, out);
  const float r = std::sqrt(73.0f);
  CHECK(std::fabs(out[0] - 3 / r) < 1e-6f && std::fabs(out[1] - 8 / r) < 1e-6f);
  CHECK(out[2] == 0.0f && out[3] == 0.0f);
  t.apply(0, nullptr, nullptr);  // nothing to do
  CHECK_THROWS(t.apply(-1, x, out), InvalidArgument);
}

TEST(constructor_rejects_bad_shapes_and_values) {
  CHECK_THROWS(LinearTransform(0, 1, {}, {}), InvalidArgument);
  CHECK_THROWS(LinearTransform(2, 0, {0, 0}, {}), InvalidArgument);
  CHECK_THROWS(LinearTransform(2, 1, {0}, {1, 1}), InvalidArgument);        // mean too short
  CHECK_THROWS(LinearTransform(2, 2, {0, 0}, {1, 1, 1}), InvalidArgument);  // matrix too short
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS(LinearTransform(2, 1, {0, nan}, {1, 1}), InvalidArgument);
  CHECK_THROWS(LinearTransform(2, 1, {0, 0}, {1, INFINITY}), InvalidArgument);
}

TEST(set_transform_checks_the_index_dim) {
  PatchIndex ix(4, StoreKind::FlatF32);
  CHECK(ix.transform() == nullptr);
  CHECK_THROWS(ix.set_transform(std::make_shared<const LinearTransform>(6, 3, randn(6, 1), randn(18, 2))),
               InvalidArgument);
  CHECK(ix.transform() == nullptr);
  auto t = make_transform();
  ix.set_transform(t);
  CHECK(ix.transform() == t);
  ix.set_transform(nullptr);
  CHECK(ix.transform() == nullptr);
}

TEST(round_trip_eager_mmap_and_bytes) {
  auto t = make_transform();
  auto ix = make_index(t);
  const std::string path = tmp_path("round.ptch");
  ix->save(path);
  auto q6 = randn(2 * 6, 9);
  float q[8], s0[6], s1[6];
  int64_t i0[6], i1[6], p0[6], p1[6];
  t->apply(2, q6.data(), q);
  ix->search(2, q, 3, 1, s0, i0, p0);
  auto bytes = ix->to_bytes();
  for (int mode = 0; mode < 3; ++mode) {
    auto loaded = mode == 2 ? PatchIndex::from_bytes(bytes.data(), bytes.size())
                            : PatchIndex::load(path, /*mmap=*/mode == 0);
    auto lt = loaded->transform();
    CHECK(lt != nullptr);
    if (!lt) continue;
    CHECK(lt->dim_in() == 6 && lt->dim_out() == 4);
    CHECK(lt->mean() == t->mean() && lt->matrix() == t->matrix());
    float lq[8];
    lt->apply(2, q6.data(), lq);
    CHECK(std::memcmp(lq, q, sizeof q) == 0);
    loaded->search(2, lq, 3, 1, s1, i1, p1);
    CHECK(std::memcmp(s0, s1, sizeof s0) == 0 && std::memcmp(i0, i1, sizeof i0) == 0);
  }
  // Saving again (e.g. after compact) keeps it; an index without one writes no XFRM.
  ix->set_transform(nullptr);
  ix->save(path);
  CHECK(PatchIndex::load(path, true)->transform() == nullptr);
  CHECK(!io::Container::open(path, true).has(kXfrm));
  std::remove(path.c_str());
}

TEST(golden_format_v1_files_load_without_a_transform) {
  for (const char* f : {"tests/data/format_v1/pq_m4_nbits8.ptch", "tests/data/format_v1/flat_float16.ptch"})
    for (bool mmap : {true, false}) {
      auto ix = PatchIndex::load(f, mmap);
      CHECK(ix->transform() == nullptr && ix->n_images() > 0);
    }
}

TEST(damaged_xfrm_sections_raise_format_errors) {
  const std::string good = tmp_path("good.ptch"), bad = tmp_path("bad.ptch");
  make_index(make_transform())->save(good);
  auto rejects = [&](bool version_error) {
    for (bool mmap : {true, false}) {
      bool format = false, version = false;
      try {
        PatchIndex::load(bad, mmap, /*verify=*/false);
      } catch (const VersionError&) {
        version = true;
      } catch (const FormatError&) {
        format = true;
      } catch (...) {
      }
      CHECK(version_error ? version : format);
    }
  };
  flip_xfrm_byte(good, bad, 64 + 4 * 6 + 5);  // inside the matrix, CRC now stale
  rejects(false);
  rewrite_xfrm(good, bad, [](std::vector<uint8_t>& b) { b.resize(b.size() - 4); });  // truncated
  rejects(false);
  rewrite_xfrm(good, bad, [](std::vector<uint8_t>& b) { b.resize(40); });  // shorter than its header
  rejects(false);
  rewrite_xfrm(good, bad, [](std::vector<uint8_t>& b) { io::le::store32(b.data() + 12, 5); });  // dim_out
  rejects(false);
  rewrite_xfrm(good, bad, [](std::vector<uint8_t>& b) { io::le::store32(b.data() + 8, 1u << 30); });  // dim_in
  rejects(false);
  rewrite_xfrm(good, bad, [](std::vector<uint8_t>& b) { io::le::store32(b.data() + 4, 7); });  // kind
  rejects(false);
  rewrite_xfrm(good, bad, [](std::vector<uint8_t>& b) {  // a NaN in the mean
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(b.data() + 64, &nan, 4);
  });
  rejects(false);
  rewrite_xfrm(good, bad, [](std::vector<uint8_t>& b) { io::le::store32(b.data(), 2); });  // newer version
  rejects(true);
  rewrite_xfrm(good, bad, [](std::vector<uint8_t>&) {});  // unchanged: loads
  CHECK(PatchIndex::load(bad, true)->transform() != nullptr);
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

// The 4-bit fast-scan kernels (simd/fastscan4.h): the scalar kernel against an independent
// brute-force model of the documented semantics (scores from row-major codes, image found by a
// linear search), then every compiled+supported SIMD kernel against the scalar one, emit for
// emit: random and adversarial codes (all-15 codes with 255 tables: u16 sums up to 65535 at
// m = 257), exact ties, thresholds raised by each emit, odd m, tasks starting and ending inside
// blocks, empty and single-patch images, blocks spanning images.
#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/index/code_layout_fs4.h"
#include "pypatch/simd/fastscan4.h"
#include "pypatch/simd/simd_level.h"
#include "test_main.h"

using namespace pypatch;

namespace {

// Records emits; raises the threshold by a rule (0: never; 1: to q - step; 2: k-th best - step).
struct Recorder : Fs4Sink {
  int rule = 0, step = 0, k = 3;
  std::vector<std::pair<int64_t, int32_t>> got;
  std::vector<int32_t> best;
  static void on(Fs4Sink* self, int64_t image, int32_t q) {
    Recorder& r = *static_cast<Recorder*>(self);
    r.got.push_back({image, q});
    if (r.rule == 1) r.threshold = std::max(r.threshold, q - r.step);
    if (r.rule == 2) {
      r.best.push_back(q);
      std::sort(r.best.rbegin(), r.best.rend());
      if (static_cast<int>(r.best.size()) > r.k) r.best.resize(r.k);
      if (static_cast<int>(r.best.size()) == r.k) r.threshold = std::max(0, r.best.back() - r.step);
    }
  }
  Recorder(int rl, int st, int32_t t0) { rule = rl; step = st; threshold = t0; emit = &Recorder::on; }
};

// The documented semantics, written independently of the kernels.
void model(const std::vector<uint8_t>& rows, int m, const std::vector<uint8_t>& qlut,
           const std::vector<int64_t>& off, int64_t i0, int64_t i1, Recorder& sink) {
  int64_t cur = -1;
  int32_t mx = 0;
  for (int64_t p = off[i0]; p < off[i1]; ++p) {
    int32_t s = 0;
    for (int j = 0; j < m; ++j) s += qlut[j * 16 + rows[p * m + j]];
    if (s < sink.threshold) continue;
    int64_t img = i0;
    while (!(off[img] <= p && p < off[img + 1])) ++img;
    if (img != cur) {
      if (cur >= 0) sink.emit(&sink, cur, mx);
      cur = img;
      mx = s;
    } else {
      mx = std::max(mx, s);
    }
  }
  if (cur >= 0) sink.emit(&sink, cur, mx);
}

struct Case {
  int m;
  std::vector<int64_t> off;
  std::vector<uint8_t> rows, fs4, qlut;
};

Case make(int m, int n_images, int max_patches, int kind, unsigned seed) {
  std::mt19937 g(seed);
  Case c;
  c.m = m;
  c.off.push_back(0);
  for (int i = 0; i < n_images; ++i) {
    int n = static_cast<int>(g() % (max_patches + 1));
    if (i % 17 == 3) n = 0;   // empty images
    if (i % 13 == 5) n = 1;   // single-patch images
    c.off.push_back(c.off.back() + n);
  }
  const int64_t np = c.off.back();
  c.rows.resize(np * m);
  for (auto& x : c.rows) x = kind == 1 ? 15 : kind == 2 ? static_cast<uint8_t>(g() % 2) : static_cast<uint8_t>(g() % 16);
  c.fs4.assign(fs4_bytes(np, m), 0);
  rows_to_fs4(c.rows.data(), 0, np, m, c.fs4.data());
  c.qlut.assign(2 * fs4_groups(m) * 16, 0);
  for (int j = 0; j < m; ++j)
    for (int v = 0; v < 16; ++v)
      c.qlut[j * 16 + v] = kind == 1 ? 255 : kind == 2 ? static_cast<uint8_t>(v * 7) : static_cast<uint8_t>(g() % 256);
  return c;
}

std::vector<int> usable() {
  std::vector<int> v;
  for (SimdLevel l : compiled_simd_levels())
    if (simd_level_usable(l)) v.push_back(static_cast<int>(l));
  return v;
}

int check_case(const Case& c, int64_t i0, int64_t i1) {
  int bad = 0;
  const int rules[][3] = {{0, 0, 0}, {1, 0, 0}, {1, 3, 0}, {2, 0, 0}, {2, 2, 0}, {0, 0, 1000}, {0, 0, 70000}, {0, 0, -3}};
  for (const auto& r : rules) {
    Recorder want(r[0], r[1], r[2]);
    model(c.rows, c.m, c.qlut, c.off, i0, i1, want);
    for (int level : usable()) {
      Recorder got(r[0], r[1], r[2]);
      Fs4ScanFn f = fastscan4_kernel_for(level);
      CHECK(f != nullptr);
      if (!f) continue;
      f(c.fs4.data(), c.m, c.qlut.data(), c.off.data(), i0, i1, &got);
      if (got.got != want.got || got.threshold != want.threshold) {
        ++bad;
        std::fprintf(stderr, "m=%d level=%d [%lld,%lld) rule=%d,%d,%d: %zu emits, want %zu\n", c.m, level,
                     static_cast<long long>(i0), static_cast<long long>(i1), r[0], r[1], r[2], got.got.size(),
                     want.got.size());
      }
    }
  }
  return bad;
}

}  // namespace

TEST(fs4_layout_round_trips_and_appends) {
  Case c = make(5, 40, 70, 0, 1);
  const int64_t np = c.off.back();
  std::vector<uint8_t> back(np * 5);
  fs4_to_rows(c.fs4.data(), 0, np, 5, back.data());
  CHECK(back == c.rows);
  // appended in two parts: the second starts inside a block and keeps the first's nibbles
  std::vector<uint8_t> two(fs4_bytes(np, 5), 0);
  rows_to_fs4(c.rows.data(), 0, 45, 5, two.data());
  rows_to_fs4(c.rows.data() + 45 * 5, 45, np - 45, 5, two.data());
  CHECK(two == c.fs4);
  CHECK(fs4_bytes(1, 32) == 512 && fs4_bytes(32, 32) == 512 && fs4_bytes(33, 32) == 1024);
  CHECK(fs4_bytes(64, 5) == 2 * 32 * 3);
}

TEST(fs4_kernels_match_the_model_and_each_other) {
  CHECK(fastscan4_kernel_for(static_cast<int>(SimdLevel::Scalar)) == fs4_scan_scalar);
  const int ms[] = {1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 33, 64, 100};
  for (int m : ms)
    for (int kind = 0; kind < 3; ++kind) {
      Case c = make(m, 120, 70, kind, 100 + m * 3 + kind);
      const int64_t n = static_cast<int64_t>(c.off.size()) - 1;
      CHECK(check_case(c, 0, n) == 0);
      CHECK(check_case(c, 7, n - 9) == 0);  // a task starting and ending inside blocks
      CHECK(check_case(c, 3, 4) == 0);      // one empty image
      CHECK(check_case(c, 5, 6) == 0);      // one single-patch image
    }
}

TEST(fs4_u16_sums_reach_65535_without_wrapping) {
  // m = 257, every code 15, every entry 255: each patch sums to 257 * 255 = 65535.
  Case c = make(257, 10, 40, 1, 5);
  Recorder want(0, 0, 65535);
  model(c.rows, c.m, c.qlut, c.off, 0, 10, want);
  CHECK(!want.got.empty() && want.got[0].second == 65535);
  CHECK(check_case(c, 0, 10) == 0);
}

TEST(fs4_constant_patches_per_image_spanning_blocks) {
  // 30 patches per image: images straddle 32-patch blocks at every offset.
  Case c = make(16, 100, 70, 0, 9);
  c.off.assign(1, 0);
  for (int i = 0; i < 100; ++i) c.off.push_back(c.off.back() + 30);
  const int64_t np = c.off.back();
  c.rows.resize(np * 16);
  std::mt19937 g(3);
  for (auto& x : c.rows) x = static_cast<uint8_t>(g() % 16);
  c.fs4.assign(fs4_bytes(np, 16), 0);
  rows_to_fs4(c.rows.data(), 0, np, 16, c.fs4.data());
  CHECK(check_case(c, 0, 100) == 0);
  CHECK(check_case(c, 1, 99) == 0);
}

#include "pypatch/util/huge_page_allocator.h"

TEST(huge_page_allocator_aligns_big_blocks) {
  HugePageAllocator<uint8_t> a;
  uint8_t* big = a.allocate(5u << 20);
  uint8_t* small = a.allocate(100);
  CHECK(reinterpret_cast<uintptr_t>(big) % (2u << 20) == 0);
  CHECK(reinterpret_cast<uintptr_t>(small) % 64 == 0);
  for (size_t i = 0; i < (5u << 20); i += 4096) big[i] = 1;  // usable to the end
  big[(5u << 20) - 1] = 1;
  a.deallocate(big, 5u << 20);
  a.deallocate(small, 100);
  std::vector<uint8_t, HugePageAllocator<uint8_t>> v(9u << 20, 7);  // as PatchIndex storage
  v.resize(1u << 20);
  CHECK(v[12345] == 7);
}

#include <cmath>
#include <memory>

#include "pypatch/index/patch_index.h"
#include "pypatch/index/scan.h"

namespace {
// One 4-bit search at `level`; returns whether it took the quantised fast scan, and its hits.
bool searched_quantised(PatchIndex& ix, SimdLevel level, const float* q, std::vector<int64_t>& images,
                        std::vector<float>& scores) {
  const SimdLevel before = selected_simd_level();
  set_simd_level(level);
  const int64_t n0 = fastscan4_quantised_searches();
  std::vector<int64_t> patches(5);
  images.assign(5, 0);
  scores.assign(5, 0.f);
  ix.search(1, q, 5, 1, scores.data(), images.data(), patches.data());
  set_simd_level(before);
  return fastscan4_quantised_searches() > n0;
}
}  // namespace

TEST(fs4_search_takes_the_fast_scan_where_it_can_and_the_exact_path_elsewhere) {
  for (int m : {6, 258}) {
    std::mt19937 g(static_cast<unsigned>(m));
    std::normal_distribution<float> nd;
    auto pq = std::make_shared<ProductQuantizer>(m, m, 4);
    std::vector<float> c(static_cast<size_t>(m) * 16);
    for (auto& x : c) x = nd(g);
    pq->set_centroids(c.data());
    PatchIndex ix(m, pq);
    std::vector<int64_t> counts(200, 7);
    std::vector<uint8_t> codes(200 * 7 * m);
    for (auto& x : codes) x = static_cast<uint8_t>(g() % 16);
    ix.add_codes(200, counts.data(), codes.data());
    std::vector<float> q(m);
    for (auto& x : q) x = nd(g);
    std::vector<int64_t> ref_i, got_i;
    std::vector<float> ref_s, got_s;
    CHECK(!searched_quantised(ix, SimdLevel::Scalar, q.data(), ref_i, ref_s));
    for (SimdLevel l : compiled_simd_levels()) {
      if (l == SimdLevel::Scalar || !simd_level_usable(l)) continue;
      CHECK(searched_quantised(ix, l, q.data(), got_i, got_s) == (m <= 257));
      CHECK(got_i == ref_i && got_s == ref_s);
    }
    // centroids whose products would overflow a table never get that far: the value rule
    // (util/value_limits.h, |x| <= 1e15) refuses them, so no table holds an infinity
    if (m == 6) {
      for (auto& x : c) x *= 1e37f;
      auto big = std::make_shared<ProductQuantizer>(m, m, 4);
      CHECK_THROWS(big->set_centroids(c.data()), pypatch::InvalidArgument);
    }
  }
}

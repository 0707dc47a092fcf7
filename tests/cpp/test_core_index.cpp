// PatchIndex in C++: search against brute force, PQ round trips, save/load (mmap and eager),
// remove/compact, typed errors on bad files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/index/patch_index.h"
#include "pypatch/index/scan.h"
#include "test_data.h"
#include "test_main.h"

using namespace pypatch;

namespace {
using test_data::randn;
std::string tmp_path(const char* name) { return std::string("/tmp/pypatch_cpp_test_") + name; }
}  // namespace

TEST(flat_search_matches_brute_force) {
  const int dim = 10;
  const std::vector<int64_t> counts = {4, 0, 1, 7, 3};
  auto x = randn(15 * dim, 1), q = randn(dim, 2);
  PatchIndex ix(dim, StoreKind::FlatF32);
  CHECK(ix.add(5, counts.data(), x.data(), 1) == 0);
  float s[3];
  int64_t im[3], pa[3];
  ix.search(1, q.data(), 3, 1, s, im, pa);
  // brute force per-image max
  std::vector<std::pair<float, int64_t>> best;
  int64_t p = 0;
  for (int64_t i = 0; i < 5; ++i) {
    float b = -INFINITY;
    for (int64_t k = 0; k < counts[i]; ++k, ++p) {
      float d = 0;
      for (int t = 0; t < dim; ++t) d += q[t] * x[p * dim + t];
      b = std::max(b, d);
    }
    if (counts[i]) best.push_back({b, i});
  }
  std::sort(best.begin(), best.end(), [](auto a, auto b) { return a.first > b.first; });
  for (int r = 0; r < 3; ++r) {
    CHECK(im[r] == best[r].second);
    CHECK(std::fabs(s[r] - best[r].first) < 1e-4f);
  }
}

TEST(pq_index_save_load_remove_compact) {
  const int dim = 16, n_img = 300, P = 7;
  auto x = randn(n_img * P * dim, 3);
  auto pq = std::make_shared<ProductQuantizer>(dim, 4);
  pq->train(n_img * P, x.data(), 5, 0, 2);
  PatchIndex ix(dim, pq);
  std::vector<int64_t> counts(n_img, P);
  ix.add(n_img, counts.data(), x.data(), 2);
  const int64_t gone[] = {0, 5};
  ix.remove(2, gone);
  ix.set_metadata_json("{\"ids\": [1, 2]}");
  const std::string path = tmp_path("index.ptch");
  ix.save(path);
  auto q = randn(2 * dim, 4);
  float s0[20], s1[20];
  int64_t i0[20], i1[20], p0[20], p1[20];
  ix.search(2, q.data(), 10, 2, s0, i0, p0);
  for (bool mmap : {true, false}) {
    auto loaded = PatchIndex::load(path, mmap);
    loaded->search(2, q.data(), 10, 1, s1, i1, p1);
    CHECK(std::equal(s0, s0 + 20, s1) && std::equal(i0, i0 + 20, i1) && std::equal(p0, p0 + 20, p1));
    CHECK(loaded->metadata_json() == "{\"ids\": [1, 2]}" && loaded->is_removed(5) && !loaded->is_removed(4));
  }
  for (int r = 0; r < 20; ++r) CHECK(i0[r] != 0 && i0[r] != 5);
  auto mapping = ix.compact();
  CHECK(mapping[0] == -1 && mapping[1] == 0 && mapping[6] == 4 && ix.n_images() == n_img - 2);
  std::remove(path.c_str());
}

TEST(bad_files_raise_format_errors) {
  const std::string path = tmp_path("bad.ptch");
  { std::ofstream(path) << "definitely not an index file, just some text to fill the header........"
                           "..................................................................."; }
  CHECK_THROWS(PatchIndex::load(path, true), FormatError);
  CHECK_THROWS(PatchIndex::load(path, false), FormatError);
  std::remove(path.c_str());
  CHECK_THROWS(PatchIndex::load(tmp_path("missing.ptch"), true), IoError);
}

TEST(argument_errors) {
  CHECK_THROWS(ProductQuantizer(10, 3), InvalidArgument);
  CHECK_THROWS(ProductQuantizer(8, 2, 5), InvalidArgument);
  auto pq = std::make_shared<ProductQuantizer>(8, 2);
  PatchIndex ix(8, pq);
  float q[8] = {0}, s[1];
  int64_t i[1], p[1];
  CHECK_THROWS(ix.search(1, q, 1, 1, s, i, p), NotTrained);
  PatchIndex flat(8, StoreKind::FlatF16);
  CHECK_THROWS(flat.search(1, q, 0, 1, s, i, p), InvalidArgument);
}

// The galloping task bounds equal a plain lower_bound per task, with empty images, huge
// images spanning many tasks, and task sizes from 1 patch up to more than the whole index.
TEST(scan_task_bounds_match_lower_bound) {
  std::mt19937 g(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int n_images = static_cast<int>(g() % 300);
    std::vector<int64_t> off{0};
    for (int i = 0; i < n_images; ++i) {
      const unsigned r = g() % 10;
      off.push_back(off.back() + (r < 3 ? 0 : r < 9 ? static_cast<int64_t>(g() % 40) : static_cast<int64_t>(g() % 2000)));
    }
    const int64_t per_task = 1 + static_cast<int64_t>(g() % (trial % 2 ? 50 : 5000));
    ScanSetup s{StoreKind::FlatF32, 1, 4, nullptr, nullptr, off.data(), n_images, nullptr, 0};
    const std::vector<int64_t> b = scan_task_bounds(s, per_task);
    const int64_t n_tasks = std::max<int64_t>(1, (off.back() + per_task - 1) / per_task);
    CHECK(static_cast<int64_t>(b.size()) == n_tasks + 1);
    CHECK(b.front() == 0 && b.back() == n_images);
    for (int64_t t = 1; t < n_tasks; ++t)
      CHECK(b[t] == std::lower_bound(off.begin(), off.begin() + n_images, t * per_task) - off.begin());
  }
}

#include <cstring>

#include "pypatch/simd/kernels.h"
#include "pypatch/simd/simd_level.h"

// PQ searches at every usable SIMD level (8-bit: the quantised scan, VBMI / AVX2 / NEON;
// 4-bit: the fast scan, AVX-512 / AVX2 / NEON) return what scalar (the exact float path)
// returns, bit for bit: odd m, images of 0..70 patches (blocks spanning images), duplicated
// images (exact ties at the k-th place), removed images (the best ones included), 1 and 2
// threads. The quantised path must really run at every level above scalar.
TEST(pq_search_every_level_equals_scalar_with_ties_and_removed_images) {
  struct Guard {  // restores the selected level
    SimdLevel saved = selected_simd_level();
    ~Guard() { set_simd_level(saved); }
  } guard;
  for (int nbits : {8, 4}) {
    for (int m : {5, 16}) {
      const int dim = 2 * m, ksub = 1 << nbits, n_img = 400;
      std::mt19937 g(static_cast<unsigned>(nbits * 100 + m));
      auto pq = std::make_shared<ProductQuantizer>(dim, m, nbits);
      pq->set_centroids(randn(static_cast<size_t>(m) * ksub * 2, 40 + m).data());
      PatchIndex ix(dim, pq);
      std::vector<int64_t> counts(n_img);
      std::vector<uint8_t> codes;
      for (int i = 0; i < n_img; ++i) {
        if (i % 9 == 4) {  // a copy of the previous image: same codes, exact tie
          counts[i] = counts[i - 1];
          codes.insert(codes.end(), codes.end() - counts[i] * m, codes.end());
          continue;
        }
        counts[i] = i % 23 == 0 ? 0 : static_cast<int64_t>(g() % 71);
        for (int64_t k = 0; k < counts[i] * m; ++k) codes.push_back(static_cast<uint8_t>(g() % ksub));
      }
      ix.add_codes(n_img, counts.data(), codes.data());
      const auto q = randn(dim, 50 + m);
      auto search = [&](SimdLevel level, int k, int threads, std::vector<float>& s, std::vector<int64_t>& im,
                        std::vector<int64_t>& pa) {
        set_simd_level(level);
        s.assign(k, 0.f);
        im.assign(k, 0);
        pa.assign(k, 0);
        ix.search(1, q.data(), k, threads, s.data(), im.data(), pa.data());
      };
      std::vector<float> rs, gs;
      std::vector<int64_t> ri, gi, rp, gp;
      search(SimdLevel::Scalar, 3, 1, rs, ri, rp);
      std::vector<int64_t> gone(ri.begin(), ri.end());  // the three best images...
      for (int64_t i = 5; i < n_img; i += 11) gone.push_back(i);  // ...and some others
      ix.remove(static_cast<int64_t>(gone.size()), gone.data());
      for (int k : {1, 10, 50}) {
        search(SimdLevel::Scalar, k, 1, rs, ri, rp);
        for (int64_t i : ri) CHECK(i < 0 || !ix.is_removed(i));
        for (SimdLevel l : compiled_simd_levels()) {
          if (l == SimdLevel::Scalar || !simd_level_usable(l)) continue;
          for (int threads : {1, 2}) {
            const int64_t fs0 = fastscan4_quantised_searches();
            search(l, k, threads, gs, gi, gp);
            if (nbits == 4) CHECK(fastscan4_quantised_searches() == fs0 + 1);
            if (nbits == 8) CHECK(quant_scan_kernel() != nullptr);
            const bool same = std::memcmp(gs.data(), rs.data(), 4 * k) == 0 && gi == ri && gp == rp;
            if (!same)
              std::fprintf(stderr, "nbits=%d m=%d k=%d level=%s threads=%d differs from scalar\n", nbits, m, k,
                           simd_level_name(l), threads);
            CHECK(same);
          }
        }
      }
    }
  }
}

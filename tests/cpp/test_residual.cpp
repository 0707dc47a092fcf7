// ResidualQuantizer in C++ (pq/residual_quantizer.h) and a PatchIndex over it: train/encode/
// decode on seeded clustered data (decode is the sum of one codeword a codebook, each stage's
// code the codeword nearest the residual the earlier stages left, error falling stage by stage);
// compute_lut equals dot products in double and compute_luts equals compute_lut bit for bit;
// codes and tables identical at every usable SIMD level; an index's search equals brute force
// over the decoded vectors (8-bit and 4-bit, odd m, removed images, an exact tie) and the same
// bits at every level; save/load (mapped, eager, bytes) keeps kind, centroids and answers;
// constructor arguments out of range throw InvalidArgument.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/index/patch_index.h"
#include "pypatch/pq/residual_quantizer.h"
#include "pypatch/simd/simd_level.h"
#include "test_data.h"
#include "test_main.h"

using namespace pypatch;

namespace {
using test_data::randn;

std::string tmp_path(const char* name) { return std::string("/tmp/pypatch_cpp_test_") + name; }

std::vector<SimdLevel> usable() {
  std::vector<SimdLevel> v;
  for (SimdLevel l : compiled_simd_levels())
    if (simd_level_usable(l)) v.push_back(l);
  return v;
}

struct LevelGuard {  // restores the selected level
  SimdLevel saved = selected_simd_level();
  ~LevelGuard() { set_simd_level(saved); }
};

// n unit vectors around 10 random unit centres (the same for every call of one dim, so training
// and indexed data match), noise of norm about 0.3; seeded.
std::vector<float> clustered(int64_t n, int dim, unsigned seed) {
  const int n_centers = 10;
  auto c = randn(static_cast<size_t>(n_centers) * dim, 1000 + dim);
  auto noise = randn(static_cast<size_t>(n) * dim, seed);
  std::mt19937 g(seed);
  std::vector<float> x(static_cast<size_t>(n) * dim);
  for (int64_t i = 0; i < n; ++i) {
    const float* ci = c.data() + static_cast<int64_t>(g() % n_centers) * dim;
    double cn = 0, xn = 0;
    for (int t = 0; t < dim; ++t) cn += double(ci[t]) * ci[t];
    for (int t = 0; t < dim; ++t) {
      x[i * dim + t] = static_cast<float>(ci[t] / std::sqrt(cn) + 0.3 * noise[i * dim + t] / std::sqrt(dim));
      xn += double(x[i * dim + t]) * x[i * dim + t];
    }
    for (int t = 0; t < dim; ++t) x[i * dim + t] = static_cast<float>(x[i * dim + t] / std::sqrt(xn));
  }
  return x;
}

std::shared_ptr<ResidualQuantizer> trained(int dim, int m, int nbits, unsigned seed) {
  auto rq = std::make_shared<ResidualQuantizer>(dim, m, nbits);
  const auto t = clustered(1500, dim, seed);
  rq->train(1500, t.data(), 6, seed, 2);
  return rq;
}

double sq_dist(const float* a, const double* b, int dim) {
  double s = 0;
  for (int t = 0; t < dim; ++t) s += (a[t] - b[t]) * (a[t] - b[t]);
  return s;
}

struct Result {
  std::vector<float> s;
  std::vector<int64_t> i, p;
  bool operator==(const Result& o) const {
    return i == o.i && p == o.p && std::memcmp(s.data(), o.s.data(), s.size() * 4) == 0;
  }
};

Result run(const PatchIndex& ix, int nq, const float* q, int k, int threads = 1) {
  Result r{std::vector<float>(nq * k), std::vector<int64_t>(nq * k), std::vector<int64_t>(nq * k)};
  ix.search(nq, q, k, threads, r.s.data(), r.i.data(), r.p.data());
  return r;
}

// Brute force over the decoded stored codes, in double: per image the max over its patches
// (lowest ordinal on ties), images by (score desc, image asc), removed and empty ones skipped.
Result brute_force(const PatchIndex& ix, int nq, const float* q, int k) {
  const int dim = ix.dim(), m = ix.pq()->m();
  const int64_t n = ix.n_patches();
  std::vector<uint8_t> rows(static_cast<size_t>(n) * m);
  CHECK(ix.copy_all_rows(n, rows.data()));
  std::vector<float> dec(static_cast<size_t>(n) * dim);
  ix.pq()->decode(n, rows.data(), dec.data());
  const std::vector<int64_t> off = ix.image_offsets();
  Result r{std::vector<float>(nq * k, -INFINITY), std::vector<int64_t>(nq * k, -1),
           std::vector<int64_t>(nq * k, -1)};
  for (int qi = 0; qi < nq; ++qi) {
    std::vector<std::tuple<double, int64_t, int64_t>> best;  // (-score, image, ordinal)
    for (int64_t i = 0; i + 1 < static_cast<int64_t>(off.size()); ++i) {
      if (ix.is_removed(i) || off[i + 1] == off[i]) continue;
      double b = -INFINITY;
      int64_t bp = -1;
      for (int64_t p = off[i]; p < off[i + 1]; ++p) {
        double s = 0;
        for (int t = 0; t < dim; ++t) s += double(q[qi * dim + t]) * dec[p * dim + t];
        if (s > b) b = s, bp = p - off[i];
      }
      best.emplace_back(-b, i, bp);
    }
    std::sort(best.begin(), best.end());
    for (int j = 0; j < k && j < static_cast<int>(best.size()); ++j) {
      r.s[qi * k + j] = static_cast<float>(-std::get<0>(best[j]));
      r.i[qi * k + j] = std::get<1>(best[j]);
      r.p[qi * k + j] = std::get<2>(best[j]);
    }
  }
  return r;
}

bool near(const Result& got, const Result& want, float tol) {
  if (got.i != want.i || got.p != want.p) return false;
  for (size_t j = 0; j < got.s.size(); ++j)
    if (!(std::fabs(got.s[j] - want.s[j]) <= tol) && !(std::isinf(got.s[j]) && std::isinf(want.s[j]))) return false;
  return true;
}

// An index over a trained residual quantizer: 90 images of 0..30 patches, image 5 a copy of
// image 4 (an exact tie), images 2 and 31 removed.
std::unique_ptr<PatchIndex> build_index(std::shared_ptr<ResidualQuantizer> rq, int nlist, unsigned seed) {
  const int dim = rq->dim(), n_img = 90;
  std::vector<int64_t> counts(n_img);
  for (int i = 0; i < n_img; ++i) counts[i] = (i * 13 + 3) % 31;
  counts[0] = 0;
  counts[5] = counts[4];
  int64_t total = 0, at4 = 0;
  for (int i = 0; i < n_img; ++i) {
    if (i == 4) at4 = total;
    total += counts[i];
  }
  auto x = clustered(total, dim, seed);
  std::copy(x.begin() + at4 * dim, x.begin() + (at4 + counts[4]) * dim, x.begin() + (at4 + counts[4]) * dim);
  auto ix = std::make_unique<PatchIndex>(dim, rq, nlist);
  if (nlist) ix->train(total, x.data(), 4, seed, 2);
  ix->add(n_img, counts.data(), x.data(), 2);
  const int64_t gone[] = {2, 31};
  ix->remove(2, gone);
  ix->set_metadata_json("{\"rq\": true}");
  return ix;
}
}  // namespace

TEST(rq_decode_is_the_sum_of_greedy_codewords) {
  for (int nbits : {8, 4})
    for (int m : {3, 4}) {
      const int dim = 16, ksub = 1 << nbits, n = 500;
      auto rq = trained(dim, m, nbits, 20 + nbits + m);
      CHECK(rq->is_trained() && rq->kind() == CodebookKind::Residual && rq->codeword_dim() == dim);
      CHECK(rq->centroids().size() == static_cast<size_t>(m) * ksub * dim);
      const auto x = clustered(n, dim, 30 + m);
      std::vector<uint8_t> codes(static_cast<size_t>(n) * m);
      rq->encode(n, x.data(), codes.data(), 2);
      std::vector<float> dec(static_cast<size_t>(n) * dim);
      rq->decode(n, codes.data(), dec.data());
      const float* C = rq->centroids().data();
      std::vector<double> stage_err(m + 1, 0.0);
      int exact_sums = 0, greedy = 0;
      for (int64_t i = 0; i < n; ++i) {
        std::vector<float> sum(dim, 0.f);
        std::vector<double> resid(x.begin() + i * dim, x.begin() + (i + 1) * dim);
        for (int t = 0; t < dim; ++t) stage_err[0] += resid[t] * resid[t];
        for (int j = 0; j < m; ++j) {
          const int c = codes[i * m + j];
          CHECK(c < ksub);
          // the chosen codeword is the nearest to the residual (up to float rounding)
          double best = INFINITY;
          for (int k = 0; k < ksub; ++k) best = std::min(best, sq_dist(C + (int64_t(j) * ksub + k) * dim, resid.data(), dim));
          const float* w = C + (int64_t(j) * ksub + c) * dim;
          greedy += sq_dist(w, resid.data(), dim) <= best + 1e-5 * (1 + best);
          for (int t = 0; t < dim; ++t) {
            sum[t] += w[t];  // ascending j from 0.f: the decoder's order
            resid[t] -= w[t];
          }
          double e = 0;
          for (int t = 0; t < dim; ++t) e += resid[t] * resid[t];
          stage_err[j + 1] += e;
        }
        exact_sums += std::memcmp(sum.data(), dec.data() + i * dim, 4 * dim) == 0;
      }
      CHECK(exact_sums == n);
      CHECK(greedy == n * m);
      for (int j = 0; j < m; ++j) CHECK(stage_err[j + 1] < stage_err[j]);  // each stage helps
      CHECK(stage_err[m] < 0.25 * stage_err[0]);
      if (exact_sums != n || greedy != n * m)
        std::fprintf(stderr, "nbits=%d m=%d: %d/%d exact sums, %d/%d greedy stages\n", nbits, m, exact_sums, n,
                     greedy, n * m);
      // a code >= ksub is refused (4-bit)
      if (nbits == 4) {
        std::vector<uint8_t> bad(m, 0);
        bad[m - 1] = 16;
        CHECK_THROWS(rq->decode(1, bad.data(), dec.data()), InvalidArgument);
      }
    }
}

TEST(rq_training_is_seeded_and_thread_count_independent) {
  const int dim = 12, m = 3;
  const auto t = clustered(1200, dim, 41);
  ResidualQuantizer a(dim, m), b(dim, m), c(dim, m);
  a.train(1200, t.data(), 5, 9, 1);
  b.train(1200, t.data(), 5, 9, 2);
  c.train(1200, t.data(), 5, 10, 2);
  CHECK(a.centroids() == b.centroids());
  CHECK(a.centroids() != c.centroids());
  ResidualQuantizer fresh(dim, m);
  CHECK_THROWS(fresh.train(255, t.data(), 5, 9, 1), InvalidArgument);  // fewer rows than ksub
  std::vector<uint8_t> codes(m);
  CHECK_THROWS(fresh.encode(1, t.data(), codes.data()), NotTrained);
  std::vector<float> lut(m * 256);
  CHECK_THROWS(fresh.compute_lut(t.data(), lut.data()), NotTrained);
}

TEST(rq_lut_equals_double_dot_products_and_luts_equal_lut) {
  for (int nbits : {8, 4}) {
    const int dim = 20, m = 5, ksub = 1 << nbits, nq = 7;
    auto rq = trained(dim, m, nbits, 50 + nbits);
    auto q = randn(nq * dim, 51);
    q[3] = 1e3f;  // a large component too
    const float* C = rq->centroids().data();
    std::vector<float> luts(static_cast<size_t>(nq) * m * ksub), lut(static_cast<size_t>(m) * ksub);
    rq->compute_luts(nq, q.data(), luts.data());
    int close = 0, same = 0;
    for (int i = 0; i < nq; ++i) {
      rq->compute_lut(q.data() + i * dim, lut.data());
      same += std::memcmp(lut.data(), luts.data() + static_cast<size_t>(i) * m * ksub, 4 * lut.size()) == 0;
      for (int e = 0; e < m * ksub; ++e) {
        double want = 0, mag = 0;
        for (int t = 0; t < dim; ++t) {
          want += double(q[i * dim + t]) * C[int64_t(e) * dim + t];
          mag += std::fabs(double(q[i * dim + t]) * C[int64_t(e) * dim + t]);
        }
        close += std::fabs(lut[e] - want) <= 1e-6 * mag + 1e-7;
      }
    }
    CHECK(same == nq);
    CHECK(close == nq * m * ksub);
    // lut[j][c] scores a code: sum_j lut[j][code_j] is q . decode(code) up to rounding
    std::vector<uint8_t> code(m);
    for (int j = 0; j < m; ++j) code[j] = static_cast<uint8_t>((j * 37 + 5) % ksub);
    std::vector<float> dec(dim);
    rq->decode(1, code.data(), dec.data());
    rq->compute_lut(q.data(), lut.data());
    double adc = 0, dot = 0, mag = 0;
    for (int j = 0; j < m; ++j) adc += lut[j * ksub + code[j]];
    for (int t = 0; t < dim; ++t) dot += double(q[t]) * dec[t], mag += std::fabs(double(q[t]) * dec[t]);
    CHECK(std::fabs(adc - dot) <= 1e-5 * mag + 1e-6);
  }
}

TEST(rq_codes_and_tables_are_identical_at_every_level) {
  LevelGuard guard;
  for (int nbits : {8, 4}) {
    const int dim = 24, m = 5, ksub = 1 << nbits, n = 300, nq = 5;
    auto rq = trained(dim, m, nbits, 60 + nbits);
    const auto x = clustered(n, dim, 61);
    const auto q = randn(nq * dim, 62);
    set_simd_level(SimdLevel::Scalar);
    std::vector<uint8_t> want(static_cast<size_t>(n) * m), got(want.size());
    std::vector<float> want_luts(static_cast<size_t>(nq) * m * ksub), got_luts(want_luts.size());
    rq->encode(n, x.data(), want.data(), 1);
    rq->compute_luts(nq, q.data(), want_luts.data());
    for (SimdLevel l : usable()) {
      set_simd_level(l);
      for (int threads : {1, 2}) {
        std::fill(got.begin(), got.end(), 0xEE);
        rq->encode(n, x.data(), got.data(), threads);
        const bool same = got == want;
        if (!same) std::fprintf(stderr, "nbits=%d: codes at %s (threads=%d) differ from scalar\n", nbits,
                                simd_level_name(l), threads);
        CHECK(same);
      }
      rq->compute_luts(nq, q.data(), got_luts.data());
      CHECK(std::memcmp(got_luts.data(), want_luts.data(), 4 * want_luts.size()) == 0);
    }
  }
}

TEST(rq_index_search_equals_brute_force_over_decoded_vectors) {
  LevelGuard guard;
  for (int nbits : {8, 4})
    for (int m : {3, 6}) {
      const int dim = 16, nq = 4;
      auto rq = trained(dim, m, nbits, 70 + nbits + m);
      auto ix = build_index(rq, 0, 71 + m);
      CHECK(ix->pq()->kind() == CodebookKind::Residual && ix->code_size() == m);
      auto q = clustered(nq, dim, 72);
      // query 3: a patch of image 4, which image 5 repeats (exact tie: image 4 first)
      const std::vector<int64_t> off = ix->image_offsets();
      std::vector<float> img4(static_cast<size_t>(off[5] - off[4]) * dim);
      ix->reconstruct(4, img4.data());
      std::copy(img4.begin() + 2 * dim, img4.begin() + 3 * dim, q.begin() + 3 * dim);
      for (int k : {1, 10, 100}) {
        set_simd_level(SimdLevel::Scalar);
        const Result scalar = run(*ix, nq, q.data(), k);
        const Result want = brute_force(*ix, nq, q.data(), k);
        const bool ok = near(scalar, want, 1e-4f);
        if (!ok) std::fprintf(stderr, "nbits=%d m=%d k=%d: search differs from brute force\n", nbits, m, k);
        CHECK(ok);
        for (int64_t i : scalar.i) CHECK(i != 2 && i != 31 && i != 0);
        if (k == 100) {  // every image: 4 and its copy 5 tie, next to each other, 4 first
          const auto at = std::find(scalar.i.begin() + 3 * k, scalar.i.end(), 4) - scalar.i.begin();
          CHECK(at < 4 * k - 1 && scalar.i[at + 1] == 5 && scalar.s[at] == scalar.s[at + 1]);
        }
        for (SimdLevel l : usable())
          for (int threads : {1, 2}) {
            set_simd_level(l);
            CHECK(run(*ix, nq, q.data(), k, threads) == scalar);
          }
      }
    }
}

TEST(rq_index_save_load_round_trips) {
  for (int nbits : {8, 4})
    for (int nlist : {0, 4}) {
      if (nbits == 4 && nlist) continue;
      const int dim = 16, m = 5, nq = 3;
      auto rq = trained(dim, m, nbits, 80 + nbits);
      auto ix = build_index(rq, nlist, 81 + nlist);
      const auto q = clustered(nq, dim, 82);
      const Result want = run(*ix, nq, q.data(), 20);
      if (!nlist) CHECK(near(want, brute_force(*ix, nq, q.data(), 20), 1e-4f));
      const std::string path = tmp_path("residual.ptch");
      ix->save(path);
      const std::vector<uint8_t> bytes = ix->to_bytes();
      std::vector<std::unique_ptr<PatchIndex>> copies;
      copies.push_back(PatchIndex::load(path, true));
      copies.push_back(PatchIndex::load(path, false));
      copies.push_back(PatchIndex::load(path, true, true));
      copies.push_back(PatchIndex::from_bytes(bytes.data(), bytes.size()));
      for (const auto& c : copies) {
        CHECK(c->pq()->kind() == CodebookKind::Residual);
        CHECK(c->pq()->m() == m && c->pq()->nbits() == nbits && c->pq()->dim() == dim);
        CHECK(c->pq()->centroids() == rq->centroids());
        CHECK(c->nlist() == nlist && c->n_removed() == 2 && c->metadata_json() == "{\"rq\": true}");
        CHECK(run(*c, nq, q.data(), 20) == want);
        CHECK(run(*c, nq, q.data(), 20, 2) == want);
        CHECK(c->to_bytes() == bytes);
      }
      // a loaded quantizer encodes like the one that wrote the codes
      const auto x = clustered(64, dim, 83);
      std::vector<uint8_t> a(64 * m), b(64 * m);
      rq->encode(64, x.data(), a.data());
      copies[0]->pq()->encode(64, x.data(), b.data());
      CHECK(a == b);
      std::remove(path.c_str());
    }
}

TEST(rq_constructor_arguments_out_of_range_throw_invalid_argument) {
  CHECK_THROWS(ResidualQuantizer(16, 0), InvalidArgument);
  CHECK_THROWS(ResidualQuantizer(16, -1), InvalidArgument);
  CHECK_THROWS(ResidualQuantizer(16, 257), InvalidArgument);
  CHECK_THROWS(ResidualQuantizer(16, 4, 5), InvalidArgument);
  CHECK_THROWS(ResidualQuantizer(16, 4, 0), InvalidArgument);
  CHECK_THROWS(ResidualQuantizer(16, 4, 16), InvalidArgument);
  CHECK_THROWS(ResidualQuantizer(0, 4), InvalidArgument);
  CHECK_THROWS(ResidualQuantizer(1 << 20, 65), InvalidArgument);   // m * dim = 65 * 2**20 > 2**26
  CHECK_THROWS(ResidualQuantizer((1 << 18) + 1, 256), InvalidArgument);
  // the limits themselves are allowed (no codebook memory until trained)
  ResidualQuantizer widest(1 << 18, 256, 4), deepest(3, 256), one(1, 1, 4);
  CHECK(widest.m() == 256 && widest.codeword_dim() == (1 << 18) && !widest.is_trained());
  CHECK(deepest.ksub() == 256 && one.ksub() == 16);
  CHECK(ResidualQuantizer(1 << 20, 64).m() == 64);  // m * dim = 2**26 exactly
  // an index needs the quantizer's dim
  CHECK_THROWS(PatchIndex(12, std::make_shared<ResidualQuantizer>(16, 2)), InvalidArgument);
}

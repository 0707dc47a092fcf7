// The coarse probe's int8 screen (index/ivf.h CoarseQuantizer::probe): past kScreenBytes of
// centroids it screens with int8 copies (a scale per centroid) and scores an error-bounded
// shortlist in float32; the lists it returns must be exactly probe_exact's (float32 scores of
// every centroid), order and ties included, at every SIMD level, also on centroids the int8
// copies cannot tell apart.
#include <cmath>
#include <vector>

#include "pypatch/index/ivf.h"
#include "pypatch/simd/simd_level.h"
#include "test_data.h"
#include "test_main.h"

using namespace pypatch;

namespace {

struct LevelGuard {
  SimdLevel saved = selected_simd_level();
  ~LevelGuard() { set_simd_level(saved); }
};

std::vector<SimdLevel> usable() {
  std::vector<SimdLevel> v;
  for (SimdLevel l : compiled_simd_levels())
    if (l <= detected_simd_level()) v.push_back(l);
  return v;
}

void normalise_rows(std::vector<float>& x, int dim) {
  for (size_t r = 0; r < x.size() / dim; ++r) {
    double s = 0;
    for (int t = 0; t < dim; ++t) s += double(x[r * dim + t]) * x[r * dim + t];
    for (int t = 0; t < dim; ++t) x[r * dim + t] = float(x[r * dim + t] / std::sqrt(s));
  }
}

// Every query and nprobe: probe == probe_exact, at every level.
bool probes_agree(const CoarseQuantizer& cq, const std::vector<float>& q, int nq) {
  LevelGuard guard;
  bool ok = true;
  for (SimdLevel l : usable()) {
    set_simd_level(l);
    for (int nprobe : {1, 2, 7, 16, 64, cq.nlist()})
      for (int i = 0; i < nq; ++i) {
        std::vector<int32_t> a(nprobe), b(nprobe);
        cq.probe(q.data() + static_cast<size_t>(i) * cq.dim(), nprobe, a.data());
        cq.probe_exact(q.data() + static_cast<size_t>(i) * cq.dim(), nprobe, b.data());
        ok &= a == b;
      }
  }
  return ok;
}

}  // namespace

TEST(screened_probe_equals_exact_on_unit_centroids) {
  const int nlist = 4096, dim = 256, nq = 40;  // 4 MiB of float32 centroids
  auto c = test_data::randn(nlist * dim, 3);
  normalise_rows(c, dim);
  CoarseQuantizer cq(nlist, dim, c.data());
  CHECK(cq.screens());
  auto q = test_data::randn(nq * dim, 4);
  for (int i = 0; i < nq / 2; ++i)  // half the queries are noisy copies of centroids
    for (int t = 0; t < dim; ++t) q[i * dim + t] = c[(i * 37 % nlist) * dim + t] + 0.05f * q[i * dim + t];
  CHECK(probes_agree(cq, q, nq));
}

TEST(screened_probe_breaks_near_ties_as_exact) {
  // pairs int8 cannot separate: a copy, and copies moved by far less than an int8 step; plus
  // tiny-valued centroids, an all-zero one, huge values and one outlier that coarsens its
  // centroid's int8 step (and the screen's bound) a thousandfold
  const int nlist = 2100, dim = 256, nq = 30;  // 2.1 MB
  auto c = test_data::randn(nlist * dim, 8);
  normalise_rows(c, dim);
  for (int i = 0; i < 200; i += 2) {
    for (int t = 0; t < dim; ++t) c[(i + 1) * dim + t] = c[i * dim + t];
    if (i % 4 == 2) c[(i + 1) * dim + (i % dim)] += std::ldexp(std::fabs(c[i * dim + (i % dim)]), -13);
  }
  for (int i = 200; i < 220; ++i)
    for (int t = 0; t < dim; ++t) c[i * dim + t] *= 1e-5f;
  for (int t = 0; t < dim; ++t) c[230 * dim + t] = (t % 2 ? 1 : -1) * 65000.f;
  for (int t = 0; t < dim; ++t) c[231 * dim + t] = 0.f;
  c[232 * dim + 7] = 100.f;
  CoarseQuantizer cq(nlist, dim, c.data());
  CHECK(cq.screens());
  std::vector<float> q(nq * dim);
  for (int i = 0; i < nq; ++i)  // queries right at the twins, and at the tiny ones
    for (int t = 0; t < dim; ++t) q[i * dim + t] = i < 20 ? c[(2 * i) * dim + t] : c[(200 + i - 20) * dim + t];
  CHECK(probes_agree(cq, q, nq));
}

TEST(probe_screens_only_past_l2_sizes_and_agrees_on_extreme_values) {
  const int dim = 256;
  auto small = test_data::randn(1024 * dim, 1);  // 1 MiB of centroids (L2-sized): probe_exact
  CHECK(!CoarseQuantizer(1024, dim, small.data()).screens());
  auto big = test_data::randn(4096 * dim, 2);  // 4 MiB, with values far apart in magnitude
  big[5] = 1e5f;
  big[dim * 9 + 3] = 1e-30f;
  CoarseQuantizer cq(4096, dim, big.data());
  CHECK(cq.screens());
  auto q = test_data::randn(8 * dim, 6);
  for (int t = 0; t < dim; ++t) q[7 * dim + t] *= 1e12f;  // huge, still within value limits
  CHECK(probes_agree(cq, q, 8));
}

// The coarse probe's integer screen (index/coarse_screen.h): past kMinFloatBytes of centroids
// the probe screens with int8 copies (a scale per centroid) against an int16 query and scores
// an error-bounded shortlist in float32; the lists it returns must be exactly probe_exact's
// (float32 scores of every centroid), order and ties included, at every SIMD level, also on
// centroids the int8 copies cannot tell apart. The kernel itself is exact integer arithmetic.
#include <cmath>
#include <cstdint>
#include <vector>

#include "pypatch/index/ivf.h"
#include "pypatch/simd/kernels.h"
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
  auto small = test_data::randn(512 * dim, 1);  // 512 KiB of centroids: probe_exact
  CHECK(!CoarseQuantizer(512, dim, small.data()).screens());
  CHECK(CoarseQuantizer(513, dim, test_data::randn(513 * dim, 1).data()).screens());
  auto big = test_data::randn(4096 * dim, 2);  // 4 MiB, with values far apart in magnitude
  big[5] = 1e5f;
  big[dim * 9 + 3] = 1e-30f;
  CoarseQuantizer cq(4096, dim, big.data());
  CHECK(cq.screens());
  auto q = test_data::randn(8 * dim, 6);
  for (int t = 0; t < dim; ++t) q[7 * dim + t] *= 1e12f;  // huge, still within value limits
  CHECK(probes_agree(cq, q, 8));
}

TEST(screen_kernel_is_exact_integer_arithmetic_at_every_level) {
  // extreme operands (|q| up to 32767, c = +-127, the int8 minimum -128 never stored) and
  // random ones, odd pair counts; against an int64 sum
  LevelGuard guard;
  for (int npair : {1, 3, 128, 257}) {
    std::vector<int8_t> c(static_cast<size_t>(npair) * 128);
    std::vector<int16_t> q16(2 * npair);
    uint32_t state = 12345u + npair;
    auto next = [&] { state = state * 1664525u + 1013904223u; return state >> 8; };
    for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<int8_t>(i % 5 == 0 ? (i % 2 ? 127 : -127) : int(next() % 255) - 127);
    const int32_t range = npair <= 128 ? 32767 : 16000;  // the caller's bound for larger dim
    for (int t = 0; t < 2 * npair; ++t) q16[t] = static_cast<int16_t>(t % 3 == 0 ? (t % 2 ? range : -range) : int(next() % (2 * range + 1)) - range);
    std::vector<int32_t> q(npair);
    for (int s = 0; s < npair; ++s)
      q[s] = static_cast<int32_t>(static_cast<uint16_t>(q16[2 * s]) | (static_cast<uint32_t>(static_cast<uint16_t>(q16[2 * s + 1])) << 16));
    std::vector<int64_t> want(64, 0);
    for (int s = 0; s < npair; ++s)
      for (int i = 0; i < 64; ++i)
        want[i] += int64_t{q16[2 * s]} * c[s * 128 + 2 * i] + int64_t{q16[2 * s + 1]} * c[s * 128 + 2 * i + 1];
    for (SimdLevel l : usable()) {
      set_simd_level(l);
      int32_t got[64];
      kernels().ip_screen_i8(q.data(), c.data(), npair, got);
      bool same = true;
      for (int i = 0; i < 64; ++i) same &= got[i] == want[i];
      CHECK(same);
    }
  }
}

TEST(screened_probe_equals_exact_on_odd_dim_and_partial_chunks) {
  const int nlist = 1000, dim = 201, nq = 25;  // odd dim: a zero-padded last pair; 1000 % 64 != 0
  auto c = test_data::randn(nlist * dim, 11);
  CoarseQuantizer cq(nlist, dim, c.data());
  CHECK(cq.screens());
  auto q = test_data::randn(nq * dim, 12);
  CHECK(probes_agree(cq, q, nq));
}

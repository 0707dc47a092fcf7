// Numeric hardening (simd/README.md "Numeric limits"): flat kernels bit-identical at every
// level on any floats (one summation order); NaN scores never win a segmented max nor rank;
// the quantised scan falls back to the exact float kernels on tables it cannot bound (inf,
// NaN, overflowing sums, underflowing scale) and then agrees with scalar; |x| <= 1e15 checks.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/index/code_layout.h"
#include "pypatch/index/patch_index.h"
#include "pypatch/index/scan.h"
#include "pypatch/index/topk.h"
#include "pypatch/simd/kernels.h"
#include "pypatch/util/value_limits.h"
#include "test_data.h"
#include "test_main.h"

using namespace pypatch;

namespace {
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

std::vector<SimdLevel> usable() {
  std::vector<SimdLevel> v;
  for (SimdLevel l : compiled_simd_levels())
    if (simd_level_usable(l)) v.push_back(l);
  return v;
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::memcmp(&a[i], &b[i], 4) == 0 || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}
// Restores the selected level on scope exit.
struct LevelGuard {
  SimdLevel saved = selected_simd_level();
  ~LevelGuard() { set_simd_level(saved); }
};
}  // namespace

TEST(flat_kernels_bit_identical_on_random_floats_every_dim) {
  const std::vector<int64_t> off = {0, 3, 3, 10, 11, 40};
  for (int dim = 1; dim <= 260; dim += (dim < 70 ? 1 : 37)) {
    auto x = test_data::randn(40 * dim, 10 + dim), q = test_data::randn(dim, 20 + dim);
    for (size_t i = 0; i < x.size(); i += 7) x[i] *= 1e4f;  // wide dynamic range
    std::vector<uint16_t> h(x.size());
    for (size_t i = 0; i < x.size(); ++i) h[i] = float_to_half(x[i] * 1e-2f);
    std::vector<float> rb(5), gb(5), rb16(5);
    std::vector<int32_t> ra(5), ga(5), ra16(5);
    kernel_table_scalar().flat_segmax_f32(5, off.data(), x.data(), dim, q.data(), rb.data(), ra.data());
    kernel_table_scalar().flat_segmax_f16(5, off.data(), h.data(), dim, q.data(), rb16.data(), ra16.data());
    // the scalar reference is the documented order: 32 lanes, then the fold in halves
    float acc[32] = {};
    for (int t = 0; t < dim; ++t) acc[t % 32] = acc[t % 32] + q[t] * x[10 * dim + t];
    for (int w = 16; w >= 1; w /= 2)
      for (int l = 0; l < w; ++l) acc[l] = acc[l] + acc[l + w];
    CHECK(rb[3] == acc[0] && ra[3] == 0);
    for (SimdLevel l : usable()) {
      kernels_for(l).flat_segmax_f32(5, off.data(), x.data(), dim, q.data(), gb.data(), ga.data());
      CHECK(same_bits(gb, rb) && ga == ra);
      kernels_for(l).flat_segmax_f16(5, off.data(), h.data(), dim, q.data(), gb.data(), ga.data());
      CHECK(same_bits(gb, rb16) && ga == ra16);
    }
  }
}

TEST(flat_segmax_nan_never_wins) {
  const int dim = 37;
  const std::vector<int64_t> off = {0, 4, 8, 12, 16};
  auto x = test_data::randn(16 * dim, 3), q = test_data::randn(dim, 4);
  for (int p = 0; p < 4; ++p) x[p * dim + 5] = kNaN;  // image 0: every patch NaN
  x[4 * dim] = kNaN;                                   // image 1: first patch NaN
  for (int t = 0; t < dim; ++t) x[8 * dim + t] = t % 2 ? 3e38f : -3e38f;  // image 2, patch 0: inf - inf
  for (int p = 12; p < 16; ++p) x[p * dim] = -kInf;    // image 3: every patch -inf (q[0] > 0)
  q[0] = 1.f;
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = float_to_half(x[i]);
  for (SimdLevel l : usable()) {
    std::vector<float> b(4);
    std::vector<int32_t> a(4);
    for (int f16 = 0; f16 < 2; ++f16) {
      if (f16) kernels_for(l).flat_segmax_f16(4, off.data(), h.data(), dim, q.data(), b.data(), a.data());
      else kernels_for(l).flat_segmax_f32(4, off.data(), x.data(), dim, q.data(), b.data(), a.data());
      CHECK(a[0] == -1 && b[0] == -kInf);          // like an empty image
      CHECK(a[1] >= 1 && !std::isnan(b[1]));      // the NaN first patch is skipped
      CHECK(a[2] >= 1 && !std::isnan(b[2]));      // inf - inf = NaN skipped
      CHECK(a[3] == 0 && b[3] == -kInf);          // -inf is a score: first patch reaching it
    }
  }
}

TEST(adc_segmax_nan_never_wins_across_blocks) {
  const int m = 3, ksub = 256;
  // image 0: patches 0..99, codes 0 (NaN) up to patch 70, which crosses a 64-patch block;
  // image 1: patches 100..109 all NaN; image 2: patch 110 finite.
  const std::vector<int64_t> off = {0, 100, 110, 111};
  const int64_t np = off.back();
  std::vector<uint8_t> rows(np * m, 0);
  std::mt19937 g(9);
  for (int64_t p = 71; p < 100; ++p)
    for (int j = 0; j < m; ++j) rows[p * m + j] = static_cast<uint8_t>(1 + g() % 255);
  for (int j = 0; j < m; ++j) rows[110 * m + j] = 5;
  std::vector<uint8_t> blocked(blocked_bytes(np, m));
  rows_to_blocked(rows.data(), 0, np, m, blocked.data());
  auto lut = test_data::randn(m * ksub, 11);
  lut[ksub] = kNaN;  // code 0 of sub-quantizer 1
  std::vector<float> rb(3), gb(3);
  std::vector<int32_t> ra(3), ga(3);
  kernel_table_scalar().adc_segmax(3, off.data(), blocked.data(), m, ksub, lut.data(), rb.data(), ra.data());
  CHECK(ra[0] >= 71 && !std::isnan(rb[0]));
  CHECK(ra[1] == -1 && rb[1] == -kInf);
  CHECK(ra[2] == 0 && !std::isnan(rb[2]));
  for (SimdLevel l : usable()) {
    kernels_for(l).adc_segmax(3, off.data(), blocked.data(), m, ksub, lut.data(), gb.data(), ga.data());
    CHECK(same_bits(gb, rb) && ga == ra);
  }
}

TEST(topk_ignores_nan) {
  TopK t(3);
  t.push(Hit{kNaN, 0, 0});
  t.push(Hit{1.f, 1, 0});
  t.push(Hit{kNaN, 2, 0});
  t.push(Hit{-kInf, 3, 0});
  const auto v = t.sorted();
  CHECK(v.size() == 2 && v[0].image == 1 && v[1].image == 3);
}

// The quantised path on tables it cannot bound: same hits as the exact scalar float path.
TEST(quantised_scan_falls_back_on_unbounded_tables) {
  const int dim = 8, m = 4;
  auto pq = std::make_shared<ProductQuantizer>(dim, m, 8);
  auto c = test_data::randn(m * 256 * 2, 12);
  pq->set_centroids(c.data());
  PatchIndex ix(dim, pq);
  std::mt19937 g(13);
  const int64_t n_img = 300, per = 3;
  std::vector<uint8_t> codes(n_img * per * m);
  for (auto& v : codes) v = static_cast<uint8_t>(g());
  std::vector<int64_t> counts(n_img, per);
  ix.add_codes(n_img, counts.data(), codes.data());
  const std::vector<int64_t> off = ix.image_offsets();
  ScanSetup s{StoreKind::PQ, dim, m, pq.get(), ix.data(), off.data(), n_img, nullptr, 0};

  auto base = test_data::randn(m * 256, 14);
  std::vector<std::vector<float>> tables;
  auto with = [&](auto edit) { auto t = base; edit(t); tables.push_back(t); };
  with([](std::vector<float>& t) { t[3] = kInf; });                          // inf entry
  with([](std::vector<float>& t) { t[256 + 9] = -kInf; t[7] = kInf; });      // +-inf: NaN sums
  with([](std::vector<float>& t) { t[512 + 1] = kNaN; });                    // NaN entry
  with([](std::vector<float>& t) { for (auto& v : t) v *= 3e38f / 4; });     // finite, sums overflow
  with([](std::vector<float>& t) { for (auto& v : t) v = 3e38f; t[0] = -3e38f; });  // range overflows
  with([](std::vector<float>& t) { for (auto& v : t) v = 1e-44f * (v > 0); });     // scale underflows
  with([](std::vector<float>&) {});                                          // a normal table
  LevelGuard guard;
  for (const auto& t : tables) {
    for (int k : {1, 10, 400}) {
      set_simd_level(SimdLevel::Scalar);
      const std::vector<Hit> ref = scan_topk_exact(s, 1, nullptr, t.data(), k, 1, {})[0].sorted();
      for (const Hit& h : ref) CHECK(!std::isnan(h.score));
      for (SimdLevel l : usable()) {
        set_simd_level(l);
        if (!quant_scan_kernel()) continue;
        for (int threads : {1, 2}) {
          const std::vector<Hit> got = scan_topk_quantized(s, 1, t.data(), k, threads, {})[0].sorted();
          bool same = got.size() == ref.size();
          for (size_t i = 0; same && i < got.size(); ++i)
            same = std::memcmp(&got[i].score, &ref[i].score, 4) == 0 && got[i].image == ref[i].image &&
                   got[i].patch == ref[i].patch;
          CHECK(same);
        }
      }
    }
  }
}

TEST(value_limit_checks) {
  CHECK(first_out_of_range(nullptr, 0) == 0);
  std::vector<float> v(10000, 1.f);
  CHECK(first_out_of_range(v.data(), 10000) == 10000);
  v[9000] = kNaN;
  CHECK(first_out_of_range(v.data(), 10000) == 9000);
  v[5000] = 1.0001e15f;
  CHECK(first_out_of_range(v.data(), 10000) == 5000);
  v[5000] = -1e15f;  // the limit itself is allowed
  CHECK(first_out_of_range(v.data(), 10000) == 9000);
  std::vector<uint16_t> h(20000, 0x3c00);
  h[12345] = 0xfc00;  // -inf
  CHECK(first_nonfinite_half(h.data(), 20000) == 12345);
  CHECK(first_nonfinite_half(h.data(), 12345) == 12345);

  auto pq = std::make_shared<ProductQuantizer>(4, 2, 8);
  std::vector<float> c(2 * 256 * 2, 0.f);
  c[100] = 3e38f;
  CHECK_THROWS(pq->set_centroids(c.data()), InvalidArgument);
  CHECK(!pq->is_trained());
  PatchIndex flat(4, StoreKind::FlatF32), half(4, StoreKind::FlatF16);
  std::vector<float> x(8, 1.f);
  const int64_t counts[] = {2};
  x[6] = -kInf;
  CHECK_THROWS(flat.add(1, counts, x.data(), 1), InvalidArgument);
  x[6] = 7e4f;  // finite but beyond the float16 range
  CHECK_THROWS(half.add(1, counts, x.data(), 1), InvalidArgument);
  CHECK(flat.n_patches() == 0 && half.n_patches() == 0);
  x[6] = 1.f;
  flat.add(1, counts, x.data(), 1);
  std::vector<float> q = {1.f, 2e15f, 0.f, 0.f}, sc(1);
  std::vector<int64_t> im(1), pa(1);
  CHECK_THROWS(flat.search(1, q.data(), 1, 1, sc.data(), im.data(), pa.data()), InvalidArgument);
}

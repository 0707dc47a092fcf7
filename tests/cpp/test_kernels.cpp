// Every compiled+supported SIMD level against the scalar reference, exactly, on integer data;
// segmax semantics (empty images, first patch wins ties); binary16 conversion.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "pypatch/index/code_layout.h"
#include "pypatch/simd/kernels.h"
#include "test_main.h"

using namespace pypatch;

namespace {
std::vector<SimdLevel> usable() {
  std::vector<SimdLevel> v;
  for (SimdLevel l : compiled_simd_levels())
    if (l <= detected_simd_level()) v.push_back(l);
  return v;
}
std::vector<float> ints(size_t n, int lo, int hi, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(g));
  return v;
}
}  // namespace

TEST(lut_and_assign_match_scalar) {
  const int m = 5, ksub = 256, dsub = 3;
  auto ct = ints(m * dsub * ksub, -4, 4, 1), q = ints(m * dsub, -3, 3, 2);
  std::vector<float> ref(m * ksub), got(m * ksub);
  kernel_table_scalar().lut_ip(q.data(), ct.data(), m, ksub, dsub, ref.data());
  auto x = ints(100 * dsub, -5, 5, 3);
  std::vector<int32_t> ra(100), ga(100);
  std::vector<float> rd(100), gd(100);
  kernel_table_scalar().assign_l2(100, x.data(), dsub, dsub, ct.data(), ksub, ra.data(), rd.data());
  for (SimdLevel l : usable()) {
    kernels_for(l).lut_ip(q.data(), ct.data(), m, ksub, dsub, got.data());
    CHECK(got == ref);
    kernels_for(l).assign_l2(100, x.data(), dsub, dsub, ct.data(), ksub, ga.data(), gd.data());
    CHECK(ga == ra && gd == rd);
  }
}

TEST(adc_segmax_matches_scalar_and_semantics) {
  const int m = 12, ksub = 256;
  const std::vector<int64_t> off = {0, 0, 1, 5, 5, 70, 130, 131};  // empty and one-patch images
  const int64_t n = off.size() - 1, np = off.back();
  std::mt19937 g(4);
  std::vector<uint8_t> rows(np * m);
  for (auto& c : rows) c = static_cast<uint8_t>(g());
  std::vector<uint8_t> blocked(blocked_bytes(np, m));
  rows_to_blocked(rows.data(), 0, np, m, blocked.data());
  auto lut = ints(m * ksub, -9, 9, 5);
  std::vector<float> rb(n), gb(n);
  std::vector<int32_t> ra(n), ga(n);
  kernel_table_scalar().adc_segmax(n, off.data(), blocked.data(), m, ksub, lut.data(), rb.data(), ra.data());
  CHECK(ra[0] == -1 && std::isinf(rb[0]) && rb[0] < 0 && ra[1] == 0 && ra[3] == -1);
  for (int64_t i = 0; i < n; ++i)  // brute force from row-major codes
    for (int64_t p = off[i]; p < off[i + 1]; ++p) {
      float s = 0;
      for (int j = 0; j < m; ++j) s += lut[j * ksub + rows[p * m + j]];
      CHECK(s <= rb[i]);
      if (p - off[i] < ra[i]) CHECK(s < rb[i]);  // earlier patches are strictly worse
    }
  for (SimdLevel l : usable()) {
    kernels_for(l).adc_segmax(n, off.data(), blocked.data(), m, ksub, lut.data(), gb.data(), ga.data());
    CHECK(gb == rb && ga == ra);
  }
}

TEST(flat_segmax_matches_scalar) {
  const int dim = 19;
  const std::vector<int64_t> off = {0, 3, 3, 10, 11};
  auto x = ints(11 * dim, -6, 6, 6), q = ints(dim, -3, 3, 7);
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = float_to_half(x[i]);
  std::vector<float> rb(4), gb(4);
  std::vector<int32_t> ra(4), ga(4);
  kernel_table_scalar().flat_segmax_f32(4, off.data(), x.data(), dim, q.data(), rb.data(), ra.data());
  for (SimdLevel l : usable()) {
    kernels_for(l).flat_segmax_f32(4, off.data(), x.data(), dim, q.data(), gb.data(), ga.data());
    CHECK(gb == rb && ga == ra);
    kernels_for(l).flat_segmax_f16(4, off.data(), h.data(), dim, q.data(), gb.data(), ga.data());
    CHECK(gb == rb && ga == ra);
  }
}

TEST(half_conversion_round_trips_every_value) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads
    CHECK(float_to_half(half_to_float(h)) == h);
  }
  CHECK(half_to_float(float_to_half(1.0f)) == 1.0f);
  CHECK(float_to_half(1e6f) == 0x7c00);            // overflow -> inf
  CHECK(half_to_float(float_to_half(1.0f + 1.0f / 4096)) == 1.0f);  // ties to even
}

TEST(quantised_scan_matches_scalar) {
  const int m = 32;
  const int64_t nb = 5;
  std::mt19937 g(8);
  std::vector<uint8_t> codes(nb * 64 * m), qlut(m * 256);
  for (auto& c : codes) c = static_cast<uint8_t>(g());
  for (auto& c : qlut) c = static_cast<uint8_t>(g());
  std::vector<uint16_t> ref(nb * 64), got(nb * 64);
  qscan_blocks_scalar(codes.data(), m, qlut.data(), 1, nb, ref.data());
#ifdef PYPATCH_HAVE_AVX512VBMI
  if (cpu_has_avx512vbmi()) {
    qscan_blocks_avx512vbmi(codes.data(), m, qlut.data(), 1, nb, got.data());
    CHECK(got == ref);
  }
#endif
  CHECK(ref[0] > 0);
}

TEST(quantised_segmented_max_matches_scalar) {
  const std::vector<int64_t> off = {0, 0, 1, 40, 40, 72, 105, 200};
  std::mt19937 g(9);
  std::vector<uint16_t> sc(200);
  for (auto& v : sc) v = static_cast<uint16_t>(g());
  sc[50] = 65535;
  std::vector<int32_t> ref(7), got(7);
  qsegmax_u16_scalar(7, off.data(), sc.data(), ref.data());
  CHECK(ref[0] == -1 && ref[3] == -1 && ref[1] == sc[0] && ref[4] == 65535);
#ifdef PYPATCH_HAVE_AVX512VBMI
  if (cpu_has_avx512vbmi()) {
    qsegmax_u16_avx512vbmi(7, off.data(), sc.data(), got.data());
    CHECK(got == ref);
  }
#endif
}

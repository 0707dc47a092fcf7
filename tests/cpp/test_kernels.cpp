// Every compiled+supported SIMD level against the scalar reference, exactly, on integer data
// (and every quantised-scan kernel: VBMI, AVX2, NEON);
// segmax semantics (empty images, first patch wins ties); binary16 conversion.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/index/code_layout.h"
#include "pypatch/simd/kernels.h"
#include "test_main.h"

using namespace pypatch;

namespace {
std::vector<SimdLevel> usable() {
  std::vector<SimdLevel> v;
  for (SimdLevel l : compiled_simd_levels())
    if (simd_level_usable(l)) v.push_back(l);
  return v;
}
// Every quantised-scan kernel (and its segmented max) this build and CPU can run, besides the
// scalar reference.
template <class Fn>
struct Named { const char* name; Fn fn; };
std::vector<Named<QuantScanFn>> qscan_kernels() {
  std::vector<Named<QuantScanFn>> v;
#ifdef PYPATCH_HAVE_AVX512VBMI
  if (cpu_has_avx512vbmi()) v.push_back({"avx512vbmi", qscan_blocks_avx512vbmi});
#endif
#ifdef PYPATCH_HAVE_AVX2
  if (simd_level_usable(SimdLevel::AVX2)) v.push_back({"avx2", qscan_blocks_avx2});
#endif
#ifdef PYPATCH_HAVE_NEON
  if (simd_level_usable(SimdLevel::NEON)) v.push_back({"neon", qscan_blocks_neon});
#endif
  return v;
}
std::vector<Named<QuantSegmaxFn>> qsegmax_kernels() {
  std::vector<Named<QuantSegmaxFn>> v;
#ifdef PYPATCH_HAVE_AVX512VBMI
  if (cpu_has_avx512vbmi()) v.push_back({"avx512vbmi", qsegmax_u16_avx512vbmi});
#endif
#ifdef PYPATCH_HAVE_AVX2
  if (simd_level_usable(SimdLevel::AVX2)) v.push_back({"avx2", qsegmax_u16_avx2});
#endif
#ifdef PYPATCH_HAVE_NEON
  if (simd_level_usable(SimdLevel::NEON)) v.push_back({"neon", qsegmax_u16_neon});
#endif
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

// The x86 levels nest; neon stands alone: a level of the other family (or one not compiled)
// is never usable, set_simd_level refuses it and leaves the selection alone.
TEST(only_compiled_and_supported_levels_can_be_selected) {
  const SimdLevel before = selected_simd_level();
  const std::vector<SimdLevel> compiled = compiled_simd_levels();
  for (SimdLevel l : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512, SimdLevel::NEON}) {
    const bool in_build = std::find(compiled.begin(), compiled.end(), l) != compiled.end();
    if (!in_build) CHECK(!simd_level_usable(l));
    if (simd_level_usable(l)) {
      set_simd_level(l);
      CHECK(selected_simd_level() == l);
      CHECK(&kernels() == &kernels_for(l));
    } else {
      CHECK_THROWS(set_simd_level(l), InvalidArgument);
      CHECK_THROWS(kernels_for(l), InvalidArgument);
    }
  }
  CHECK(simd_level_usable(SimdLevel::Scalar) && simd_level_usable(detected_simd_level()));
  CHECK(!simd_level_usable(static_cast<SimdLevel>(7)) && !simd_level_usable(static_cast<SimdLevel>(-1)));
#if defined(__aarch64__) && defined(PYPATCH_HAVE_NEON)
  CHECK(detected_simd_level() == SimdLevel::NEON && !simd_level_usable(SimdLevel::AVX2));
#endif
  set_simd_level(before);
}

TEST(quantised_scan_kernels_exist_where_expected) {
  CHECK(!qscan_kernels().empty() || detected_simd_level() == SimdLevel::Scalar);
#ifdef PYPATCH_HAVE_NEON
  CHECK(detected_simd_level() == SimdLevel::NEON);  // baseline on aarch64
#endif
  std::printf("quantised scan kernels:");
  for (const auto& k : qscan_kernels()) std::printf(" %s", k.name);
  std::printf("\n");
}

// Each quantised-scan kernel (VBMI vpermi2b, AVX2 16 sub-tables + blend tree, NEON tbl/tbx on
// four 64-byte quarters) against the scalar one: odd m, m = 1, the m = 257 limit with a
// saturated table (sums reach 65535 exactly), random and clustered codes (a few distinct
// values, every nibble and quarter boundary), a range not starting at block 0, odd and even
// block counts (VBMI takes two blocks per pass).
TEST(quantised_scan_kernels_match_scalar) {
  std::mt19937 g(21);
  for (int m : {1, 2, 3, 7, 16, 31, 32, 33, 100, 255, 256, 257}) {
    for (int kind = 0; kind < 4; ++kind) {
      const int64_t nb = 3 + m % 4;
      std::vector<uint8_t> codes(nb * 64 * m), qlut(m * 256);
      for (auto& c : qlut) c = kind == 3 ? 255 : static_cast<uint8_t>(g());
      for (size_t i = 0; i < codes.size(); ++i) {
        if (kind == 0 || kind == 3) codes[i] = static_cast<uint8_t>(g());       // uniform
        else if (kind == 1) codes[i] = static_cast<uint8_t>(g() % 4 * 85);     // clustered
        else codes[i] = static_cast<uint8_t>((i * 17 + i / 64) & 255);         // every value
      }
      for (int64_t b0 : {int64_t{0}, int64_t{1}}) {
        std::vector<uint16_t> ref((nb - b0) * 64);
        qscan_blocks_scalar(codes.data(), m, qlut.data(), b0, nb, ref.data());
        if (kind == 3 && m == 257) CHECK(ref[0] == 65535);
        for (const auto& k : qscan_kernels()) {
          std::vector<uint16_t> got((nb - b0) * 64, 1);
          k.fn(codes.data(), m, qlut.data(), b0, nb, got.data());
          if (got != ref) std::fprintf(stderr, "%s: m=%d kind=%d b0=%d differs\n", k.name, m, kind, int(b0));
          CHECK(got == ref);
        }
      }
    }
  }
  // Every (code, row) pair, one at a time: lane l of row j reads entry (l + 64 * r + j) & 255.
  const int m = 4;
  std::vector<uint8_t> qlut(m * 256);
  for (int i = 0; i < m * 256; ++i) qlut[i] = static_cast<uint8_t>(i * 7 + i / 256);
  std::vector<uint8_t> codes(4 * 64 * m);
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < m; ++j)
      for (int l = 0; l < 64; ++l) codes[blocked_pos(r * 64 + l, j, m)] = static_cast<uint8_t>(l + 64 * r + j);
  std::vector<uint16_t> ref(4 * 64), got(4 * 64);
  qscan_blocks_scalar(codes.data(), m, qlut.data(), 0, 4, ref.data());
  for (const auto& k : qscan_kernels()) {
    k.fn(codes.data(), m, qlut.data(), 0, 4, got.data());
    CHECK(got == ref);
  }
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
  for (const auto& k : qsegmax_kernels()) {
    k.fn(7, off.data(), sc.data(), got.data());
    CHECK(got == ref);
    // Every image length 0..70 (scalar, 8-wide, 16-wide and overlapping tails), the max at
    // each position in turn; the scores end exactly at the last image.
    for (int len = 0; len <= 70; ++len) {
      for (int at = 0; at < (len ? len : 1); ++at) {
        std::vector<int64_t> o = {0, 3, 3 + len};
        std::vector<uint16_t> s(3 + len);
        for (auto& v : s) v = static_cast<uint16_t>(g() % 1000);
        if (len) s[3 + at] = static_cast<uint16_t>(40000 + at);
        std::vector<int32_t> r(2), q(2);
        qsegmax_u16_scalar(2, o.data(), s.data(), r.data());
        k.fn(2, o.data(), s.data(), q.data());
        if (q != r) std::fprintf(stderr, "%s: len=%d at=%d differs\n", k.name, len, at);
        CHECK(q == r);
      }
    }
  }
}

// The shared table quantiser (index/quant_table.h) of both exact two-stage scans: for 16- and
// 256-entry rows, every patch's exact float score lies within err of base + scale * Q (the bound
// that makes the scans exact), and tables it cannot bound are refused rather than quantised.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "pypatch/index/quant_table.h"
#include "test_main.h"

using namespace pypatch;

namespace {

// The scans' exact score: j ascending from 0.f, in float.
float exact(const std::vector<float>& lut, const std::vector<int>& code, int ksub) {
  float s = 0.f;
  for (size_t j = 0; j < code.size(); ++j) s += lut[j * ksub + code[j]];
  return s;
}

bool bound_holds(int m, int ksub, float magnitude, std::mt19937& rng) {
  std::normal_distribution<float> g(0.f, magnitude);
  std::vector<float> lut(static_cast<size_t>(m) * ksub);
  for (float& v : lut) v = g(rng);
  std::vector<uint8_t> q(lut.size());
  const QuantBounds b = quantize_rows(lut.data(), m, ksub, q.data());
  if (!b.usable) return false;
  std::uniform_int_distribution<int> pick(0, ksub - 1);
  std::vector<int> code(m);
  for (int trial = 0; trial < 2000; ++trial) {
    int64_t qsum = 0;
    for (int j = 0; j < m; ++j) {
      code[j] = pick(rng);
      qsum += q[j * ksub + code[j]];
    }
    const double s = exact(lut, code, ksub);
    if (std::fabs(s - (b.base + b.scale * static_cast<double>(qsum))) > b.err) return false;
  }
  return b.margin >= 2;
}

bool refused(std::vector<float> lut, int m, int ksub) {
  std::vector<uint8_t> q(lut.size());
  return !quantize_rows(lut.data(), m, ksub, q.data()).usable;
}

}  // namespace

TEST(quantised_bound_holds_for_both_row_widths) {
  std::mt19937 rng(7);
  for (int ksub : {16, 256})
    for (int m : {1, 3, 32, 64})
      for (float mag : {1e-6f, 1.f, 1e6f, 1e15f}) CHECK(bound_holds(m, ksub, mag, rng));
}

TEST(constant_rows_are_exact) {
  for (int ksub : {16, 256}) {
    std::vector<float> lut(4 * ksub, 0.25f);
    std::vector<uint8_t> q(lut.size(), 9);
    const QuantBounds b = quantize_rows(lut.data(), 4, ksub, q.data());
    CHECK(b.usable && b.scale == 1.0 && b.base == 1.0);
    bool zeros = true;
    for (uint8_t v : q) zeros &= v == 0;
    CHECK(zeros);
  }
}

TEST(unboundable_tables_are_refused_at_both_widths) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (int ksub : {16, 256}) {
    const int m = 32;
    std::vector<float> base(static_cast<size_t>(m) * ksub, 0.5f);
    base[3] = -0.5f;
    CHECK(!refused(base, m, ksub));
    for (float bad : {nan, inf, -inf}) {
      std::vector<float> lut = base;
      lut[static_cast<size_t>(m - 1) * ksub + ksub - 1] = bad;
      CHECK(refused(lut, m, ksub));
    }
    // sum_j max|lut_j| >= 2^126: a float patch score could overflow (the 4-bit copy missed this)
    std::vector<float> big = base;
    for (int j = 0; j < m; ++j) big[static_cast<size_t>(j) * ksub] = 1e37f;
    CHECK(refused(big, m, ksub));
    // range / 255 below FLT_MIN: the scale cannot be inverted
    std::vector<float> tiny(static_cast<size_t>(m) * ksub, 0.f);
    tiny[1] = 1e-40f;
    CHECK(refused(tiny, m, ksub));
  }
}

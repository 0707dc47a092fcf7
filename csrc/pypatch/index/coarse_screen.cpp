// The coarse probe's integer screen (coarse_screen.h).
#include "pypatch/index/coarse_screen.h"

#include <algorithm>  // max, min, nth_element, upper_bound
#include <cmath>      // fabs, sqrt, nearbyint, ldexp, isfinite

#include "pypatch/simd/kernels.h"  // ip_screen_i8

namespace pypatch {
namespace {

constexpr int kLanes = 64;  // centroids per chunk: the kernel's width

// The largest |q16| for which sum_t |q16| * 127 over dim terms fits in int32.
int32_t query_range(int dim) {
  const int64_t lim = (int64_t{1} << 31) - 1;
  return static_cast<int32_t>(std::min<int64_t>(32767, lim / (int64_t{127} * std::max(dim, 1))));
}

}  // namespace

// The bound's terms (header): |<q, c> - <q^, c^>| <= ||q|| err + ||q - q^|| hat, and the float32
// probe's rounding 2 gamma ||q|| len + 2u (norm2 + 2.02 ||q|| len) on the distance, all doubled
// for the distance and inflated for this file's double arithmetic.
namespace {
constexpr double kUnit = 1.0 / (1 << 24);  // float32 unit roundoff
constexpr double kSlack = 1 + 1e-6;
}  // namespace

CoarseScreen::CoarseScreen(int nlist, int dim, const float* c, const float* norms)
    : nlist_(nlist), dim_(dim), npair_((dim + 1) / 2),
      scale_(nlist), norm2_(nlist), p_(nlist), h_(nlist), n_(nlist) {
  const int n_chunks = (nlist + kLanes - 1) / kLanes;
  c8_.assign(static_cast<size_t>(n_chunks) * npair_ * 2 * kLanes, 0);
  const double gamma = 1.01 * (dim + 2) * kUnit;
  for (int i = 0; i < nlist; ++i) {
    const float* ci = c + static_cast<int64_t>(i) * dim;
    double amax = 0, len2 = 0;
    for (int t = 0; t < dim; ++t) {
      amax = std::max(amax, std::fabs(static_cast<double>(ci[t])));
      len2 += static_cast<double>(ci[t]) * ci[t];
    }
    const double s = amax > 0 ? amax / 127 : 1.0;
    double e2 = 0, h2 = 0;
    int8_t* dst = c8_.data() + static_cast<int64_t>(i / kLanes) * npair_ * 2 * kLanes + 2 * (i % kLanes);
    for (int t = 0; t < dim; ++t) {
      const double v = std::min(127.0, std::max(-127.0, std::nearbyint(ci[t] / s)));
      dst[static_cast<int64_t>(t / 2) * 2 * kLanes + t % 2] = static_cast<int8_t>(v);
      const double r = ci[t] - s * v;
      e2 += r * r;
      h2 += (s * v) * (s * v);
    }
    // (1 + 1e-9): the double rounding of these sums, over-covered
    const double err = std::sqrt(e2) * (1 + 1e-9), hat = std::sqrt(h2) * (1 + 1e-9);
    const double len = std::sqrt(len2) * (1 + 1e-9);
    scale_[i] = s;
    norm2_[i] = norms[i];
    p_[i] = (2 * err + (2 * gamma + 4.04 * kUnit + 8e-12) * len) * kSlack;
    h_[i] = 2 * hat * kSlack;
    n_[i] = (2 * kUnit + 1e-12) * std::fabs(static_cast<double>(norms[i])) * kSlack;
    p_max_ = std::max(p_max_, p_[i]);
    h_max_ = std::max(h_max_, h_[i]);
    n_max_ = std::max(n_max_, n_[i]);
  }
}

int64_t CoarseScreen::bytes() const {
  return static_cast<int64_t>(c8_.size()) + 8 * static_cast<int64_t>(nlist_) * 5;
}

namespace {

// The nprobe-th smallest of v[0 .. n) (NaN never counts as smaller).
double nth_smallest(const double* v, int n, int nprobe) {
  if (nprobe > 64) {
    std::vector<double> h(v, v + n);
    std::nth_element(h.begin(), h.begin() + (nprobe - 1), h.end());
    return h[nprobe - 1];
  }
  double best[64];
  int nb = 0;
  for (int i = 0; i < n; ++i) {
    const double x = v[i];
    if (nb == nprobe && !(x < best[nb - 1])) continue;
    const int pos = static_cast<int>(std::upper_bound(best, best + nb, x) - best);
    if (nb < nprobe) ++nb;
    for (int k = nb - 1; k > pos; --k) best[k] = best[k - 1];
    best[pos] = x;
  }
  return best[nprobe - 1];
}

}  // namespace

bool CoarseScreen::shortlist(const float* q, int nprobe, std::vector<int32_t>& out) const {
  nprobe = std::max(1, std::min(nprobe, nlist_));
  // q16 = nearbyint(q / s_q), |q16| <= range; pairs packed for the kernel.
  const int32_t range = query_range(dim_);
  double amax = 0, qlen2 = 0;
  for (int t = 0; t < dim_; ++t) {
    amax = std::max(amax, std::fabs(static_cast<double>(q[t])));
    qlen2 += static_cast<double>(q[t]) * q[t];
  }
  const double sq = amax > 0 ? amax / range : 1.0;
  thread_local std::vector<int32_t> q32;
  q32.assign(npair_, 0);
  double eq2 = 0;
  for (int t = 0; t < dim_; ++t) {
    const double v = std::min<double>(range, std::max<double>(-range, std::nearbyint(q[t] / sq)));
    const double r = q[t] - sq * v;
    eq2 += r * r;
    const uint32_t bits = static_cast<uint16_t>(static_cast<int16_t>(v));
    q32[t / 2] |= static_cast<int32_t>(t % 2 ? bits << 16 : bits);
  }
  const double qlen = std::sqrt(qlen2) * (1 + 1e-9), eq = std::sqrt(eq2) * (1 + 1e-9);

  // a_c = ||c||^2 - 2 <q^, c^>, exact up to double rounding (covered by n_).
  thread_local std::vector<double> a;
  a.resize(nlist_);
  int32_t ip[kLanes];
  const KernelTable& kt = kernels();
  const int64_t chunk_bytes = static_cast<int64_t>(npair_) * 2 * kLanes;
  const double two_sq = 2 * sq;
  for (int c0 = 0; c0 < nlist_; c0 += kLanes) {
    kt.ip_screen_i8(q32.data(), c8_.data() + c0 / kLanes * chunk_bytes, npair_, ip);
    const int n = std::min(kLanes, nlist_ - c0);
    const double* s = scale_.data() + c0;
    const double* n2 = norm2_.data() + c0;
    double* ac = a.data() + c0;
    for (int j = 0; j < n; ++j) ac[j] = n2[j] - two_sq * s[j] * ip[j];
  }
  // With one bound B >= every b_c: the nprobe smallest a + b lie in F = {a <= a_(nprobe) + 2B},
  // and so does every c with a - b <= U (the nprobe-th smallest a + b <= a_(nprobe) + B). So
  // b_c is computed on F only.
  const double big_b = qlen * p_max_ + eq * h_max_ + n_max_;
  const double f_cut = nth_smallest(a.data(), nlist_, nprobe) + 2 * big_b;
  if (!std::isfinite(f_cut)) return false;
  thread_local std::vector<int32_t> f;
  thread_local std::vector<double> lo, hi;
  f.clear();
  lo.clear();
  hi.clear();
  for (int i = 0; i < nlist_; ++i) {
    if (!(a[i] <= f_cut)) {
      if (std::isnan(a[i])) return false;
      continue;
    }
    const double b = qlen * p_[i] + eq * h_[i] + n_[i];
    f.push_back(i);
    lo.push_back(a[i] - b);
    hi.push_back(a[i] + b);
  }
  const double cut = nth_smallest(hi.data(), static_cast<int>(hi.size()), nprobe);
  if (!std::isfinite(cut)) return false;
  for (size_t j = 0; j < f.size(); ++j)
    if (lo[j] <= cut) out.push_back(f[j]);
  return true;
}

}  // namespace pypatch

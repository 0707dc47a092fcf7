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

CoarseScreen::CoarseScreen(int nlist, int dim, const float* c, const float* norms)
    : nlist_(nlist), dim_(dim), npair_((dim + 1) / 2),
      scale_(nlist), err_(nlist), hat_(nlist), len_(nlist), norm2_(nlist) {
  const int n_chunks = (nlist + kLanes - 1) / kLanes;
  c8_.assign(static_cast<size_t>(n_chunks) * npair_ * 2 * kLanes, 0);
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
    scale_[i] = s;
    err_[i] = std::sqrt(e2) * (1 + 1e-9);  // the double rounding of these sums, over-covered
    hat_[i] = std::sqrt(h2) * (1 + 1e-9);
    len_[i] = std::sqrt(len2) * (1 + 1e-9);
    norm2_[i] = norms[i];
  }
}

int64_t CoarseScreen::bytes() const {
  return static_cast<int64_t>(c8_.size()) + 8 * static_cast<int64_t>(nlist_) * 5;
}

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
  // b = kq_err err + kq_hat hat + k_len len + k_norm norm2 (see the header), inflated.
  const double u = std::ldexp(1.0, -24), gamma = 1.01 * (dim_ + 2) * u, slack = 1 + 1e-6;
  const double k_err = 2 * qlen * slack, k_hat = 2 * eq * slack;
  const double k_len = (2 * gamma * qlen + 4 * u * 1.01 * qlen) * slack, k_norm = 2 * u * slack;

  thread_local std::vector<double> lo, hi;
  lo.resize(nlist_);
  hi.resize(nlist_);
  int32_t ip[kLanes];
  const KernelTable& kt = kernels();
  const int64_t chunk_bytes = static_cast<int64_t>(npair_) * 2 * kLanes;
  for (int c0 = 0; c0 < nlist_; c0 += kLanes) {
    kt.ip_screen_i8(q32.data(), c8_.data() + c0 / kLanes * chunk_bytes, npair_, ip);
    const int n = std::min(kLanes, nlist_ - c0);
    for (int j = 0; j < n; ++j) {
      const int i = c0 + j;
      const double dot = sq * scale_[i] * ip[j];
      const double a = norm2_[i] - 2 * dot;
      const double b = k_err * err_[i] + k_hat * hat_[i] + k_len * len_[i] +
                       k_norm * norm2_[i] + 1e-12 * (norm2_[i] + 2 * std::fabs(dot));
      lo[i] = a - b;
      hi[i] = a + b;
    }
  }
  // U = the nprobe-th smallest upper bound.
  double cut;
  if (nprobe <= 64) {
    double best[64];
    int nb = 0;
    for (int i = 0; i < nlist_; ++i) {
      const double h = hi[i];
      if (nb == nprobe && !(h < best[nb - 1])) continue;
      int pos = static_cast<int>(std::upper_bound(best, best + nb, h) - best);
      if (nb < nprobe) ++nb;
      for (int k = nb - 1; k > pos; --k) best[k] = best[k - 1];
      best[pos] = h;
    }
    cut = best[nprobe - 1];
  } else {
    std::vector<double> h(hi.begin(), hi.end());
    std::nth_element(h.begin(), h.begin() + (nprobe - 1), h.end());
    cut = h[nprobe - 1];
  }
  if (!std::isfinite(cut)) return false;
  const size_t start = out.size();
  for (int i = 0; i < nlist_; ++i) {
    if (!std::isfinite(lo[i]) || !std::isfinite(hi[i])) {
      out.resize(start);
      return false;
    }
    if (lo[i] <= cut) out.push_back(i);
  }
  return true;
}

}  // namespace pypatch

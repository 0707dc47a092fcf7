// k-means++ seeding (Arthur & Vassilvitskii 2007) then Lloyd iterations; empty clusters are
// re-seeded by splitting the largest one (faiss's policy, made deterministic).
#include "pypatch/pq/kmeans.h"

#include <algorithm>  // std::min
#include <cmath>      // INFINITY
#include <vector>     // buffers

#include "pypatch/errors.h"               // InvalidArgument
#include "pypatch/simd/kernels.h"         // assign_l2
#include "pypatch/util/parallel_for.h"    // threads

namespace pypatch {
namespace {

constexpr int64_t kChunk = 1024;  // points per parallel task

// Transposes (k, dsub) centroids to (dsub, k) for the assign kernel.
void transpose(const float* c, int k, int dsub, float* ct) {
  for (int i = 0; i < k; ++i)
    for (int t = 0; t < dsub; ++t) ct[static_cast<int64_t>(t) * k + i] = c[static_cast<int64_t>(i) * dsub + t];
}

void assign_all(int64_t n, const float* x, int64_t ldx, int dsub, const float* ct, int k,
                int nt, int32_t* assign, float* dist, const std::function<void()>& interrupt) {
  const KernelTable& kt = kernels();
  const int64_t tasks = (n + kChunk - 1) / kChunk;
  parallel_for(tasks, nt, [&](int64_t t, int) {
    const int64_t i0 = t * kChunk, cnt = std::min(kChunk, n - i0);
    kt.assign_l2(cnt, x + i0 * ldx, ldx, dsub, ct, k, assign + i0, dist + i0);
  }, interrupt);
}

void kmeanspp(int64_t n, const float* x, int64_t ldx, int dsub, int k, SplitMix64& rng, int nt,
              float* c, const std::function<void()>& interrupt) {
  std::vector<float> d2(n, INFINITY);
  std::vector<float> one(dsub);
  int64_t pick = static_cast<int64_t>(rng.uniform() * n);
  for (int ci = 0; ci < k; ++ci) {
    float* cc = c + static_cast<int64_t>(ci) * dsub;
    for (int t = 0; t < dsub; ++t) cc[t] = x[pick * ldx + t];
    if (ci + 1 == k) break;
    // Update every point's squared distance to its nearest chosen centroid.
    const int64_t tasks = (n + kChunk - 1) / kChunk;
    parallel_for(tasks, nt, [&](int64_t task, int) {
      const int64_t i1 = std::min(n, (task + 1) * kChunk);
      for (int64_t i = task * kChunk; i < i1; ++i) {
        float s = 0.f;
        for (int t = 0; t < dsub; ++t) {
          const float d = x[i * ldx + t] - cc[t];
          s = s + d * d;
        }
        if (s < d2[i]) d2[i] = s;
      }
    }, interrupt);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += d2[i];
    if (total <= 0) {  // every point already coincides with a centroid: pick uniformly
      pick = static_cast<int64_t>(rng.uniform() * n);
      continue;
    }
    const double r = rng.uniform() * total;
    double acc = 0;
    pick = n - 1;
    for (int64_t i = 0; i < n; ++i) {
      acc += d2[i];
      if (acc > r && d2[i] > 0) { pick = i; break; }
    }
  }
}

// Splits the largest cluster for every empty one; returns nothing, edits c and counts.
void fix_empty(int k, int dsub, float* c, std::vector<int64_t>& counts) {
  for (int ci = 0; ci < k; ++ci) {
    if (counts[ci] > 0) continue;
    int big = 0;
    for (int j = 1; j < k; ++j)
      if (counts[j] > counts[big]) big = j;
    float* dst = c + static_cast<int64_t>(ci) * dsub;
    float* src = c + static_cast<int64_t>(big) * dsub;
    constexpr float eps = 1.f / 1024.f;
    for (int t = 0; t < dsub; ++t) {
      const float v = src[t];
      dst[t] = (t % 2 == 0) ? v * (1 + eps) : v * (1 - eps);
      src[t] = (t % 2 == 0) ? v * (1 - eps) : v * (1 + eps);
    }
    counts[ci] = counts[big] / 2;
    counts[big] -= counts[ci];
  }
}

}  // namespace

double kmeans(int64_t n, const float* x, int64_t ldx, int dsub, int k, int iters, uint64_t seed,
              int num_threads, float* c, const std::function<void()>& interrupt) {
  PTCH_CHECK(k >= 1 && n >= k, "k-means needs at least as many training points as centroids (" +
                                   std::to_string(k) + "); got " + std::to_string(n));
  const int nt = resolve_num_threads(num_threads, (n + kChunk - 1) / kChunk);
  SplitMix64 rng(seed);
  // k-means++ costs k passes over its input, so it seeds from a random subset of at most
  // kSeedPointsPerCentroid * k rows (copied contiguously); Lloyd then uses every row.
  constexpr int64_t kSeedPointsPerCentroid = 32;
  const int64_t n_seed = std::min<int64_t>(n, kSeedPointsPerCentroid * k);
  if (n_seed < n) {
    std::vector<float> sub(static_cast<size_t>(n_seed) * dsub);
    std::vector<int64_t> idx(n);
    for (int64_t i = 0; i < n; ++i) idx[i] = i;
    for (int64_t i = 0; i < n_seed; ++i) {
      std::swap(idx[i], idx[i + static_cast<int64_t>(rng.next() % static_cast<uint64_t>(n - i))]);
      std::copy(x + idx[i] * ldx, x + idx[i] * ldx + dsub, sub.begin() + i * dsub);
    }
    kmeanspp(n_seed, sub.data(), dsub, dsub, k, rng, nt, c, interrupt);
  } else {
    kmeanspp(n, x, ldx, dsub, k, rng, nt, c, interrupt);
  }
  std::vector<float> ct(static_cast<size_t>(k) * dsub), dist(n);
  std::vector<int32_t> assign(n);
  std::vector<double> sums(static_cast<size_t>(k) * dsub);
  std::vector<int64_t> counts(k);
  for (int it = 0; it < iters; ++it) {
    transpose(c, k, dsub, ct.data());
    assign_all(n, x, ldx, dsub, ct.data(), k, nt, assign.data(), dist.data(), interrupt);
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (int64_t i = 0; i < n; ++i) {  // sequential: deterministic whatever the threads
      double* s = sums.data() + static_cast<int64_t>(assign[i]) * dsub;
      for (int t = 0; t < dsub; ++t) s[t] += x[i * ldx + t];
      ++counts[assign[i]];
    }
    for (int ci = 0; ci < k; ++ci)
      if (counts[ci] > 0)
        for (int t = 0; t < dsub; ++t)
          c[static_cast<int64_t>(ci) * dsub + t] = static_cast<float>(sums[static_cast<int64_t>(ci) * dsub + t] / counts[ci]);
    fix_empty(k, dsub, c, counts);
  }
  transpose(c, k, dsub, ct.data());
  assign_all(n, x, ldx, dsub, ct.data(), k, nt, assign.data(), dist.data(), interrupt);
  double err = 0;
  for (int64_t i = 0; i < n; ++i) err += dist[i];
  return err / static_cast<double>(n);
}

}  // namespace pypatch

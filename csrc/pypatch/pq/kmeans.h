// Seeded k-means: k-means++ initialisation for a PQ sub-space, splitting for wide vectors.
// Deterministic for a seed whatever the thread count: assignments are per point (any thread),
// and every reduction runs sequentially in point order.
#pragma once
#include <cstdint>     // int64_t
#include <functional>  // interrupt callback

namespace pypatch {

/// SplitMix64: tiny, portable, seedable generator (same stream on every platform).
struct SplitMix64 {
  uint64_t state;
  explicit SplitMix64(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
};

/// Width of the column panels of pack_panels: kPanel columns (the last one may be narrower).
constexpr int kPanel = 64;
/// Packs k vectors c (k, d) row-major as ip_rows reads them best: panels of kPanel columns,
/// panel p = columns [p * kPanel, min(k, (p + 1) * kPanel)) stored contiguously as (d, width)
/// at out + p * kPanel * d (k * d floats in all).
void pack_panels(const float* c, int k, int d, float* out);

/// out[i] = ||c[i]||^2 for k vectors c (k, d), summed over ascending coordinates.
void squared_norms(const float* c, int k, int d, float* out);

/// Nearest of k vectors by inner products, for wide vectors: `panels` = pack_panels of them,
/// norms[c] = ||c||^2; out[i] = argmin_c norms[c] - 2 x[i].c (lowest c on ties), the nearest in
/// L2. Single-threaded; callers split rows across threads.
void assign_by_ip(int64_t n, const float* x, int64_t ldx, int d, const float* panels,
                  const float* norms, int k, int32_t* out);

/// k-means for wide vectors (a residual quantizer's full-dimension codebooks): seeded by
/// splitting from the mean (3 Lloyd iterations after each doubling, `iters` at k; k-means++
/// costs k passes of d flops a point and seeds badly on near-isotropic residuals), Lloyd
/// assignments through assign_by_ip. Same determinism as kmeans.
double kmeans_wide(int64_t n, const float* x, int64_t ldx, int d, int k, int iters, uint64_t seed,
                   int num_threads, float* centroids, const std::function<void()>& interrupt = {});

/// x: n rows of dsub floats with row stride ldx (n >= k); centroids: (k, dsub) out.
/// Returns the final mean squared quantisation error per point.
double kmeans(int64_t n, const float* x, int64_t ldx, int dsub, int k, int iters, uint64_t seed,
              int num_threads, float* centroids, const std::function<void()>& interrupt = {});

}  // namespace pypatch

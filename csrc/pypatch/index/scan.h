// The fused search: per query, per image MAX over its patches of the score, and the top-k
// images, in one pass over the storage (no n_patches-long score array). Images are cut into
// tasks of about kTaskBytes of storage; a task's block is scanned for every query of the batch
// while it is hot in cache. Each worker keeps its own top-k per query; the merge is
// deterministic because (score desc, image asc) is a total order and each image is scored
// identically whichever worker scans it.
#pragma once
#include <cstdint>     // int64_t
#include <functional>  // interrupt
#include <utility>     // pair
#include <vector>      // results

#include "pypatch/index/patch_index.h"  // StoreKind
#include "pypatch/index/topk.h"         // TopK
#include "pypatch/index/quant_table.h"  // QuantBounds

namespace pypatch {

struct ScanSetup {
  StoreKind kind;
  int dim;
  int code_size;
  const Quantizer* pq;         // PQ only (product or residual codebooks)
  const uint8_t* data;         // (n_patches, code_size) bytes
  const int64_t* offsets;      // (n_images + 1)
  int64_t n_images;
  const uint8_t* removed;      // (n_images) mask or nullptr
  int64_t n_removed;
};

/// Several stores scanned as ONE (the shards of a sharded index, multi_scan.h): one task list
/// over every part, one set of tables, one merge. Part p's image i is image base[p] + i of the
/// whole, so (score desc, global image asc) orders ties exactly as one store holding the parts
/// in order would. Every part has the first one's kind, dim, code size and quantizer values
/// (the caller checks: tables are built from the first part's quantizer).
struct ScanParts {
  std::vector<ScanSetup> part;
  std::vector<int64_t> base;  // (n_parts + 1): base[p + 1] = base[p] + part[p].n_images

  explicit ScanParts(const ScanSetup& s) : part{s}, base{0, s.n_images} {}
  explicit ScanParts(std::vector<ScanSetup> parts);
  const ScanSetup& first() const { return part.front(); }
  int64_t n_patches() const;
  /// (part, image inside it) of global image g, 0 <= g < base.back().
  std::pair<int, int64_t> locate(int64_t g) const;
};

/// A scan task: images [i0, i1) of one part.
struct ScanTask {
  int part;
  int64_t i0, i1;
};
/// Tasks of about `patches_per_task` patches each, part by part (scan_task_bounds per part: a
/// single part is cut exactly as before).
std::vector<ScanTask> scan_tasks(const ScanParts& p, int64_t patches_per_task);

/// Top-k per query (nq TopK objects). q: (nq, dim) f32.
/// PQ with 8-bit codes takes the quantised path (scan_quantized.cpp) when a quantised kernel
/// (AVX2 or AVX-512 VBMI) is selected; it returns exactly the same results as the float kernels.
std::vector<TopK> scan_topk(const ScanParts& p, int64_t nq, const float* q, int k,
                            int num_threads, const std::function<void()>& interrupt);
inline std::vector<TopK> scan_topk(const ScanSetup& s, int64_t nq, const float* q, int k,
                                   int num_threads, const std::function<void()>& interrupt) {
  return scan_topk(ScanParts(s), nq, q, k, num_threads, interrupt);
}

/// The float kernels alone (no quantised stage): q (nq, dim) for flat stores, luts
/// (nq, m, ksub) for PQ (the other may be null). Bit-identical at every SIMD level, any input.
std::vector<TopK> scan_topk_exact(const ScanParts& p, int64_t nq, const float* q, const float* luts,
                                  int k, int num_threads, const std::function<void()>& interrupt);
inline std::vector<TopK> scan_topk_exact(const ScanSetup& s, int64_t nq, const float* q,
                                         const float* luts, int k, int num_threads,
                                         const std::function<void()>& interrupt) {
  return scan_topk_exact(ScanParts(s), nq, q, luts, k, num_threads, interrupt);
}

/// The quantised two-stage PQ search; luts: (nq, m, 256) f32. Exact results (see the .cpp).
/// A batch with a table it cannot bound (a NaN or infinite entry, sums that could overflow,
/// a range too small to scale) runs scan_topk_exact instead: same answer at every level.
std::vector<TopK> scan_topk_quantized(const ScanParts& p, int64_t nq, const float* luts, int k,
                                      int num_threads, const std::function<void()>& interrupt);
inline std::vector<TopK> scan_topk_quantized(const ScanSetup& s, int64_t nq, const float* luts,
                                             int k, int num_threads,
                                             const std::function<void()>& interrupt) {
  return scan_topk_quantized(ScanParts(s), nq, luts, k, num_threads, interrupt);
}

/// A query's 8-bit table quantised for the two-stage scan (scan_quantized.cpp) with the bounds
/// that make its result exact (quant_table.h).
struct QuantTable : QuantBounds {
  std::vector<uint8_t> q;  // (m, 256)
};
QuantTable quantize_lut8(const float* lut, int m);
/// scan_topk_quantized with the tables already quantised (tables[qi] for luts row qi): the
/// inverted file quantises a query's table once for every list it probes.
std::vector<TopK> scan_topk_quantized_tables(const ScanParts& p, int64_t nq, const float* luts,
                                             const QuantTable* const* tables, int k, int num_threads,
                                             const std::function<void()>& interrupt);
inline std::vector<TopK> scan_topk_quantized_tables(const ScanSetup& s, int64_t nq,
                                                    const float* luts,
                                                    const QuantTable* const* tables, int k,
                                                    int num_threads,
                                                    const std::function<void()>& interrupt) {
  return scan_topk_quantized_tables(ScanParts(s), nq, luts, tables, k, num_threads, interrupt);
}

/// 4-bit PQ over "blocked32_fs4" codes (scan_fastscan4.cpp): fast scan + exact re-score, or
/// the exact float path; q: (nq, dim) f32. Same results as exact float ADC, bit for bit.
std::vector<TopK> scan_topk_fastscan4(const ScanParts& p, int64_t nq, const float* q, int k,
                                      int num_threads, const std::function<void()>& interrupt);
inline std::vector<TopK> scan_topk_fastscan4(const ScanSetup& s, int64_t nq, const float* q, int k,
                                             int num_threads,
                                             const std::function<void()>& interrupt) {
  return scan_topk_fastscan4(ScanParts(s), nq, q, k, num_threads, interrupt);
}
/// The same from precomputed float tables luts: (nq, m, 16) (the inverted file computes them
/// once per query for all the lists it probes).
std::vector<TopK> scan_topk_fastscan4_luts(const ScanParts& p, int64_t nq, const float* luts, int k,
                                           int num_threads, const std::function<void()>& interrupt);
inline std::vector<TopK> scan_topk_fastscan4_luts(const ScanSetup& s, int64_t nq, const float* luts,
                                                  int k, int num_threads,
                                                  const std::function<void()>& interrupt) {
  return scan_topk_fastscan4_luts(ScanParts(s), nq, luts, k, num_threads, interrupt);
}
/// A query's 4-bit table quantised for the fast scan (scan_fastscan4.cpp), as QuantTable for
/// 16-entry rows.
struct QuantTable4 : QuantBounds {
  std::vector<uint8_t> q;  // (2 * fs4_groups(m), 16), rows >= m zero
};
QuantTable4 quantize_lut4(const float* lut, int m);
/// Exact float max over the fs4 patches [p0, p1) of codes (p1 > p0): patch = its offset from
/// p0 (the first on ties), each score summed j ascending from 0.f as the float kernels do.
Hit rescore_fs4_range(const uint8_t* codes, int m, const float* lut, int64_t p0, int64_t p1);
/// The exact float score of one image of a 4-bit store (the 4-bit search's re-score: every patch
/// sums j ascending from 0.f): max and lowest arg-max ordinal; patch -1 for an empty image.
/// lut: (m, 16) f32; image is local to s.
Hit fastscan4_score_image(const ScanSetup& s, const float* lut, int64_t image);

/// How many 4-bit searches took the quantised fast scan (not the exact float path) in this
/// process: lets tests check which path ran, since both return the same results.
int64_t fastscan4_quantised_searches();

/// Image boundaries of scan tasks of about `patches_per_task` patches each.
std::vector<int64_t> scan_task_bounds(const ScanSetup& s, int64_t patches_per_task);

}  // namespace pypatch

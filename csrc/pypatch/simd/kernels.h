// The table of compute kernels, one implementation per SIMD level (kernels_<isa>.cpp).
//
// Names: m sub-quantizers, ksub = 2**nbits centroids each, dsub = dim / m.
// Shapes are documented per kernel; every array is C-contiguous. Semantics shared by all levels:
//  * sums over t run in ascending t with separate multiply and add in lut_ip and assign_l2 (the
//    library is built with -ffp-contract=off), so lut_ip, assign_l2 and adc_segmax are
//    bit-exact across levels for any input; the flat dot kernels share one order too (32
//    lanes, multiply then add, the same tail lanes and fold: kernels_scalar.cpp dot_lanes32),
//    so they are bit-exact across levels for any input as well.
//  * segmax: image i owns patches [offsets[i], offsets[i+1]); best[i] is the max score of its
//    patches and arg[i] the lowest patch ordinal (0-based within the image) reaching it;
//    NaN scores never win; an empty or all-NaN image gets best = -inf, arg = -1.
#pragma once
#include <cstdint>  // fixed-width ints

#include "pypatch/simd/simd_level.h"  // SimdLevel

namespace pypatch {

struct KernelTable {
  SimdLevel level;
  /// q: (m*dsub) f32; ct: (m, dsub, ksub) f32 (centroids transposed per sub-space);
  /// lut: (m, ksub) f32 out, lut[j][c] = sum_t q[j*dsub+t] * C[j][c][t].
  void (*lut_ip)(const float* q, const float* ct, int m, int ksub, int dsub, float* lut);
  /// x: n rows of dsub f32 with row stride ldx; ct: (dsub, k) f32.
  /// out[i] = argmin_c sum_t (x[i][t] - ct[t][c])^2 (lowest c on ties); dist[i] = that minimum.
  void (*assign_l2)(int64_t n, const float* x, int64_t ldx, int dsub, const float* ct, int k,
                    int32_t* out, float* dist);
  /// codes: "blocked64" layout (index/code_layout.h), indexed by absolute patch number;
  /// lut: (m, ksub) f32. Per-image max/argmax of score(p) = sum_j lut[j][code(p, j)], summed
  /// in ascending j per patch at every level (so bit-exact across levels for any input).
  void (*adc_segmax)(int64_t n_images, const int64_t* offsets, const uint8_t* codes, int m,
                     int ksub, const float* lut, float* best, int32_t* arg);
  /// x: (n_patches, dim) f32; per-image max/argmax of <q, x[p]>.
  void (*flat_segmax_f32)(int64_t n_images, const int64_t* offsets, const float* x, int dim,
                          const float* q, float* best, int32_t* arg);
  /// x: (n_patches, dim) IEEE binary16 bits; per-image max/argmax of <q, float(x[p])>.
  void (*flat_segmax_f16)(int64_t n_images, const int64_t* offsets, const uint16_t* x, int dim,
                          const float* q, float* best, int32_t* arg);
  /// The coarse probe's integer screen (index/coarse_screen.h). q: npair int32, each a pair of
  /// int16 (t = 2s in the low half, 2s + 1 in the high); c: (npair, 64, 2) int8, a chunk of 64
  /// centroids with each centroid's pair (2s, 2s + 1) adjacent. out[i] = sum_t q[t] * c[i][t]
  /// as an exact int32 (the caller bounds |q| so it cannot overflow): equal at every level.
  void (*ip_screen_i8)(const int32_t* q, const int8_t* c, int npair, int32_t* out);
  /// Many rows against many columns (full-dimension codebooks: residual quantizer LUTs,
  /// encoding and k-means). x: n rows of d f32 with row stride ldx; ct: (d, k) f32 with row
  /// stride ldc; out: n rows of k f32 with row stride ldo, out[i][c] = sum_t x[i][t] * ct[t][c],
  /// ascending t, multiply then add, so bit-exact across levels; one register panel of columns
  /// at a time against every row (pass ct packed, ldc = k <= 64, for streaming reads).
  void (*ip_rows)(int64_t n, const float* x, int64_t ldx, int d, const float* ct, int64_t ldc,
                  int k, float* out, int64_t ldo);
};

/// Kernels of the selected level (see simd_level.h). The float kernels have no NEON version:
/// at neon this is the scalar table (GCC auto-vectorises its 32-lane loops at the aarch64
/// baseline anyway); only the quantised scans below have NEON kernels.
const KernelTable& kernels();
/// Kernels of one level; throws InvalidArgument if not compiled or not supported here.
const KernelTable& kernels_for(SimdLevel level);

// Per-ISA tables (defined in kernels_<isa>.cpp; only those compiled exist).
const KernelTable& kernel_table_scalar();
const KernelTable& kernel_table_avx2();
const KernelTable& kernel_table_avx512();

/// Quantised scan of whole blocks of "blocked64" codes: for blocks b in [b0, b1) and lanes l,
/// out[(b - b0) * 64 + l] = sum_j qlut[j][code(64 b + l, j)]. qlut: (m, 256) u8; m <= 257.
using QuantScanFn = void (*)(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0,
                             int64_t b1, uint16_t* out);
/// The AVX-512 VBMI kernel when it is compiled, the CPU has VBMI and the selected level is
/// AVX-512; the AVX2 kernel at AVX2 (and at AVX-512 without VBMI); the NEON kernel at neon
/// (aarch64); nullptr at scalar (callers then use the exact float kernels).
QuantScanFn quant_scan_kernel();
void qscan_blocks_scalar(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0, int64_t b1,
                         uint16_t* out);
void qscan_blocks_avx512vbmi(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0,
                             int64_t b1, uint16_t* out);
void qscan_blocks_avx2(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0, int64_t b1,
                       uint16_t* out);
void qscan_blocks_neon(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0, int64_t b1,
                       uint16_t* out);
/// Name of the kernel quant_scan_kernel() returns: "avx512vbmi", "avx2", "neon" or "" (none).
const char* quant_scan_kernel_name();
/// out[i] = max of sc[off[i] .. off[i+1]) (u16 scores indexed by absolute patch), -1 if empty.
using QuantSegmaxFn = void (*)(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out);
void qsegmax_u16_avx512vbmi(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out);
void qsegmax_u16_avx2(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out);
void qsegmax_u16_neon(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out);
void qsegmax_u16_scalar(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out);
/// The segmented max matching quant_scan_kernel() (scalar when that is nullptr).
QuantSegmaxFn quant_segmax_kernel();

/// IEEE binary16 <-> binary32 in portable C++ (round to nearest even on the way down).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

}  // namespace pypatch

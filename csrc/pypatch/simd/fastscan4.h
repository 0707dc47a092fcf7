// The 4-bit PQ fast scan (simd/README.md "4-bit fast scan"): codes in the "blocked32_fs4"
// layout (index/code_layout_fs4.h), a u8 table per query held in registers (pshufb), u16 sums,
// and the per-image max taken inside the kernel behind a threshold, so that a block whose 32
// patches all score below it costs one compare. Kernels: kernels_fs4_scalar.cpp (reference,
// baseline flags), kernels_fs4_avx2.cpp, kernels_fs4_avx512.cpp, kernels_fs4_neon.cpp (aarch64);
// all emit the same sequence.
#pragma once
#include <cstdint>  // fixed-width ints

namespace pypatch {

/// Receives per-image quantised maxima from a fast-scan kernel. Patches scoring below
/// `threshold` are skipped (any int32: <= 0 lets every patch through, > 65535 none); emit()
/// may raise the threshold (never lower it).
struct Fs4Sink {
  int32_t threshold = 0;
  void (*emit)(Fs4Sink* self, int64_t image, int32_t q) = nullptr;
};

/// Scans images [i0, i1) (off: CSR offsets in absolute patch numbers of `codes`).
/// score(p) = sum_{j < m} qlut[j][code(p, j)], exact in u16 (m <= 257); qlut: (2 *
/// fs4_groups(m), 16) u8 with row m zero when m is odd. Patches are visited in order; a patch
/// with score >= sink->threshold (read at that patch) joins its image's running max, and when
/// such a patch belongs to a later image than the running one, the running image is emitted
/// first (emit(image, max)); the last one is emitted at the end. So every image whose max
/// score stays >= the threshold is emitted exactly once with its exact max.
using Fs4ScanFn = void (*)(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                           int64_t i0, int64_t i1, Fs4Sink* sink);

void fs4_scan_scalar(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                     int64_t i0, int64_t i1, Fs4Sink* sink);
void fs4_scan_avx2(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                   int64_t i0, int64_t i1, Fs4Sink* sink);
void fs4_scan_avx512(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                     int64_t i0, int64_t i1, Fs4Sink* sink);
void fs4_scan_neon(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                   int64_t i0, int64_t i1, Fs4Sink* sink);

/// The kernel of the selected SIMD level: AVX-512 (BW), AVX2 or NEON; nullptr at scalar, where
/// the search takes the exact float path.
Fs4ScanFn fastscan4_kernel();
/// "avx512", "avx2", "neon" or "" (none: exact float scan).
const char* fastscan4_kernel_name();
/// The kernel of one level, for tests ("scalar" gives the reference); nullptr if not compiled
/// or not supported by this CPU.
Fs4ScanFn fastscan4_kernel_for(int level);

}  // namespace pypatch

// Runtime SIMD level detection and selection.
// The level is resolved once (std::call_once) on first use, never in a static initialiser, as
// min(detected by cpuid+xgetbv, compiled in, env PYPATCH_SIMD). set_simd_level() overrides it
// (tests and benchmarks). On aarch64 NEON is baseline: the levels are scalar and neon.
#pragma once
#include <string>  // level names
#include <vector>  // list of compiled levels

namespace pypatch {

// x86 levels are ordered (each includes the one below); NEON is the only level above scalar on
// aarch64 and never compiled on x86, so one build never holds both families.
enum class SimdLevel { Scalar = 0, AVX2 = 1, AVX512 = 2, NEON = 3 };

/// "scalar" | "avx2" | "avx512" | "neon".
const char* simd_level_name(SimdLevel level);
/// Parses a level name; throws InvalidArgument on an unknown name.
SimdLevel parse_simd_level(const std::string& name);
/// Levels whose kernels were compiled into this build, ascending.
std::vector<SimdLevel> compiled_simd_levels();
/// The best level this CPU and OS support (cpuid + xgetbv; neon on aarch64), capped to the
/// compiled levels.
SimdLevel detected_simd_level();
/// True when `level` is compiled in and this CPU supports it (scalar always).
bool simd_level_usable(SimdLevel level);
/// The level used by kernels(): env PYPATCH_SIMD or set_simd_level(), capped to detected.
SimdLevel selected_simd_level();
/// Forces a level; throws InvalidArgument if it is not compiled or not supported here.
void set_simd_level(SimdLevel level);
/// True when the CPU supports AVX-512 VBMI (vpermi2b), used by the quantised fast scan.
bool cpu_has_avx512vbmi();

}  // namespace pypatch

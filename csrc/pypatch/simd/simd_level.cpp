// cpuid + xgetbv detection (x86); on aarch64 NEON (ASIMD) is part of the base ISA, so there
// is nothing to probe. Built with baseline flags: no AVX instruction runs here.
#include "pypatch/simd/simd_level.h"

#include <atomic>   // the selected level is read by concurrent searches
#include <cstdio>   // the one-time warning on stderr
#include <cstdlib>  // getenv
#include <mutex>    // call_once

#include "pypatch/errors.h"  // InvalidArgument

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>  // __get_cpuid_count
#define PYPATCH_X86 1
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define PYPATCH_ARM64 1
#endif

namespace pypatch {
namespace {

struct CpuFeatures {
  bool avx2 = false, avx512 = false, vbmi = false, neon = false;
};

CpuFeatures probe_cpu() {
  CpuFeatures f;
#ifdef PYPATCH_X86
  unsigned a, b, c, d;
  if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
  if (!osxsave || !avx) return f;
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  // The OS must save the YMM state (bits 1,2) and, for AVX-512, opmask + ZMM (bits 5,6,7).
  const bool ymm_os = (xlo & 0x6) == 0x6, zmm_os = (xlo & 0xE6) == 0xE6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = (b >> 5) & 1;
  const bool f512 = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
  f.avx2 = ymm_os && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_os && f512 && dq && bw && vl;
  f.vbmi = f.avx512 && ((c >> 1) & 1);
#endif
#ifdef PYPATCH_ARM64
  f.neon = true;  // mandatory in AArch64 (the ABI passes vectors in its registers)
#endif
  return f;
}

const CpuFeatures& cpu() {
  static std::once_flag once;
  static CpuFeatures f;
  std::call_once(once, [] { f = probe_cpu(); });
  return f;
}

std::atomic<int> g_selected{-1};
std::once_flag g_select_once;

}  // namespace

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::AVX2: return "avx2";
    case SimdLevel::AVX512: return "avx512";
    case SimdLevel::NEON: return "neon";
    default: return "scalar";
  }
}

SimdLevel parse_simd_level(const std::string& name) {
  if (name == "scalar") return SimdLevel::Scalar;
  if (name == "avx2") return SimdLevel::AVX2;
  if (name == "avx512") return SimdLevel::AVX512;
  if (name == "neon") return SimdLevel::NEON;
  throw InvalidArgument("SIMD level must be one of 'scalar', 'avx2', 'avx512', 'neon'; got '" + name +
                        "'");
}

std::vector<SimdLevel> compiled_simd_levels() {
  std::vector<SimdLevel> v{SimdLevel::Scalar};
#ifdef PYPATCH_HAVE_AVX2
  v.push_back(SimdLevel::AVX2);
#endif
#ifdef PYPATCH_HAVE_AVX512
  v.push_back(SimdLevel::AVX512);
#endif
#ifdef PYPATCH_HAVE_NEON
  v.push_back(SimdLevel::NEON);
#endif
  return v;
}

SimdLevel detected_simd_level() {
  SimdLevel best = SimdLevel::Scalar;
  for (SimdLevel l : compiled_simd_levels()) {
    if (l == SimdLevel::AVX2 && cpu().avx2) best = l;
    if (l == SimdLevel::AVX512 && cpu().avx512) best = l;
    if (l == SimdLevel::NEON && cpu().neon) best = l;
  }
  return best;
}

bool simd_level_usable(SimdLevel level) {
  const SimdLevel best = detected_simd_level();
  switch (level) {  // x86 levels nest (avx512 implies avx2); neon stands alone
    case SimdLevel::Scalar: return true;
    case SimdLevel::AVX2: return best == SimdLevel::AVX2 || best == SimdLevel::AVX512;
    case SimdLevel::AVX512: return best == SimdLevel::AVX512;
    case SimdLevel::NEON: return best == SimdLevel::NEON;
  }
  return false;  // not a level
}

bool cpu_has_avx512vbmi() { return cpu().vbmi; }

SimdLevel selected_simd_level() {
  std::call_once(g_select_once, [] {
    SimdLevel level = detected_simd_level();
    if (const char* env = std::getenv("PYPATCH_SIMD")) {
      const std::string s(env);
      // An unknown or unsupported value falls back to the detected level rather than failing
      // every search, but says so once (here, at first dispatch: never in a static initialiser).
      const SimdLevel best = level;
      const bool known = s == "scalar" || s == "avx2" || s == "avx512" || s == "neon";
      if (known && simd_level_usable(parse_simd_level(s))) level = parse_simd_level(s);
      else if (known)
        std::fprintf(stderr, "pypatch: warning: PYPATCH_SIMD=%s is not supported by this CPU or "
                     "build; using '%s'\n", s.c_str(), simd_level_name(best));
      else if (!s.empty())
        std::fprintf(stderr, "pypatch: warning: PYPATCH_SIMD='%s' is not a SIMD level; valid values "
                     "are 'scalar', 'avx2', 'avx512', 'neon'; using the detected level '%s'\n", s.c_str(),
                     simd_level_name(best));
    }
    int expected = -1;
    g_selected.compare_exchange_strong(expected, static_cast<int>(level));
  });
  return static_cast<SimdLevel>(g_selected.load());
}

void set_simd_level(SimdLevel level) {
  if (!simd_level_usable(level))
    throw InvalidArgument(std::string("SIMD level '") + simd_level_name(level) +
                          "' is not compiled in or not supported by this CPU (best: '" +
                          simd_level_name(detected_simd_level()) + "')");
  selected_simd_level();  // run the one-time initialisation first so it cannot overwrite us
  g_selected.store(static_cast<int>(level));
}

}  // namespace pypatch

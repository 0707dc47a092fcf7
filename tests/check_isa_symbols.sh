#!/usr/bin/env bash
# The per-ISA kernel objects (compiled with -mavx2/-mavx512*) must not define weak symbols:
# an inline function or template instantiation with external linkage compiled there is merged
# by the linker with the baseline TUs' copy, and the survivor may be the AVX one, so the scalar
# path would run AVX instructions (SIGILL on older CPUs). Shared header code used by kernels
# lives in unnamed namespaces (simd/segmax.h, simd/fastscan4_emit.h). On aarch64 the NEON
# objects are checked too: NEON is baseline there, so a merged copy would run correctly, but
# the kernels follow one rule on every ISA (and a later SVE or dotprod file would need it).
# Usage: check_isa_symbols.sh NM libpypatch_core.a
set -euo pipefail
nm_tool=$1 lib=$2
isa='kernels_(avx2|avx512|avx512vbmi|qscan_avx2|fs4_avx2|fs4_avx512|qscan_neon|fs4_neon)\.cpp\.o'
syms=$("$nm_tool" -A -C --defined-only "$lib" 2>/dev/null)
# A renamed or missing kernel file would make the check below pass vacuously.
if ! grep -qE "$isa:" <<<"$syms"; then
  echo "no per-ISA kernel objects in $lib (renamed? update the pattern)"; exit 1
fi
found=$(grep -E "$isa: *[0-9a-f]* [WV] " <<<"$syms" \
  | grep -v ' DW\.ref\.__gxx_personality' || true)  # (the unwinder's personality ref: data)
if [ -n "$found" ]; then
  echo "weak symbols defined in per-ISA kernel objects:"; echo "$found"; exit 1
fi
echo "per-ISA kernel objects define no weak symbols"

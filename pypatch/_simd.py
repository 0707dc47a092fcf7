"""SIMD level and thread-count controls of the native core.

``simd_info()`` reports what was compiled, what this CPU supports and what the kernels use;
the environment variable ``PYPATCH_SIMD=scalar|avx2|avx512|neon`` (read once, at first use) or
``set_simd_level`` (tests and benchmarks) chooses a lower level; any other value of the variable
keeps the detected level and prints one warning on stderr.
"""
from __future__ import annotations

from pypatch import _core
from pypatch._checks import INT32_MAX, as_int
from pypatch.errors import InvalidTypeError

__all__ = ["simd_info", "set_simd_level", "set_num_threads", "get_num_threads"]


def simd_info() -> dict:
    """Return ``{"compiled": [levels...], "detected": level, "selected": level, "quant_scan": name,
    "fastscan4": name}``.

    Levels: "scalar", "avx2", "avx512" on x86-64; "scalar", "neon" on aarch64. ``quant_scan``
    names the kernel of the quantised 8-bit PQ scan at the selected level ("avx512vbmi",
    "avx2", "neon", or "" at scalar, where the exact float scan runs alone) and ``fastscan4``
    that of the 4-bit fast scan ("avx512", "avx2", "neon" or ""); every level returns
    bit-identical search results.
    """
    return dict(_core.simd_info())


def set_simd_level(level: str) -> None:
    """Force the kernels of ``level`` ("scalar", "avx2", "avx512" or "neon") for every later call.

    Raises InvalidArgumentError if the level is unknown, not compiled in, or not supported by
    this CPU (see ``simd_info()["detected"]``).
    """
    if not isinstance(level, str):
        raise InvalidTypeError(f"level must be a str such as 'avx2'; got {type(level).__name__}")
    _core.set_simd_level(level)


def set_num_threads(n: int | None) -> None:
    """Set the default number of threads of native calls (``None`` or 0: all available CPUs)."""
    if n is None:
        n = 0
    _core.set_num_threads(as_int(n, "num_threads", 0, INT32_MAX))  # 0 = all CPUs


def get_num_threads() -> int:
    """The default number of threads of native calls."""
    return int(_core.get_num_threads())

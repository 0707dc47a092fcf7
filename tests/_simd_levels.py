"""SIMD levels usable on this machine (compiled and supported), for parametrising tests."""
from __future__ import annotations

import contextlib

import pypatch

_ORDER = ["scalar", "avx2", "avx512", "neon"]  # a build has x86 levels or neon, never both


def usable_levels() -> list[str]:
    info = pypatch.simd_info()
    best = _ORDER.index(info["detected"])
    return [lvl for lvl in info["compiled"] if _ORDER.index(lvl) <= best]


@contextlib.contextmanager
def simd_level(level: str):
    """Run the block with the kernels of `level`, restoring the previous selection after."""
    previous = pypatch.simd_info()["selected"]
    pypatch.set_simd_level(level)
    try:
        yield
    finally:
        pypatch.set_simd_level(previous)

"""PYPATCH_SIMD with a value that is not a level: one warning naming the valid values (on
stderr, at the first dispatch), and the detected level is used."""
from __future__ import annotations

from _subprocess import run_python

import pypatch

CODE = """
import numpy as np, pypatch
ix = pypatch.PatchIndex(8)
ix.add(np.ones((4, 8), np.float32), patches_per_image=2)
for _ in range(3):
    ix.search(np.ones(8, np.float32), k=2)
print(pypatch.simd_info()["selected"])
"""


def test_unknown_value_warns_once_and_keeps_the_detected_level():
    out = run_python("-c", CODE, env={"PYPATCH_SIMD": "bogus"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == pypatch.simd_info()["detected"]
    lines = [ln for ln in out.stderr.splitlines() if "PYPATCH_SIMD" in ln]
    assert len(lines) == 1, out.stderr
    for word in ("bogus", "scalar", "avx2", "avx512"):
        assert word in lines[0]


def test_valid_or_empty_value_is_silent():
    for value in ("scalar", ""):
        out = run_python("-c", CODE, env={"PYPATCH_SIMD": value})
        assert out.returncode == 0, out.stderr
        assert "PYPATCH_SIMD" not in out.stderr
        assert out.stdout.strip() == (value or pypatch.simd_info()["detected"])

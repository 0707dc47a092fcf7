"""Writes the golden 4-bit index files of this folder (run from anywhere):

    PYTHONPATH=<a pypatch before the fast scan> python tests/data/format_fs4/make_golden.py old
    python tests/data/format_fs4/make_golden.py fs4

``pq_m5_nbits4_blocked64.ptch`` was written by pypatch before the 4-bit fast scan (main at
0ca487c: 4-bit codes one a byte, PIDX code_layout 1); ``pq_m5_nbits4_fs4.ptch`` by the first
version with it (code_layout 2, "blocked32_fs4", two codes a byte). Both hold the same index,
built from seeded integer-valued data and fixed centroids, so tests/index/test_fastscan4_file.py
can rebuild it and compare with what the files load as. Never regenerate them for a format
change: they stand for files already in users' hands.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OLD_FILE = HERE / "pq_m5_nbits4_blocked64.ptch"
FS4_FILE = HERE / "pq_m5_nbits4_fs4.ptch"
COUNTS = [3, 0, 40, 1, 30, 2]  # 76 patches: 3 blocks of 32, images straddling them; m odd


def parts():
    rng = np.random.default_rng(20260301)
    centroids = rng.integers(-4, 5, size=(5, 16, 2)).astype(np.float32)
    codes = rng.integers(0, 16, size=(sum(COUNTS), 5)).astype(np.uint8)
    return centroids, codes


def build():
    import pypatch

    centroids, codes = parts()
    ix = pypatch.PatchIndex(10, pypatch.ProductQuantizer.from_centroids(centroids))
    ix.add_codes(codes, patches_per_image=COUNTS)
    ix.remove([4])
    ix.metadata = {"ids": [f"img{i}" for i in range(len(COUNTS))], "nbits": 4}
    return ix


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "fs4"
    path = OLD_FILE if which == "old" else FS4_FILE
    build().save(path)
    print("wrote", path)

"""Writes the golden format-1 index files of this folder (run from anywhere):

    python tests/data/format_v1/make_golden.py

The indexes are built from seeded integer-valued data and fixed centroids (no training), so
tests/index/test_index_file.py can rebuild them and compare with what the checked-in files load as.
Never regenerate these files for a format change: they stand for files already in users' hands.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PQ_FILE = HERE / "pq_m4_nbits8.ptch"
FLAT_FILE = HERE / "flat_float16.ptch"
PQ_COUNTS = [3, 0, 1, 5, 2, 4, 1]
FLAT_COUNTS = [2, 1, 3, 0]


def pq_parts():
    rng = np.random.default_rng(20260101)
    centroids = rng.integers(-4, 5, size=(4, 256, 3)).astype(np.float32)
    vectors = rng.integers(-4, 5, size=(sum(PQ_COUNTS), 12)).astype(np.float32)
    return centroids, vectors


def flat_parts():
    rng = np.random.default_rng(20260102)
    return rng.integers(-9, 10, size=(sum(FLAT_COUNTS), 5)).astype(np.float32)


def build_pq():
    import pypatch

    centroids, vectors = pq_parts()
    ix = pypatch.PatchIndex(12, pypatch.ProductQuantizer.from_centroids(centroids))
    ix.add(vectors, patches_per_image=PQ_COUNTS)
    ix.remove([5])
    ix.metadata = {"ids": [f"img{i}" for i in range(len(PQ_COUNTS))], "grid": {"levels": 2}}
    return ix


def build_flat():
    import pypatch

    ix = pypatch.PatchIndex(5, flat_dtype="float16")
    ix.add(flat_parts(), patches_per_image=FLAT_COUNTS)
    ix.metadata = {"note": "flat float16 golden file", "unicode": "\u00e9\u4e2d"}
    return ix


if __name__ == "__main__":
    build_pq().save(PQ_FILE)
    build_flat().save(FLAT_FILE)
    print("wrote", PQ_FILE, FLAT_FILE)

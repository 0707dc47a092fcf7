"""Writes the golden inverted-file index files of this folder (run from anywhere):

    python tests/data/format_ivf/make_golden.py

``ivf8.ptch`` (8-bit codes, lists in "blocked64") and ``ivf4.ptch`` (4-bit codes, lists in
"blocked32_fs4"): PIDX version 2 with IVFC/IVFN/IVFI/IVFO, written by the first pypatch with
the inverted file. Small seeded indexes (m odd, images of 0..40 patches, one removed image,
a list left empty), plus ``<name>_expected.npz`` with the queries and the search results they
gave (tests/index/test_ivf.py loads both). Never regenerate them for a format change: they
stand for files already in users' hands.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def build(nbits):
    import pypatch

    rng = np.random.default_rng(20261204 + nbits)
    d, m, nlist = 15, 5, 7
    counts = rng.integers(0, 41, 60)
    counts[:3] = [0, 1, 40]
    centroids = rng.standard_normal((m, 2 ** nbits, d // m)).astype(np.float32)
    coarse = rng.standard_normal((nlist, d)).astype(np.float32)
    coarse[6] = 50.0  # far from every vector: an empty list
    x = rng.standard_normal((int(counts.sum()), d)).astype(np.float32)
    ix = pypatch.PatchIndex(d, pypatch.ProductQuantizer.from_centroids(centroids), nlist=nlist)
    ix.set_coarse_centroids(coarse)
    ix.add(x, patches_per_image=counts)
    ix.remove([7])
    ix.nprobe = 3
    ix.metadata = {"golden": f"ivf{nbits}"}
    q = rng.standard_normal((4, d)).astype(np.float32)
    return ix, q


if __name__ == "__main__":
    for nbits in (8, 4):
        ix, q = build(nbits)
        name = f"ivf{nbits}"
        ix.save(HERE / f"{name}.ptch")
        s, i, p = ix.search(q, k=10)
        np.savez(HERE / f"{name}_expected.npz", queries=q, scores=s, images=i, patches=p,
                 nlist=ix.nlist, nprobe=ix.nprobe)
        print("wrote", HERE / f"{name}.ptch", ix.memory_usage()["codes"], "code bytes")

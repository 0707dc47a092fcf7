"""Writes the golden residual-quantizer index files of this folder (run from anywhere):

    python tests/data/format_rq/make_golden.py

``rq8.ptch`` (8-bit codes, m = 3, code layout "blocked64") and ``rq4.ptch`` (4-bit codes, m = 5,
"blocked32_fs4"), both exhaustive, and ``ivf_rq8.ptch`` (8-bit codes, m = 3, an inverted file of
nlist = 8 lists, default nprobe 4): PIDX version 4 (128-byte header, u32 codebooks = 1 at byte
64, nlist at 56 = 0 when exhaustive) with the codebooks in RQCB (f32 (m, 2**nbits, dim)) in place
of PQCB, written by the first pypatch with ResidualQuantizer. Small seeded indexes (dim 12,
clustered unit vectors, 160 images of 0..40 patches, image 3 a copy of image 2 for exact ties,
two removed images, user metadata), plus ``<name>_expected.npz`` with the queries and the
search results they gave, nlist and nprobe too (tests/index/test_residual_file.py loads both).
The 8-bit codebooks are most of a file (3 * 256 * 12 floats, 37 KB): dim and m stay small.

Never regenerate them for a format change: they stand for files already in users' hands.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIM = 12
FILES = {"rq8": dict(m=3, nbits=8, nlist=None), "rq4": dict(m=5, nbits=4, nlist=None),
         "ivf_rq8": dict(m=3, nbits=8, nlist=8)}


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng, n, centers):
    """Unit vectors around the rows of ``centers`` (noise of norm about 0.3)."""
    noise = 0.3 * rng.standard_normal((n, centers.shape[1])).astype(np.float32) / np.sqrt(centers.shape[1])
    return _unit(centers[rng.integers(0, len(centers), n)] + noise)


def build(name):
    import pypatch

    spec = FILES[name]
    rng = np.random.default_rng(20261206 + 10 * spec["nbits"] + (spec["nlist"] or 0))
    counts = rng.integers(0, 41, 160)
    counts[:4] = [0, 1, 40, 40]
    rq = pypatch.ResidualQuantizer(DIM, spec["m"], nbits=spec["nbits"])
    ix = pypatch.PatchIndex(DIM, rq, nlist=spec["nlist"])
    centers = _unit(rng.standard_normal((12, DIM)))
    ix.train(_clustered(rng, 2000, centers), iters=6, seed=5)
    x = _clustered(rng, int(counts.sum()), centers)
    x[41:81] = x[1:41]  # image 3 repeats image 2: exact ties (lower image first)
    ix.add(x, patches_per_image=counts)
    ix.remove([7, 40])
    if spec["nlist"]:
        ix.nprobe = 4
    ix.metadata = {"golden": name}
    q = np.concatenate([_clustered(rng, 3, centers), x[1 + 17:1 + 18],  # a patch of images 2 and 3
                        rng.standard_normal((2, DIM)).astype(np.float32)])
    return ix, q


if __name__ == "__main__":
    for name in FILES:
        ix, q = build(name)
        ix.save(HERE / f"{name}.ptch")
        s, i, p = ix.search(q, k=10)
        np.savez(HERE / f"{name}_expected.npz", queries=q, scores=s, images=i, patches=p,
                 nlist=ix.nlist, nprobe=ix.nprobe)
        print("wrote", HERE / f"{name}.ptch", (HERE / f"{name}.ptch").stat().st_size, "bytes")

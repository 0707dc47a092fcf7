"""Writes the golden packed-id inverted-file index files of this folder (run from anywhere):

    python tests/data/format_ivf3/make_golden.py

``ivf8.ptch`` and ``ivf4.ptch``: PIDX version 3 with IVFC/IVFN/IVFP (4-byte ids, image <<
ord_bits | ordinal; here ord_bits = 6 for images of up to 40 patches), the same seeded indexes
as ``tests/data/format_ivf`` (version 2) rebuilt by the first pypatch with packed ids, plus
``<name>_expected.npz`` with the queries and the search results they gave
(tests/index/test_ivf.py). Never regenerate them for a format change: they stand for files
already in users' hands.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _v2_builder():
    spec = importlib.util.spec_from_file_location("ivf_v2_golden", HERE.parent / "format_ivf" / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build


if __name__ == "__main__":
    build = _v2_builder()
    for nbits in (8, 4):
        ix, q = build(nbits)
        name = f"ivf{nbits}"
        ix.save(HERE / f"{name}.ptch")
        s, i, p = ix.search(q, k=10)
        np.savez(HERE / f"{name}_expected.npz", queries=q, scores=s, images=i, patches=p,
                 nlist=ix.nlist, nprobe=ix.nprobe)
        print("wrote", HERE / f"{name}.ptch", ix.memory_usage()["ivf_ids"], "id bytes")

"""Flat search speed per SIMD level (item 5 of the hardening issue: one summation order).

Times ``PatchIndex.search`` on a flat store (float32 and float16), one thread, at every usable
SIMD level: single queries (the store streams from memory) and a batch of queries (each
128 KB task stays in cache across the batch, so the kernel's arithmetic shows). Prints
medians in ms per query. Run two builds in alternation (PYTHONPATH=...) to compare them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import pypatch


def _levels():
    order = ["scalar", "avx2", "avx512", "neon"]  # x86 levels or neon, never both
    info = pypatch.simd_info()
    best = order.index(info["detected"])
    return [lv for lv in info["compiled"] if order.index(lv) <= best]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--patches", type=int, default=30)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=15, help="single queries timed")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    p.add_argument("--levels", nargs="+", default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    n = a.images * a.patches
    q = rng.standard_normal((max(a.queries, a.batch), a.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = []
    for dt in a.dtypes:
        ix = pypatch.PatchIndex(a.dim, flat_dtype=dt)
        step = 10_000
        for i0 in range(0, a.images, step):  # add in blocks: never hold a float64 copy
            cnt = min(step, a.images - i0)
            x = rng.standard_normal((cnt * a.patches, a.dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            ix.add(x, patches_per_image=a.patches)
        for lv in a.levels or _levels():
            pypatch.set_simd_level(lv)
            ix.search(q[:1], k=10, num_threads=1)  # warm
            single = []
            for i in range(a.queries):
                t0 = time.perf_counter()
                ix.search(q[i:i + 1], k=10, num_threads=1)
                single.append((time.perf_counter() - t0) * 1e3)
            batch = []
            for _ in range(3):
                t0 = time.perf_counter()
                ix.search(q[:a.batch], k=10, num_threads=1)
                batch.append((time.perf_counter() - t0) * 1e3 / a.batch)
            row = {"dtype": dt, "level": lv, "single_ms": statistics.median(single),
                   "batch_ms_per_query": statistics.median(batch), "images": a.images,
                   "patches": a.patches, "dim": a.dim}
            out.append(row)
            print(f"{dt:8s} {lv:7s} single {row['single_ms']:8.2f} ms   batch({a.batch}) "
                  f"{row['batch_ms_per_query']:8.2f} ms/query", flush=True)
        del ix
    print(json.dumps(out))


if __name__ == "__main__":
    main()

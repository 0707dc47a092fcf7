"""Quick timing of the inverted file in the core (issue 11 item 2; the full peer benchmark is
benchmarks/bench_search.py's IVF section).

    python benchmarks/ivf_core_timing.py [--images 100000] [--nlist 1024] [--nprobe 16]

Clustered synthetic data of bench_search.py (World), D = 256, PQ m = 32 (8- and 4-bit), one
quantizer shared by the exhaustive and the IVF index (codes are identical: no residuals).
Reports build times, bytes per patch (memory_usage), single-query latency at 1 and 2 threads
and per query in a batch of 64, and image recall@10 of IVF against the exhaustive ADC ranking
of the same codes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import World  # noqa: E402

import pypatch  # noqa: E402


def lat(fn, q, reps):
    fn(q[:1])
    t = time.perf_counter()
    for i in range(reps):
        fn(q[i % len(q):i % len(q) + 1])
    return (time.perf_counter() - t) / reps * 1e3


def recall(a, b):
    return float(np.mean([len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, (y >= 0).sum()) for x, y in zip(a, b)]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100000)
    ap.add_argument("--patches", type=int, default=30)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--nbits", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    a = ap.parse_args()
    w = World(a.dim, a.patches, seed=1)
    t = time.perf_counter()
    x = np.concatenate([b for _, b in w.blocks(a.images)])
    print(f"data {x.shape} in {time.perf_counter() - t:.1f}s", flush=True)
    q = w.queries(x, a.queries, seed=7)
    rng = np.random.default_rng(0)
    sample = x[rng.choice(len(x), min(len(x), 256 * a.nlist), replace=False)]
    for nbits in a.nbits:
        pq = pypatch.ProductQuantizer(a.dim, a.m, nbits=nbits)
        ivf = pypatch.PatchIndex(a.dim, pq, nlist=a.nlist)
        t = time.perf_counter()
        ivf.train(sample, iters=a.iters, seed=1)
        t_train = time.perf_counter() - t
        t = time.perf_counter()
        ivf.add(x, patches_per_image=a.patches)
        t_add = time.perf_counter() - t
        ex = pypatch.PatchIndex(a.dim, pq)
        t = time.perf_counter()
        ex.add_codes(ivf._ix.codes(), patches_per_image=a.patches)  # the same codes
        t_ex = time.perf_counter() - t
        u = ivf.memory_usage()
        n = ivf.num_patches
        print(f"\n{nbits}-bit m={a.m}: train (coarse k-means + PQ) {t_train:.1f}s, IVF add {t_add:.1f}s "
              f"(encode + assign), exhaustive add_codes {t_ex:.1f}s; per patch: codes "
              f"{u['codes'] / n:.2f} B + ids {u['ivf_ids'] / n:.2f} B; lists {np.bincount(ivf.patch_lists()).max()} max entries",
              flush=True)
        ref = ex.search(q, k=10, num_threads=1)
        for th in (1, 2):
            e1 = lat(lambda qq: ex.search(qq, k=10, num_threads=th), q, 10)
            eb = (lambda: (ex.search(q, k=10, num_threads=th), None))
            t = time.perf_counter(); eb(); eb_ms = (time.perf_counter() - t) / len(q) * 1e3
            print(f"  exhaustive  threads={th}: {e1:8.3f} ms/query single, {eb_ms:8.3f} ms/query in a batch of {len(q)}")
            for npb in a.nprobe:
                f1 = lat(lambda qq: ivf.search(qq, k=10, num_threads=th, nprobe=npb), q, 50)
                t = time.perf_counter()
                got = ivf.search(q, k=10, num_threads=th, nprobe=npb)
                fb = (time.perf_counter() - t) / len(q) * 1e3
                print(f"  IVF nprobe={npb:3d} threads={th}: {f1:8.3f} ms/query single ({e1 / f1:5.1f}x), "
                      f"{fb:8.3f} ms/query batched; recall@10 vs exhaustive ADC {recall(got[1], ref[1]):.3f}",
                      flush=True)


if __name__ == "__main__":
    main()

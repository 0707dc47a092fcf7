"""Residual PQ or not for the inverted file (issue 11, item 2): a cheap proxy with faiss.

    python benchmarks/ivf_residual_choice.py [--images 20000] [--nlist 256]

faiss IndexIVFPQ(by_residual=True/False), inner product, on the clustered synthetic data of
bench_search.py (World); patches over-fetched (k' = 40 * k) and grouped by image (max).
Recall@10 of images against (a) the exhaustive exact float ranking and (b) the exhaustive
8-bit ADC ranking of faiss IndexPQ over the same sample (non-residual codes), per nprobe.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import World  # noqa: E402


def group_topk(D, I, P, k):
    out = np.full((D.shape[0], k), -1, np.int64)
    for r in range(D.shape[0]):
        seen, row = set(), []
        for d, i in zip(D[r], I[r]):
            if i < 0:
                continue
            img = int(i) // P
            if img not in seen:
                seen.add(img)
                row.append(img)
                if len(row) == k:
                    break
        out[r, :len(row)] = row
    return out


def recall(found, ref):
    return float(np.mean([len(set(f) & set(g)) / len(g) for f, g in zip(found, ref)]))


def main():
    import faiss
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--patches", type=int, default=30)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    faiss.omp_set_num_threads(2)
    w = World(a.dim, a.patches, seed=1)
    x = np.concatenate([b for _, b in w.blocks(a.images)])
    q = w.queries(x, a.queries, seed=7)
    k, P = 10, a.patches
    exact = (q @ x.T).reshape(len(q), a.images, P).max(2)
    ref_exact = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    rng = np.random.default_rng(0)
    train = x[rng.choice(len(x), min(len(x), 100 * a.nlist + 65536), replace=False)]
    pq = faiss.IndexPQ(a.dim, a.m, 8, faiss.METRIC_INNER_PRODUCT)
    pq.train(train)
    pq.add(x)
    D, I = pq.search(q, 40 * k)
    ref_adc = group_topk(D, I, P, k)
    print(f"exhaustive 8-bit ADC vs exact: recall@10 {recall(ref_adc, ref_exact):.3f}")
    for by_res in (False, True):
        coarse = faiss.IndexFlatL2(a.dim)
        ivf = faiss.IndexIVFPQ(coarse, a.dim, a.nlist, a.m, 8, faiss.METRIC_INNER_PRODUCT)
        ivf.by_residual = by_res
        t = time.time()
        ivf.train(train)
        ivf.add(x)
        tb = time.time() - t
        for nprobe in (1, 4, 8, 16, 32):
            ivf.nprobe = nprobe
            D, I = ivf.search(q, 40 * k)
            f = group_topk(D, I, P, k)
            print(f"by_residual={by_res} nlist={a.nlist} nprobe={nprobe:3d}: recall@10 vs exact "
                  f"{recall(f, ref_exact):.3f}  vs exhaustive ADC {recall(f, ref_adc):.3f}  (build {tb:.1f}s)")


if __name__ == "__main__":
    main()

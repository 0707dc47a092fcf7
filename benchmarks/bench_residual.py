"""Residual codebooks (ResidualQuantizer) against faiss's ResidualQuantizer and our own PQ at
the same bytes: training and encoding time, reconstruction error, the per-query table, and
search latency through PatchIndex (the scan is shared; only the table differs).

    python benchmarks/bench_residual.py --vectors /tmp/q14/emb/pypatch-synth-large-s0-L3s-crop.npz

``--vectors``: an ``.npz`` of patch descriptors (bench_retrieval's embedding cache: every array
with 2 dims and the model's width is stacked), whitened to ``--dim`` axes like ImageIndex does;
without it, clustered synthetic unit vectors. Every number is printed with the peer's beside it
and written to benchmarks/results/residual-*.jsonl.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))

from common import JsonlWriter, time_calls  # noqa: E402


def load_vectors(path: str | None, n: int, dim: int, seed: int) -> np.ndarray:
    from pypatch.index.transform import PCATransform

    rng = np.random.default_rng(seed)
    if path is None:
        c = rng.standard_normal((200, dim))
        x = c[rng.integers(0, 200, n)] + 0.7 * rng.standard_normal((n, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    with np.load(path, allow_pickle=True) as z:
        arrays = [z[k] for k in z.files if z[k].ndim == 2 and z[k].dtype.kind == "f"]
    width = max(a.shape[1] for a in arrays)
    x = np.concatenate([a for a in arrays if a.shape[1] == width]).astype(np.float32)
    x = x[np.sort(rng.choice(len(x), min(n, len(x)), replace=False))]
    return PCATransform.fit(x, dim, -0.5).apply(x)  # ImageIndex's stored space


def main(argv=None) -> int:
    import faiss

    from pypatch import PatchIndex, ProductQuantizer, ResidualQuantizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vectors", default=None)
    ap.add_argument("--n", type=int, default=39000, help="vectors (train and encode)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--iters", type=int, default=25)  # ImageIndex's
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=100_000, help="images of 39 patches searched")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    out = JsonlWriter(args.out, "residual")
    x = load_vectors(args.vectors, args.n, args.dim, 0)
    d, m = x.shape[1], args.m
    print(f"{len(x)} x {d} vectors, {m} x 8 bits, {args.iters} iterations, {args.threads} threads")

    def fit(name, make):
        t0 = time.perf_counter()
        q = make()
        t1 = time.perf_counter()
        codes = q[1](x)
        t2 = time.perf_counter()
        decoded = q[2](codes)
        mse = float(((x - decoded) ** 2).sum(1).mean())
        row = dict(name=name, train_s=t1 - t0, encode_s=t2 - t1, mse=mse)
        out.write(row)
        return row, q

    ours_rq = ResidualQuantizer(d, m)
    rq_row, _ = fit("ours-rq", lambda: (ours_rq.train(x, iters=args.iters, num_threads=args.threads),
                                        lambda v: ours_rq.encode(v, num_threads=args.threads),
                                        ours_rq.decode))
    peer = faiss.ResidualQuantizer(d, m, 8)
    peer.max_beam_size, peer.cp.niter = 1, args.iters
    faiss_row, _ = fit("faiss-rq", lambda: (peer.train(x), peer.compute_codes, peer.decode))
    ours_pq = ProductQuantizer(d, m)
    pq_row, _ = fit("ours-pq", lambda: (ours_pq.train(x, iters=25, num_threads=args.threads),
                                        lambda v: ours_pq.encode(v, num_threads=args.threads),
                                        ours_pq.decode))
    print(f"{'':10s} {'train s':>9s} {'encode s':>9s} {'mse':>8s}")
    for r in (rq_row, faiss_row, pq_row):
        print(f"{r['name']:10s} {r['train_s']:9.1f} {r['encode_s']:9.2f} {r['mse']:8.4f}")
    ratio = {k: rq_row[k] / faiss_row[k] for k in ("train_s", "encode_s", "mse")}
    print(f"ours-rq / faiss-rq: train {ratio['train_s']:.2f}x, encode {ratio['encode_s']:.2f}x, "
          f"mse {ratio['mse']:.3f}x; mse vs ours-pq {rq_row['mse'] / pq_row['mse']:.3f}x")

    # the per-query table: ours (blocked kernel) against numpy's BLAS (GEMV, GEMM)
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((256, d)).astype(np.float32)
    flat_cb = ours_rq.centroids.reshape(-1, d)
    one = [(queries[i],) for i in range(64)]
    t_ours1 = time_calls(ours_rq.compute_lut, one)
    t_ours1t = time_calls(lambda v: ours_rq.compute_luts(v[None], num_threads=args.threads), one)
    t_np1 = time_calls(lambda v: flat_cb @ v, one)
    t_pq1 = time_calls(ours_pq.compute_lut, one)
    t_ours = time_calls(lambda v: ours_rq.compute_luts(v, num_threads=args.threads),
                        [(queries,)] * 5)
    t_np = time_calls(lambda v: v @ flat_cb.T, [(queries,)] * 5)
    print(f"table, one query: ours-rq {t_ours1.p50 * 1e3:.3f} ms (1 thread), "
          f"{t_ours1t.p50 * 1e3:.3f} ms ({args.threads} threads), "
          f"numpy GEMV {t_np1.p50 * 1e3:.3f} ms ({t_ours1t.p50 / t_np1.p50:.2f}x), "
          f"ours-pq {t_pq1.p50 * 1e3:.3f} ms")
    print(f"tables, 256 queries: ours-rq {t_ours.p50 * 1e3:.1f} ms, "
          f"numpy GEMM {t_np.p50 * 1e3:.1f} ms ({t_ours.p50 / t_np.p50:.2f}x)")
    out.write(dict(name="tables", ours_one_ms=t_ours1.p50 * 1e3,
                   ours_one_threads_ms=t_ours1t.p50 * 1e3, numpy_one_ms=t_np1.p50 * 1e3,
                   pq_one_ms=t_pq1.p50 * 1e3, ours_256_ms=t_ours.p50 * 1e3,
                   numpy_256_ms=t_np.p50 * 1e3))

    # search: the same codes layout and scan, so RQ - PQ latency is the table's cost
    per = 39
    rows = args.images * per
    reps = -(-rows // len(x))
    for name, quant in (("rq", ours_rq), ("pq", ours_pq)):
        ix = PatchIndex(d, quant.copy())
        codes = np.tile(quant.encode(x, num_threads=args.threads), (reps, 1))[:rows]
        ix.add_codes(codes, patches_per_image=per)
        t1 = time_calls(lambda v: ix.search(v[None], k=10, num_threads=1), one)
        tn = time_calls(lambda v: ix.search(v, k=10, num_threads=args.threads), [(queries,)] * 3)
        print(f"search {args.images} images x {per} patches, {name}: one query, 1 thread "
              f"{t1.p50 * 1e3:.2f} ms; 256 queries, {args.threads} threads {tn.p50 * 1e3:.0f} ms")
        out.write(dict(name=f"search-{name}", images=args.images, one_ms=t1.p50 * 1e3,
                       batch256_ms=tn.p50 * 1e3))
    print("->", out.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Exact re-rank from a second store (issue 11 item 3): what ``search(rerank=, rerank_k=)`` buys.

    python benchmarks/rerank_store.py                       # 100k images x 30 patches, D 256
    python benchmarks/rerank_store.py --images 20000        # quicker

Data: ``bench_search.World`` (clustered, L2-normalised patches), generated block by block.
Indexes (built once, cached in --cache-dir with the exact ranking of the eval queries):
  exh-8      PatchIndex over ProductQuantizer(256, 32, nbits=8), exhaustive (exact 8-bit ADC)
  ivf-4      PatchIndex(..., nlist=N) over ProductQuantizer(256, 32, nbits=4), nprobe p
  f16        PatchIndex(256, flat_dtype="float16"): the exact second store (also loaded mmap'd)
Engines: ivf-4 alone; ivf-4 + rerank by f16 (in memory and mmap'd) and by exh-8, rerank_k 100.
Recall@10 of images against the exact float ranking (per-image max of q.x over float32
vectors) and against exh-8's ranking; latency per query at one thread, one query at a time
(median over the latency queries) and as a batch of 64 (per query).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

import bench_search
import pypatch


def recall(got, ref, k):
    return float(np.mean([len(set(g[:k]) & set(r[:k])) / k for g, r in zip(got, ref)]))


def build(args, log):
    key = hashlib.sha1(json.dumps([vars(args)[n] for n in ("images", "patches", "dim", "m", "nlist",
                                                           "seed", "eval_queries")]).encode()).hexdigest()[:12]
    d = Path(args.cache_dir) / key
    files = {n: d / f"{n}.ptch" for n in ("exh8", "ivf4", "f16")}
    world = bench_search.World(args.dim, args.patches, args.seed)
    sample = np.concatenate([x for _, x in world.blocks(min(args.images, -(-65536 // args.patches)))])[:65536]
    q_eval = world.queries(sample, args.eval_queries, 1)
    q_lat = world.queries(sample, 64, 2)
    if all(f.exists() for f in files.values()) and (d / "exact.npy").exists():
        return world, q_eval, q_lat, files, np.load(d / "exact.npy")
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    exh8 = pypatch.PatchIndex(args.dim, pypatch.ProductQuantizer(args.dim, args.m, nbits=8))
    ivf4 = pypatch.PatchIndex(args.dim, pypatch.ProductQuantizer(args.dim, args.m, nbits=4), nlist=args.nlist)
    f16 = pypatch.PatchIndex(args.dim, flat_dtype="float16")
    exh8.train(sample, iters=10)
    ivf4.train(sample, iters=10)
    log(f"trained in {time.perf_counter() - t0:.0f} s")
    exact = np.full((len(q_eval), args.images), -np.inf, np.float32)
    for b, x in world.blocks(args.images):
        i0 = b * bench_search.BLOCK
        n = x.shape[0] // args.patches
        for ix in (exh8, ivf4, f16):
            ix.add(x, patches_per_image=args.patches)
        exact[:, i0:i0 + n] = (q_eval @ x.T).reshape(len(q_eval), n, args.patches).max(-1)
        log(f"  block {b}: {i0 + n} images, {time.perf_counter() - t0:.0f} s")
    for n, ix in (("exh8", exh8), ("ivf4", ivf4), ("f16", f16)):
        ix.save(files[n])
    np.save(d / "exact.npy", exact)
    log(f"built in {time.perf_counter() - t0:.0f} s")
    return world, q_eval, q_lat, files, exact


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--patches", type=int, default=30)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--rerank-k", type=int, default=100)
    ap.add_argument("--eval-queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="/tmp/pypatch_rerank_bench")
    args = ap.parse_args()
    log = lambda s: print(s, flush=True)  # noqa: E731
    _, q_eval, q_lat, files, exact = build(args, log)
    k = 10
    ref_exact = np.array([np.lexsort((np.arange(len(r)), -r))[:k] for r in exact])
    exh8 = pypatch.PatchIndex.load(files["exh8"], mmap=False)
    ivf4 = pypatch.PatchIndex.load(files["ivf4"], mmap=False)
    f16 = pypatch.PatchIndex.load(files["f16"], mmap=False)
    f16_mm = pypatch.PatchIndex.load(files["f16"], mmap=True)
    ref8 = exh8.search(q_eval, k=k, num_threads=1)[1]

    def timed(fn):
        fn(q_lat[:4])  # warm (and, for the mapped store, page in what these touch)
        one = []
        for i in range(len(q_lat)):
            t = time.perf_counter()
            fn(q_lat[i:i + 1])
            one.append(time.perf_counter() - t)
        t = time.perf_counter()
        fn(q_lat)
        batch = (time.perf_counter() - t) / len(q_lat)
        return 1e3 * float(np.median(one)), 1e3 * batch

    rows = []
    engines = [("exh-8", lambda q: exh8.search(q, k=k, num_threads=1))]
    for p in args.nprobe:
        engines.append((f"ivf-4 nprobe {p}", lambda q, p=p: ivf4.search(q, k=k, num_threads=1, nprobe=p)))
        for name, st in (("f16", f16), ("f16 mmap", f16_mm), ("exh-8", exh8)):
            engines.append((f"ivf-4 nprobe {p} + rerank {name} (k'={args.rerank_k})",
                            lambda q, p=p, st=st: ivf4.search(q, k=k, num_threads=1, nprobe=p, rerank=st,
                                                              rerank_k=args.rerank_k)))
    for name, fn in engines:
        got = fn(q_eval)[1]
        one, batch = timed(fn)
        rows.append((name, recall(got, ref_exact, k), recall(got, ref8, k), one, batch))
        log(f"{name:45s} recall@10 exact {rows[-1][1]:.3f}  vs exh-8 {rows[-1][2]:.3f}  "
            f"1 query {one:7.2f} ms  batch 64 {batch:6.2f} ms/q")
    print(f"\n{args.images} images x {args.patches} patches, D {args.dim}, m {args.m}, nlist {args.nlist}, "
          f"1 thread\n")
    print("| engine | recall@10 vs exact | recall@10 vs exh-8 | ms/query (1 query) | ms/query (batch 64) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.2f} | {r[4]:.2f} |")


if __name__ == "__main__":
    main()

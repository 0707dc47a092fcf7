"""Quality defaults across collection sizes (issue 14, item 1): mAP / mAP on objects < 10 % of
flat and PQ32 stores with and without the whitened PCA, on benchmarks of several sizes and seeds.

    python benchmarks/bench_quality_defaults.py --bench small:0 small:1 large:0@300 large:1@300 large:0 large:1

``NAME:SEED`` is ``pypatch make-benchmark --size NAME --seed SEED`` (made under ``--root`` if
missing); ``@N`` evaluates a seeded random N images of its database (queries without a positive
left in it are dropped). Embeddings come from bench_retrieval's ``.npz`` cache (``--cache``), so
each benchmark is embedded once. Rows are appended as JSON lines to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))  # a checkout as fallback: an installed pypatch (with _core) wins

CONFIGS = ("patchify-L3-flat-nopca", "patchify-L3-flat-pcaw256", "patchify-L3-flat-pcah256",
           "patchify-L3-flat-pcaw512", "patchify-L3-pq32", "patchify-L3-pq32-nopca")


def subset(bench, n: int, seed: int = 0):
    """The benchmark restricted to a seeded random ``n`` of its database images."""
    from pypatch.evaluation.datasets.benchmark import Benchmark

    if n >= len(bench.database):
        return bench
    rng = np.random.default_rng(seed)
    keep = {bench.database[i].id for i in rng.choice(len(bench.database), n, replace=False)}
    pos = {q: [p for p in pl if p.id in keep] for q, pl in bench.positives.items()}
    pos = {q: pl for q, pl in pos.items() if pl}
    return Benchmark(f"{bench.name}-n{n}", bench.root, [q for q in bench.queries if q.id in pos],
                     [d for d in bench.database if d.id in keep], pos,
                     {q: [j for j in jl if j in keep] for q, jl in bench.junk.items() if q in pos},
                     dict(bench.meta))


def main(argv=None) -> int:
    from bench_retrieval import embed_database, fill_cache, small_object_map

    from pypatch.evaluation import rankers as er
    from pypatch.evaluation.benchgen import make_benchmark
    from pypatch.evaluation.datasets import load
    from pypatch.evaluation.harness import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", nargs="+", default=["small:0", "small:1", "large:0@300",
                                                    "large:1@300", "large:0", "large:1"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--root", default="/tmp/pypatch-quality")
    ap.add_argument("--cache", default=str(HERE / "results" / "embeddings"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--regions", default="L3",
                    help="the grid the database is embedded at (L3s serves the L3 configs too: "
                         "a plain pyramid is the first cells of its shifted grid)")
    ap.add_argument("--rerank-store", default=None,
                    help="the PQ configurations' ImageIndex.build(rerank_store=...): flat16, "
                         "pq8-d4, ...")
    ap.add_argument("--out", default=str(HERE / "results" / "quality_defaults.jsonl"))
    args = ap.parse_args(argv)
    caching = er.shared_embedder(None, args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for spec in args.bench:
        name, _, n = spec.partition("@")
        size, seed = name.split(":")
        folder = Path(args.root) / f"{size}-s{seed}"
        if not (folder / "benchmark.json").exists():
            make_benchmark(folder, size=size, seed=int(seed))
        bench = load(folder / "benchmark.json")
        table = embed_database(bench, args.regions, "crop", Path(args.cache), caching._e)
        fill_cache(caching, table, args.regions, "crop")
        b = subset(bench, int(n)) if n else bench
        for cfg in args.configs:
            t0 = time.time()
            extra = ({"rerank_store": args.rerank_store}
                     if args.rerank_store and er.parse_config(cfg).get("store") == "pq" else {})
            index = er.build_for_benchmark(b, cfg, num_threads=args.threads, **extra)
            search = er.split_second_stage(cfg)[1]  # -qe etc.: search-time options
            r = evaluate(b, {cfg: er.IndexRanker(index, search_kwargs=search)},
                         k=100).configs[cfg]
            row = dict(bench=bench.name, images=len(b.database), queries=len(b.queries),
                       config=cfg, rerank_store=extra.get("rerank_store"),
                       map=r.summary["map"], map_small=small_object_map(b, r),
                       transform=index.info()["transform"], seconds=time.time() - t0)
            with open(args.out, "a") as f:
                f.write(json.dumps(row, default=str) + "\n")
            label = cfg + (f" +{extra['rerank_store']}" if extra else "")
            print(f"{bench.name} n={row['images']} {label:28s} mAP {100 * row['map']:6.2f}  "
                  f"<10% {100 * row['map_small']:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""mAP of exhaustive PQ32, forced inverted files and IVF-4 + an exact re-rank store, through
``ImageIndex`` on the real-photo offline benchmarks (issue 11 items 3-4; benchmarks/README.md,
"Through ImageIndex, on real-photo descriptors").

    python benchmarks/bench_rerank_quality.py --bench /tmp/q14/bench-large-s0 /tmp/q14/bench-large-s1 \\
        --cache /tmp/q14/emb

Per benchmark: two real builds (``ImageIndex.build``, default model, L3 per-crop, whitened PCA-256
+ OPQ, PQ m=32): 8-bit codes, and 4-bit codes with ``rerank_store="flat16"``. The inverted-file
variants reuse a build's trained pre-transform and PQ codebooks (what ``build(nlist=N)`` trains
on the same sample with the same seed: tests/index/test_image_index_ivf.py checks the codebooks
are equal), train their coarse quantizer on the same stored sample as ``build`` would, and take
the images through ``ImageIndex.add_embedded`` (so both stores are filled by the product's code
path). Every row is ``ImageIndex.search`` (``nprobe=``, ``rerank_k=``) scored by
``pypatch.evaluation.harness.evaluate`` (revisitop mAP over the top 100).
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


def with_ivf(base, table: dict, nlist: int, rerank_store, seed: int = 0):
    """``base`` (an exhaustive PQ ImageIndex) as an inverted file of ``nlist`` lists (same
    transform and codebooks), optionally with a re-rank store, filled with ``table``'s images."""
    from pypatch.index.patch_index import PatchIndex
    from pypatch.index.pq import ProductQuantizer
    from pypatch.index.rerank_store import new_rerank_index, rerank_spec

    ix = base.codebooks()
    pq = base.patch_index.pq
    dim = int(base.patch_index.dim)
    native = PatchIndex(dim, pq=ProductQuantizer.from_centroids(pq.centroids), nlist=nlist)
    sample = np.concatenate([base.to_stored(v) for _, (_, _, v) in table.items()])
    native.train(np.ascontiguousarray(sample), seed=seed)  # the coarse quantizer only
    store = dict(ix._meta["store"], nlist=nlist, nprobe=16)
    native.nprobe = 16
    ix._index = native
    ix._meta = dict(ix._meta, store=store)
    ix._meta.pop("rerank", None)
    ix._rerank = None
    if rerank_store is not None:
        ix._meta["rerank"] = rerank_spec(rerank_store, store)
        ix._rerank = new_rerank_index(dim, ix._meta["rerank"], sample, seed=seed)
    return ix


def fill(ix, bench, table: dict) -> None:
    ix.add_embedded((d.id, str(d.image), table[str(d.image)][2],
                     table[str(d.image)][:2]) for d in bench.database)


def main(argv=None) -> int:
    from bench_retrieval import embed_database, fill_cache, small_object_map

    from pypatch.evaluation import rankers as er
    from pypatch.evaluation.datasets import load
    from pypatch.evaluation.harness import evaluate
    from pypatch.index.image_index import ImageIndex

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", nargs="+", required=True, help="benchmark folders")
    ap.add_argument("--cache", required=True, help="bench_retrieval embeddings cache folder")
    ap.add_argument("--nlist", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--nprobe", nargs="+", type=int, default=[4, 8, 16])
    ap.add_argument("--out", default=str(HERE / "results" / "rerank_quality.jsonl"))
    args = ap.parse_args(argv)
    caching = er.shared_embedder(None, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    for folder in args.bench:
        bench = load(Path(folder) / "benchmark.json")
        table = embed_database(bench, "L3", "crop", Path(args.cache), caching._e)
        fill_cache(caching, table, "L3", "crop")
        source = [(d.id, str(d.image)) for d in bench.database]

        def run(label, index, **search):
            t0 = time.time()
            r = evaluate(bench, {label: er.IndexRanker(index, search_kwargs=search)},
                         k=100).configs[label]
            info = index.info()
            row = dict(bench=bench.name, images=len(bench.database), queries=len(bench.queries),
                       config=label, search=search, map=r.summary["map"],
                       map_small=small_object_map(bench, r),
                       bytes_per_patch=info["bytes_per_patch"],
                       rerank_bytes_per_patch=(info["rerank_store"] or {}).get("bytes_per_patch"),
                       eval_seconds_loaded_machine=round(time.time() - t0, 1))
            with open(args.out, "a") as f:
                f.write(json.dumps(row, default=str) + "\n")
            print(f"{bench.name} {label:40s} {json.dumps(search):32s} mAP {100 * row['map']:6.2f}  "
                  f"<10% {100 * row['map_small']:6.2f}", flush=True)

        t0 = time.time()
        exh8 = ImageIndex.build(source, embedder=caching, store="pq", pq_m=32, pq_nbits=8,
                                progress=False, num_threads=1)
        print(f"  build pq32x8: {time.time() - t0:.0f} s (loaded machine)", flush=True)
        run("exhaustive pq32x8 (default)", exh8)
        t0 = time.time()
        exh4 = ImageIndex.build(source, embedder=caching, store="pq", pq_m=32, pq_nbits=4,
                                rerank_store="flat16", progress=False, num_threads=1)
        print(f"  build pq32x4 + flat16: {time.time() - t0:.0f} s (loaded machine)", flush=True)
        run("exhaustive pq32x4", exh4, rerank_k=0)
        run("exhaustive pq32x4 + flat16", exh4, rerank_k=100)
        run("exhaustive pq32x4 + flat16", exh4)  # default rerank_k: max(4k, 100) = 400
        run("exhaustive pq32x4 + flat16 (all)", exh4, rerank_k=len(bench.database))
        for nlist in args.nlist:
            ivf8 = with_ivf(exh8, table, nlist, None)
            fill(ivf8, bench, table)
            for nprobe in args.nprobe:
                run(f"ivf{nlist} pq32x8", ivf8, nprobe=nprobe)
            ivf8r = with_ivf(exh8, table, nlist, "flat16")
            fill(ivf8r, bench, table)
            for nprobe in args.nprobe:
                run(f"ivf{nlist} pq32x8 + flat16", ivf8r, nprobe=nprobe)
            ivf4 = with_ivf(exh4, table, nlist, "flat16")
            fill(ivf4, bench, table)
            for nprobe in args.nprobe:
                run(f"ivf{nlist} pq32x4", ivf4, nprobe=nprobe, rerank_k=0)
                run(f"ivf{nlist} pq32x4 + flat16", ivf4, nprobe=nprobe, rerank_k=100)
                run(f"ivf{nlist} pq32x4 + flat16", ivf4, nprobe=nprobe)
            ivf4p = with_ivf(exh4, table, nlist, "pq8")
            fill(ivf4p, bench, table)
            for nprobe in args.nprobe:
                run(f"ivf{nlist} pq32x4 + pq8", ivf4p, nprobe=nprobe)
    return 0


if __name__ == "__main__":
    sys.exit(main())

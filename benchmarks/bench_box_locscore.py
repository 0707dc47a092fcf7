"""Issue 14, item 3 on the default grid: LocScore of the default index's ranking with the
winning cells, with box-map refinement (``box_maps=True``) and with the live refinement (one
512 px backbone pass per hit), against the grid oracle of the same ranking (every positive's
box replaced by the best-overlapping cell of the index's grid), and the cost per refined hit.

    python benchmarks/bench_box_locscore.py --bench small:0 small:1 [--regions L3s] [--no-live]

``NAME:SEED`` as in bench_quality_defaults.py. The index is built with ``box_maps=True`` (the
maps come from the same backbone runs as the patches), so nothing is cached between runs.
Rows are appended as JSON lines to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))  # a checkout as fallback: an installed pypatch (with _core) wins

REFINE_K = 100  # as pypatch eval: LocScore counts positives at any rank


def refine_cost_ms(index, queries, k: int = 10) -> float:
    """Milliseconds per refined hit: search(refine=True) minus the same search without, top k,
    on the index's first refined searches (the live refiner's feature-map cache starts cold, as
    in a server that has not seen these images yet)."""
    def run(refine):
        t0 = time.perf_counter()
        for q in queries:
            index.search(str(q.image), box=q.box, k=k, refine=refine)
        return time.perf_counter() - t0

    plain = min(run(False) for _ in range(2))
    return 1000 * (run(True) - plain) / (k * len(queries))


def main(argv=None) -> int:
    from bench_retrieval import grid_oracle_locscore

    from pypatch import ImageIndex
    from pypatch.evaluation.benchgen import make_benchmark
    from pypatch.evaluation.datasets import load
    from pypatch.evaluation.harness import evaluate
    from pypatch.evaluation.rankers import IndexRanker
    from pypatch.extract.embedder import Embedder
    from pypatch.extract.grid import DEFAULT_REGIONS
    from pypatch.index.image_index import box_maps_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", nargs="+", default=["small:0", "small:1"])
    ap.add_argument("--regions", default=DEFAULT_REGIONS)
    ap.add_argument("--root", default="/tmp/pypatch-quality")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-live", action="store_true", help="skip the live 512 px refinement")
    ap.add_argument("--out", default=str(HERE / "results" / "box_locscore.jsonl"))
    args = ap.parse_args(argv)
    embedder = Embedder(None, num_threads=args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for spec in args.bench:
        size, seed = spec.split(":")
        folder = Path(args.root) / f"{size}-s{seed}"
        if not (folder / "benchmark.json").exists():
            make_benchmark(folder, size=size, seed=int(seed))
        bench = load(folder / "benchmark.json")
        t0 = time.perf_counter()
        index = ImageIndex.build([(d.id, str(d.image)) for d in bench.database], regions=args.regions,
                                 embedder=embedder, box_maps=True, progress=False)
        build_s = time.perf_counter() - t0
        rankers = {"cells": IndexRanker(index),
                   "box maps": IndexRanker(index, search_kwargs=dict(refine=True, refine_k=REFINE_K))}
        live = None
        if not args.no_live:  # the same index without its maps file refines with the backbone
            path = Path(tempfile.mkdtemp()) / "live.ptch"
            index.save(path)
            Path(box_maps_path(path)).unlink()
            live = ImageIndex.load(path)
            live.set_embedder(embedder)
            rankers["live 512 px"] = IndexRanker(live, search_kwargs=dict(refine=True, refine_k=REFINE_K))
        res = evaluate(bench, rankers, k=100)
        oracle = grid_oracle_locscore(bench, res.configs["cells"], index)
        costs = {"box maps": refine_cost_ms(index, bench.queries)}
        if live is not None:  # a fresh load: its refiner has cached no feature map yet
            cold = ImageIndex.load(path)
            cold.set_embedder(embedder)
            costs["live 512 px"] = refine_cost_ms(cold, bench.queries)
        for name, cfg in res.configs.items():
            s = cfg.summary
            row = dict(bench=bench.name, regions=args.regions, boxes=name, map=s["map"],
                       locscore=s["locscore"], grid_oracle=oracle, ratio=s["locscore"] / oracle,
                       refine_ms_per_hit=costs.get(name), build_s=build_s,
                       maps_bytes_per_image=index._box_maps.nbytes_per_image())
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            cost = "" if row["refine_ms_per_hit"] is None else f"  {row['refine_ms_per_hit']:.2f} ms/hit"
            print(f"{bench.name} {args.regions} {name:12s} mAP {100 * s['map']:6.2f}  LocScore "
                  f"{100 * s['locscore']:6.2f}  grid oracle {100 * oracle:6.2f}  "
                  f"x{row['ratio']:.2f}{cost}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

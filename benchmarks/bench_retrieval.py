"""Retrieval-quality ablations (issue 5, item 6) on the offline benchmark, through the eval harness.

    python benchmarks/bench_retrieval.py                     # LARGE benchmark, full sweep
    python benchmarks/bench_retrieval.py --size small        # smoke run (about a minute)
    python benchmarks/bench_retrieval.py --crop-regions L3   # what gets embedded per-crop

Embedding is the expensive part (L3 per-crop = 30 backbone inputs per image on 2 shared cores),
so every (regions, mode) is embedded ONCE into an ``.npz`` cache (``--cache``) and reused for every
store configuration: the cached vectors are put into ``pypatch.evaluation.rankers``' per-process embedding cache,
which ``ImageIndex.build`` then reads. The pyramid is nested (L3's first 1/5/14 cells ARE the
L0/L1/L2 grids, same boxes, and a per-crop cell does not depend on the other cells), so L0..L2
per-crop are sliced out of the L3 per-crop embedding (by ``CachingEmbedder``) instead of being
recomputed. Single-pass cells depend only on their box too (pooled from one feature map), so
the same slicing holds.

Each configuration is an ImageIndex built by ``pypatch.evaluation.rankers`` (grammar
``patchify-<regions>-<store>[-global][-pca...][-sp|-ms][-qe|-mp][-refine]``) evaluated by
``pypatch.evaluation.evaluate``; the table goes to stdout and ``--out`` (markdown + JSON lines),
and the issue's targets are checked as PASS/FAIL lines.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # a checkout as fallback: an installed pypatch (with _core) wins


# ----------------------------------------------------------------------------- embedding cache
def _cache_path(cache: Path, bench_name: str, regions: str, mode: str) -> Path:
    return cache / f"{bench_name}-{regions}-{mode}.npz"


def embed_database(bench, regions: str, mode: str, cache: Path, embedder) -> dict:
    """{db image path: (width, height, vectors (P, D))} for ``regions``/``mode``, from the
    ``.npz`` cache or computed (and saved) once."""
    path = _cache_path(cache, bench.name, regions, mode)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:  # each z[key] reads the array again
            off, vectors = z["offsets"], z["vectors"]
            paths, widths, heights = z["paths"].tolist(), z["widths"], z["heights"]
        return {p: (int(w), int(h), vectors[off[i]:off[i + 1]])
                for i, (p, w, h) in enumerate(zip(paths, widths, heights))}
    paths = [str(d.image) for d in bench.database]
    t0 = time.perf_counter()
    out, vecs = {}, []
    results = embedder.embed_many(paths, regions=regions, mode=mode, on_error="raise",
                                  show_progress=sys.stderr.isatty())
    for emb in results:
        out[paths[emb.index]] = (int(emb.width), int(emb.height), emb.vectors)
        vecs.append(emb.vectors)
    seconds = time.perf_counter() - t0
    print(f"embedded {len(out)} images ({regions}, {mode}) in {seconds:.0f} s", flush=True)
    counts = [len(v) for v in vecs]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, paths=np.array(list(out)), widths=np.array([v[0] for v in out.values()]),
             heights=np.array([v[1] for v in out.values()]), offsets=offsets,
             vectors=np.concatenate(vecs).astype(np.float32), seconds=seconds)
    os.replace(tmp, path)
    return out


def fill_cache(caching, table: dict, regions: str, mode: str) -> None:
    """Put a cached embedding into pypatch.evaluation.rankers' CachingEmbedder (which serves the coarser
    pyramid levels from the first cells of L3 by itself)."""
    from pypatch.extract.embeddings import PatchEmbedding
    from pypatch.extract.grid import parse_regions

    grid = parse_regions(regions)
    for i, (p, (w, h, v)) in enumerate(table.items()):
        boxes = grid.boxes(w, h)
        if len(boxes) != len(v):
            raise RuntimeError(f"cache for {p}: {len(v)} vectors for {len(boxes)} cells")
        caching.store(p, grid, mode, PatchEmbedding(i, p, w, h, v, boxes, grid.levels_of(w, h)))


# ----------------------------------------------------------------------------- metrics extras
SMALL = 0.10  # the "objects under 10 % of the image"


def small_object_map(bench, cfg) -> float:
    """mAP over positives smaller than SMALL (others treated as junk), ILIAS per-scale style."""
    from pypatch.evaluation.harness import _query_metrics

    aps = []
    for row in cfg.per_query:
        plist = bench.positives.get(row["query"], [])
        inside = [p.id for p in plist if p.meta.get("area_frac", 1.0) < SMALL]
        if not inside:
            continue
        junk = set(bench.junk_ids(row["query"])) | ({p.id for p in plist} - set(inside))
        hits = [tuple(h) for h in row["hits"]]
        aps.append(_query_metrics(bench, hits, inside, junk, None, len(hits) or 1, (1,))["ap"])
    return float(np.mean(aps)) if aps else float("nan")


def locscore_with_boxes(bench, cfg, box_of) -> float:
    """Mean LocScore of ``cfg``'s ranking with every positive hit's box replaced by
    ``box_of(query_id, hit_id, returned_box, true_boxes)`` (other hits do not count)."""
    from pypatch.evaluation.metrics import locscore

    vals = []
    for row in cfg.per_query:
        plist = bench.positives.get(row["query"], [])
        if not plist:
            continue
        gt = {p.id: p.boxes for p in plist}
        ids, boxes = [], []
        for hid, _, box in row["hits"]:
            ids.append(hid)
            boxes.append(box_of(row["query"], hid, box, gt[hid]) if hid in gt else box)
        vals.append(locscore(ids, boxes, gt, bench.junk_ids(row["query"])))
    return float(np.nanmean(vals)) if vals else float("nan")


def grid_oracle_locscore(bench, cfg, index) -> float:
    """LocScore of the same ranking with every positive's box replaced by the grid cell (of
    the index's grid, all levels) that best overlaps its true boxes: the best a grid can do."""
    from pypatch.evaluation.metrics import iou

    def best_cell(query, hid, box, truth):
        return max(index.image_info(hid)["cells"], key=lambda c: max(iou(c, g) for g in truth))

    return locscore_with_boxes(bench, cfg, best_cell)


# ----------------------------------------------------------------------------- the sweep
# the mode comparison's stores: raw, the same PCA for every mode (half / full whitening), and the
# default PQ32 (auto: full whitening per-crop, half for the single-pass modes; then OPQ)
MODE_STORES = ("flat-nopca", "flat-pcah256", "flat-pcaw256", "pq32")
def plan(have_crop: bool, rmac_crop: bool = False) -> list:
    """(section, config name) rows. Regions and store sweeps run per-crop when the L3 per-crop
    embedding exists, single-pass otherwise; ``rmac_crop`` (``--crop-regions L3 rmac``) adds
    R-MAC per-crop rows (flat, PQ32, PQ64) next to L3's."""
    sp = "" if have_crop else "-sp"
    rows = [("regions", "global-sp"), ("regions", "patchify-L1-flat-sp"),
            ("regions", "patchify-L2-flat-sp"), ("regions", "patchify-L3-flat-sp"),
            ("regions", "patchify-rmac-flat-sp")]
    if have_crop:
        rows += [("regions", "global"), ("regions", "patchify-L1-flat"),
                 ("regions", "patchify-L2-flat"), ("regions", "patchify-L3-flat")]
    if rmac_crop:
        rows += [("regions", "patchify-rmac-flat"), ("store", "patchify-rmac-pq32"),
                 ("store", "patchify-rmac-pq64")]
    rows += [("store", f"patchify-L3-flat16{sp}")]
    for m in (8, 16, 32, 64):
        rows += [("store", f"patchify-L3-pq{m}{sp}"), ("store", f"patchify-L3-pq{m}-global{sp}")]
    if have_crop:  # per-crop vs single-pass vs multi-scale, each with and without the PCA
        for store in MODE_STORES:
            rows += [("mode", f"patchify-L3-{store}{m}") for m in ("", "-sp", "-ms")]
    for base in (f"patchify-L3-pq32{sp}", f"patchify-L3-flat{sp}"):
        rows += [("rerank", f"{base}-qe"), ("rerank", f"{base}-mp")]
    rows += [("boxes", f"patchify-L3-pq32{sp}-cells"), ("boxes", f"patchify-L3-pq32{sp}-refine"),
             ("boxes", f"patchify-L3-pq32{sp}-mp-refine"), ("boxes", f"patchify-L3-flat{sp}-refine"),
             ("boxes", f"patchify-L3-flat{sp}-qe-refine")]
    return rows


def run(args) -> int:
    from common import machine_info

    from pypatch.evaluation import rankers as er
    from pypatch.evaluation.benchgen import make_benchmark
    from pypatch.evaluation.datasets import load
    from pypatch.errors import InvalidArgumentError
    from pypatch.evaluation.harness import evaluate
    from pypatch.index.refine import SimMapRefiner

    bench_dir = Path(args.benchmark or f"/tmp/pypatch-bench-{args.size}")
    if not (bench_dir / "benchmark.json").exists():
        make_benchmark(bench_dir, size=args.size)
    bench = load(bench_dir / "benchmark.json")
    caching = er.shared_embedder(None, args.threads)
    cache = Path(args.cache)
    for regions, mode in [("L3", "single_pass"), ("rmac", "single_pass"), ("L3", "multi_scale")] + \
            [(r, "crop") for r in args.crop_regions]:
        fill_cache(caching, embed_database(bench, regions, mode, cache, caching._e), regions, mode)
    have_crop = "L3" in args.crop_regions
    refiner = SimMapRefiner(caching, cache_size=len(bench.database) + 1)  # shared by all indexes
    rows = plan(have_crop, "rmac" in args.crop_regions)
    if args.only:
        rows = [r for r in rows if any(s in r[1] for s in args.only)]
    if args.section:
        rows = [r for r in rows if r[0] in args.section]
    indexes: dict = {}
    out_rows = []
    jsonl = Path(args.out) / f"bench_retrieval-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    print(f"{bench}; {len(rows)} configurations", flush=True)
    for section, name in rows:
        base, search_kwargs = er.split_second_stage(name)
        t0 = time.perf_counter()
        if base not in indexes:
            try:
                indexes[base] = er.build_for_benchmark(bench, base, num_threads=args.threads)
            except InvalidArgumentError as exc:  # e.g. too few L0 vectors to train PQ on
                print(f"{section:8s} {name:36s} skipped: {exc}", flush=True)
                continue
            indexes[base]._pypatch_refiner = refiner
        build_s = time.perf_counter() - t0
        ranker = er.IndexRanker(indexes[base], description=name, search_kwargs=search_kwargs)
        cfg = evaluate(bench, {name: ranker}, k=args.k).configs[name]
        s = cfg.summary
        row = {"section": section, "config": name, "map": s["map"], "map_at_k": s["map_at_k"],
               "map_small": small_object_map(bench, cfg), "locscore": s["locscore"],
               "locscore_grid_oracle": grid_oracle_locscore(bench, cfg, indexes[base]),
               "recall@1": s["recall@1"], "ms_per_query": s["ms_per_query"],
               "bytes_per_image": cfg.bytes_per_image, "build_s": build_s,
               "size_breakdown": cfg.size_breakdown, "benchmark": bench.name, "k": args.k}
        out_rows.append(row)
        with open(jsonl, "a") as f:
            f.write(json.dumps({**row, "machine": machine_info()}, default=float) + "\n")
        print(f"{section:8s} {name:36s} mAP {100 * row['map']:6.2f}  <10% {100 * row['map_small']:6.2f}"
              f"  Loc {100 * row['locscore']:6.2f}  oracle {100 * row['locscore_grid_oracle']:6.2f}"
              f"  {row['bytes_per_image']:8.0f} B/img  {row['ms_per_query']:7.1f} ms/q", flush=True)
    if args.pca and have_crop:
        table = embed_database(bench, "L3", "crop", cache, caching._e)
        out_rows += pca_rows(bench, table, args.pca, args.threads, args.k)
    print(markdown(out_rows))
    check_targets(out_rows, have_crop)
    print(f"rows: {jsonl}")
    return 0


def pca_rows(bench, table: dict, dims, threads: int, k: int) -> list:
    """PCA-whitening to ``dim`` (fitted on 20k database patches of the L3 per-crop cache, as PQ
    codebooks are) before a flat / PQ32 / PQ64 store: fewer dimensions per PQ byte."""
    from pypatch.extract.embedder import Embedder
    from pypatch.evaluation.rankers import CachingEmbedder, IndexRanker
    from pypatch.evaluation.harness import evaluate
    from pypatch.index.image_index import ImageIndex
    from pypatch.extract.whitening import PCAWhitening

    sample = np.concatenate([v for _, _, v in table.values()])
    sample = sample[np.random.default_rng(0).choice(len(sample), min(20000, len(sample)),
                                                    replace=False)]
    source = [(d.id, str(d.image)) for d in bench.database]
    rows = []
    for dim in dims:
        w = PCAWhitening.fit(sample, dim=dim)
        caching = CachingEmbedder(Embedder(None, num_threads=threads, whitening=w))
        fill_cache(caching, {p: (a, b, w.apply(v)) for p, (a, b, v) in table.items()}, "L3", "crop")
        for label, kw in (("flat", {"store": "flat"}), ("pq32", {"store": "pq", "pq_m": 32}),
                          ("pq64", {"store": "pq", "pq_m": 64})):
            index = ImageIndex.build(source, embedder=caching, regions="L3", mode="crop",
                                     progress=False, **kw)
            name = f"patchify-L3-pca{dim}-{label}"
            cfg = evaluate(bench, {name: IndexRanker(index)}, k=k).configs[name]
            s = cfg.summary
            rows.append({"section": "pca", "config": name, "map": s["map"], "map_at_k": s["map_at_k"],
                         "map_small": small_object_map(bench, cfg), "locscore": s["locscore"],
                         "locscore_grid_oracle": grid_oracle_locscore(bench, cfg, index),
                         "recall@1": s["recall@1"], "ms_per_query": s["ms_per_query"],
                         "bytes_per_image": cfg.bytes_per_image})
            print(f"pca      {name:36s} mAP {100 * s['map']:6.2f}  <10% "
                  f"{100 * rows[-1]['map_small']:6.2f}  Loc {100 * s['locscore']:6.2f}", flush=True)
    return rows


def markdown(rows: list) -> str:
    lines = [("| section | configuration | mAP | mAP <10% | mAP@k | R@1 | LocScore | grid oracle "
              "| B/image | ms/query |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['section']} | `{r['config']}` | {100 * r['map']:.2f} | "
                     f"{100 * r['map_small']:.2f} | {100 * r['map_at_k']:.2f} | "
                     f"{100 * r['recall@1']:.1f} | {100 * r['locscore']:.2f} | "
                     f"{100 * r['locscore_grid_oracle']:.2f} | {r['bytes_per_image']:.0f} | "
                     f"{r['ms_per_query']:.1f} |")
    return "\n".join(lines)


def check_targets(rows: list, have_crop: bool) -> None:
    by = {r["config"]: r for r in rows}
    sp = "" if have_crop else "-sp"

    def check(label, ok, detail):
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")

    g, p = by.get(f"global{sp}"), by.get(f"patchify-L3-flat{sp}")
    if g and p:
        d = 100 * (p["map_small"] - g["map_small"])
        check("Patchify beats global by >= 10 mAP on objects < 10 %", d >= 10,
              f"L3 {100 * p['map_small']:.2f} vs global {100 * g['map_small']:.2f} ({d:+.2f})")
    f, q = by.get(f"patchify-L3-flat{sp}"), by.get(f"patchify-L3-pq32{sp}")
    if f and q:
        d = 100 * (f["map"] - q["map"])
        check("PQ m=32 within 1.5 mAP of flat", d <= 1.5,
              f"pq32 {100 * q['map']:.2f} vs flat {100 * f['map']:.2f} ({-d:+.2f})")
    for store in MODE_STORES:  # like for like: the same store and PCA
        c = by.get(f"patchify-L3-{store}")
        for mode, label in (("-sp", "single-pass"), ("-ms", "multi-scale single-pass")):
            s = by.get(f"patchify-L3-{store}{mode}")
            if c and s:
                d = 100 * (c["map"] - s["map"])
                check(f"{label} within 2 mAP of per-crop ({store})", d <= 2,
                      f"{100 * s['map']:.2f} vs per-crop {100 * c['map']:.2f} ({-d:+.2f})")
    base, ref = by.get(f"patchify-L3-pq32{sp}"), by.get(f"patchify-L3-pq32{sp}-refine")
    if base and ref:
        check("refined boxes raise LocScore over grid boxes", ref["locscore"] > base["locscore"],
              f"{100 * ref['locscore']:.2f} vs {100 * base['locscore']:.2f}")
        check("refined LocScore above the grid oracle", ref["locscore"] > ref["locscore_grid_oracle"],
              f"{100 * ref['locscore']:.2f} vs oracle {100 * ref['locscore_grid_oracle']:.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="large", choices=("small", "large"))
    ap.add_argument("--benchmark", help="benchmark folder (made with --size if missing)")
    ap.add_argument("--cache", default=str(HERE / "results" / "embeddings"),
                    help="embedding cache folder (.npz per benchmark, regions and mode)")
    ap.add_argument("--crop-regions", nargs="*", default=["L3"],
                    help="regions embedded per-crop (default L3; nothing = single-pass only)")
    ap.add_argument("--only", nargs="*", help="run the configurations containing these strings")
    ap.add_argument("--section", nargs="*", help="run only these sections (regions, store, mode, ...)")
    ap.add_argument("--pca", nargs="*", type=int, default=[256, 512],
                    help="PCA-whitening dimensions tried before flat/PQ stores (L3 per-crop)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--out", default=str(HERE / "results"))
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

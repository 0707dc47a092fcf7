"""Issue 14, item 4: a finer region option for small objects, at the bytes of today's L3 PQ32.

    python benchmarks/bench_small_objects.py embed  --bench DIR [DIR ...] --l3-cache C --cache X
    python benchmarks/bench_small_objects.py evaluate --bench DIR [DIR ...] --l3-cache C --cache X

Today's default grid is the L3 pyramid (30 cells, the finest 16 cover 6.25 % of the image each);
at PQ m=32 that is 30 x 32 = 960 code bytes per image. Two finer options at (about) the same bytes:

* ``L4``: the pyramid one level deeper (1 + 4 + 9 + 16 + 25 = 55 cells, the finest cover 4 %),
  at PQ m=16 (880 B);
* ``L3+shift``: L3 plus 9 cells of the L3 cell size shifted by half a cell in x and y (centred
  on the inner corners of the 4x4 grid, so an object cut by an L3 border is whole in one of
  them): 39 cells at PQ m=24 (936 B).

Per-crop cells do not depend on each other, so only the EXTRA cells are embedded here (25 L4
cells + 9 shifted ones per image, one backbone pass each, cached in ``--cache``); the L3 cells
come from ``bench_retrieval.embed_database``'s cache. ``evaluate`` builds real ImageIndexes
(the default training: whitened PCA-256, + OPQ for PQ) over the union and reports mAP, mAP on
objects under 10 % and under 3 % of the scene, LocScore (winning-cell boxes) and the bytes per
image, next to today's L3 rows.
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
sys.path.insert(0, str(HERE))


def l4_cells(width: int, height: int) -> np.ndarray:
    """The 25 cells of a 5x5 grid, row-major, cut points ``(i * W) // 5`` (PatchGrid's rule)."""
    xs = (np.arange(6) * width) // 5
    ys = (np.arange(6) * height) // 5
    return np.array([(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(5) for c in range(5)], np.int32)


def shifted_cells(width: int, height: int) -> np.ndarray:
    """9 cells of the L3 (4x4) cell size, shifted by half a cell: x from (2i+1)W/8 to (2i+3)W/8."""
    xs = [((2 * i + 1) * width // 8, (2 * i + 3) * width // 8) for i in range(3)]
    ys = [((2 * i + 1) * height // 8, (2 * i + 3) * height // 8) for i in range(3)]
    return np.array([(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs], np.int32)


def extra_cells(width: int, height: int) -> np.ndarray:
    return np.concatenate([l4_cells(width, height), shifted_cells(width, height)])


def _extra_path(cache: Path, name: str) -> Path:
    return cache / f"{name}-extra-crop.npz"


def embed_extra(bench, cache: Path, embedder, check_table: dict | None = None) -> Path:
    """Embed the 34 extra cells of every database image (per-crop) into ``cache``; resumable."""
    from pypatch.extract.imageio import load_image

    path = _extra_path(cache, bench.name)
    if path.exists():
        return path
    part = path.with_suffix(".part.npz")
    done: dict = {}
    if part.exists():
        with np.load(part, allow_pickle=False) as z:
            done = {p: (int(w), int(h), v) for p, w, h, v in zip(z["paths"].tolist(), z["widths"], z["heights"], z["vectors"])}
    paths = [str(d.image) for d in bench.database]
    t0 = time.perf_counter()
    if check_table is not None:  # a custom box is embedded exactly like the same pyramid cell
        from pypatch.extract.grid import PatchGrid

        w, h, v = check_table[paths[0]]
        got, _ = embedder.embed_patches(paths[0], regions=PatchGrid(3).boxes(w, h)[-2:], mode="crop")
        err = float(np.abs(got - v[-2:]).max())
        print(f"check: custom boxes vs cached L3 cells, max abs diff {err:.2e}", flush=True)
        if err > 1e-4:
            raise RuntimeError("custom-box crops differ from the pyramid's")

    def save(target: Path) -> None:
        keys = [p for p in paths if p in done]
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, paths=np.array(keys), widths=np.array([done[p][0] for p in keys]),
                 heights=np.array([done[p][1] for p in keys]),
                 vectors=np.stack([done[p][2] for p in keys]).astype(np.float32))
        os.replace(tmp, target)

    for i, p in enumerate(paths):
        if p in done:
            continue
        img = load_image(p)
        w, h = img.size
        vecs, _ = embedder.embed_patches(img, regions=extra_cells(w, h), mode="crop")
        done[p] = (w, h, vecs)
        if (i + 1) % 100 == 0:
            save(part)
            print(f"{bench.name}: {i + 1}/{len(paths)} images, {time.perf_counter() - t0:.0f} s", flush=True)
    save(path)
    if part.exists():
        part.unlink()
    print(f"{bench.name}: embedded {len(paths)} x 34 extra cells in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def load_extra(cache: Path, name: str) -> dict:
    with np.load(_extra_path(cache, name), allow_pickle=False) as z:
        return {p: (int(w), int(h), v) for p, w, h, v in zip(z["paths"].tolist(), z["widths"], z["heights"], z["vectors"])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["embed", "evaluate", "report"])
    ap.add_argument("--bench", nargs="+", default=[], type=Path, help="benchmark folders (benchmark.json)")
    ap.add_argument("--l3-cache", type=Path, default=Path("bench-cache"), help="bench_retrieval's embedding cache")
    ap.add_argument("--cache", type=Path, default=Path("bench-cache"), help="cache of the extra cells")
    ap.add_argument("--configs", default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON lines of the rows")
    args = ap.parse_args(argv)
    from bench_retrieval import embed_database
    from pypatch.evaluation.datasets import load
    from pypatch.extract.embedder import Embedder

    if args.what == "embed":
        e = Embedder(None, num_threads=2)
        for d in args.bench:
            b = load(d / "benchmark.json")
            table = embed_database(b, "L3", "crop", args.l3_cache, e)
            embed_extra(b, args.cache, e, check_table=table)
        return
    if args.what == "report":
        report(args.out)
        return
    evaluate(args)


def report(path: Path) -> None:
    """Markdown table of the JSON lines ``--out`` (the last row of each benchmark x config)."""
    rows = {}
    for line in open(path):
        r = json.loads(line)
        rows[(r["bench"], r["config"])] = r
    order = {n: i for i, n in enumerate(CONFIGS)}
    print("| benchmark | configuration | cells | mAP | mAP <10% | mAP <5% | mAP >=10% | LocScore | B/image |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (bench, name), r in sorted(rows.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        f = lambda v: f"{100 * v:.2f}"  # noqa: E731
        print(f"| {bench.replace('pypatch-synth-', '')} | `{name}` | {r['patches']} | {f(r['map'])} | "
              f"{f(r['map<10%'])} | {f(r['map<5%'])} | {f(r['map>=10%'])} | {f(r['locscore'])} | "
              f"{r['bytes_per_image']:.0f} |")


# ----------------------------------------------------------------------------- grids
def _grid_class():
    from pypatch.extract.grid import PatchGrid

    class UnionGrid(PatchGrid):
        """L3 (or a prefix of it) plus extra cells: ``take`` = which of the 34 extra cells.

        Only for this measurement (ImageIndex recomputes boxes from the grid at search time;
        such an index is never saved): ``to_dict`` gives a kind of its own so that the
        evaluation's embedding cache keys it apart from L3."""

        def __init__(self, name: str, take: slice, levels: int):
            super().__init__(3)
            self.name, self._take, self._extra_level = name, take, levels

        def _compute(self, width, height):
            b3, l3 = super()._compute(width, height)
            extra = extra_cells(int(width), int(height))[self._take]
            return (np.concatenate([b3, extra]).astype(np.int32),
                    np.concatenate([l3, np.full(len(extra), self._extra_level, np.uint8)]))

        @property
        def num_patches(self):
            return 30 + len(range(34)[self._take])

        def counts(self, sizes):
            return np.full(len(np.asarray(sizes)), self.num_patches, dtype=np.int64)

        def to_dict(self):
            return {"kind": f"bench-{self.name}", "levels": 3}

        def __repr__(self):
            return f"UnionGrid({self.name})"

    return UnionGrid


def grids() -> dict:
    """name -> PatchGrid. ``L3``: today's default; ``L4``: L3 + the 25 cells of a 5x5 grid (the
    pyramid's next level, 55 cells); ``L3s``: L3 + 9 half-shifted L3-size cells (39 cells)."""
    from pypatch.extract.grid import PatchGrid

    import pypatch.index.image_index as ii

    U = _grid_class()
    out = {"L3": PatchGrid(3), "L4": U("L4", slice(0, 25), 4), "L3s": U("L3s", slice(25, 34), 3)}
    by_kind = {g.to_dict()["kind"]: g for g in out.values() if isinstance(g, U)}
    plain = ii.grid_from_dict
    # ImageIndex reads its grid back from its metadata once when created: serve ours
    ii.grid_from_dict = lambda d: by_kind[d["kind"]] if d.get("kind") in by_kind else plain(d)
    return out


# name -> (grid, ImageIndex.build keyword arguments); PQ rows at about the bytes of L3 PQ32 (960 B)
CONFIGS = {
    "L3-flat": ("L3", dict(store="flat")),
    "L4-flat": ("L4", dict(store="flat")),
    "L3s-flat": ("L3s", dict(store="flat")),
    "L3-pq32": ("L3", dict(store="pq", pq_m=32)),          # 30 x 32 = 960 B (the default)
    "L4-pq16": ("L4", dict(store="pq", pq_m=16)),          # 55 x 16 = 880 B
    # 39 x 24 = 936 B; 24 sub-quantizers need a dimension they divide: PCA-240, whitened, + OPQ
    # (what pca_dim="auto" does at 256)
    "L3s-pq24": ("L3s", dict(store="pq", pq_m=24, pca_dim=240, pca_power=-0.5, opq=True)),
    "L3-pq16": ("L3", dict(store="pq", pq_m=16)),          # 480 B: what m=16 alone costs L3
    # flat at the bytes of today's flat default (L3, float32 over PCA-256: 30,720 B): float16
    # halves the bytes at the same mAP (benchmarks/README.md, "store: flat16")
    "L4-flat16": ("L4", dict(store="flat16")),             # 55 x 256 x 2 = 28,160 B
    "L3s-flat16": ("L3s", dict(store="flat16")),           # 39 x 256 x 2 = 19,968 B
    # PQ16 over PCA-128 whitened + OPQ: 8 dims per sub-quantizer, like the default PQ32 over 256
    "L4-pq16-pca128": ("L4", dict(store="pq", pq_m=16, pca_dim=128, pca_power=-0.5, opq=True)),
}
BUCKETS = (("<5%", 0.0, 0.05), ("<10%", 0.0, 0.10), ("3-10%", 0.03, 0.10), (">=10%", 0.10, 9.0))


def bucket_map(bench, cfg, lo: float, hi: float) -> tuple:
    """(mAP, #queries) over positives with lo <= area_frac < hi (the other positives are junk),
    as bench_retrieval.small_object_map does for < 10 %."""
    from pypatch.evaluation.harness import _query_metrics

    aps = []
    for row in cfg.per_query:
        plist = bench.positives.get(row["query"], [])
        inside = [p.id for p in plist if lo <= p.meta.get("area_frac", 1.0) < hi]
        if not inside:
            continue
        junk = set(bench.junk_ids(row["query"])) | ({p.id for p in plist} - set(inside))
        hits = [tuple(h) for h in row["hits"]]
        aps.append(_query_metrics(bench, hits, inside, junk, None, len(hits) or 1, (1,))["ap"])
    return (float(np.mean(aps)) if aps else float("nan")), len(aps)


def evaluate(args) -> None:
    from bench_retrieval import embed_database
    from pypatch.evaluation import rankers as er
    from pypatch.evaluation.datasets import load
    from pypatch.evaluation.harness import evaluate as run_eval
    from pypatch.extract.embeddings import PatchEmbedding
    from pypatch.index.image_index import ImageIndex

    names = args.configs.split(",") if args.configs else list(CONFIGS)
    g = grids()
    caching = er.shared_embedder(None, 1)
    out = open(args.out, "a") if args.out else None
    for d in args.bench:
        b = load(d / "benchmark.json")
        l3 = embed_database(b, "L3", "crop", args.l3_cache, caching._e)
        need = {CONFIGS[n][0] for n in names}
        extra = load_extra(args.cache, b.name) if need - {"L3"} else {}
        for i, (p, (w, h, v)) in enumerate(l3.items()):
            ew, eh, ev = extra.get(p, (w, h, None))
            assert (ew, eh) == (w, h)
            for gname, grid in g.items():
                if gname not in need:
                    continue
                vec = v if gname == "L3" else np.concatenate([v, ev[grid._take]])
                boxes, levels = grid.boxes(w, h), grid.levels_of(w, h)
                assert len(boxes) == len(vec)
                caching.store(p, grid, "crop", PatchEmbedding(i, p, w, h, vec, boxes, levels))
        source = [(x.id, str(x.image)) for x in b.database]
        for name in names:
            gname, kw = CONFIGS[name]
            t = time.perf_counter()
            idx = ImageIndex.build(source, regions=g[gname], embedder=caching, progress=False,
                                   num_threads=1, **kw)
            r = run_eval(b, {name: er.IndexRanker(idx)}, k=100).configs[name]
            info = idx.info()
            row = dict(bench=b.name, images=len(b.database), queries=len(b.queries), config=name,
                       patches=g[gname].num_patches, map=r.summary["map"], locscore=r.summary["locscore"],
                       bytes_per_image=float(info["bytes_per_image"]), transform=str(info.get("transform")),
                       seconds=time.perf_counter() - t)
            for label, lo, hi in BUCKETS:
                row[f"map{label}"], row[f"n{label}"] = bucket_map(b, r, lo, hi)
            if out:
                out.write(json.dumps(row, default=str) + "\n")
                out.flush()
            print(f"{b.name:24s} {name:10s} P={row['patches']:2d} mAP {100 * row['map']:6.2f}  "
                  + "  ".join(f"{l} {100 * row['map' + l]:6.2f}" for l, _, _ in BUCKETS)
                  + f"  Loc {100 * row['locscore']:6.2f}  {row['bytes_per_image']:.0f} B/img"
                  f"  {row['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()

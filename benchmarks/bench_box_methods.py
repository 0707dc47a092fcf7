"""Issue 14, item 3: how to turn a hit's stored similarity map (``box_maps``) into a box.
LocScore of the SAME ranking (the default index, no refinement) with boxes made from the same
14 x 14 int8 maps by several rules, against the grid oracle of that ranking.

    python benchmarks/bench_box_methods.py --bench small:0 small:1 large:0 --root /tmp/q14/bench

Rules (``t``: the threshold ``median + t * (peak - median)``, peak inside the winning cell):
  cell          the winning cell (no refinement)
  comp-<t>      bounding box of the thresholded component around the peak (the shipped rule,
                t = 0.3: ``pypatch.index.refine.box_from_map``)
  compf8-<t>    comp on the map upsampled 8x instead of 4x
  trim-<t>-<q>  comp's component, its box cut at the q and 1 - q quantiles of its excess mass
  clip-<t>-<g>  comp's box clipped to the winning cell grown g times about its centre
  sub-<t>       the window containing the peak that maximises the sum of (map - threshold):
                cells below the threshold count against a box instead of being ignored
``--source live``: the same rules on the live refinement's map instead (one 512 px backbone
pass per hit image, 16 x 16, upsampled 8x as ``SimMapRefiner`` does).
The index (with its maps) is built once per benchmark and kept under ``--work``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))

RULES = ("cell", "comp-0.3", "comp-0.35", "comp-0.4", "comp-0.45", "sub-0.1", "sub-0.15", "sub-0.2",
         "sub-0.25", "sub-0.3", "sub-0.35")


def best_window(score: np.ndarray, py: int, px: int) -> tuple:
    """(y0, x0, y1, x1), exclusive ends, of the window holding (py, px) with the largest sum."""
    h, w = score.shape
    cum = np.vstack([np.zeros((1, w)), np.cumsum(score, axis=0)])  # row prefix sums
    best, out = -np.inf, (py, px, py + 1, px + 1)
    for top in range(py + 1):
        cols = cum[py + 1:] - cum[top]  # (bottoms, w): column sums of rows top..bottom
        c = np.hstack([np.zeros((len(cols), 1)), np.cumsum(cols, axis=1)])  # (bottoms, w + 1)
        left = np.argmin(c[:, :px + 1], axis=1)  # the window starts at `left`, ends past px
        right = px + 1 + np.argmax(c[:, px + 1:], axis=1)
        rows = np.arange(len(c))
        val = c[rows, right] - c[rows, left]
        i = int(np.argmax(val))
        if val[i] > best:
            best, out = val[i], (top, int(left[i]), py + 1 + i, int(right[i]))
    return out


def _component(up, sx, sy, cell, t):
    """(mask of the thresholded component around the peak in ``cell``, map minus threshold),
    as ``box_from_map`` finds it; None where it finds none."""
    from scipy import ndimage

    from pypatch.index.refine import _peak_in_cell

    found = _peak_in_cell(up, sx, sy, cell)
    if found is None:
        return None
    py, px, peak, base = found
    labels, _ = ndimage.label(up >= base + t * (peak - base))
    return labels == labels[py, px], up - (base + t * (peak - base))


def box_by_rule(rule: str, sim, width: int, height: int, cell, factor: int = 4):
    from pypatch.index.refine import _peak_in_cell, _upsampled, box_from_map

    if rule == "cell":
        return tuple(cell)
    kind, t, *extra = rule.split("-")
    t = float(t)
    if kind == "comp":
        return box_from_map(sim, width, height, cell, t=t, factor=factor) or tuple(cell)
    if kind == "compf8":
        return box_from_map(sim, width, height, cell, t=t, factor=8) or tuple(cell)
    up, sx, sy = _upsampled(sim, width, height, factor)
    if kind in ("trim", "clip"):  # trim-T-Q: mass quantiles Q..1-Q; clip-T-G: cell grown G x
        found = _component(up, sx, sy, cell, t)
        if found is None:
            return tuple(cell)
        mask, excess = found
        ys, xs = np.nonzero(mask)
        if kind == "clip":
            g = float(extra[0])
            x0, y0, x1, y1 = cell
            cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, g * (x1 - x0) / 2, g * (y1 - y0) / 2
            box = [xs.min() / sx, ys.min() / sy, (xs.max() + 1) / sx, (ys.max() + 1) / sy]
            box = [max(box[0], cx - hw), max(box[1], cy - hh), min(box[2], cx + hw),
                   min(box[3], cy + hh)]
            return tuple(int(round(v)) for v in box)
        q = float(extra[0])
        w = np.maximum(excess[ys, xs], 0) + 1e-12

        def quant(v, p):
            order = np.argsort(v)
            c = np.cumsum(w[order]) / w.sum()
            return v[order][min(len(v) - 1, int(np.searchsorted(c, p)))]

        return (int(round(quant(xs, q) / sx)), int(round(quant(ys, q) / sy)),
                int(round((quant(xs, 1 - q) + 1) / sx)), int(round((quant(ys, 1 - q) + 1) / sy)))
    found = _peak_in_cell(up, sx, sy, cell)  # sub-T: the best window around the peak
    if found is None:
        return tuple(cell)
    py, px, peak, base = found
    wy0, wx0, wy1, wx1 = best_window(up - (base + t * (peak - base)), py, px)
    return (int(round(wx0 / sx)), int(round(wy0 / sy)), int(round(wx1 / sx)), int(round(wy1 / sy)))


def area(box) -> int:
    return max(1, (box[2] - box[0]) * (box[3] - box[1]))


def main(argv=None) -> int:
    from bench_retrieval import grid_oracle_locscore, locscore_with_boxes

    from pypatch import ImageIndex
    from pypatch.evaluation.datasets import load
    from pypatch.evaluation.harness import evaluate
    from pypatch.evaluation.metrics import iou
    from pypatch.evaluation.rankers import IndexRanker
    from pypatch.extract.embedder import Embedder
    from pypatch.index.refine import SimMapRefiner

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", nargs="+", default=["small:0", "small:1"])
    ap.add_argument("--root", default="/tmp/pypatch-quality")
    ap.add_argument("--work", default="/tmp/pypatch-box-methods")
    ap.add_argument("--rules", nargs="+", default=list(RULES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--source", choices=("maps", "live"), default="maps")
    ap.add_argument("--out", default=str(HERE / "results" / "box_methods.jsonl"))
    args = ap.parse_args(argv)
    embedder = Embedder(None, num_threads=args.threads)
    for spec in args.bench:
        size, seed = spec.split(":")
        bench = load(Path(args.root) / f"{size}-s{seed}" / "benchmark.json")
        path = Path(args.work) / f"{bench.name}.ptch"
        if path.exists():
            index = ImageIndex.load(path)
            index.set_embedder(embedder)
        else:
            index = ImageIndex.build([(d.id, str(d.image)) for d in bench.database],
                                     embedder=embedder, box_maps=True, progress=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            index.save(path)
        res = evaluate(bench, {"cells": IndexRanker(index)}, k=100).configs["cells"]
        oracle = grid_oracle_locscore(bench, res, index)
        qvec = dict(zip([q.id for q in bench.queries], embedder.embed_queries(
            [str(q.image) for q in bench.queries], [q.box for q in bench.queries],
            regions=index._grid, mode="crop")))
        size_of = {d.id: index.image_info(d.id)["size"] for d in bench.database}
        path_of = {d.id: str(d.image) for d in bench.database}
        live = SimMapRefiner(embedder, cache_size=len(bench.database))
        factor = 8 if args.source == "live" else 4  # as SimMapRefiner / refine_hits do

        def similarity(hid, q):
            if args.source == "maps":
                return index._box_maps.similarity(hid, q)
            cells, h, w, _, _ = live.cells(path_of[hid])
            return (cells.astype(np.float32) @ q).reshape(h, w)

        for rule in args.rules:
            ious, ratios = [], []

            def ruled_box(query, hid, cell, truth):
                w, h = size_of[hid]
                box = box_by_rule(rule, similarity(hid, qvec[query]), w, h, cell, factor)
                g = max(truth, key=lambda b: iou(box, b))
                ious.append(iou(box, g))
                ratios.append(np.log(area(box) / area(g)))
                return box

            ls = locscore_with_boxes(bench, res, ruled_box)
            out = dict(bench=bench.name, source=args.source, rule=rule, locscore=ls,
                       grid_oracle=oracle, ratio=ls / oracle, mean_iou=float(np.mean(ious)),
                       median_log_area_ratio=float(np.median(ratios)))
            with open(args.out, "a") as f:
                f.write(json.dumps(out) + "\n")
            print(f"{bench.name} {args.source} {rule:9s} LocScore {100 * ls:6.2f}  "
                  f"oracle {100 * oracle:6.2f}  x{ls / oracle:.2f}  IoU {out['mean_iou']:.3f}  "
                  f"area x{np.exp(out['median_log_area_ratio']):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

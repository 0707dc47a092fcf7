"""Built-in baseline rankers of the evaluation harness (no model needed).

* ``hist-global``: a global colour histogram, box = the whole image;
* ``hist-grid``: the same histogram per cell of the 1/5/14/30 grid pyramid, image score = max
  over cells, box = the winning cell;
* ``oracle``: ranks the ground truth first with its true box, an upper bound that checks the
  pipeline, not a method.

:data:`BUILTIN_RANKERS` maps those names to ``factory(benchmark) -> ranker``;
:mod:`pypatch.evaluation` registers them when it is imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from pypatch.evaluation.datasets.benchmark import Benchmark, Query
from pypatch.extract.grid import PatchGrid

__all__ = ["HistogramRanker", "BUILTIN_RANKERS", "BUILTIN_DESCRIPTIONS"]

_HIST_BINS = 8  # per RGB channel -> 512-bin joint histogram
_MAX_SIDE = 256  # images are shrunk before histogramming (speed); boxes map back to full size


def _load_rgb(path: Path, box=None):
    """The shared loader (pypatch.extract.imageio: EXIF, mode policy, typed errors), optionally cropped
    to ``box``, shrunk with PIL to at most _MAX_SIDE; returns (uint8 array, full (w, h))."""
    from PIL import Image

    from pypatch.extract.imageio import load_image

    im = load_image(path)
    if box is not None:
        im = im.crop(tuple(int(v) for v in box))
    full = im.size
    if max(full) > _MAX_SIDE:
        f = _MAX_SIDE / max(full)
        im = im.resize((max(1, round(full[0] * f)), max(1, round(full[1] * f))), Image.BILINEAR)
    return np.asarray(im), full


def _bin_map(arr: np.ndarray) -> np.ndarray:
    q = (arr.astype(np.int32) * _HIST_BINS) // 256
    return (q[..., 0] * _HIST_BINS + q[..., 1]) * _HIST_BINS + q[..., 2]


def _hist(bins: np.ndarray) -> np.ndarray:
    h = np.sqrt(np.bincount(bins.ravel(), minlength=_HIST_BINS ** 3).astype(np.float32))  # Hellinger
    n = np.linalg.norm(h)
    return h / n if n > 0 else h


class HistogramRanker:
    """Colour-histogram retrieval over the grid pyramid (``levels=0``: one global histogram).

    Database image score = max over its cells of the cosine between Hellinger histograms;
    the returned box is the winning cell in original-image pixels. A weak but honest
    baseline that needs no model; ``levels=3`` shows the patch-wise idea on colour alone.
    """

    def __init__(self, benchmark: Benchmark, levels: int = 0):
        self.levels = int(levels)
        self.ids = [d.id for d in benchmark.database]
        descs, owner, boxes = [], [], []
        for i, d in enumerate(benchmark.database):
            arr, (fw, fh) = _load_rgb(d.image)
            bins = _bin_map(arr)
            h, w = bins.shape
            # the index's own grid (pypatch.extract.grid) on the full-size image; a tiny image gets
            # only the levels it has pixels for
            grid = PatchGrid(levels=min(self.levels, min(fw, fh) - 1))
            for box in grid.boxes(fw, fh).tolist():
                # the cell on the shrunk bin map (boxes are x1/y1 exclusive)
                x0, x1 = round(box[0] * w / fw), round(box[2] * w / fw)
                y0, y1 = round(box[1] * h / fh), round(box[3] * h / fh)
                if x1 <= x0 or y1 <= y0:
                    continue
                descs.append(_hist(bins[y0:y1, x0:x1]))
                owner.append(i)
                boxes.append(tuple(box))
        self.descs = np.stack(descs) if descs else np.zeros((0, _HIST_BINS ** 3), np.float32)
        self.owner = np.asarray(owner, dtype=np.int64)
        self.boxes = boxes
        self.starts = np.r_[0, np.flatnonzero(np.diff(self.owner)) + 1] if len(owner) else np.zeros(0, np.int64)
        self.bytes_per_image = float(self.descs.nbytes) / max(1, len(self.ids))
        self.description = f"RGB {_HIST_BINS}^3 histogram, grid levels 0..{self.levels}, max over cells"

    def __call__(self, query: Query, k: int):
        arr, _ = _load_rgb(query.image, query.box)
        sims = self.descs @ _hist(_bin_map(arr))
        best = np.maximum.reduceat(sims, self.starts)
        # argmax per image: first cell reaching the max
        arg = np.array([s + int(np.argmax(sims[s:e])) for s, e in zip(self.starts, np.r_[self.starts[1:], len(sims)])])
        order = np.lexsort((np.arange(len(best)), -best))[:k]  # ties broken by database order
        return [(self.ids[self.owner[arg[i]]], float(best[i]), self.boxes[arg[i]]) for i in order]


def _oracle(benchmark: Benchmark):
    def rank(query: Query, k: int):
        first = benchmark.positives.get(query.id, [])
        head = [(p.id, 1.0, p.boxes[0] if p.boxes else None) for p in first]
        seen = {p.id for p in first}
        tail = [(d.id, 0.0, None) for d in benchmark.database if d.id not in seen]
        return (head + tail)[:k]

    rank.description = "ground truth first with its true box (upper bound, checks the pipeline)"
    return rank



# a few words each, for `pypatch eval --list-configs`
BUILTIN_DESCRIPTIONS: dict[str, str] = {
    "hist-global": "baseline, no model: RGB colour histogram of the whole image",
    "hist-grid": "baseline, no model: colour histogram per cell of the L3 grid, max over cells",
    "oracle": "upper bound: the ground truth first with its true box (checks the pipeline)",
}

BUILTIN_RANKERS: dict[str, Callable] = {
    "hist-global": lambda b: HistogramRanker(b, levels=0),
    "hist-grid": lambda b: HistogramRanker(b, levels=3),
    "oracle": _oracle,
}

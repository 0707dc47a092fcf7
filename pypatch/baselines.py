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

from pypatch.datasets.benchmark import Benchmark, Query

__all__ = ["HistogramRanker", "BUILTIN_RANKERS"]

_HIST_BINS = 8  # per RGB channel -> 512-bin joint histogram
_MAX_SIDE = 256  # images are shrunk before histogramming (speed); boxes map back to full size


def _load_rgb(path: Path, box=None):
    from PIL import Image

    from pypatch.errors import ImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if box is not None:
                im = im.crop(tuple(int(v) for v in box))
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from None
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


def _grid_cells(w: int, h: int, levels: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping n x n grids for n = 1..levels+1 (1/5/14/30 cells for L0..L3)."""
    cells = []
    for n in range(1, levels + 2):
        xs = [round(i * w / n) for i in range(n + 1)]
        ys = [round(i * h / n) for i in range(n + 1)]
        cells += [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(n) for i in range(n)]
    return cells


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
            for (x0, y0, x1, y1) in _grid_cells(w, h, self.levels):
                if x1 <= x0 or y1 <= y0:
                    continue
                descs.append(_hist(bins[y0:y1, x0:x1]))
                owner.append(i)
                boxes.append((round(x0 * fw / w), round(y0 * fh / h), round(x1 * fw / w), round(y1 * fh / h)))
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



BUILTIN_RANKERS: dict[str, Callable] = {
    "hist-global": lambda b: HistogramRanker(b, levels=0),
    "hist-grid": lambda b: HistogramRanker(b, levels=3),
    "oracle": _oracle,
}

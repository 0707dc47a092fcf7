"""Sharper boxes than the grid for the top results (issue 5, item 5).

A grid cell rarely frames the object: even the best of the 30 cells overlaps a true box by
IoU ~0.4 on average. Two refinements, applied to the top ``refine_k`` hits only:

* ``"simmap"`` (default) -- the query's similarity map over the hit image's feature map: one
  forward pass of the database image through the backbone's ``features`` output (512x512
  input, a 16x16 map for the default model; measured better than 384 on the offline
  benchmark: finer edges), each feature cell turned into a
  descriptor exactly as a one-cell GeM pool would be (clamp, L2-normalise, whitening), its
  cosine with the query. The map is upsampled bilinearly (cell values sit at cell centres),
  thresholded at ``median + t * (peak - median)`` (t = :data:`BOX_T`) where the peak is the
  map's maximum INSIDE the winning cell (the first stage says the object is there), and the
  box is the bounding box of the connected component holding that peak, in original pixels.
  An index built with ``box_maps`` (:mod:`pypatch.index.box_maps`) keeps a 14 x 14 map of
  every image from its per-crop indexing instead, so this costs no backbone pass at search.
* ``"cells"`` -- no backbone pass: the query's scores against all of the hit image's stored
  patches (all levels); the cells scoring within ``delta`` of the best are fused into one box
  by a score-weighted average of their corners.

Both fall back to the winning cell when they find nothing usable.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np

from pypatch.errors import InvalidArgumentError

__all__ = ["REFINERS", "cell_descriptors", "similarity_map", "box_from_map", "fuse_cells", "SimMapRefiner",
           "check_refine", "refine_hits"]

REFINERS = ("simmap", "cells")
# threshold t of box_from_map, for the maps kept at index time (pypatch.index.box_maps) and the
# live pass alike: at 0.3 the boxes of positives were 1.2-1.4x too large (median area); 0.35
# raised LocScore on all four offline benchmarks with both maps (small s0 / s1 / large s0 / s1:
# 36.67 / 36.77 / 36.37 / 35.08 -> 39.11 / 37.05 / 37.21 / 35.92, large s1 held out) and on the
# live maps (small: 33.30 / 32.17 -> 33.70 / 32.90); benchmarks/bench_box_methods.py
BOX_T = 0.35


def cell_descriptors(features, whitening=None, eps: float = 1e-6) -> np.ndarray:
    """(D, h, w) feature map -> (h * w, D) descriptors, one per cell, made as a one-cell GeM
    pool would make them (``max(x, eps)``), L2-normalised (and whitened when the index's
    embedder whitens), like every patch descriptor."""
    f = np.asarray(features, dtype=np.float32)
    d, h, w = f.shape
    cells = np.maximum(f.reshape(d, h * w).T, eps)
    cells /= np.maximum(np.linalg.norm(cells, axis=1, keepdims=True), 1e-12)
    return whitening.apply(cells) if whitening is not None else cells


def similarity_map(features, query, whitening=None) -> np.ndarray:
    """Cosine of ``query`` (D,) with every cell of ``features`` (D, h, w) -> (h, w) float32."""
    _, h, w = np.shape(features)
    cells = cell_descriptors(features, whitening)
    return (cells @ np.asarray(query, dtype=np.float32)).reshape(h, w)


def _upsample(m: np.ndarray, factor: int) -> np.ndarray:
    """Separable bilinear upsampling with values at cell centres (edges clamped)."""
    h, w = m.shape
    ys = (np.arange(h * factor) + 0.5) / factor - 0.5
    xs = (np.arange(w * factor) + 0.5) / factor - 0.5
    rows = np.stack([np.interp(xs, np.arange(w), r) for r in m])  # (h, w*f)
    return np.stack([np.interp(ys, np.arange(h), c) for c in rows.T], axis=1)  # (h*f, w*f)


def _upsampled(sim, width: int, height: int, factor: int) -> tuple:
    """(map upsampled ``factor`` x, its pixels per image pixel in x, in y)."""
    up = _upsample(np.asarray(sim, dtype=np.float64), factor)
    return up, up.shape[1] / width, up.shape[0] / height


def _peak_in_cell(up, sx: float, sy: float, cell):
    """(py, px, peak, median) of the upsampled map ``up``: its maximum inside ``cell`` (image
    pixels) and its median; None if the cell covers no map pixel or the peak is not above it."""
    x0, y0, x1, y1 = cell
    cx0, cy0 = int(np.floor(x0 * sx)), int(np.floor(y0 * sy))
    cx1, cy1 = max(cx0 + 1, int(np.ceil(x1 * sx))), max(cy0 + 1, int(np.ceil(y1 * sy)))
    window = up[cy0:cy1, cx0:cx1]
    if window.size == 0:
        return None
    py, px = np.unravel_index(int(np.argmax(window)), window.shape)
    py, px = py + cy0, px + cx0
    peak, base = up[py, px], float(np.median(up))
    return (py, px, peak, base) if peak > base else None


def box_from_map(sim, width: int, height: int, cell, t: float = BOX_T, factor: int = 8):
    """Box ``[x0, y0, x1, y1]`` (pixels of a ``width`` x ``height`` image) of the component of
    ``sim >= median + t * (peak - median)`` around the peak inside ``cell``; None if empty."""
    from scipy import ndimage

    up, sx, sy = _upsampled(sim, width, height, factor)
    found = _peak_in_cell(up, sx, sy, cell)
    if found is None:
        return None
    py, px, peak, base = found
    labels, _ = ndimage.label(up >= base + t * (peak - base))
    ys, xs = np.nonzero(labels == labels[py, px])
    box = [xs.min() / sx, ys.min() / sy, (xs.max() + 1) / sx, (ys.max() + 1) / sy]
    box = [int(np.clip(round(v), 0, lim)) for v, lim in zip(box, (width, height, width, height))]
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return tuple(box)


def fuse_cells(cells, scores, delta: float = 0.02):
    """Score-weighted average of the corners of the cells scoring within ``delta`` of the best."""
    c = np.asarray(cells, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(c) != len(s) or not len(c):
        raise InvalidArgumentError(f"fuse_cells: {len(c)} cells but {len(s)} scores")
    keep = s >= s.max() - delta
    w = s[keep] - (s.max() - delta) + 1e-9  # the best cell weighs most, the borderline ~0
    box = (c[keep] * w[:, None]).sum(0) / w.sum()
    return tuple(int(round(v)) for v in box)


class SimMapRefiner:
    """Feature maps of database images (one backbone pass each, LRU-cached) -> refined boxes."""

    def __init__(self, embedder, side: Optional[int] = 512, t: float = BOX_T,
                 cache_size: int = 128):
        if embedder._feat_out is None:
            raise InvalidArgumentError(
                f"{embedder.model_path}: box refinement needs a 'features' output; re-export "
                f"the model with `pypatch export`")
        self.embedder = embedder
        if not embedder.model_card.get("dynamic_size", False):
            side = None  # a static-size model runs at its own input size
        self.side = embedder._single_pass_side(side)
        self.t = float(t)
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = int(cache_size)

    def cells(self, image) -> tuple:
        """(cell descriptors (h * w, D) float16, h, w, width, height) of a database image
        (path, PIL image or array); paths are cached (float16 halves the cache)."""
        from pypatch.extract.preprocess import preprocess_boxes
        from pypatch.extract.imageio import load_image

        key = str(image) if isinstance(image, str) else None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        e = self.embedder
        img = load_image(image, max_pixels=e.max_pixels)
        x = preprocess_boxes(img, np.array([[0, 0, img.width, img.height]], np.int32),
                             self.side, e._resample, e._mean, e._std)
        feats = e._run(x, e._feat_out)[0]
        out = (cell_descriptors(feats, e.whitening).astype(np.float16), feats.shape[1],
               feats.shape[2], img.width, img.height)
        if key is not None:
            self._cache[key] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def refine(self, image, query, cell) -> tuple:
        """Refined box of ``cell`` in ``image`` for ``query`` (the winning cell if none)."""
        cells, h, w, width, height = self.cells(image)
        sim = (cells.astype(np.float32) @ np.asarray(query, dtype=np.float32)).reshape(h, w)
        box = box_from_map(sim, width, height, cell, t=self.t)
        return tuple(int(v) for v in cell) if box is None else box


def check_refine(refine):
    """``refine`` argument -> None (off) or the method name."""
    if refine is None or refine is False:
        return None
    if refine is True:
        return "simmap"
    if refine in REFINERS:
        return refine
    raise InvalidArgumentError(
        f"refine: expected True/False or one of {', '.join(REFINERS)}; got {refine!r}")


def refine_hits(index, hits: list, query, method: str = "simmap", refine_k: int = 10) -> list:
    """``hits`` with ``box`` refined for the first ``refine_k`` (``cell`` kept as it was).

    Hits whose image has no file path (indexed from memory) keep their cell with "simmap"."""
    from dataclasses import replace

    if isinstance(refine_k, bool) or not isinstance(refine_k, (int, np.integer)) or refine_k < 0:
        raise InvalidArgumentError(f"refine_k: expected a non-negative integer, got {refine_k!r}")
    q = np.asarray(query, dtype=np.float32)
    maps = getattr(index, "_box_maps", None) if method == "simmap" else None
    out = list(hits)
    for i, h in enumerate(out[:refine_k]):
        if method == "cells":
            info = index.image_info(h.image)
            scores = index.patch_vectors(h.image) @ index.to_stored(q)
            box = fuse_cells(info["cells"], scores)
        elif maps is not None and h.image in maps:  # kept at index time: no backbone pass
            width, height = index.image_info(h.image)["size"]
            box = box_from_map(maps.similarity(h.image, q), width, height, h.cell, t=BOX_T,
                               factor=4)
            box = h.cell if box is None else box
        elif h.path is None:
            continue
        else:
            refiner = getattr(index, "_pypatch_refiner", None)
            if refiner is None:
                refiner = SimMapRefiner(index._get_embedder())
                index._pypatch_refiner = refiner  # per index: caches feature maps
            box = refiner.refine(h.path, q, h.cell)
        out[i] = replace(h, box=tuple(int(v) for v in box))
    return out

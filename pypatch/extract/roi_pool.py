"""Single-pass RoI pooling: every cell's descriptor pooled from one feature map of the image.

Each box is mapped to feature-map coordinates and pooled with the card's pooling (GeM with its
p, or average), weighting each feature cell by its overlap with the box; a box narrower than a
feature cell pools the cell holding its centre.
"""
from __future__ import annotations

import numpy as np

_GEM_EPS = 1e-6  # timm's GeM clamp


def _box_weights(lo: float, hi: float, n: int) -> np.ndarray:
    """Overlap of [lo, hi] (feature units) with each of the n cells; a box narrower than one
    cell pools the whole cell holding its centre (RoI pooling never pools nothing)."""
    if hi - lo < 1.0:
        lo = float(min(max(int(0.5 * (lo + hi)), 0), n - 1))
        hi = lo + 1.0
    edges = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(hi, edges + 1) - np.maximum(lo, edges), 0.0, None)


def roi_pool(features: np.ndarray, boxes: np.ndarray, width: int, height: int,
             pooling: str, gem_p: float = 3.0) -> np.ndarray:
    """Pool (D, h, w) features over pixel boxes of a width x height image -> (K, D) float32.

    Each feature cell is weighted by the fraction of it the box covers; GeM is
    ``(sum w x^p / sum w)^(1/p)`` on ``max(x, 1e-6)`` (timm's GeM), average is p=1 without clamp.
    """
    d, fh, fw = features.shape
    sx, sy = fw / width, fh / height
    wx = np.stack([_box_weights(b[0] * sx, b[2] * sx, fw) for b in boxes])  # (K, fw)
    wy = np.stack([_box_weights(b[1] * sy, b[3] * sy, fh) for b in boxes])  # (K, fh)
    f = features.astype(np.float64)
    gem = pooling == "gem"
    p = float(gem_p) if gem else 1.0
    if gem:
        f = np.power(np.maximum(f, _GEM_EPS), p)
    t = f @ wx.T  # (D, fh, K)
    pooled = np.einsum("dik,ki->kd", t, wy) / (wx.sum(1) * wy.sum(1))[:, None]
    if gem:
        pooled = np.power(np.maximum(pooled, 0.0), 1.0 / p)
    return pooled.astype(np.float32)

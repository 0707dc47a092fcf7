"""Pixels -> backbone input, the way the model card says: crop, resize, scale, normalise.

Each box is cropped from the RGB image, resized with Pillow to the target size with the card's
interpolation (no centre crop, so the reported box is exactly what was embedded), scaled to
[0, 1], normalised with the card's mean/std and laid out NCHW. For a whole image this equals
timm's eval transform with ``crop_pct=1.0``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pypatch.errors import InvalidArgumentError
from pypatch.extract.grid import check_boxes

RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1, "box": 4, "hamming": 5}  # PIL codes


def preprocess_boxes(img, boxes: np.ndarray, size_hw: tuple[int, int], resample: int,
                     mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Crop each box of an RGB PIL image, resize to size_hw, normalise -> (P, 3, H, W) float32."""
    h, w = size_hw
    out = np.empty((len(boxes), h, w, 3), dtype=np.float32)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        crop = img.crop((x0, y0, x1, y1))  # crop first: the filter must not see pixels outside the box
        out[i] = np.asarray(crop.resize((w, h), resample=resample), dtype=np.float32)
    out /= 255.0  # same order of operations as ToTensor + Normalize
    out -= mean
    out /= std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def query_box(box: Any, width: int, height: int) -> np.ndarray:
    """A query box [x0, y0, x1, y1] checked against the image -> (1, 4) int32 pixel box."""
    arr = np.asarray(box, dtype=np.float64) if box is not None else None
    if arr is None or arr.shape != (4,) or not np.all(np.isfinite(arr)):
        raise InvalidArgumentError(f"box must be 4 finite numbers [x0, y0, x1, y1]; got {box!r}")
    # Float boxes (revisitop's bbx) are rounded outwards so the whole box is kept.
    x0, y0 = np.floor(arr[:2])
    x1, y1 = np.ceil(arr[2:])
    shown = [int(v) if float(v).is_integer() else float(v) for v in arr.tolist()]
    if x1 <= x0 or y1 <= y0:
        raise InvalidArgumentError(f"box {shown} has no area: need x0 < x1 and y0 < y1 "
                                   "(x1/y1 exclusive)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise InvalidArgumentError(f"box {shown} is not inside the {width}x{height} query image: "
                                   f"need 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
    return check_boxes([[x0, y0, x1, y1]], width, height, what=f"box {shown}")

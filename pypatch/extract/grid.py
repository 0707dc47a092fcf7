"""Region strategies: which boxes of an image become patches.

Pure numpy, no image I/O. Every strategy maps an image size to integer boxes
``[x0, y0, x1, y1]`` in original-image pixels with **x1/y1 exclusive** (the ``PIL.Image.crop``
convention: a box covers columns ``x0 .. x1-1``), so ``x1 - x0`` is the box width.

Strategies (all share the same interface: ``boxes``, ``levels_of``, ``count``, ``to_dict``):

* ``PatchGrid(levels=3)`` -- the paper's non-overlapping pyramid. Level 0 is the whole image,
  level l (1..4) is an (l+1) x (l+1) grid, row-major. Cut points are ``(i * W) // n`` so cells
  tile the image exactly for any (odd) size. 1 / 5 / 14 / 30 patches for levels 0..3, and
  ``levels=4`` (opt-in, finer cells for small objects) adds a 5 x 5 grid: 55 patches.
  ``shifted=True`` (``"L3s"``, the index default) appends the finest level's cells shifted by
  half a cell in x and y: (n-1) x (n-1) more cells of the same size centred on the inner corners,
  cut points ``((2i + 1) * W) // (2n)``, so an object cut by a cell border is whole in one of
  them (L3s: 30 + 9 = 39 patches).
* ``PatchGrid.rmac(levels=3, overlap=0.4)`` -- R-MAC square regions (Tolias et al. 2016, as in
  cirtorch's ``rmac``), plus the whole image as level 0.
* ``PatchGrid.sliding(window=0.5, stride=0.5)`` -- square windows whose side is ``window`` x the
  short side, moved by ``stride`` x the window; the last window is aligned to the far edge so the
  image is covered. Plus the whole image as level 0.
* ``PatchGrid.custom(boxes)`` -- user-supplied pixel boxes (checked against the image size).

``parse_regions("L3" | "rmac" | "rmac3" | "sliding" | ...)`` is the string form shared with the CLI.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError, InvalidTypeError

# L4 (55 cells) is opt-in: finer cells for small objects; it wins in float16 flat stores, not at
# the bytes of L3 PQ32 (benchmarks/README.md, "Item 4"); L3 stays the default
MAX_PYRAMID_LEVEL = 4
_KINDS = ("pyramid", "rmac", "sliding", "custom")


def _check_size(width: Any, height: Any) -> tuple[int, int]:
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"image size must be two integers; got {width!r}, {height!r}") from None
    if w != width or h != height or w <= 0 or h <= 0:
        raise InvalidArgumentError(f"image size must be positive integers; got width={width!r}, height={height!r}")
    return w, h


def _cuts(length: int, n: int) -> np.ndarray:
    """n+1 integer cut points tiling [0, length) exactly (cells differ by at most 1 pixel)."""
    return (np.arange(n + 1, dtype=np.int64) * length) // n


def _pyramid(width: int, height: int, levels: int, shifted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    n_max = levels + 1
    if width < n_max or height < n_max:
        raise InvalidArgumentError(
            f"image {width}x{height} is too small for a level-{levels} grid ({n_max}x{n_max} cells need "
            f"at least {n_max} pixels per side)"
        )
    boxes, lv = [], []
    for level in range(levels + 1):
        n = level + 1
        xs, ys = _cuts(width, n), _cuts(height, n)
        for r in range(n):  # row-major: rows (y) outer, columns (x) inner
            for c in range(n):
                boxes.append((xs[c], ys[r], xs[c + 1], ys[r + 1]))
                lv.append(level)
    if shifted:  # the finest cells moved by half a cell: starts (2i+1)/(2n), ends (2i+3)/(2n)
        xs, ys = _cuts(width, 2 * n_max), _cuts(height, 2 * n_max)
        for r in range(n_max - 1):
            for c in range(n_max - 1):
                boxes.append((xs[2 * c + 1], ys[2 * r + 1], xs[2 * c + 3], ys[2 * r + 3]))
                lv.append(levels)
    return np.asarray(boxes, dtype=np.int32).reshape(-1, 4), np.asarray(lv, dtype=np.uint8)


def _rmac(width: int, height: int, levels: int, overlap: float) -> tuple[np.ndarray, np.ndarray]:
    # Geometry of cirtorch.layers.functional.rmac (Tolias et al.), in pixels instead of feature cells.
    w = min(width, height)
    steps = np.arange(2, 8, dtype=np.float64)  # possible region counts along the long side
    b = (max(width, height) - w) / (steps - 1)
    idx = int(np.argmin(np.abs(((w * w - w * b) / (w * w)) - overlap)))
    wd = idx + 1 if height < width else 0
    hd = idx + 1 if height > width else 0
    boxes, lv = [(0, 0, width, height)], [0]
    for level in range(1, levels + 1):
        wl = math.floor(2 * w / (level + 1))
        if wl == 0:
            continue
        wl2 = math.floor(wl / 2 - 1)
        bw = 0.0 if level + wd == 1 else (width - wl) / (level + wd - 1)
        bh = 0.0 if level + hd == 1 else (height - wl) / (level + hd - 1)
        xs = np.floor(wl2 + np.arange(level + wd) * bw) - wl2
        ys = np.floor(wl2 + np.arange(level + hd) * bh) - wl2
        for y in ys:
            for x in xs:
                x0, y0 = int(min(max(x, 0), width - wl)), int(min(max(y, 0), height - wl))
                boxes.append((x0, y0, x0 + wl, y0 + wl))
                lv.append(level)
    return np.asarray(boxes, dtype=np.int32), np.asarray(lv, dtype=np.uint8)


def _starts(length: int, win: int, step: int) -> list[int]:
    starts = list(range(0, length - win + 1, step))
    if starts[-1] != length - win:  # align the last window to the far edge: full coverage
        starts.append(length - win)
    return starts


def _sliding(width: int, height: int, window: float, stride: float) -> tuple[np.ndarray, np.ndarray]:
    win = max(1, int(round(window * min(width, height))))
    step = max(1, int(round(stride * win)))
    boxes, lv = [(0, 0, width, height)], [0]
    for y in _starts(height, win, step):
        for x in _starts(width, win, step):
            boxes.append((x, y, x + win, y + win))
            lv.append(1)
    return np.asarray(boxes, dtype=np.int32), np.asarray(lv, dtype=np.uint8)


def _rmac_counts(width: np.ndarray, height: np.ndarray, levels: int, overlap: float) -> np.ndarray:
    """len(_rmac(w, h)) for arrays of sizes: the same float64 operations, in the same order."""
    w = np.minimum(width, height)
    steps = np.arange(2, 8, dtype=np.float64)
    b = (np.maximum(width, height) - w)[:, None] / (steps - 1)
    ww = (w * w)[:, None]
    idx = np.argmin(np.abs(((ww - w[:, None] * b) / ww) - overlap), axis=1)
    wd = np.where(height < width, idx + 1, 0)
    hd = np.where(height > width, idx + 1, 0)
    n = np.ones(len(w), dtype=np.int64)
    for level in range(1, levels + 1):
        wl = np.floor(2 * w / (level + 1))
        n += np.where(wl == 0, 0, (level + wd) * (level + hd))
    return n


def _sliding_counts(width: np.ndarray, height: np.ndarray, window: float, stride: float) -> np.ndarray:
    """len(_sliding(w, h)) for arrays of sizes (np.rint rounds half to even, like round())."""
    win = np.maximum(1, np.rint(window * np.minimum(width, height)).astype(np.int64))
    step = np.maximum(1, np.rint(stride * win).astype(np.int64))

    def starts(length):
        span = length - win
        return span // step + 1 + (span % step != 0)

    return 1 + starts(width) * starts(height)


def check_boxes(boxes: Any, width: int, height: int, what: str = "boxes") -> np.ndarray:
    """Validate pixel boxes (K, 4) against an image size; returns them as int32.

    Raises InvalidArgumentError unless every box has positive area and lies inside the image.
    """
    arr = np.asarray(boxes)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] == 0:
        raise InvalidArgumentError(f"{what} must have shape (K, 4) [x0, y0, x1, y1] with K >= 1; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise InvalidArgumentError(f"{what} must be finite numbers; got dtype {arr.dtype}")
    if np.any(arr != np.round(arr)):
        raise InvalidArgumentError(f"{what} must be integer pixel coordinates; got {arr.tolist()}")
    arr = arr.astype(np.int64)
    bad = (arr[:, 0] < 0) | (arr[:, 1] < 0) | (arr[:, 2] > width) | (arr[:, 3] > height) | \
          (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise InvalidArgumentError(
            f"{what}[{i}] = {arr[i].tolist()} is not a positive-area box inside the {width}x{height} image "
            "(need 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, x1/y1 exclusive)"
        )
    return arr.astype(np.int32)


def to_xywh(boxes: Any) -> np.ndarray:
    """[x0, y0, x1, y1] (x1/y1 exclusive) -> [x, y, w, h] (ILIAS ``_bbox.txt`` convention)."""
    b = np.asarray(boxes)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def from_xywh(boxes: Any) -> np.ndarray:
    """[x, y, w, h] -> [x0, y0, x1, y1] with x1/y1 exclusive."""
    b = np.asarray(boxes)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


class PatchGrid:
    """A region strategy. ``PatchGrid(levels=3)`` is the paper's pyramid (1/5/14/30 patches;
    ``levels=4``: 55); ``shifted=True`` appends the finest cells shifted by half a cell (L3s: 39).

    ``boxes(width, height)`` returns ``(P, 4) int32`` boxes ``[x0, y0, x1, y1]``, x1/y1 exclusive.
    """

    def __init__(self, levels: int = 3, *, kind: str = "pyramid", overlap: float = 0.4,
                 window: float = 0.5, stride: float = 0.5, custom_boxes: Any = None,
                 shifted: bool = False) -> None:
        if kind not in _KINDS:
            raise InvalidArgumentError(f"kind must be one of {_KINDS}; got {kind!r}")
        levels = as_int(levels, "levels")
        if kind == "pyramid" and not 0 <= levels <= MAX_PYRAMID_LEVEL:
            raise InvalidArgumentError(f"pyramid levels must be in 0..{MAX_PYRAMID_LEVEL}; got {levels}")
        if not isinstance(shifted, (bool, np.bool_)):
            raise InvalidTypeError(f"shifted must be True or False; got {shifted!r}")
        if shifted and (kind != "pyramid" or levels < 1):
            raise InvalidArgumentError(f"shifted cells need a pyramid of levels 1..{MAX_PYRAMID_LEVEL}; "
                                       f"got kind {kind!r}, levels {levels}")
        self.shifted = bool(shifted)
        if kind == "rmac":
            if not 1 <= levels <= 6:
                raise InvalidArgumentError(f"rmac levels must be in 1..6; got {levels}")
            if not 0.0 <= overlap < 1.0:
                raise InvalidArgumentError(f"rmac overlap must be in [0, 1); got {overlap!r}")
        if kind == "sliding" and not (0.0 < window <= 1.0 and 0.0 < stride <= 1.0):
            raise InvalidArgumentError(f"sliding window and stride must be in (0, 1]; got {window!r}, {stride!r}")
        self.kind = kind
        self.levels = levels
        self.overlap = float(overlap)
        self.window = float(window)
        self.stride = float(stride)
        self._custom = None
        if kind == "custom":
            arr = np.asarray(custom_boxes)
            self._custom = check_boxes(arr, np.iinfo(np.int32).max, np.iinfo(np.int32).max, "custom boxes")

    # -- other strategies -------------------------------------------------------------------
    @classmethod
    def rmac(cls, levels: int = 3, overlap: float = 0.4) -> "PatchGrid":
        """R-MAC overlapping square regions (levels 1..L) plus the whole image (level 0)."""
        return cls(levels, kind="rmac", overlap=overlap)

    @classmethod
    def sliding(cls, window: float = 0.5, stride: float = 0.5) -> "PatchGrid":
        """Square sliding windows (side = window x short side, step = stride x side) plus the whole image."""
        return cls(1, kind="sliding", window=window, stride=stride)

    @classmethod
    def custom(cls, boxes: Any) -> "PatchGrid":
        """User-supplied pixel boxes (K, 4); ``boxes()`` checks they fit the image."""
        return cls(1, kind="custom", custom_boxes=boxes)

    # -- the interface ----------------------------------------------------------------------
    def _compute(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        w, h = _check_size(width, height)
        if self.kind == "pyramid":
            return _pyramid(w, h, self.levels, self.shifted)
        if self.kind == "rmac":
            return _rmac(w, h, self.levels, self.overlap)
        if self.kind == "sliding":
            return _sliding(w, h, self.window, self.stride)
        boxes = check_boxes(self._custom, w, h, "custom boxes")
        full = (boxes[:, 0] == 0) & (boxes[:, 1] == 0) & (boxes[:, 2] == w) & (boxes[:, 3] == h)
        return boxes, np.where(full, 0, 1).astype(np.uint8)

    def boxes(self, width: int, height: int) -> np.ndarray:
        """(P, 4) int32 boxes [x0, y0, x1, y1] in pixels, x1/y1 exclusive."""
        return self._compute(width, height)[0]

    def levels_of(self, width: int, height: int) -> np.ndarray:
        """(P,) uint8 level of each box (0 = whole image)."""
        return self._compute(width, height)[1]

    @property
    def num_patches(self) -> int | None:
        """Patches per image when it does not depend on the image size, else None (use ``count``)."""
        if self.kind == "pyramid":
            return sum((l + 1) ** 2 for l in range(self.levels + 1)) + self.shifted * self.levels ** 2
        if self.kind == "custom":
            return int(self._custom.shape[0])
        return None

    def count(self, width: int, height: int) -> int:
        """Number of patches for an image of this size."""
        return int(self.boxes(width, height).shape[0])

    def counts(self, sizes: Any) -> np.ndarray:
        """(n,) int64 patch counts of n images, ``sizes`` (n, 2) integer ``(width, height)``:
        ``count`` vectorised (ImageIndex.load checks every image; ~1.5 ms per 10k R-MAC sizes).

        Raises InvalidArgumentError like ``boxes`` would, naming the first offending row."""
        s = np.asarray(sizes)
        if s.ndim != 2 or s.shape[1] != 2 or (s.size and s.dtype.kind not in "iu"):
            raise InvalidArgumentError(f"sizes must be an (n, 2) integer array; got shape {s.shape}, "
                                       f"dtype {s.dtype}")
        s = s.astype(np.int64)
        w, h = s[:, 0], s[:, 1]
        bad = (w <= 0) | (h <= 0)
        if self.kind == "pyramid":
            bad |= (w < self.levels + 1) | (h < self.levels + 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.count(int(w[i]), int(h[i]))  # raises the error boxes() gives for this size
            raise InvalidArgumentError(f"image size {int(w[i])}x{int(h[i])} is not usable")
        if self.kind == "pyramid":
            return np.full(len(s), self.num_patches, dtype=np.int64)
        if self.kind == "custom":
            return np.asarray([self.count(int(a), int(b)) for a, b in s], dtype=np.int64)
        if self.kind == "sliding":
            return _sliding_counts(w, h, self.window, self.stride)
        return _rmac_counts(w, h, self.levels, self.overlap)

    def __len__(self) -> int:
        n = self.num_patches
        if n is None:
            raise TypeError(f"a {self.kind} grid has a size-dependent patch count; use count(width, height)")
        return n

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "levels": self.levels}
        if self.shifted:  # only when set: plain pyramids keep the dict (and META) they had
            d["shifted"] = True
        if self.kind == "rmac":
            d["overlap"] = self.overlap
        elif self.kind == "sliding":
            d.update(window=self.window, stride=self.stride)
        elif self.kind == "custom":
            d["boxes"] = self._custom.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PatchGrid":
        if not isinstance(d, dict) or d.get("kind") not in _KINDS:
            raise InvalidArgumentError(f"not a PatchGrid dict (need 'kind' in {_KINDS}): {d!r}")
        kind = d["kind"]
        if kind == "custom":
            return cls.custom(d.get("boxes"))
        if kind == "sliding":
            return cls.sliding(d.get("window", 0.5), d.get("stride", 0.5))
        if kind == "rmac":
            return cls.rmac(d.get("levels", 3), d.get("overlap", 0.4))
        return cls(d.get("levels", 3), shifted=d.get("shifted", False))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PatchGrid) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        if self.kind == "pyramid":
            return f"PatchGrid(levels={self.levels}{', shifted=True' if self.shifted else ''})"
        if self.kind == "rmac":
            return f"PatchGrid.rmac(levels={self.levels}, overlap={self.overlap})"
        if self.kind == "sliding":
            return f"PatchGrid.sliding(window={self.window}, stride={self.stride})"
        return f"PatchGrid.custom({self._custom.shape[0]} boxes)"


REGION_CHOICES = ("L0", "L1", "L2", "L3", "L4", "L3s", "rmac", "rmac1", "rmac2", "rmac3", "sliding")
# What ImageIndex.build and `pypatch index` use unless told: the paper's L3 pyramid plus its 9
# half-shifted finest cells. Measured against L3 on the offline benchmarks (100 to 5,000
# images, two seeds; benchmarks/README.md, "The default grid"): PQ32 +1.2 to +7.0 mAP in all 10
# rows, flat +2.1 to +4.8 in 9 of 10 (-1.2 in one); cost: 1.3x the backbone runs and bytes.
DEFAULT_REGIONS = "L3s"


def parse_regions(spec: Any) -> PatchGrid:
    """A PatchGrid from a string (``"L0".."L4"``, ``"L1s".."L4s"`` (shifted), ``"rmac"`` = ``"rmac3"``, ``"rmacN"``, ``"sliding"``),
    an existing PatchGrid, or a ``to_dict()`` dict. Shared by the Embedder and the CLI."""
    if isinstance(spec, PatchGrid):
        return spec
    if isinstance(spec, dict):
        return PatchGrid.from_dict(spec)
    if not isinstance(spec, str):
        raise InvalidArgumentError(f"regions must be a string like 'L3', 'rmac' or 'sliding', or a PatchGrid; got {spec!r}")
    s = spec.strip().lower()
    if len(s) in (2, 3) and s[0] == "l" and s[1].isdigit() and s[2:] in ("", "s"):
        level = int(s[1])
        if (1 if s[2:] else 0) <= level <= MAX_PYRAMID_LEVEL:
            return PatchGrid(level, shifted=bool(s[2:]))
    if s == "rmac":
        return PatchGrid.rmac(3)
    if s.startswith("rmac") and s[4:].isdigit() and 1 <= int(s[4:]) <= 6:
        return PatchGrid.rmac(int(s[4:]))
    if s == "sliding":
        return PatchGrid.sliding()
    raise InvalidArgumentError(f"unknown regions {spec!r}; expected one of {', '.join(REGION_CHOICES)} (rmacN for N in 1..6)")


__all__ = ["PatchGrid", "parse_regions", "check_boxes", "to_xywh", "from_xywh", "REGION_CHOICES"]

"""Per-image similarity maps kept at index time, so refined boxes cost no backbone pass
(issue 14, item 3).

Per-crop indexing already runs the backbone on every finest-level cell (L3: a 4 x 4 grid of
crops at 224 px); each run's ``features`` output is a 7 x 7 map of that cell. Stitched, the 16
maps form a 28 x 28 map of the image (the resolution of a 896 px whole-image pass, seen at the
query's own scale), mean-pooled 2 x 2 to 14 x 14 (the unpooled map is noisier: LocScore 30.1 /
31.3 vs 37.7 / 35.0 on the two small offline benchmarks). Each map cell becomes a descriptor
as a one-cell GeM pool would (:func:`pypatch.index.refine.cell_descriptors`), projected onto
``dim`` axes (an uncentred PCA of map cells, learned on the first images: dot products are kept
for vectors in its span) and stored as int8 with one float16 scale per cell:
``cells x (dim + 2)`` bytes per image (14 x 14 x 130 = 25.5 KB at the default dim 128).
LocScore on the two small offline benchmarks (same ranking; grid oracle 31.63 / 28.94):
unprojected 37.71 / 35.04, dim 256: 36.28 / 33.65, 128: 35.02 / 33.20, 64: 33.06 / 32.62,
32: 32.21 / 29.74; the live 512 px pass: 32.19 / 30.02.

At search time a hit's map is ``int8 cells @ (basis @ query)``: microseconds, then the same
thresholded-component box as the live refinement (:func:`pypatch.index.refine.box_from_map`).
"""
from __future__ import annotations

import zipfile
from typing import Optional

import numpy as np

from pypatch.errors import IndexFormatError, InvalidArgumentError

__all__ = ["BoxMaps", "stitch_cell_maps", "MAP_POOL", "DEFAULT_DIM", "BASIS_MAX_ROWS"]

MAP_POOL = 2  # 2 x 2 mean pool of the stitched crop maps (see the module docstring)
DEFAULT_DIM = 128  # see the module docstring: +2 LocScore over 64 for twice the bytes
BASIS_MAX_ROWS = 20000  # map cells the projection is learned on (the first images')


def stitch_cell_maps(feats, n: int, pool: int = MAP_POOL) -> np.ndarray:
    """(n * n, D, h, w) feature maps of an n x n grid of crops, row-major -> one (D, H, W) map
    of the image: tiled, then mean-pooled ``pool`` x ``pool`` (a ragged edge is dropped)."""
    f = np.asarray(feats, dtype=np.float32)
    if f.ndim != 4 or f.shape[0] != n * n:
        raise InvalidArgumentError(f"stitch_cell_maps: expected ({n * n}, D, h, w) maps, got {f.shape}")
    k, d, h, w = f.shape
    big = f.reshape(n, n, d, h, w).transpose(2, 0, 3, 1, 4).reshape(d, n * h, n * w)
    if pool > 1:
        hh, ww = (n * h) // pool, (n * w) // pool
        big = big[:, :hh * pool, :ww * pool].reshape(d, hh, pool, ww, pool).mean((2, 4))
    return big


class BoxMaps:
    """Projected int8 similarity maps of indexed images, keyed by image id."""

    def __init__(self, dim: int = DEFAULT_DIM, basis: Optional[np.ndarray] = None):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidArgumentError(f"box_maps: expected a positive number of dimensions, got {dim!r}")
        self.dim = int(dim)
        self.basis = None if basis is None else np.ascontiguousarray(basis, dtype=np.float32)
        self._maps: dict = {}  # id -> (int8 (H*W, dim), float16 scales (H*W,), H, W)
        self._pending: list = []  # (id, cells) held until the basis is learned

    # ---------------------------------------------------------------- building
    def add(self, image_id, feature_map) -> None:
        """Store the (D, H, W) raw feature map of ``image_id`` (see :func:`stitch_cell_maps`)."""
        from pypatch.index.refine import cell_descriptors

        f = np.asarray(feature_map, dtype=np.float32)
        _, h, w = f.shape
        cells = cell_descriptors(f)
        if self.basis is None:
            self._pending.append((str(image_id), cells, h, w))
            if sum(len(c) for _, c, _, _ in self._pending) >= BASIS_MAX_ROWS:
                self.finish()
            return
        self._maps[str(image_id)] = self._encode(cells, h, w)

    def finish(self) -> None:
        """Learn the projection on the cells held so far (if not yet) and encode them."""
        if self.basis is None and self._pending:
            x = np.concatenate([c for _, c, _, _ in self._pending])[:BASIS_MAX_ROWS]
            # uncentred: the top right-singular vectors keep q . x for x near their span
            _, _, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
            basis = np.zeros((self.dim, x.shape[1]), np.float32)
            basis[:min(self.dim, len(vt))] = vt[:self.dim]
            self.basis = basis
        for image_id, cells, h, w in self._pending:
            self._maps[image_id] = self._encode(cells, h, w)
        self._pending = []

    def _encode(self, cells, h, w) -> tuple:
        y = cells @ self.basis.T
        scale = np.maximum(np.abs(y).max(1), 1e-12) / 127.0
        q = np.clip(np.round(y / scale[:, None]), -127, 127).astype(np.int8)
        return q, scale.astype(np.float16), int(h), int(w)

    def remove(self, image_id) -> None:
        self._maps.pop(str(image_id), None)

    def empty_like(self) -> "BoxMaps":
        """No maps, this projection (learned first if still pending): the maps of every shard
        built from one index share it."""
        self.finish()
        return BoxMaps(self.dim, self.basis)

    def take(self, other: "BoxMaps", ids) -> None:
        """Copy ``other``'s maps of ``ids`` (those it has) into this one (same projection)."""
        other.finish()
        if self.basis is None or other.basis is None or not np.array_equal(self.basis, other.basis):
            raise InvalidArgumentError("box_maps: maps can only be copied between box maps that "
                                       "share one projection (BoxMaps.empty_like)")
        for image_id in ids:
            entry = other._maps.get(str(image_id))
            if entry is not None:
                self._maps[str(image_id)] = entry

    # ---------------------------------------------------------------- search
    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._maps

    def __len__(self) -> int:
        return len(self._maps) + len(self._pending)

    def similarity(self, image_id, query) -> np.ndarray:
        """(H, W) float32 approximate cosine of ``query`` (model space, (D,)) with each cell."""
        q8, scale, h, w = self._maps[str(image_id)]
        qp = self.basis @ np.asarray(query, dtype=np.float32)
        return ((q8.astype(np.float32) @ qp) * scale.astype(np.float32)).reshape(h, w)

    def nbytes_per_image(self) -> float:
        """Stored bytes per image (int8 cells + float16 scales), basis excluded."""
        if not self._maps:
            return 0.0
        return float(np.mean([q.nbytes + s.nbytes for q, s, _, _ in self._maps.values()]))

    # ---------------------------------------------------------------- persistence
    def save(self, path, ids) -> None:
        """Write the maps of ``ids`` (in that order) to ``path`` (.npz, atomic)."""
        import os

        self.finish()
        ids = [str(i) for i in ids if str(i) in self._maps]
        h = np.array([self._maps[i][2] for i in ids], np.int32)
        w = np.array([self._maps[i][3] for i in ids], np.int32)
        cells = np.concatenate([self._maps[i][0] for i in ids]) if ids else np.zeros((0, self.dim), np.int8)
        scales = np.concatenate([self._maps[i][1] for i in ids]) if ids else np.zeros(0, np.float16)
        tmp = f"{os.fspath(path)}.tmp.npz"
        np.savez(tmp, ids=np.array(ids, dtype=str), h=h, w=w, cells=cells, scales=scales,
                 basis=self.basis if self.basis is not None else np.zeros((0, 0), np.float32))
        os.replace(tmp, os.fspath(path))

    @classmethod
    def load(cls, path, dim: int) -> "BoxMaps":
        try:
            with np.load(path, allow_pickle=False) as z:
                ids, h, w = z["ids"].tolist(), z["h"], z["w"]
                cells, scales, basis = z["cells"], z["scales"], z["basis"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise IndexFormatError(f"{path}: not a pypatch box-map file ({exc})") from exc
        n = h.astype(np.int64) * w
        unlearned = basis.size == 0 and not ids  # saved before any image was added
        if (len(h) != len(ids) or len(w) != len(ids) or int(n.sum()) != len(cells)
                or len(scales) != len(cells) or cells.ndim != 2 or cells.shape[1] != dim
                or basis.ndim != 2 or (basis.shape[0] != dim and not unlearned)):
            raise IndexFormatError(f"{path}: box-map arrays do not agree with each other")
        out = cls(dim, None if unlearned else basis)
        off = np.concatenate([[0], np.cumsum(n)])
        for i, image_id in enumerate(ids):
            out._maps[image_id] = (cells[off[i]:off[i + 1]], scales[off[i]:off[i + 1]],
                                   int(h[i]), int(w[i]))
        return out

"""PCA-whitening of descriptors for ``Embedder(whitening=...)``, saved as a small ``.npz``.

A compatibility layer over :class:`pypatch.index.transform.PCATransform` (the one PCA implementation,
also used by ``ImageIndex.build(pca_dim=...)``): ``PCAWhitening.fit(X, dim=None)`` is a full
whitening (eigenvalue power -0.5, scikit-learn's ``PCA(whiten=True)`` up to axis signs) with an
additive ``eps`` on the variances; ``apply(X)`` projects, whitens and L2-normalises again, so the
result can go straight into an inner-product index. The ``.npz`` (no pickle) keeps mean, unit
principal axes and per-axis scale, so it can be shipped next to an index and re-applied with numpy.
"""
from __future__ import annotations

import os

import numpy as np

from pypatch._checks import as_int
from pypatch.errors import IndexFormatError, InvalidArgumentError, NotTrainedError
from pypatch.index.transform import PCATransform

_FORMAT = 1
_POWER = -0.5  # full whitening: divide each axis by its standard deviation


class PCAWhitening:
    """PCA-whitening (optionally with dimensionality reduction) followed by L2 normalisation."""

    def __init__(self, mean=None, components=None, scale=None) -> None:
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.components = None if components is None else np.asarray(components, dtype=np.float32)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float32)
        self._transform = None
        if self.components is not None:
            # rows of the projection = unit axes times their scale; the scale is variance ** -0.5
            matrix = self.components * self.scale[:, None]
            self._transform = PCATransform(self.mean, matrix, self.scale.astype(np.float64) ** -2,
                                           power=_POWER)

    @property
    def is_trained(self) -> bool:
        return self._transform is not None

    @property
    def transform(self) -> PCATransform:
        """The underlying :class:`PCATransform` (what ``apply`` runs)."""
        self._require()
        return self._transform

    @property
    def dim_in(self) -> int:
        return self.transform.dim_in

    @property
    def dim_out(self) -> int:
        return self.transform.dim_out

    def _require(self) -> None:
        if not self.is_trained:
            raise NotTrainedError("PCAWhitening is not fitted; call fit(X) or PCAWhitening.load(path)")

    @classmethod
    def fit(cls, x, dim: int | None = None, *, eps: float = 1e-6, seed: int = 0) -> "PCAWhitening":
        """Learn the whitening from descriptors ``x`` (n, d); ``dim`` keeps the top components.

        ``eps`` is added to every variance so that near-zero variance directions (e.g. n < d) do
        not blow up. ``seed`` is kept for compatibility: the fit is deterministic."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InvalidArgumentError(f"whitening training data must be a non-empty (n, d) matrix; got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InvalidArgumentError("whitening training data contains NaN or infinite values")
        n, d = arr.shape
        max_dim = min(n, d)
        if dim is None:
            dim = max_dim
        dim = as_int(dim, "dim (at most min(n, d))", 1, max_dim)
        t = PCATransform.fit(arr, dim, power=_POWER, eps=eps)
        scale = (t.eigenvalues.astype(np.float64) + eps) ** _POWER
        return cls(t.mean, t.matrix / scale[:, None].astype(np.float32), scale)

    def apply(self, x) -> np.ndarray:
        """Whiten (n, d_in) or (d_in,) descriptors -> L2-normalised float32 (n, dim_out) or (dim_out,)."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim not in (1, 2) or arr.shape[-1] != self.dim_in:
            raise InvalidArgumentError(f"whitening expects vectors of dimension {self.dim_in}; got shape {arr.shape}")
        return self._transform.apply(arr)

    __call__ = apply

    def save(self, path: str | os.PathLike) -> None:
        self._require()
        with open(os.fspath(path), "wb") as f:  # a file object: numpy must not append ".npz"
            np.savez(f, format=np.int64(_FORMAT), mean=self.mean, components=self.components, scale=self.scale)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PCAWhitening":
        p = os.fspath(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                fmt = int(z["format"])
                mean, comps, scale = z["mean"], z["components"], z["scale"]
        except (OSError, KeyError, ValueError) as exc:
            raise IndexFormatError(f"{p}: not a pypatch whitening file ({exc})") from None
        if fmt != _FORMAT or comps.ndim != 2 or mean.shape != (comps.shape[1],) or scale.shape != (comps.shape[0],):
            raise IndexFormatError(f"{p}: whitening file has format {fmt} or inconsistent shapes")
        return cls(mean, comps, scale)

    def __repr__(self) -> str:
        if not self.is_trained:
            return "PCAWhitening(untrained)"
        return f"PCAWhitening({self.dim_in} -> {self.dim_out})"


__all__ = ["PCAWhitening"]

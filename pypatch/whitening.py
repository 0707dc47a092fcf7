"""PCA-whitening of descriptors: learned with scikit-learn, applied with numpy only.

``PCAWhitening.fit(X, dim=None)`` learns mean, principal axes and variances (scikit-learn's
``PCA(whiten=True)``); ``apply(X)`` projects, whitens and L2-normalises again, so the result can go
straight into an inner-product index. Saved as a small ``.npz`` (no pickle) so it can be shipped next
to an index and re-applied without scikit-learn.
"""
from __future__ import annotations

import os

import numpy as np

from pypatch.errors import IndexFormatError, InvalidArgumentError, NotTrainedError

_FORMAT = 1


def _as_matrix(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty (n, d) matrix; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidArgumentError(f"{what} contains NaN or infinite values")
    return arr


class PCAWhitening:
    """PCA-whitening (optionally with dimensionality reduction) followed by L2 normalisation."""

    def __init__(self, mean=None, components=None, scale=None) -> None:
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.components = None if components is None else np.asarray(components, dtype=np.float32)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float32)

    @property
    def is_trained(self) -> bool:
        return self.components is not None

    @property
    def dim_in(self) -> int:
        self._require()
        return int(self.components.shape[1])

    @property
    def dim_out(self) -> int:
        self._require()
        return int(self.components.shape[0])

    def _require(self) -> None:
        if not self.is_trained:
            raise NotTrainedError("PCAWhitening is not fitted; call fit(X) or PCAWhitening.load(path)")

    @classmethod
    def fit(cls, x, dim: int | None = None, *, eps: float = 1e-6, seed: int = 0) -> "PCAWhitening":
        """Learn the whitening from descriptors ``x`` (n, d); ``dim`` keeps the top components."""
        from sklearn.decomposition import PCA  # only needed to learn, not to apply

        arr = _as_matrix(x, "whitening training data")
        n, d = arr.shape
        max_dim = min(n, d)
        if dim is None:
            dim = max_dim
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= max_dim:
            raise InvalidArgumentError(f"dim must be an integer in 1..min(n, d)={max_dim}; got {dim!r}")
        pca = PCA(n_components=int(dim), whiten=False, svd_solver="full", random_state=seed).fit(arr)
        # sklearn's whiten divides by sqrt(explained_variance_); we add eps so that near-zero
        # variance directions (e.g. n < d) do not blow up to infinity.
        scale = 1.0 / np.sqrt(pca.explained_variance_ + eps)
        return cls(pca.mean_, pca.components_, scale)

    def apply(self, x) -> np.ndarray:
        """Whiten (n, d_in) or (d_in,) descriptors -> L2-normalised float32 (n, dim_out) or (dim_out,)."""
        self._require()
        arr = np.asarray(x, dtype=np.float32)
        single = arr.ndim == 1
        arr2 = arr[None] if single else arr
        if arr2.ndim != 2 or arr2.shape[1] != self.dim_in:
            raise InvalidArgumentError(f"whitening expects vectors of dimension {self.dim_in}; got shape {arr.shape}")
        y = ((arr2 - self.mean) @ self.components.T) * self.scale
        y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        y = y.astype(np.float32, copy=False)
        return y[0] if single else y

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

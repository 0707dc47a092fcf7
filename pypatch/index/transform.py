"""A learned linear pre-transform of patch descriptors (PCA, optional whitening), applied before PQ.

PQ with m=32 on the D=1280 descriptors of the default model splits them into 40-dim sub-vectors,
which 256 centroids describe badly. Projecting onto the top-d principal axes first (learned on the
database's own patch descriptors, like faiss' ``IndexPreTransform(PCAMatrix)``) keeps the
directions that separate patches and makes each sub-vector a few dims, where 8-bit PQ is accurate.

``y = normalize(((x - mean) @ matrix.T))`` with ``matrix`` = the top-d eigenvectors of the
covariance, each row scaled by ``eigenvalue ** power`` (``power`` = 0: plain PCA rotation;
-0.5: full whitening, as in Jégou & Chum 2012). For PQ an OPQ rotation ``R`` of the projected
vectors (:func:`fit_opq_rotation`) balances the sub-spaces; being orthogonal it commutes with the
normalisation and is folded into ``matrix`` (:meth:`PCATransform.rotated`). Query time is numpy
only: one (D,) x (D, d) product per query (~70 us for 1280 -> 256). The fitted transform travels
inside the ImageIndex file: its mean and matrix in the native index's XFRM section (binary,
CRC-checked, readable by C++ programs: ``pypatch::LinearTransform``), the rest as JSON
(:meth:`PCATransform.to_dict` with ``native=True``). Files of META format 2 held it all as
base64 JSON (1.75 MB for 1280 -> 256, ~13 ms to decode); they still load.

Measured on the offline benchmark (L3 per-crop, large: 1,000 images, 30,000 patches), mAP:
flat 61.3; PQ m=32 on raw descriptors 47.2; whitened PCA-256 + PQ32 62.7; + OPQ 63.3
(the ImageIndex default for PQ stores). See pypatch.index.image_index.AUTO_PCA_DIM.
"""
from __future__ import annotations

import base64
import hashlib
import numpy as np

from pypatch._checks import as_int, as_number
from pypatch.errors import IndexFormatError, InvalidArgumentError

KIND = "pca"
NATIVE_SECTION = "XFRM"  # to_dict(native=True): mean and matrix live in this native section
_EPS = 1e-12


class PCATransform:
    """PCA projection to ``dim_out`` dims, eigenvalue power scaling, then L2 normalisation."""

    def __init__(self, mean, matrix, eigenvalues, power: float = 0.0):
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)  # (dim_out, dim_in)
        self.eigenvalues = np.ascontiguousarray(eigenvalues, dtype=np.float32)
        self.power = float(power)
        self._matrix_t = np.ascontiguousarray(self.matrix.T)
        # mean @ matrix.T once, so apply() is one product and a subtraction
        self._offset = self.mean @ self._matrix_t

    @property
    def dim_in(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def dim_out(self) -> int:
        return int(self.matrix.shape[0])

    @classmethod
    def fit(cls, x, dim: int, power: float = 0.0, *, eps: float | None = None) -> "PCATransform":
        """Learn the transform from sample vectors ``x`` (n, D); keep ``dim`` axes.

        ``eps``: None floors the eigenvalues at 1e-6 x the largest before the power (the index
        builds); a number adds it to every eigenvalue instead (``PCAWhitening``'s regulariser,
        like scikit-learn's ``PCA(whiten=True)`` with a guard against zero variances)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] < 2:
            raise InvalidArgumentError(
                f"x: expected at least 2 training vectors of shape (n, D), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise InvalidArgumentError("x: training vectors contain NaN or infinite values")
        check_dim(dim, x.shape[1])
        check_power(power)
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float))
                                or not 0.0 <= eps < np.inf):
            raise InvalidArgumentError(f"eps: expected None or a finite number >= 0, got {eps!r}")
        mean = x.mean(axis=0, dtype=np.float64)
        xc = x.astype(np.float64) - mean
        cov = xc.T @ xc / (len(x) - 1)
        vals, vecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(vals)[::-1][:dim]
        vals, vecs = np.maximum(vals[order], 0.0), vecs[:, order]
        # Fix each axis's sign (largest component positive): fits are then reproducible.
        signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(dim)])
        vecs = vecs * np.where(signs == 0, 1.0, signs)
        # Floor tiny eigenvalues (rank-deficient samples) so whitening cannot blow noise up.
        if not power:
            scale = np.ones(dim)
        elif eps is None:
            scale = np.maximum(vals, max(float(vals[0]) * 1e-6, _EPS)) ** power
        else:
            scale = (vals + float(eps)) ** power
        matrix = (vecs * scale).T
        return cls(mean, matrix, vals, power)

    def apply(self, x) -> np.ndarray:
        """Transform (n, D) or (D,) float vectors; returns float32 rows of unit L2 norm."""
        a = np.asarray(x, dtype=np.float32)
        one = a.ndim == 1
        if one:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != self.dim_in:
            raise InvalidArgumentError(
                f"vectors: expected shape (n, {self.dim_in}) for the PCA transform, got "
                f"{np.shape(x)}")
        y = a @ self._matrix_t
        y -= self._offset
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        y /= np.maximum(norms, _EPS)
        return y[0] if one else y

    def rotated(self, rotation) -> "PCATransform":
        """This transform followed by the orthogonal ``rotation`` (d, d): ``apply(x) @ rotation``
        (a rotation keeps unit norms, so it folds into the matrix)."""
        r = np.asarray(rotation, dtype=np.float64)
        if r.shape != (self.dim_out, self.dim_out):
            raise InvalidArgumentError(
                f"rotation: expected shape ({self.dim_out}, {self.dim_out}), got {r.shape}")
        matrix = (r.T @ self.matrix.astype(np.float64)).astype(np.float32)
        return PCATransform(self.mean, matrix, self.eigenvalues, self.power)

    # ------------------------------------------------------------------ persistence
    def to_dict(self, *, native: bool = False) -> dict:
        """JSON-safe form: settings plus base64 float32 arrays with shapes and a sha256.

        ``native=True``: without mean and matrix (``"arrays": "XFRM"``), for a file whose native
        index stores them (``PatchIndex.set_transform``); a few hundred bytes."""
        d = {"kind": KIND, "dim_in": self.dim_in, "dim_out": self.dim_out, "power": self.power}
        if native:
            d["arrays"] = NATIVE_SECTION
        else:
            d.update(mean=_encode(self.mean), matrix=_encode(self.matrix))
        d["eigenvalues"] = _encode(self.eigenvalues)
        return d

    @classmethod
    def from_dict(cls, d, where: str = "transform", native=None) -> "PCATransform":
        """Inverse of :meth:`to_dict`; raises IndexFormatError on any inconsistency.

        ``native``: the ``(mean, matrix)`` of the native index (``PatchIndex.transform``), used
        when the record says its arrays live there."""
        if not isinstance(d, dict) or d.get("kind") != KIND:
            raise IndexFormatError(f"{where}: expected a stored {KIND!r} transform, got "
                                   f"{type(d).__name__ if not isinstance(d, dict) else d.get('kind')!r}")
        try:
            dim_in, dim_out, power = int(d["dim_in"]), int(d["dim_out"]), float(d["power"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{where}: missing or malformed transform field ({exc})") from None
        if "arrays" in d:
            mean, matrix = _native_arrays(d["arrays"], native, (dim_out, dim_in), where)
        else:
            mean = _decode(d.get("mean"), (dim_in,), f"{where}.mean")
            matrix = _decode(d.get("matrix"), (dim_out, dim_in), f"{where}.matrix")
        eig = _decode(d.get("eigenvalues"), (dim_out,), f"{where}.eigenvalues")
        if not (0 < dim_out <= dim_in):
            raise IndexFormatError(f"{where}: dim_out {dim_out} not in 1..dim_in {dim_in}")
        return cls(mean, matrix, eig, power)


def fit_opq_rotation(y, m: int, nbits: int = 8, niter: int = 12, pq_iters: int = 4,
                     seed: int = 0, num_threads=None) -> np.ndarray:
    """Orthogonal (d, d) ``R`` minimising the PQ(m, nbits) reconstruction error of ``y @ R``.

    Non-parametric OPQ (Ge et al., CVPR 2013; faiss ``OPQMatrix``): alternate PQ training on
    the rotated vectors and the orthogonal Procrustes solution ``R = U V^T`` of
    ``svd(y^T decode(encode(y R)))``. Starts from the identity (the PCA axes)."""
    from pypatch.index.pq import ProductQuantizer

    y = np.ascontiguousarray(y, dtype=np.float32)
    d = y.shape[1]
    rotation = np.eye(d)
    for it in range(int(niter)):
        yr = np.ascontiguousarray(y @ rotation.astype(np.float32))
        pq = ProductQuantizer(d, m, nbits=nbits).train(yr, iters=pq_iters, seed=seed + it,
                                                        num_threads=num_threads)
        rec = pq.decode(pq.encode(yr, num_threads=num_threads)).astype(np.float64)
        u, _, vt = np.linalg.svd(y.T.astype(np.float64) @ rec)
        rotation = u @ vt
    return rotation


def check_dim(dim, dim_in: int) -> None:
    as_int(dim, "pca_dim (at most the model's dimension)", 1, dim_in)


def check_power(power) -> None:
    as_number(power, "pca_power (0 = no whitening, -0.5 = full)", -1.0, 0.0)


def _encode(a: np.ndarray) -> dict:
    raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
    return {"dtype": "float32", "shape": list(a.shape), "sha256": hashlib.sha256(raw).hexdigest(),
            "data": base64.b64encode(raw).decode("ascii")}


def _native_arrays(arrays, native, shape: tuple, where: str) -> tuple:
    """(mean, matrix) from the native index, checked against the recorded dims."""
    if arrays != NATIVE_SECTION:
        raise IndexFormatError(f"{where}: unknown arrays location {arrays!r}")
    if native is None:
        raise IndexFormatError(f"{where}: the mean and matrix should be in the index's "
                               f"{NATIVE_SECTION} section, which is missing")
    mean, matrix = native
    if mean.shape != shape[1:] or matrix.shape != shape:
        raise IndexFormatError(f"{where}: {NATIVE_SECTION} holds a {matrix.shape[1]} -> "
                               f"{matrix.shape[0]} transform but the metadata records shape "
                               f"{list(shape)}")
    return mean, matrix


def _decode(d, shape: tuple, where: str) -> np.ndarray:
    if not isinstance(d, dict) or d.get("dtype") != "float32":
        raise IndexFormatError(f"{where}: expected a base64 float32 array record")
    if list(d.get("shape", [])) != list(shape):
        raise IndexFormatError(f"{where}: stored shape {d.get('shape')} does not match the "
                               f"transform's dimensions {list(shape)}")
    try:
        raw = base64.b64decode(d["data"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise IndexFormatError(f"{where}: data is not valid base64") from None
    if hashlib.sha256(raw).hexdigest() != d.get("sha256"):
        raise IndexFormatError(f"{where}: sha256 mismatch, the stored matrix is corrupted")
    if len(raw) != 4 * int(np.prod(shape)):
        raise IndexFormatError(f"{where}: {len(raw)} bytes for shape {list(shape)}")
    a = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise IndexFormatError(f"{where}: contains NaN or infinite values")
    return a

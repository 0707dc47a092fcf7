"""Quantizers for inner-product search over patch vectors: product (PQ) and residual (RQ).

A ``dim``-dimensional vector is split into ``m`` sub-vectors of ``dsub = dim // m`` floats;
each is replaced by the index of its nearest (L2) of ``2**nbits`` centroids, so a vector costs
``m`` bytes. The score of a query ``q`` against a code is ``sum_j lut[j, code[j]]`` with
``lut[j, c] = q_j . C_j[c]`` (asymmetric distance computation, ADC).
Training: per sub-space seeded k-means++ then Lloyd iterations, on at most
``max_points_per_centroid * 2**nbits`` rows sampled with the seed; deterministic for a seed
whatever the thread count. The native implementation lives in csrc/pypatch/pq/.

A :class:`ResidualQuantizer` keeps the code (``m`` bytes) and the scan (``m`` table lookups) but
its ``m`` codebooks hold full-dimension codewords that add up: ``x ~ C_0[b_0] + ... +
C_{m-1}[b_{m-1}]``, each chosen greedily for what the earlier ones left. On whitened patch
descriptors it loses far less to the exact store than PQ at the same bytes; its table costs
``m * 2**nbits * dim`` multiply-adds a query instead of ``2**nbits * dim``
(benchmarks/README.md, "Residual codebooks").
"""
from __future__ import annotations

import numpy as np

from pypatch import _core
from pypatch._checks import INT32_MAX, UINT64_MAX, as_array, as_int, threads
from pypatch.errors import InvalidArgumentError

__all__ = ["ProductQuantizer", "ResidualQuantizer"]


class _Quantizer:
    """What both kinds share: codes of ``m`` bytes scored by ``m`` table lookups."""

    @classmethod
    def _from_core(cls, core_pq):
        kind = ResidualQuantizer if core_pq.kind == "residual" else ProductQuantizer
        obj = kind.__new__(kind)
        obj._pq = core_pq
        return obj

    def copy(self):
        """A new quantizer of the same kind with the same centroids (not frozen by an index
        that stores this one's codes); untrained if this one is."""
        twin = type(self)(self.dim, self.m, nbits=self.nbits)
        if self.is_trained:
            twin._pq.set_centroids(self.centroids)
        return twin

    dim = property(lambda self: self._pq.dim, doc="Vector dimension.")
    m = property(lambda self: self._pq.m, doc="Number of sub-quantizers (bytes per code).")
    nbits = property(lambda self: self._pq.nbits, doc="Bits per sub-quantizer index.")
    ksub = property(lambda self: self._pq.ksub, doc="Centroids per sub-space, 2**nbits.")
    kind = property(lambda self: self._pq.kind, doc='"product" or "residual".')
    is_trained = property(lambda self: self._pq.is_trained, doc="True after train/from_centroids.")

    @property
    def centroids(self) -> np.ndarray:
        """(m, 2**nbits, dim // m) float32 copy of the codebooks for PQ, (m, 2**nbits, dim)
        for RQ (zeros before training)."""
        return self._pq.centroids

    def train(self, x: np.ndarray, iters: int = 25, seed: int = 0, *, num_threads: int | None = None,
              max_points_per_centroid: int = 256) -> "ProductQuantizer":
        """Train the codebooks on x (n, dim) float32, n >= 2**nbits. Returns self.

        Refused (InvalidArgumentError) once an index stores codes made with this quantizer:
        new centroids would silently change what those codes mean."""
        x = as_array(x, "x", np.float32, 2, self.dim, finite=True)
        if x.shape[0] < self.ksub:
            raise InvalidArgumentError(f"x: training needs at least 2**nbits={self.ksub} vectors; "
                                       f"got {x.shape[0]}")
        iters = as_int(iters, "iters", 0, INT32_MAX)
        seed = as_int(seed, "seed", 0, UINT64_MAX)
        max_points_per_centroid = as_int(max_points_per_centroid, "max_points_per_centroid", 1)
        self._pq.train(x, iters, seed, threads(num_threads), max_points_per_centroid)
        return self

    def encode(self, x: np.ndarray, *, num_threads: int | None = None) -> np.ndarray:
        """(n, dim) float32 -> (n, m) uint8: PQ, the nearest centroid per sub-space; RQ, stage by
        stage the codeword nearest to the residual (lowest index on ties)."""
        x = as_array(x, "x", np.float32, 2, self.dim, finite=True, allow_1d=False)
        return self._pq.encode(x, threads(num_threads))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, m) uint8 -> (n, dim) float32 reconstruction."""
        codes = as_array(codes, "codes", np.uint8, 2, self.m)
        return self._pq.decode(codes)

    def compute_lut(self, q: np.ndarray) -> np.ndarray:
        """One query (dim,) float32 -> (m, 2**nbits) float32 table: lut[j, c] = q . codeword
        (its sub-vector for PQ); a code scores sum_j lut[j, code[j]]."""
        q = as_array(q, "q", np.float32, 1, self.dim, finite=True)
        return self._pq.compute_lut(q)

    def compute_luts(self, q: np.ndarray, *, num_threads: int | None = None) -> np.ndarray:
        """Queries (nq, dim) float32 -> (nq, m, 2**nbits) tables, equal to compute_lut's."""
        q = as_array(q, "q", np.float32, 2, self.dim, finite=True, allow_1d=False)
        return self._pq.compute_luts(q, threads(num_threads))

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return f"{type(self).__name__}(dim={self.dim}, m={self.m}, nbits={self.nbits}, {state})"


class ProductQuantizer(_Quantizer):
    """``ProductQuantizer(dim, m, nbits=8)``: m must divide dim; nbits is 8 or 4. Codes go in
    and out one per byte; a ``PatchIndex`` stores 4-bit codes two a byte (m/2 bytes per patch,
    the "blocked32_fs4" layout of its fast scan)."""

    def __init__(self, dim: int, m: int, nbits: int = 8) -> None:
        dim = as_int(dim, "dim", 1, INT32_MAX)
        m = as_int(m, "m", 1, INT32_MAX)
        nbits = _check_nbits(nbits)
        if m > dim or dim % m:
            raise InvalidArgumentError(f"m must divide dim={dim}; got m={m}")
        self._pq = _core.ProductQuantizer(dim, m, nbits)

    dsub = property(lambda self: self._pq.dsub, doc="Sub-vector dimension, dim // m.")

    @classmethod
    def from_centroids(cls, centroids: np.ndarray) -> "ProductQuantizer":
        """Rebuild a trained quantizer from ``(m, 2**nbits, dsub)`` float32 centroids."""
        m, ksub, dsub = _centroid_shape(centroids)
        pq = cls(m * dsub, m, 8 if ksub == 256 else 4)
        pq._pq.set_centroids(_centroids(centroids))
        return pq


class ResidualQuantizer(_Quantizer):
    """``ResidualQuantizer(dim, m, nbits=8)``: m (1..256) full-dimension codebooks of
    ``2**nbits`` codewords each; ``m * dim`` at most 2**26. Codes are ``m`` bytes, like PQ's,
    and a ``PatchIndex`` stores and scans them the same way (4-bit ones two a byte).
    Training: stage by stage, k-means (seeded by splitting from the mean) on what the earlier
    stages left, on at most ``max_points_per_centroid * 2**nbits`` sampled rows."""

    def __init__(self, dim: int, m: int, nbits: int = 8) -> None:
        dim = as_int(dim, "dim", 1, INT32_MAX)
        m = as_int(m, "m", 1, _core.ResidualQuantizer.max_m)
        nbits = _check_nbits(nbits)
        if m * dim > _core.ResidualQuantizer.max_codeword_floats:
            raise InvalidArgumentError(f"m * dim must be <= 2**26; got m={m}, dim={dim}")
        self._pq = _core.ResidualQuantizer(dim, m, nbits)

    @classmethod
    def from_centroids(cls, centroids: np.ndarray) -> "ResidualQuantizer":
        """Rebuild a trained quantizer from ``(m, 2**nbits, dim)`` float32 codebooks."""
        m, ksub, dim = _centroid_shape(centroids)
        rq = cls(dim, m, 8 if ksub == 256 else 4)
        rq._pq.set_centroids(_centroids(centroids))
        return rq


def _check_nbits(nbits) -> int:
    nbits = as_int(nbits, "nbits")
    if nbits not in (4, 8):
        raise InvalidArgumentError(f"nbits must be 8 or 4; got {nbits}")
    return nbits


def _centroids(centroids) -> np.ndarray:
    return as_array(centroids, "centroids", np.float32, 3, finite=True)


def _centroid_shape(centroids) -> tuple:
    c = _centroids(centroids)
    m, ksub, width = c.shape
    if ksub not in (16, 256):
        raise InvalidArgumentError(f"centroids must have 256 (nbits=8) or 16 (nbits=4) "
                                   f"rows per codebook; got shape {c.shape}")
    if m < 1 or width < 1:
        raise InvalidArgumentError(f"centroids must be non-empty; got shape {c.shape}")
    return m, ksub, width

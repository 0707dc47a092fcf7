"""Product quantizer (PQ) for inner-product search over patch vectors.

A ``dim``-dimensional vector is split into ``m`` sub-vectors of ``dsub = dim // m`` floats;
each is replaced by the index of its nearest (L2) of ``2**nbits`` centroids, so a vector costs
``m`` bytes. The score of a query ``q`` against a code is ``sum_j lut[j, code[j]]`` with
``lut[j, c] = q_j . C_j[c]`` (asymmetric distance computation, ADC).
Training: per sub-space seeded k-means++ then Lloyd iterations, on at most
``max_points_per_centroid * 2**nbits`` rows sampled with the seed; deterministic for a seed
whatever the thread count. The native implementation lives in csrc/pypatch/pq/.
"""
from __future__ import annotations

import numpy as np

from pypatch import _core
from pypatch._checks import INT32_MAX, UINT64_MAX, as_array, as_int, threads
from pypatch.errors import InvalidArgumentError

__all__ = ["ProductQuantizer"]


class ProductQuantizer:
    """``ProductQuantizer(dim, m, nbits=8)``: m must divide dim; nbits is 8 or 4. Codes go in
    and out one per byte; a ``PatchIndex`` stores 4-bit codes two a byte (m/2 bytes per patch,
    the "blocked32_fs4" layout of its fast scan)."""

    def __init__(self, dim: int, m: int, nbits: int = 8) -> None:
        dim = as_int(dim, "dim", 1, INT32_MAX)
        m = as_int(m, "m", 1, INT32_MAX)
        nbits = as_int(nbits, "nbits")
        if nbits not in (4, 8):
            raise InvalidArgumentError(f"nbits must be 8 or 4; got {nbits}")
        if m > dim or dim % m:
            raise InvalidArgumentError(f"m must divide dim={dim}; got m={m}")
        self._pq = _core.ProductQuantizer(dim, m, nbits)

    @classmethod
    def _from_core(cls, core_pq) -> "ProductQuantizer":
        obj = cls.__new__(cls)
        obj._pq = core_pq
        return obj

    @classmethod
    def from_centroids(cls, centroids: np.ndarray) -> "ProductQuantizer":
        """Rebuild a trained quantizer from ``(m, 2**nbits, dsub)`` float32 centroids."""
        c = as_array(centroids, "centroids", np.float32, 3, finite=True)
        m, ksub, dsub = c.shape
        if ksub not in (16, 256):
            raise InvalidArgumentError(f"centroids must have 256 (nbits=8) or 16 (nbits=4) "
                                       f"rows per sub-space; got shape {c.shape}")
        if m < 1 or dsub < 1:
            raise InvalidArgumentError(f"centroids must be non-empty; got shape {c.shape}")
        pq = cls(m * dsub, m, 8 if ksub == 256 else 4)
        pq._pq.set_centroids(c)
        return pq

    dim = property(lambda self: self._pq.dim, doc="Vector dimension.")
    m = property(lambda self: self._pq.m, doc="Number of sub-quantizers (bytes per code).")
    nbits = property(lambda self: self._pq.nbits, doc="Bits per sub-quantizer index.")
    ksub = property(lambda self: self._pq.ksub, doc="Centroids per sub-space, 2**nbits.")
    dsub = property(lambda self: self._pq.dsub, doc="Sub-vector dimension, dim // m.")
    is_trained = property(lambda self: self._pq.is_trained, doc="True after train/from_centroids.")

    @property
    def centroids(self) -> np.ndarray:
        """(m, 2**nbits, dim // m) float32 copy of the codebooks (zeros before training)."""
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
        """(n, dim) float32 -> (n, m) uint8: nearest centroid per sub-space (lowest on ties)."""
        x = as_array(x, "x", np.float32, 2, self.dim, finite=True, allow_1d=False)
        return self._pq.encode(x, threads(num_threads))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, m) uint8 -> (n, dim) float32 reconstruction."""
        codes = as_array(codes, "codes", np.uint8, 2, self.m)
        return self._pq.decode(codes)

    def compute_lut(self, q: np.ndarray) -> np.ndarray:
        """One query (dim,) float32 -> (m, 2**nbits) float32 table of sub-space inner products."""
        q = as_array(q, "q", np.float32, 1, self.dim, finite=True)
        return self._pq.compute_lut(q)

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return f"ProductQuantizer(dim={self.dim}, m={self.m}, nbits={self.nbits}, {state})"

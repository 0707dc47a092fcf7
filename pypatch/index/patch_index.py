"""PatchIndex: patch vectors grouped by image, searched by the per-image MAX over patches.

Each image owns a run of patch vectors (CSR ``image_offsets``: image ``i`` owns patches
``offsets[i]:offsets[i+1]``). ``search`` scores every patch against each query (PQ asymmetric
distance, or the exact inner product for the flat store), keeps per image the best score and
the ordinal of the winning patch, and returns the top-k images ordered by score, ties broken by
the lower image index. Storage: ``pq=None`` is the exact flat store (``flat_dtype`` float32 or
float16); a ``ProductQuantizer`` or ``ResidualQuantizer`` stores ``m`` bytes per patch (the
same codes and scans: only the codebooks and their tables differ).

Inverted file (``nlist=N``, PQ only): a coarse k-means quantizer of N centroids splits the
patches into N lists (nearest centroid in L2); ``search`` probes the ``nprobe`` lists nearest
each query and ranks images by the max over their *probed* patches, exactly as the exhaustive
ADC scan restricted to those patches would (codes are not residuals: they equal the exhaustive
index's codes for the same quantizer). Storage per patch: the code plus a 4-byte id, image <<
b | patch ordinal with b the bits the largest image needs (5 for 30 patches), so an IVF index
holds at most 256 patches per image and 2**(32 - b) images (2**27 at 30 patches).

Exact re-rank (``search(..., rerank=other)``): a fast first stage (e.g. IVF over 4-bit codes)
picks ``rerank_k`` candidate images, which ``other`` (an exhaustive index of the same images in a
more exact store: float16/float32 vectors or 8-bit codes, possibly loaded with ``mmap=True``)
re-scores over all their patches (:meth:`PatchIndex.score_images`).

Thread safety: ``search`` may run from many Python threads at once (the GIL is released);
``add``/``train``/``remove``/``compact`` take an exclusive lock inside the core.
"""
from __future__ import annotations

import json
import os
import weakref

import numpy as np

from pypatch import _core
from pypatch._checks import INT32_MAX, UINT64_MAX, as_array, as_int, threads
from pypatch.errors import IndexFormatError, InvalidArgumentError, InvalidTypeError
from pypatch.index.pq import ProductQuantizer, ResidualQuantizer, _Quantizer

__all__ = ["PatchIndex"]


def _counts(n_vectors: int, patches_per_image, image_offsets) -> np.ndarray:
    """Per-image patch counts from exactly one of the two spellings."""
    if (patches_per_image is None) == (image_offsets is None):
        raise InvalidArgumentError("pass exactly one of patches_per_image=P or image_offsets=offsets")
    if patches_per_image is not None:
        if isinstance(patches_per_image, np.ndarray) or isinstance(patches_per_image, (list, tuple)):
            counts = np.asarray(patches_per_image)
            if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu"):
                raise InvalidTypeError("patches_per_image must be an int or a 1-d sequence of ints")
            counts = counts.astype(np.int64)
            if (counts < 0).any():
                raise InvalidArgumentError("patches_per_image: counts must be >= 0")
        else:
            p = as_int(patches_per_image, "patches_per_image", 1)
            if n_vectors % p:
                raise InvalidArgumentError(f"patches_per_image={p} does not divide the number of "
                                           f"vectors ({n_vectors})")
            counts = np.full(n_vectors // p, p, dtype=np.int64)
    else:
        off = np.asarray(image_offsets)
        if off.ndim != 1 or off.size < 1 or off.dtype.kind not in "iu":
            raise InvalidTypeError("image_offsets must be a 1-d integer array of n_images + 1 offsets")
        off = off.astype(np.int64)
        if off[0] != 0 or off[-1] != n_vectors or (np.diff(off) < 0).any():
            raise InvalidArgumentError(f"image_offsets must start at 0, never decrease and end at the "
                                       f"number of vectors ({n_vectors}); got {off[0]}..{off[-1]}")
        counts = np.diff(off)
    if int(counts.sum()) != n_vectors:
        raise InvalidArgumentError(f"the patch counts add up to {int(counts.sum())} but "
                                   f"{n_vectors} vectors were given")
    return np.ascontiguousarray(counts, dtype=np.int64)


class PatchIndex:
    """``PatchIndex(dim, pq=None, *, flat_dtype="float32")``.

    Storage per patch: ``m`` bytes for 8-bit PQ codes, ``m / 2`` for 4-bit ones (two codes a
    byte, searched by the 4-bit fast scan), ``4 * dim`` / ``2 * dim`` for a flat store; plus
    9 bytes per image (offset and removed flag). Every search returns exact ADC (PQ) or exact
    float (flat) results, whatever the SIMD level."""

    def __init__(self, dim: int, pq: ProductQuantizer | ResidualQuantizer | None = None, *,
                 flat_dtype: str = "float32", nlist: int | None = None) -> None:
        # At most what a saved file's reader accepts (2**20), so every index that saves loads.
        dim = as_int(dim, "dim", 1, _core.max_index_dim)
        if pq is None:
            if nlist is not None:
                raise InvalidArgumentError("nlist (an inverted file) needs a PQ store: pass "
                                           "pq=ProductQuantizer(dim, m)")
            if flat_dtype not in ("float32", "float16"):
                raise InvalidArgumentError(f"flat_dtype must be 'float32' or 'float16'; got {flat_dtype!r}")
            self._ix = _core.PatchIndex(dim, flat_dtype)
        elif isinstance(pq, _Quantizer):
            if pq.dim != dim:
                raise InvalidArgumentError(f"pq.dim ({pq.dim}) must equal dim ({dim})")
            if nlist is None:
                self._ix = _core.PatchIndex(dim, pq._pq)
            else:
                self._ix = _core.PatchIndex(dim, pq._pq, as_int(nlist, "nlist", 1, _core.max_nlist))
        else:
            raise InvalidTypeError(f"pq must be a ProductQuantizer, a ResidualQuantizer or None; "
                                 f"got {type(pq).__name__}")
        self._metadata: dict = {}
        self._edits = 0  # bumped by every change of the image layout (the re-rank check's cache)
        self._rerank_ok = None

    @classmethod
    def _from_core(cls, core_ix) -> "PatchIndex":
        obj = cls.__new__(cls)
        obj._ix = core_ix
        try:
            meta = json.loads(core_ix.metadata_json)
        except ValueError as e:
            raise IndexFormatError(f"index metadata is not valid JSON: {e}") from None
        except RecursionError:  # e.g. thousands of nested brackets in a damaged file
            raise IndexFormatError("index metadata is not valid JSON: nested too deeply") from None
        if not isinstance(meta, dict):
            raise IndexFormatError("index metadata must be a JSON object")
        obj._metadata = meta
        obj._edits = 0
        obj._rerank_ok = None
        return obj

    # ------------------------------------------------------------------ properties
    dim = property(lambda self: self._ix.dim, doc="Vector dimension.")
    num_patches = property(lambda self: self._ix.n_patches, doc="Stored patch vectors.")
    is_trained = property(lambda self: self._ix.is_trained, doc="False for an untrained PQ index.")

    @property
    def pq(self) -> ProductQuantizer | ResidualQuantizer | None:
        """The quantizer (shared, not copied), or None for a flat store."""
        core_pq = self._ix.pq
        return None if core_pq is None else _Quantizer._from_core(core_pq)

    @property
    def nlist(self) -> int:
        """Lists of the inverted file; 0 for an exhaustive index."""
        return int(self._ix.nlist)

    @property
    def is_ivf(self) -> bool:
        """True for an inverted-file index (``nlist`` given)."""
        return self._ix.nlist > 0

    @property
    def nprobe(self) -> int:
        """Lists a search probes by default (IVF; 0 for an exhaustive index). Default
        ``min(nlist, 16)``; values above nlist are stored as nlist."""
        return int(self._ix.nprobe) if self._ix.nlist > 0 else 0

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self._ix.nlist == 0:
            raise InvalidArgumentError("nprobe: this index is exhaustive (no inverted file; pass nlist=)")
        self._ix.nprobe = min(as_int(value, "nprobe", 1, None), self._ix.nlist)

    @property
    def coarse_centroids(self) -> np.ndarray | None:
        """(nlist, dim) float32 copy of the coarse centroids; None if exhaustive or untrained."""
        if self._ix.nlist == 0:
            return None
        c = self._ix.coarse_centroids
        return c if c.shape[0] else None

    def set_coarse_centroids(self, centroids: np.ndarray) -> None:
        """Use coarse centroids trained elsewhere (e.g. shared by shards or a benchmark):
        (nlist, dim) float32, finite. Only while the index holds no patches."""
        if self._ix.nlist == 0:
            raise InvalidArgumentError("set_coarse_centroids: this index is exhaustive (no inverted file)")
        c = as_array(centroids, "centroids", np.float32, 2, self.dim, finite=True)
        if c.shape[0] != self._ix.nlist:
            raise InvalidArgumentError(f"centroids: expected {self._ix.nlist} rows (nlist); got {c.shape[0]}")
        self._ix.set_coarse_centroids(c)

    def patch_lists(self) -> np.ndarray:
        """IVF: (num_patches,) int32 list of every patch, in patch order (one pass over all lists)."""
        if self._ix.nlist == 0:
            raise InvalidArgumentError("patch_lists: this index is exhaustive (no inverted file)")
        return self._ix.patch_lists()

    def probe(self, queries: np.ndarray, nprobe: int | None = None) -> np.ndarray:
        """IVF: (nq, min(nprobe, nlist)) int32 lists a search would probe, nearest first."""
        if self._ix.nlist == 0:
            raise InvalidArgumentError("probe: this index is exhaustive (no inverted file)")
        q = as_array(queries, "queries", np.float32, 2, self.dim, finite=True, allow_1d=True)
        n = self.nprobe if nprobe is None else min(as_int(nprobe, "nprobe", 1, None), self._ix.nlist)
        return self._ix.probe(q, n)

    @property
    def flat_dtype(self) -> str | None:
        """"float32" or "float16" for a flat store, None for PQ."""
        kind = self._ix.kind
        return None if kind == "pq" else kind

    @property
    def image_offsets(self) -> np.ndarray:
        """(n_images + 1,) int64 CSR offsets: image i owns patches offsets[i]:offsets[i+1]."""
        return self._ix.image_offsets

    patch_offsets = image_offsets

    @property
    def removed(self) -> np.ndarray:
        """(n_images,) bool mask of images removed since the last compact()."""
        return self._ix.removed

    @property
    def metadata(self) -> dict:
        """JSON-serialisable dict saved and loaded with the index (edit it in place)."""
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict) -> None:
        if not isinstance(value, dict):
            raise InvalidTypeError(f"metadata must be a dict; got {type(value).__name__}")
        self._dump_metadata(value)
        self._metadata = value

    @property
    def num_removed(self) -> int:
        """Images removed since the last compact() (still counted by len())."""
        return int(self._ix.n_removed)

    def __len__(self) -> int:
        """Number of images, removed ones included until compact()."""
        return int(self._ix.n_images)

    # ------------------------------------------------------------------ building
    def train(self, x: np.ndarray, *, iters: int = 25, seed: int = 0,
              num_threads: int | None = None) -> "PatchIndex":
        """PQ only: train the codebooks on x (n, dim) float32 unless already trained.
        IVF: first the coarse quantizer (k-means on at most 256 * nlist rows of x sampled with
        the seed), unless trained or set; then the PQ on the same vectors (not residuals)."""
        if self._ix.kind == "pq" and not self._ix.is_trained:
            x = as_array(x, "x", np.float32, 2, self.dim, finite=True)
            ksub = self._ix.pq.ksub
            if x.shape[0] < ksub and not self._ix.pq.is_trained:
                raise InvalidArgumentError(f"x: training needs at least 2**nbits={ksub} vectors; "
                                           f"got {x.shape[0]}")
            nlist = self._ix.nlist
            if nlist and self.coarse_centroids is None and x.shape[0] < nlist:
                raise InvalidArgumentError(f"x: training the coarse quantizer needs at least "
                                           f"nlist={nlist} vectors; got {x.shape[0]}")
            self._ix.train(x, as_int(iters, "iters", 0, INT32_MAX), as_int(seed, "seed", 0, UINT64_MAX),
                           threads(num_threads))
        return self

    def add(self, vectors: np.ndarray, *, patches_per_image=None, image_offsets=None,
            num_threads: int | None = None) -> np.ndarray:
        """Append images. vectors: (n_patches, dim) float32, grouped by image, with either a
        constant ``patches_per_image`` (int, or a sequence of per-image counts) or CSR
        ``image_offsets`` (n_new + 1,). Returns the new images' indices, int64."""
        vectors = as_array(vectors, "vectors", np.float32, 2, self.dim, finite=True)
        if self._ix.kind == "float16" and vectors.size and np.abs(vectors).max() > 65504.0:
            raise InvalidArgumentError("vectors: values beyond +-65504 do not fit the float16 store; "
                                       "normalise them or use flat_dtype='float32'")
        counts = _counts(vectors.shape[0], patches_per_image, image_offsets)
        self._edits += 1
        first = self._ix.add(vectors, counts, threads(num_threads))
        return np.arange(first, first + counts.size, dtype=np.int64)

    def add_codes(self, codes: np.ndarray, *, patches_per_image=None, image_offsets=None,
                  lists: np.ndarray | None = None) -> np.ndarray:
        """PQ only: append codes (n_patches, m) uint8 encoded elsewhere with the same quantizer.
        IVF: ``lists`` (n_patches,) gives each patch's list (e.g. :meth:`patch_lists` of an index
        with the same coarse centroids: exact, no arithmetic); without it each patch goes to the
        list nearest its decoded vector (which may differ from the list its float vector had)."""
        if self._ix.kind != "pq":
            raise InvalidArgumentError("add_codes needs a PQ index; this one is a flat store")
        codes = as_array(codes, "codes", np.uint8, 2, self._ix.code_size)
        counts = _counts(codes.shape[0], patches_per_image, image_offsets)
        if lists is not None:
            if self._ix.nlist == 0:
                raise InvalidArgumentError("add_codes: lists are for an inverted-file index; this one is exhaustive")
            lists = np.asarray(lists)
            if lists.ndim != 1 or (lists.size and lists.dtype.kind not in "iu"):
                raise InvalidTypeError("lists must be a 1-d integer array (one list per patch)")
            if lists.shape[0] != codes.shape[0]:
                raise InvalidArgumentError(f"lists: expected {codes.shape[0]} entries (one per patch); "
                                           f"got {lists.shape[0]}")
            if lists.size and (lists.min() < 0 or lists.max() >= self._ix.nlist):
                raise InvalidArgumentError(f"lists: values must be in [0, {self._ix.nlist}); got "
                                           f"{int(lists.min())}..{int(lists.max())}")
            lists = np.ascontiguousarray(lists, dtype=np.int32)
        self._edits += 1
        first = self._ix.add_codes(codes, counts, lists)
        return np.arange(first, first + counts.size, dtype=np.int64)

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int = 10, num_threads: int | None = None,
               nprobe: int | None = None, rerank: "PatchIndex | None" = None,
               rerank_k: int | None = None):
        """Top-k images per query by their best patch.

        Exact re-rank: with ``rerank=other`` this index (the first stage, e.g. IVF over 4-bit
        codes) returns its top ``rerank_k`` images (default ``max(4 * k, 100)``; at least k);
        ``other`` re-scores each of them over ALL its patches (:meth:`score_images`), and the
        top k by (score desc, image asc) are returned with ``other``'s scores and winning
        patches. ``other`` must be an exhaustive index (flat float16/float32, or PQ: 8-bit is
        the usual choice) of the same dim holding the same images with the same per-image patch
        counts (checked: InvalidArgumentError otherwise). It may be loaded with ``mmap=True``:
        the re-score reads only the candidates' rows, so its file need not fit in memory. An
        image removed in either index is never returned. With a flat ``other`` and ``rerank_k
        >= len(self)`` over an exhaustive first stage, the result is ``other``'s own search.

        IVF: probes ``nprobe`` lists per query (default :attr:`nprobe`; above nlist means all)
        and ranks images by the max over their probed patches (images with none are absent).
        ``nprobe`` is ignored by an exhaustive index.

        queries: (nq, dim) float32, or one (dim,) vector (treated as nq = 1).
        Returns ``(scores (nq, kk) float32, images (nq, kk) int64, patches (nq, kk) int64)``
        with ``kk = min(k, len(self))`` (k is clamped to the index size; 0 columns for an empty
        index); ``patches`` is the winning patch's ordinal inside its image. Rows are padded
        with -inf / -1 / -1 when fewer than kk images are non-removed and non-empty.
        """
        q = as_array(queries, "queries", np.float32, 2, self.dim, finite=True, allow_1d=True)
        k = min(as_int(k, "k", 1, None), INT32_MAX)  # any k >= 1: the core clamps it to len()
        n = 0 if nprobe is None else min(as_int(nprobe, "nprobe", 1, None), INT32_MAX)
        nt = threads(num_threads)
        if rerank is None:
            if rerank_k is not None:
                raise InvalidArgumentError("rerank_k needs rerank=<a PatchIndex to re-score with>")
            return self._ix.search(q, k, nt, n)
        self._check_rerank(rerank)
        rk = max(4 * k, 100) if rerank_k is None else min(as_int(rerank_k, "rerank_k", 1, None), INT32_MAX)
        if rk < k:
            raise InvalidArgumentError(f"rerank_k must be >= k ({k}); got {rk}")
        _, cand, _ = self._ix.search(q, rk, nt, n)  # (nq, min(rk, len)), -1 padding
        scores, patches = rerank._ix.score_images(q, cand, nt)
        # (score desc, image asc); skipped and removed candidates score -inf and sort last
        order = np.lexsort((cand, -scores), axis=-1)[:, :min(k, cand.shape[1])]
        scores = np.take_along_axis(scores, order, axis=1)
        images = np.take_along_axis(cand, order, axis=1)
        patches = np.take_along_axis(patches, order, axis=1)
        gone = patches < 0  # padding, or removed in the re-rank store
        images[gone] = -1
        scores[gone] = -np.inf
        return scores, images, patches

    def _check_rerank(self, other) -> None:
        """``other`` may re-rank this index's candidates: an exhaustive PatchIndex of the same
        dim and image layout. The offsets are compared once per layout (both indexes' edit
        counters, lengths and patch counts key the cached verdict)."""
        if not isinstance(other, PatchIndex):
            raise InvalidTypeError(f"rerank must be a PatchIndex; got {type(other).__name__}")
        if other._ix.nlist > 0:
            raise InvalidArgumentError("rerank: the re-rank store must be exhaustive (flat float16/float32 "
                                       "or PQ); this one is an inverted file")
        if other.dim != self.dim:
            raise InvalidArgumentError(f"rerank: dim {other.dim} differs from this index's dim {self.dim}")
        key = (id(other._ix), other._edits, self._edits, len(self), self.num_patches, len(other),
               other.num_patches)
        cached = self._rerank_ok
        if cached is not None and cached[0]() is other and cached[1] == key:
            return
        if key[3:5] != key[5:7] or not np.array_equal(self.image_offsets, other.image_offsets):
            raise InvalidArgumentError(
                f"rerank: the re-rank store must hold the same images with the same patch counts; "
                f"this index has {len(self)} images / {self.num_patches} patches, it has "
                f"{len(other)} / {other.num_patches}" + ("" if key[3:5] != key[5:7] else
                                                         " but different per-image patch counts"))
        self._rerank_ok = (weakref.ref(other), key)

    def score_images(self, queries: np.ndarray, images: np.ndarray, num_threads: int | None = None):
        """Exact scores of given images (exhaustive index only; an inverted file raises
        InvalidArgumentError). queries: (nq, dim) float32 (or one (dim,) vector); images:
        (nq, n_cand) int64 candidate images per query, -1 to skip. Returns ``(scores (nq,
        n_cand) float32, patches (nq, n_cand) int64)``: per candidate the max over all its
        patches of this store's exact score (inner product, or float ADC for PQ) and the
        winning patch ordinal (lowest on ties), bit for bit what :meth:`search` returns for
        that image; -inf / -1 for skipped, removed and empty images."""
        q = as_array(queries, "queries", np.float32, 2, self.dim, finite=True, allow_1d=True)
        im = as_array(images, "images", np.int64, 2, allow_1d=True)
        if im.shape[0] != q.shape[0]:
            raise InvalidArgumentError(f"images must have one row per query ({q.shape[0]}); got shape {im.shape}")
        return self._ix.score_images(q, im, threads(num_threads))

    # ------------------------------------------------------------------ edits
    def remove(self, images) -> None:
        """Tombstone images (excluded from search; len() unchanged until compact())."""
        ids = np.atleast_1d(np.asarray(images))
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise InvalidTypeError("images must be an int or a 1-d sequence of ints")
        self._ix.remove(np.ascontiguousarray(ids, dtype=np.int64))

    def is_removed(self, image: int) -> bool:
        return bool(self._ix.is_removed(as_int(image, "image")))

    def compact(self) -> np.ndarray:
        """Drop removed images; returns old -> new image index (int64, -1 for removed)."""
        self._edits += 1
        return self._ix.compact()

    def reconstruct(self, image: int) -> np.ndarray:
        """(patches of the image, dim) float32 stored vectors (decoded for PQ). IVF: a binary
        search per list finds the image's entries (O(nlist log(list size)))."""
        return self._ix.reconstruct(as_int(image, "image"))

    # ------------------------------------------------------------------ pre-transform
    @property
    def transform(self):
        """``(mean (dim_in,), matrix (dim, dim_in))`` float32 copies of the stored pre-transform
        (saved in the file's XFRM section), or None. The index never applies it itself: vectors
        passed to add/search must already be in its space (see :meth:`apply_transform`)."""
        return self._ix.transform

    def set_transform(self, mean: np.ndarray, matrix: np.ndarray) -> None:
        """Store the linear pre-transform ``l2_normalize((x - mean) @ matrix.T)`` with the index.
        mean: (dim_in,) float32; matrix: (dim, dim_in) float32, C-contiguous and finite."""
        mean = as_array(mean, "mean", np.float32, 1, finite=True)
        matrix = as_array(matrix, "matrix", np.float32, 2, mean.shape[0], finite=True)
        if matrix.shape[0] != self.dim:
            raise InvalidArgumentError(f"matrix must have {self.dim} rows (the index dim); "
                                       f"got shape {matrix.shape}")
        self._ix.set_transform(mean, matrix)

    def clear_transform(self) -> None:
        """Remove the stored pre-transform (the next save writes none)."""
        self._ix.clear_transform()

    def apply_transform(self, vectors: np.ndarray) -> np.ndarray:
        """The stored pre-transform applied by the core (as a C++ program would): (n, dim_in)
        or (dim_in,) float32 -> (n, dim) or (dim,) float32 rows of unit L2 norm."""
        one = isinstance(vectors, np.ndarray) and vectors.ndim == 1
        # the core checks the columns against dim_in (and that a transform is set)
        x = as_array(vectors, "vectors", np.float32, 2, finite=True, allow_1d=True)
        out = self._ix.apply_transform(x)
        return out[0] if one else out

    # ------------------------------------------------------------------ files
    @staticmethod
    def _dump_metadata(meta: dict) -> str:
        try:
            return json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"metadata must be JSON-serialisable: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write one versioned file atomically (temporary file, fsync, rename). Replacing a file
        keeps its permissions; through a symlink, the file it points to is replaced and the
        link kept. Temporaries left by killed saves of this path are removed."""
        self._ix.metadata_json = self._dump_metadata(self._metadata)
        self._ix.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, *, verify: bool = False) -> "PatchIndex":
        """Open a saved index. mmap=True maps the file read-only (codes are not copied; big
        sections are CRC-checked only with verify=True); mmap=False reads and checks it all.
        Only regular files load: a FIFO, directory or device raises OSError (without blocking).
        A mapped file must not be rewritten in place while loaded (SIGBUS; see the README)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"index file not found: {path}")
        return cls._from_core(_core.PatchIndex.load(path, bool(mmap), bool(verify)))

    def to_bytes(self) -> bytes:
        self._ix.metadata_json = self._dump_metadata(self._metadata)
        return self._ix.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "PatchIndex":
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidTypeError(f"data must be bytes; got {type(data).__name__}")
        return cls._from_core(_core.PatchIndex.from_bytes(bytes(data)))

    def __getstate__(self):
        return {"bytes": self.to_bytes()}

    def __setstate__(self, state):
        other = PatchIndex.from_bytes(state["bytes"])
        self._ix, self._metadata = other._ix, other._metadata
        self._edits, self._rerank_ok = 0, None

    def memory_usage(self) -> dict:
        """Bytes by part (codes or vectors, image_offsets, removed, centroids, metadata,
        transform) plus "mapped": bytes of storage viewed from the file rather than owned,
        and "total"."""
        usage = dict(self._ix.memory_usage())
        usage["total"] = sum(v for key, v in usage.items() if key != "mapped")
        return usage

    def __repr__(self) -> str:
        store = (f"{'rq' if self._ix.pq.kind == 'residual' else 'pq'}(m={self._ix.pq.m}, "
                 f"nbits={self._ix.pq.nbits})") if self._ix.kind == "pq" \
            else f"flat({self._ix.kind})"
        if self._ix.nlist:
            store += f", ivf(nlist={self._ix.nlist}, nprobe={self._ix.nprobe})"
        return (f"PatchIndex(dim={self.dim}, {store}, images={len(self)}, "
                f"patches={self.num_patches}, removed={self.num_removed})")

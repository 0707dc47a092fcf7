"""One loaded index file and the batched work the server runs against it.

An ``Engine`` never changes once made: a reload makes a new one and swaps it in, and every
queued query keeps the engine it was checked against, so a batch in flight finishes on the
index it started with. The file is opened with mmap (codes are paged in, never copied).

Two kinds of file:

* an ``ImageIndex`` file (images and their model): ``/search`` and ``/search/vectors``
  (descriptors from the index's model); hits are shaped as ``pypatch search --json`` prints;
* a bare ``PatchIndex`` file (vectors from elsewhere, no model): ``/search/vectors`` only;
  a hit names the image's row number and the ordinal of its winning patch;
* a sharded index folder, searched in this process (``ShardedIndex``) or, with ``ray=True``,
  by one Ray actor per shard (``RayShardedIndex``: same answers; a query waiting for a
  restarting actor longer than ``ray_timeout_s`` fails whole with UnavailableError, 503).
  Ray is imported only then.

Methods marked "batch" run in the batcher's thread (the native scan and onnxruntime release the
GIL), so the event loop stays free.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pypatch.errors import InvalidArgumentError, ModelMismatchError


@dataclass
class ImageQuery:
    image: object  # encoded bytes, or a callable reading them (a checked server-side path)
    box: Optional[list]
    k: int
    refine: Optional[str]  # None, "simmap" or "cells"


class Engine:
    def __init__(self, path: str, *, threads: Optional[int] = None,
                 max_pixels: Optional[int] = None, onnx_batch: Optional[int] = None,
                 previous: Optional["Engine"] = None, ray: bool = False,
                 ray_address: Optional[str] = None, ray_timeout_s: float = 20.0):
        from pypatch.index.meta import META_KEY, read_meta
        from pypatch.index.patch_index import PatchIndex

        from pypatch.distributed.manifest import is_sharded

        self.path = path
        if not os.path.exists(path):
            raise FileNotFoundError(f"index file not found: {path!r}")
        self.threads = threads
        self.ray = bool(ray)
        if ray:
            if not (os.path.isdir(path) or is_sharded(path)):
                raise InvalidArgumentError(f"--ray: {path!r} is not a sharded index folder "
                                           f"(pypatch index --shards N)")
            from pypatch.distributed.ray_search import RayShardedIndex

            self.patches = None
            self.index = RayShardedIndex(path, ray_address, num_threads=threads,
                                         timeout_s=ray_timeout_s)
            try:
                self._attach_embedder(previous, max_pixels, onnx_batch)
                self.images, self.vector_dim = len(self.index), self.index.info()["dim"]
            except BaseException:
                self.close()
                raise
            return
        if os.path.isdir(path) or is_sharded(path):  # a sharded index folder (ShardedIndex)
            from pypatch.index.searchable import open_index

            self.patches, self.index = None, open_index(path, mmap=True, num_threads=threads)
            self._attach_embedder(previous, max_pixels, onnx_batch)
            self.images, self.vector_dim = len(self.index), self.index.info()["dim"]
            return
        patches = PatchIndex.load(path, mmap=True)
        self.patches = patches
        self.index = None  # the ImageIndex, None for a bare PatchIndex
        if isinstance(patches.metadata, dict) and META_KEY in patches.metadata:
            from pypatch.index.image_index import ImageIndex

            self.index = ImageIndex(patches, read_meta(patches, path), num_threads=threads)
            self._attach_embedder(previous, max_pixels, onnx_batch)
        self.images = len(self.index) if self.index is not None else \
            len(patches) - patches.num_removed
        self.vector_dim = self.index.info()["dim"] if self.index is not None else int(patches.dim)

    def _attach_embedder(self, previous, max_pixels, onnx_batch) -> None:
        """Load the model now (a server fails at start, not on its first query); a reload
        keeps the previous engine's model when the new index was built with the same one."""
        embedder = None
        if previous is not None and previous.index is not None:
            try:
                self.index.set_embedder(previous.index._get_embedder())
                embedder = previous.index._get_embedder()
            except ModelMismatchError:
                embedder = None
        if embedder is None:
            embedder = self.index._get_embedder()
        if max_pixels is not None:
            embedder.max_pixels = int(max_pixels)
        if onnx_batch is not None:
            embedder.batch_size = int(onnx_batch)  # inputs per onnxruntime run

    def close(self) -> None:
        """Stop what this engine started (the Ray actors of a ``ray`` engine)."""
        if self.ray:
            self.index.close()

    @property
    def has_model(self) -> bool:
        return self.index is not None

    # ------------------------------------------------------------------ per request
    def check_vectors(self, vectors) -> np.ndarray:
        """A (n, D) float32 array of finite values with this index's query dimension."""
        try:
            v = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgumentError("vectors: expected a list of lists of numbers") from None
        if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] != self.vector_dim:
            raise InvalidArgumentError(
                f"vectors: expected shape (n, {self.vector_dim}) with n >= 1, got {v.shape}")
        if not np.isfinite(v).all():
            raise InvalidArgumentError("vectors: NaN, infinite or out-of-float32-range values")
        return np.ascontiguousarray(v)

    # ------------------------------------------------------------------ batch
    def search_images(self, queries: list) -> list:
        """batch: ImageQuery list -> per query (descriptor (D,), first-stage hits), or the
        exception that query raised (a bad image fails alone). Decoding and resizing run here,
        one query after the other, then one batched backbone run and one native scan at the
        largest k asked (a shorter list is its head: the order is total, ties go to the lower
        image number). Decoding here rather than in each request's thread: onnxruntime already
        uses every core, and decoders beside it made both slower (benchmarks/README.md)."""
        prepared, out = [], []
        for x in queries:
            try:
                image = x.image() if callable(x.image) else x.image
                prepared.append(self.index.prepare_query(image, x.box))
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - handed to this query's caller
                out.append(exc)
        ok = [i for i, r in enumerate(out) if r is None]
        if ok:
            q = self.index.embed_prepared(prepared)
            k = max(queries[i].k for i in ok)
            hits = self.index.search_vectors(q, k=k, num_threads=self.threads)
            for j, i in enumerate(ok):
                out[i] = (q[j], hits[j][:queries[i].k])
        return out

    def refine(self, hits: list, descriptor, method: str) -> list:
        """The CLI's box refinement of the top hits (its own thread: a backbone pass per hit)."""
        from pypatch.index.refine import refine_hits

        return refine_hits(self.index, hits, descriptor, method)

    def search_vectors(self, requests: list) -> list:
        """batch: [(vectors (n_i, D), k_i)] -> per request, a list of n_i JSON hit lists, all
        rows scanned in one native call."""
        v = np.concatenate([x for x, _ in requests]) if len(requests) > 1 else requests[0][0]
        k = max(k for _, k in requests)
        rows = self._scan(v, k)
        out, at = [], 0
        for x, k_i in requests:
            out.append([r[:k_i] for r in rows[at:at + len(x)]])
            at += len(x)
        return out

    def _scan(self, v, k) -> list:
        from pypatch.index.results import hit_json

        if self.index is not None:
            return [[hit_json(h) for h in hits]
                    for hits in self.index.search_vectors(v, k=k, num_threads=self.threads)]
        if self.images == 0:
            return [[] for _ in range(len(v))]
        scores, images, patches = self.patches.search(v, k=min(k, self.images),
                                                      num_threads=self.threads)
        rows = []
        for s_row, i_row, p_row in zip(scores.tolist(), images.tolist(), patches.tolist()):
            hits = [{"rank": r + 1, "image": i, "score": round(s, 6), "patch": p}
                    for r, (s, i, p) in enumerate(zip(s_row, i_row, p_row)) if i >= 0]
            rows.append(hits)
        return rows

    # ------------------------------------------------------------------ describe
    def info(self) -> dict:
        """What ``pypatch info`` prints (a bare PatchIndex: its counts and store)."""
        if self.index is not None:
            info = self.index.info()
        else:
            p = self.patches
            store = {"kind": "pq", "m": p.pq.m, "nbits": p.pq.nbits} if p.pq is not None \
                else {"kind": p.flat_dtype}
            info = {"kind": "PatchIndex", "images": self.images, "removed": p.num_removed,
                    "patches": int(p.num_patches), "dim": int(p.dim), "store": store,
                    "memory_bytes": {k: int(v) for k, v in p.memory_usage().items()}}
        info["file"] = self.path
        return info

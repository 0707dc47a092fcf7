"""One search interface for every kind of index, and one way to open any of them.

:class:`SearchableIndex` is the base both :class:`~pypatch.ImageIndex` (one file) and
:class:`~pypatch.ShardedIndex` (a folder of shards) derive from: query images are embedded
here (the index's model, grid and mode), the first stage is the subclass's
:meth:`search_vectors`, the optional second stage (:mod:`pypatch.index.rerank`,
:mod:`pypatch.index.refine`) reads stored patches through :meth:`patch_vectors`. Callers (the
CLI, ``pypatch serve``) open a path with :func:`open_index` and use only this interface.
"""
from __future__ import annotations

import abc
import os
from typing import Optional, Sequence

import numpy as np

from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError

# keyword arguments of search() handed to pypatch.index.rerank.second_stage
SECOND_STAGE_ARGS = {"rerank", "refine", "rerank_k", "refine_k", "qe_n", "query_regions"}


class SearchableIndex(abc.ABC):
    """search / search_many / search_vectors, info, len, ids, membership, image_info.

    Subclasses provide :meth:`search_vectors`, :meth:`info`, :meth:`image_info`,
    :meth:`patch_vectors`, :meth:`to_stored`, ``ids``, ``__len__``, ``__contains__``,
    ``_get_embedder()`` and the query settings ``_grid`` and ``_meta["mode"]``."""

    @abc.abstractmethod
    def search_vectors(self, descriptors, k: int = 10, num_threads: Optional[int] = None,
                       stored: bool = False, nprobe: Optional[int] = None,
                       rerank_k: Optional[int] = None) -> list: ...

    @abc.abstractmethod
    def info(self) -> dict: ...

    @abc.abstractmethod
    def image_info(self, image_id) -> dict: ...

    @abc.abstractmethod
    def patch_vectors(self, image_id) -> np.ndarray: ...

    @abc.abstractmethod
    def to_stored(self, vectors) -> np.ndarray: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __contains__(self, image_id) -> bool: ...

    @property
    @abc.abstractmethod
    def ids(self) -> list: ...

    def search(self, query, box=None, k: int = 10,
               num_threads: Optional[int] = None, nprobe: Optional[int] = None,
               **second_stage) -> list:
        """Rank database images for one query (path, PIL image or array).

        The query is one global descriptor of the image, or of ``box`` = ``[x0, y0, x1, y1]``
        when given. Returns up to ``k`` :class:`SearchHit` s, best first.

        Optional second stage (see :mod:`pypatch.index.rerank`, :mod:`pypatch.index.refine`):
        ``rerank=None|"qe"|"multipatch"`` (``rerank_k=100``, ``qe_n=5``,
        ``query_regions="L1"``) and ``refine=False|True|"simmap"|"cells"`` (``refine_k=10``:
        the top hits get ``box`` refined, ``cell`` stays the grid cell).

        ``nprobe``: lists an inverted-file index probes (default: the index's ``nprobe``).

        ``rerank_k``: how many first-stage images the second stage re-scores. Without
        ``rerank``: the index's exact re-rank store (``ImageIndex.build(rerank_store=...)``;
        default ``max(4 * k, 100)``, 0 turns it off); with ``rerank="multipatch"``: its window
        (default 100; the re-rank store then runs with its default)."""
        return self.search_many([query], None if box is None else [box], k=k,
                                num_threads=num_threads, nprobe=nprobe, **second_stage)[0]

    def search_many(self, queries: Sequence, boxes: Optional[Sequence] = None, k: int = 10,
                    num_threads: Optional[int] = None, nprobe: Optional[int] = None,
                    **second_stage) -> list:
        """Batch form of :meth:`search`: one list of hits per query."""
        queries = list(queries)
        if boxes is None:
            boxes = [None] * len(queries)
        boxes = list(boxes)
        if len(boxes) != len(queries):
            raise InvalidArgumentError(
                f"boxes: expected one box (or None) per query ({len(queries)}), got {len(boxes)}")
        embedder = self._get_embedder()
        if not queries:
            return []
        unknown = set(second_stage) - SECOND_STAGE_ARGS
        if unknown:
            raise InvalidArgumentError(f"search: unexpected keyword argument(s) "
                                       f"{', '.join(sorted(unknown))}")
        # the query is seen at the scale the database cells were embedded at (Embedder.query_size)
        q = embedder.embed_queries(queries, boxes, regions=self._grid, mode=self._meta["mode"])
        probe = {} if nprobe is None else {"nprobe": nprobe}  # only IVF indexes take it
        exact_k = None
        if second_stage.get("rerank") is None and "rerank_k" in second_stage:
            # no qe / multipatch: rerank_k is the exact re-rank store's (search_vectors)
            exact_k = second_stage.pop("rerank_k")
        if any(v not in (None, False) for v in (second_stage.get("rerank"),
                                                 second_stage.get("refine"))):
            from pypatch.index.rerank import second_stage as run_second_stage

            as_int(k, "k", 1)
            return run_second_stage(self, queries, boxes, q, k=k, num_threads=num_threads,
                                    rerank_k_exact=exact_k, **probe, **second_stage)
        exact = {} if exact_k is None else {"rerank_k": exact_k}
        return self.search_vectors(q, k=k, num_threads=num_threads, **probe, **exact)

    def _known_ids(self, ids) -> list:
        """``ids`` (one id or an iterable) as strings, each an image in the index (remove())."""
        ids = [str(i) for i in ([ids] if isinstance(ids, (str, int)) else ids)]
        unknown = [i for i in ids if i not in self]
        if unknown:
            raise InvalidArgumentError(
                f"ids: {len(unknown)} unknown or already removed image id(s), e.g. {unknown[0]!r}")
        return ids

    def _stored_queries(self, descriptors, stored: bool, stored_dim: int) -> np.ndarray:
        """``descriptors`` ((nq, D) or (D,)) as C-contiguous float32 rows in the stored space:
        checked against the model's dimension (``stored_dim`` when ``stored``), then mapped
        through the pre-transform unless they are already ``stored``."""
        q = np.asarray(descriptors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        want = stored_dim if stored else self._meta["dim"]
        if q.ndim != 2 or q.shape[1] != want:
            raise InvalidArgumentError(f"descriptors: expected shape (nq, {want}), got {q.shape}")
        return np.ascontiguousarray(q if stored else self.to_stored(q))

    def prepare_query(self, query, box=None) -> list:
        """The backbone inputs of one query for this index (decoded, cropped to ``box``,
        resized: :meth:`Embedder.prepare_query`), no backbone run; :meth:`embed_prepared` embeds
        many at once. ``search_vectors(embed_prepared([prepare_query(q, b)]))`` is
        ``search_many([q], [b])``."""
        return self._get_embedder().prepare_query(query, box, regions=self._grid,
                                                  mode=self._meta["mode"])

    def embed_prepared(self, prepared: list) -> np.ndarray:
        """(n, D) query descriptors of :meth:`prepare_query` results, in one batched backbone run."""
        return self._get_embedder().embed_prepared_queries(prepared)


def open_index(path, *, mmap: bool = True, model=None, num_threads: Optional[int] = None,
               verify: bool = True, ray: bool = False, ray_address=None) -> SearchableIndex:
    """An index file (:class:`~pypatch.ImageIndex`) or a sharded index folder (or its
    ``manifest.json``: :class:`~pypatch.ShardedIndex`), opened for search.

    ``verify``: a sharded index checks every shard's sha256 against its manifest. ``ray``: a
    sharded index is served by Ray actors, one per shard (``ray_address``: the cluster)."""
    from pypatch.distributed.manifest import is_sharded

    if ray:
        from pypatch.distributed.ray_search import RayShardedIndex

        return RayShardedIndex(path, ray_address, num_threads=num_threads, model=model)

    if is_sharded(path) or os.path.isdir(os.fspath(path)):
        from pypatch.distributed.sharded_index import ShardedIndex

        return ShardedIndex.open(path, mmap=mmap, model=model, num_threads=num_threads,
                                 verify=verify)
    from pypatch.index.image_index import ImageIndex

    return ImageIndex.load(os.fspath(path), mmap=mmap, model=model, num_threads=num_threads)

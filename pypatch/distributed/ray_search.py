"""Fan-out search of a sharded index on a Ray cluster: one actor per shard.

Each shard is held by one actor (the file mmap'd once, checked against the manifest's sha256
when the actor starts or restarts). The driver keeps only the codebooks (model record, grid,
pre-transform): it embeds and transforms the queries, sends them to every shard actor, and
merges the per-shard top-k with the same exact merge as the local :class:`ShardedIndex`. With
re-rank stores a second round asks each actor to re-score its images among the merged top
``rerank_k`` by its shard's store, then merges again: the local index's answer.

Failures: actors restart on death (``max_restarts=-1``) and a call in flight or issued during
the restart is retried by Ray, so the query waits; a shard that does not answer within
``timeout_s`` (or whose actor cannot come back) raises :class:`ShardUnavailableError`. An
answer is never assembled from a subset of the shards.
"""
from __future__ import annotations

import os
import uuid
from typing import Optional

import numpy as np

from pypatch._checks import as_int
from pypatch.distributed import manifest as mf
from pypatch.distributed.merge import merge_topk
from pypatch.distributed.sharded_index import shard_rows
from pypatch.errors import InvalidArgumentError, UnavailableError
from pypatch.index.image_index import ImageIndex
from pypatch.index.rerank_store import rerank_window
from pypatch.index.searchable import SearchableIndex

__all__ = ["RayShardedIndex", "ShardUnavailableError", "require_ray"]


#: Ray namespace of the shard actors (named, so that tools and tests can find them)
NAMESPACE = "pypatch"


class ShardUnavailableError(UnavailableError):
    """A shard actor did not answer (dead, restarting past the timeout): no partial answer."""


def require_ray(address=None, num_cpus=None):
    """The ``ray`` module, connected (``address``: a cluster; None: start or reuse a local one)."""
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError("Ray is not installed: pip install 'pypatch[ray]'") from None
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if address is None and num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(address=address, **kwargs)
    return ray


class _ShardServer:
    """Holds one shard (mmap'd); made a Ray actor class by :func:`_actor_class`."""

    def __init__(self, folder: str, entry: dict, num_threads: Optional[int]):
        mf.check_file(folder, entry, verify=True)  # a restarted actor re-checks the file
        self.index = ImageIndex.load(os.path.join(folder, entry["file"]), mmap=True,
                                     num_threads=num_threads)

    def search(self, q, k: int, num_threads, nprobe=None):
        """Per query ``(scores, rows, patches, hits)`` of this shard's top-k (None: empty)."""
        n = len(self.index)
        if n == 0:
            return None
        scores, rows, patches = self.index.patch_index.search(q, k=min(k, n),
                                                              num_threads=num_threads,
                                                              nprobe=nprobe)
        return [(s, r, p, self.index._hits(s, r, p)) for s, r, p in zip(scores, rows, patches)]

    def rescore(self, q, rows, num_threads):
        """Per query ``(scores, rows, patches, hits)`` of this shard's images ``rows`` ((nq,
        width), -1 pads) re-scored over all their patches by its re-rank store."""
        scores, patches = self.index.rerank_store.score_images(q, rows, num_threads)
        out = []
        for sc, rw, pt in zip(scores, rows, patches):
            live = pt >= 0  # padding, removed images
            sc, rw, pt = sc[live], rw[live], pt[live]
            out.append((sc, rw, pt, self.index._hits(sc, rw, pt)))
        return out

    def ids(self) -> list:
        return self.index.ids

    def image_info(self, image_id) -> dict:
        return self.index.image_info(image_id)

    def patch_vectors(self, image_id):
        return self.index.patch_vectors(image_id)

    def info(self) -> dict:
        return self.index.info()

    def pid(self) -> int:
        return os.getpid()


def _actor_class(ray, num_cpus: float):
    return ray.remote(num_cpus=num_cpus, max_restarts=-1, max_task_retries=-1)(_ShardServer)


class RayShardedIndex(SearchableIndex):
    """A sharded index folder served by Ray actors (same results as :class:`ShardedIndex`).

    ``RayShardedIndex(path, ray_address=None)``; the folder must be readable at the same path
    from every node (shared storage). ``close()`` stops the actors."""

    def __init__(self, path, ray_address=None, *, num_threads: Optional[int] = None,
                 timeout_s: float = 60.0, actor_cpus: float = 0, model=None):
        self._ray = ray = require_ray(ray_address)
        self._folder = os.path.abspath(mf.folder_of(path))
        self._manifest = mf.read_manifest(self._folder, verify=True)
        self._codebooks = ImageIndex.load(
            os.path.join(self._folder, self._manifest["codebooks"]["file"]), mmap=False,
            model=model, num_threads=num_threads)
        self._grid, self._meta = self._codebooks._grid, self._codebooks._meta
        self._num_threads = num_threads
        self._timeout = float(timeout_s)
        cls = _actor_class(ray, actor_cpus)
        token = uuid.uuid4().hex[:12]
        #: the actors' names in namespace :data:`NAMESPACE`, one per shard
        self.actor_names = [f"pypatch-shard-{token}-{s}"
                            for s in range(len(self._manifest["shards"]))]
        self.actors = [cls.options(name=name, namespace=NAMESPACE).remote(
                           self._folder, entry, num_threads)
                       for name, entry in zip(self.actor_names, self._manifest["shards"])]
        self._ids = self._gather([a.ids.remote() for a in self.actors])
        self._where = {i: s for s, ids in enumerate(self._ids) for i in ids}

    def _gather(self, refs) -> list:
        ray = self._ray
        try:
            return ray.get(refs, timeout=self._timeout)
        except ray.exceptions.GetTimeoutError:
            raise ShardUnavailableError(
                f"{self._folder!r}: a shard did not answer within {self._timeout:g} s "
                f"(restarting or unreachable); no partial answer") from None
        except ray.exceptions.RayActorError as exc:
            raise ShardUnavailableError(f"{self._folder!r}: a shard actor died and cannot "
                                        f"restart ({type(exc).__name__}); no partial "
                                        f"answer") from None

    def search_vectors(self, descriptors, k: int = 10, num_threads: Optional[int] = None,
                       stored: bool = False, nprobe: Optional[int] = None,
                       rerank_k: Optional[int] = None) -> list:
        as_int(k, "k", 1)
        rerank_k = rerank_window(self._codebooks.rerank_store is not None, k, rerank_k,
                                 "this sharded index")
        q = self._stored_queries(descriptors, stored, int(self._codebooks.patch_index.dim))
        threads = num_threads if num_threads is not None else self._num_threads
        first_k = max(k, rerank_k)
        parts = self._gather([a.search.remote(q, first_k, threads, nprobe) for a in self.actors])
        if rerank_k:  # the global top rerank_k, re-scored by the shards that hold them
            first = [_merge(parts, qi, first_k) for qi in range(len(q))]
            asked = {s: rows for s in range(len(self.actors))
                     if (rows := shard_rows(first, s)) is not None}
            answers = self._gather([self.actors[s].rescore.remote(q, rows, threads)
                                    for s, rows in asked.items()])
            parts = [None] * len(self.actors)
            for s, answer in zip(asked, answers):
                parts[s] = answer
        out = []
        for qi in range(len(q)):
            hits = []
            for rank, (s, row, _, _) in enumerate(_merge(parts, qi, k), 1):
                _, rows, _, shard_hits = parts[s][qi]
                hit = shard_hits[[int(r) for r in rows if r >= 0].index(row)]
                hits.append(_with_rank(hit, rank))
            out.append(hits)
        return out

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._where

    @property
    def ids(self) -> list:
        return [i for ids in self._ids for i in ids]

    def to_stored(self, vectors) -> np.ndarray:
        return self._codebooks.to_stored(vectors)

    def _actor_of(self, image_id):
        s = self._where.get(str(image_id))
        if s is None:
            raise InvalidArgumentError(f"image id {image_id!r} is not in the index")
        return self.actors[s]

    def image_info(self, image_id) -> dict:
        return self._gather(self._actor_of(image_id).image_info.remote(str(image_id)))

    def patch_vectors(self, image_id) -> np.ndarray:
        return self._gather(self._actor_of(image_id).patch_vectors.remote(str(image_id)))

    def info(self) -> dict:
        infos = self._gather([a.info.remote() for a in self.actors])
        out = dict(infos[0])
        n = sum(i["images"] for i in infos)
        patches = sum(i["patches"] for i in infos)
        out.update(images=n, patches=patches, removed=sum(i["removed"] for i in infos),
                   patches_per_image=round(patches / n, 3) if n else 0.0,
                   format="sharded", num_shards=len(infos), served_by="ray",
                   ray_actors=list(self.actor_names), ray_namespace=NAMESPACE)
        return out

    def _get_embedder(self):
        return self._codebooks._get_embedder()

    def set_embedder(self, embedder) -> None:
        self._codebooks.set_embedder(embedder)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a, no_restart=True)
        self.actors = []


def _merge(parts, qi: int, k: int) -> list:
    """The exact top-k of query ``qi`` over the shards' answers (None: shard not asked)."""
    return merge_topk([None if p is None or p[qi] is None else p[qi][:3] for p in parts], k)


def _with_rank(hit, rank: int):
    from dataclasses import replace

    return replace(hit, rank=rank)

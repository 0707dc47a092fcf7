"""Distributed build of a sharded index on Ray (``pypatch index SOURCE --out DIR --ray``).

1. The image list is split into ``shards`` consecutive runs (global order = source order).
2. Codebooks: the first images are embedded by the worker pool, chunk by chunk, until the
   training sample :meth:`ImageIndex.build` would use is complete; the quantizer and
   pre-transform are trained once on the driver (``ImageIndex.train_embedded``: same sample,
   same seed, same codebooks) and saved as ``codebooks.ptch``. Given ``codebooks=``, reused.
3. Shards: Ray Data reads the list of images still to embed (those of the training pass are
   reused) and a pool of ONNX actors (``map_batches`` with an actor pool,
   ``threads_per_worker`` ORT threads each) decodes, crops and embeds them, in order; as soon
   as a shard's images are in, a Ray task pre-transforms and encodes them with the codebooks
   (image by image, as in-process) and writes the shard file (atomic) while the next shard
   embeds.
4. ``manifest.json`` last.

Decoding and cropping run inside the embedding actors (a prefetch thread, as in-process):
handing crops from separate decode tasks to the actors would move ~18 MB of float32 tensors
per L3 image through the object store, for a stage that costs a few ms.

Faults: a worker killed mid-batch is restarted by Ray and its batch re-run (``max_restarts``
/ ``max_task_retries``), so the shard is still complete; a build that stops (driver crash,
failed shard) leaves ``build-state.json`` with the plan's hash and the sha256 of every
finished file; a rerun with the same plan keeps those files (hash checked) and builds the rest.
Unreadable images are skipped and listed, as in-process.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Optional

import numpy as np

from pypatch.distributed import manifest as mf
from pypatch.distributed.ray_search import require_ray
from pypatch.errors import InvalidArgumentError
from pypatch.extract.grid import DEFAULT_REGIONS
from pypatch.index.image_index import ImageIndex
from pypatch.index.sources import iter_source

__all__ = ["build_sharded_ray"]

STATE = "build-state.json"


def build_sharded_ray(source, out, shards: int = 1, *, ray_address=None,
                      workers: Optional[int] = None, threads_per_worker: int = 1,
                      batch_size: int = 8, codebooks=None, progress: bool = True,
                      _on_batch=None, _after_shard=None, **settings):
    """Build a sharded index folder ``out`` on Ray; returns it opened as a ShardedIndex whose
    ``skipped`` lists the unusable images. ``settings``: :meth:`ImageIndex.build`'s keywords
    (model, regions, store, pq_m, ...). ``codebooks``: an existing trained ``codebooks.ptch``
    (or index) to build with instead of training. ``_on_batch(batch)``: test hook run in the
    embedding actor before each batch, ``_after_shard(s)`` on the driver once shard ``s`` is
    handed to its writer (fault injection, interruption)."""
    from pypatch.distributed.sharded_index import ShardedIndex
    from pypatch import __version__

    if settings.get("rerank_store") is not None:  # shard writers would need a second store
        raise InvalidArgumentError(
            "rerank_store: Ray builds do not write re-rank stores yet; build in one process "
            "(ShardedIndex.build / pypatch index --shards without --ray)")
    ray = require_ray(ray_address)
    items, skipped = _items(source)
    n = int(shards)
    if n < 1 or n > len(items):
        raise InvalidArgumentError(f"shards: expected 1..{len(items)} (one image at least per "
                                   f"shard), got {shards!r}")
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads_per_worker))
    folder = os.fspath(out)
    os.makedirs(folder, exist_ok=True)
    plan = _plan_hash(items, n, settings, codebooks)
    state = _read_state(folder, plan)

    embed = _Embedding(ray, settings, workers, threads_per_worker, batch_size, _on_batch)
    cb_path = os.path.join(folder, mf.CODEBOOKS)
    cache: dict = {}  # position -> embedding result of the training pass (reused by shards)
    if not _kept(folder, mf.CODEBOOKS, state):
        if codebooks is not None:
            src = codebooks if isinstance(codebooks, (str, os.PathLike)) else None
            if src is None:
                codebooks.save(cb_path)
            elif os.path.abspath(src) != os.path.abspath(cb_path):
                shutil.copyfile(src, cb_path + ".tmp")
                os.replace(cb_path + ".tmp", cb_path)
        else:
            _train(settings, items, embed, cache).save(cb_path)
        state["files"][mf.CODEBOOKS] = mf.file_sha256(cb_path)
        _write_state(folder, state)
    template = ImageIndex.load(cb_path, mmap=False)

    writer = ray.remote(num_cpus=0, max_retries=3)(_write_shard)
    bounds = np.linspace(0, len(items), n + 1).round().astype(int)
    todo = []
    for s in range(n):
        if _kept(folder, mf.shard_name(s), state):
            skipped += [tuple(b) for b in state["skipped"].get(mf.shard_name(s), [])]
        else:
            todo.append(s)
    # one ordered stream over every image still to embed: shards complete in order, and each
    # is handed to its writer task while the next one embeds
    stream = embed.stream([(i, items[i][1]) for s in todo
                           for i in range(bounds[s], bounds[s + 1]) if i not in cache])
    pending = []
    for s in todo:
        rows, bad = [], []
        for i in range(bounds[s], bounds[s + 1]):
            error, vectors, size = cache.pop(i) if i in cache else _next(stream, i)
            if error:
                bad.append((items[i][1], error))
            else:
                rows.append((items[i][0], items[i][1], vectors, size))
        skipped += bad
        pending.append((mf.shard_name(s), bad, writer.remote(cb_path, os.path.join(
            folder, mf.shard_name(s)), rows)))
        # (the test hook needs the shard on disk: it waits for the writer)
        pending = _finish(ray, folder, state, pending, wait_all=_after_shard is not None)
        if _after_shard is not None:
            _after_shard(s)
    _finish(ray, folder, state, pending, wait_all=True)

    entries = [mf.file_entry(folder, mf.shard_name(s), **state["counts"][mf.shard_name(s)])
               for s in range(n)]
    man = mf.new_manifest(template._meta["model"], mf.file_entry(folder, mf.CODEBOOKS),
                          entries, __version__)
    mf.write_json_atomic(os.path.join(folder, mf.MANIFEST), man)
    os.remove(os.path.join(folder, STATE))
    index = ShardedIndex.open(folder)
    index.skipped = skipped
    return index


# ---------------------------------------------------------------------- plan and state
def _items(source) -> tuple:
    """[(id, path)] of ``source`` (files only: workers read them), first id wins."""
    items, seen, skipped = [], set(), []
    for item in iter_source(source):
        if item.path is None:
            raise InvalidArgumentError("source: a Ray build reads image files; in-memory "
                                       "images need ImageIndex.build")
        if item.id in seen:
            skipped.append((item.path, f"duplicate image id {item.id!r}"))
            continue
        seen.add(item.id)
        items.append((item.id, item.path))
    if not items:
        raise InvalidArgumentError("source: no image")
    return items, skipped


def _plan_hash(items, n, settings, codebooks) -> str:
    cb = None if codebooks is None else (mf.file_sha256(codebooks)
                                         if isinstance(codebooks, (str, os.PathLike)) else "obj")
    text = json.dumps({"items": items, "shards": n, "codebooks": cb,
                       "settings": {k: repr(v) for k, v in sorted(settings.items())}})
    return hashlib.sha256(text.encode()).hexdigest()


def _read_state(folder, plan) -> dict:
    fresh = {"plan": plan, "files": {}, "counts": {}, "skipped": {}}
    try:
        with open(os.path.join(folder, STATE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return fresh
    return state if isinstance(state, dict) and state.get("plan") == plan else fresh


def _write_state(folder, state) -> None:
    mf.write_json_atomic(os.path.join(folder, STATE), state)


def _kept(folder, name, state) -> bool:
    """A file a previous run finished: recorded in the state and still of that sha256."""
    sha = state["files"].get(name)
    path = os.path.join(folder, name)
    return sha is not None and os.path.isfile(path) and mf.file_sha256(path) == sha


def _finish(ray, folder, state, pending, wait_all: bool) -> list:
    """Record the shards whose writer finished (all of them with ``wait_all``)."""
    if not pending:
        return pending
    refs = [p[2] for p in pending]
    done, _ = ray.wait(refs, num_returns=len(refs) if wait_all else 1,
                       timeout=None if wait_all else 0)
    left = []
    for name, bad, ref in pending:
        if ref in done:
            counts = ray.get(ref)
            state["files"][name] = mf.file_sha256(os.path.join(folder, name))
            state["counts"][name] = counts
            state["skipped"][name] = [list(b) for b in bad]
            _write_state(folder, state)
        else:
            left.append((name, bad, ref))
    return left


def _next(stream, i) -> tuple:
    pos, error, vectors, size = next(stream)
    assert pos == i, (pos, i)  # the stream is ordered (DataContext.preserve_order)
    return error, vectors, size


# ---------------------------------------------------------------------- training
def _train(settings, items, embed, cache: dict) -> ImageIndex:
    """Codebooks trained exactly as ImageIndex.build trains them on the same source; the
    images embedded for it are left in ``cache`` for the shards."""
    index = ImageIndex.create(**settings)
    if index.is_trained:  # a flat store without pre-transform: nothing to learn
        return index
    chunk = max(32, 4 * embed.workers * embed.batch_size)

    def embedded():
        for a in range(0, len(items), chunk):
            batch = [(i, items[i][1]) for i in range(a, min(a + chunk, len(items)))]
            results = list(embed.stream(batch))  # the whole chunk: all of it is cached
            for pos, error, vectors, size in results:
                cache[pos] = (error, vectors, size)
            for pos, error, vectors, size in results:
                if not error:
                    yield vectors, size

    index.train_embedded(embedded())
    return index


# ---------------------------------------------------------------------- embedding
class _Embedding:
    """Ray Data: image list -> actor pool of Embedders -> results in source order."""

    def __init__(self, ray, settings, workers, threads, batch_size, on_batch):
        self.ray, self.workers, self.batch_size = ray, int(workers), int(batch_size)
        self.threads, self.on_batch = int(threads), on_batch
        self.model = settings.get("model")
        self.regions = settings.get("regions", DEFAULT_REGIONS)
        self.mode = settings.get("mode", "crop")

    def stream(self, items):
        """Yield ``(pos, error or "", vectors (P, D) float32, (w, h))`` for ``items`` =
        [(pos, path)], in the given order."""
        import ray.data

        if not items:
            return
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ds = ray.data.from_items([{"pos": i, "path": p} for i, p in items])
        ds = ds.map_batches(
            _EmbedActor, batch_size=self.batch_size, concurrency=self.workers,
            num_cpus=self.threads, batch_format="numpy",
            fn_constructor_kwargs=dict(model=self.model, regions=self.regions, mode=self.mode,
                                       threads=self.threads, on_batch=self.on_batch),
            max_restarts=-1, max_task_retries=-1)
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            for j in range(len(batch["pos"])):
                n, error = int(batch["n"][j]), str(batch["error"][j])
                vectors = None if error else \
                    np.frombuffer(batch["vectors"][j], dtype=np.float32).reshape(n, -1)
                yield (int(batch["pos"][j]), error, vectors,
                       (int(batch["w"][j]), int(batch["h"][j])))


class _EmbedActor:
    """One ONNX session per actor; decode + crop in its prefetch thread (Embedder.embed_many)."""

    def __init__(self, model, regions, mode, threads, on_batch):
        from pypatch.extract.embedder import Embedder
        from pypatch.extract.grid import parse_regions

        self.embedder = Embedder(model=model, num_threads=threads)
        self.grid, self.mode, self.on_batch = parse_regions(regions), mode, on_batch

    def __call__(self, batch: dict) -> dict:
        if self.on_batch is not None:
            self.on_batch(batch)
        paths = [str(p) for p in batch["path"]]
        n_in = len(paths)
        out = {"pos": np.asarray(batch["pos"]), "error": np.array([""] * n_in, dtype=object),
               "vectors": np.array([b""] * n_in, dtype=object),
               "n": np.zeros(n_in, np.int64), "w": np.zeros(n_in, np.int64),
               "h": np.zeros(n_in, np.int64)}
        results = self.embedder.embed_many(paths, regions=self.grid, mode=self.mode,
                                           on_error="skip", show_progress=False)
        try:
            for emb in results:
                v = np.ascontiguousarray(emb.vectors, dtype=np.float32)
                j = emb.index
                out["vectors"][j], out["n"][j] = v.tobytes(), len(v)
                out["w"][j], out["h"][j] = int(emb.width), int(emb.height)
        finally:
            results.close()
        for skip in results.skipped:
            reason = skip.reason
            if reason.startswith(f"{skip.name}: "):
                reason = reason[len(skip.name) + 2:]
            out["error"][skip.index] = reason or "unreadable"
        return out


def _write_shard(codebooks_path, path, rows) -> dict:
    """Pre-transform and encode ``rows`` with the codebooks, write one shard file (atomic)."""
    shard = ImageIndex.load(codebooks_path, mmap=False)
    shard.add_embedded(rows)
    shard.save(path)
    return {"images": len(shard), "patches": int(shard.patch_index.num_patches)}

"""``ShardedIndex``: a folder of ImageIndex shards searched as one index.

Every shard is an :class:`~pypatch.ImageIndex` file built from the same trained codebooks and
pre-transform (``codebooks.ptch``), so a query descriptor is transformed once and every shard
scores its images exactly as one index over all of them would. All shards are searched by ONE
native scan (``_core.MultiIndexSearch``, csrc/pypatch/index/multi_scan.h: one task list over
every shard for the thread pool, the tables built once, one exact top-k merge; GIL released,
files mmap'd), so a search costs what the monolithic index's does: ids, scores and boxes are
those of the monolithic index, ties included (global order = shard, then row). Re-rank stores
(``rerank_store=``) stay one per shard file; the scan's global top ``rerank_k`` images are
re-scored each by its shard's store, so re-ranked hits are the monolithic index's too.

Edits (:meth:`add`, :meth:`remove`) happen in memory like ImageIndex's and are written by
:meth:`save`: changed shards first (atomic), the manifest last, so a crash leaves the old
manifest, whose hashes then refuse the half-written state instead of serving it.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from pypatch import _core
from pypatch._checks import INT32_MAX, as_int, threads
from pypatch.distributed import manifest as mf
from pypatch.distributed.merge import merge_topk
from pypatch.errors import IndexFormatError, InvalidArgumentError, ModelMismatchError
from pypatch.index.image_index import ImageIndex
from pypatch.index.model_record import same_model
from pypatch.index.rerank_store import rerank_window
from pypatch.index.searchable import SearchableIndex
from pypatch.index.sources import iter_source

__all__ = ["ShardedIndex"]


class ShardedIndex(SearchableIndex):
    """Shards of one collection, searched as one index. Create with :meth:`open`,
    :meth:`build` or :meth:`from_index`; ``len()`` counts live images of all shards."""

    def __init__(self, folder, manifest: dict, codebooks: ImageIndex, shards: list, *,
                 num_threads: Optional[int] = None):
        self._folder = os.fspath(folder)
        self._manifest = manifest
        self._codebooks = codebooks
        self._shards = list(shards)
        self._files = [e["file"] for e in manifest["shards"]]
        self._num_threads = num_threads
        self._dirty: set = set()
        self._native = None  # (core indexes, their _core.MultiIndexSearch), see _search_all
        self._where: dict = {}
        for s, shard in enumerate(self._shards):
            for image_id in shard.ids:
                if image_id in self._where:
                    raise IndexFormatError(f"{self._folder!r}: image id {image_id!r} is in "
                                           f"shards {self._where[image_id]} and {s}")
                self._where[image_id] = s
        # the query side: grid, mode and model of the codebooks (checked equal in every shard)
        self._grid = codebooks._grid
        self._meta = codebooks._meta
        self.skipped: list = []

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path, mmap: bool = True, model=None, num_threads: Optional[int] = None,
             verify: bool = True) -> "ShardedIndex":
        """Open a sharded index folder (or its manifest.json). ``verify``: check every file's
        sha256 against the manifest (sizes are always checked). Raises IndexFormatError
        (missing / changed / foreign file), IndexVersionError, ModelMismatchError (a shard
        built with another model)."""
        folder = mf.folder_of(path)
        man = mf.read_manifest(folder, verify=verify)
        codebooks = ImageIndex.load(os.path.join(folder, man["codebooks"]["file"]), mmap=False,
                                    model=model, num_threads=num_threads)
        if not codebooks.is_trained:
            raise IndexFormatError(f"{folder!r}: {man['codebooks']['file']} holds no trained "
                                   f"codebooks")
        if not same_model(man["model"], codebooks._meta["model"]):
            raise ModelMismatchError(f"{folder!r}: the codebooks were trained with model "
                                     f"{_label(codebooks._meta['model'])}, the manifest "
                                     f"records {_label(man['model'])}")
        shards = []
        for entry in man["shards"]:
            shard = ImageIndex.load(os.path.join(folder, entry["file"]), mmap=mmap, model=model,
                                    num_threads=num_threads)
            _check_shard(folder, entry, shard, codebooks)
            shards.append(shard)
        return cls(folder, man, codebooks, shards, num_threads=num_threads)

    @classmethod
    def from_index(cls, index: ImageIndex, path, shards: int = 2) -> "ShardedIndex":
        """Split ``index``'s live images into ``shards`` consecutive runs (codes copied, not
        re-encoded) and write them as a sharded index folder ``path``."""
        n = as_int(shards, "shards", 1)
        ids = index.ids
        if n > len(ids):
            raise InvalidArgumentError(f"shards: {n} shards for {len(ids)} images; at most one "
                                       f"shard per image")
        bounds = np.linspace(0, len(ids), n + 1).round().astype(int)
        parts = [index.subset(ids[bounds[i]:bounds[i + 1]]) for i in range(n)]
        return cls.write(path, index.codebooks(), parts)

    @classmethod
    def build(cls, source, path, shards: int = 2, **build_args) -> "ShardedIndex":
        """In one process: :meth:`ImageIndex.build` (same arguments), then :meth:`from_index`.
        ``index.skipped`` lists the images that could not be used."""
        index = ImageIndex.build(source, **build_args)
        out = cls.from_index(index, path, shards=shards)
        out.skipped = list(index.skipped)
        return out

    @classmethod
    def write(cls, path, codebooks: ImageIndex, shards: list) -> "ShardedIndex":
        """Write ``codebooks`` and the ``shards`` (ImageIndex built from it) as folder ``path``:
        files first, the manifest last. Returns the written index, opened."""
        from pypatch import __version__

        folder = os.fspath(path)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise InvalidArgumentError(f"out: {folder!r} exists and is not a folder")
        os.makedirs(folder, exist_ok=True)
        codebooks.save(os.path.join(folder, mf.CODEBOOKS))
        entries = []
        for i, shard in enumerate(shards):
            shard.save(os.path.join(folder, mf.shard_name(i)))
            entries.append(mf.file_entry(folder, mf.shard_name(i), images=len(shard),
                                         patches=int(shard.patch_index.num_patches)))
        man = mf.new_manifest(codebooks._meta["model"], mf.file_entry(folder, mf.CODEBOOKS),
                              entries, __version__)
        mf.write_json_atomic(os.path.join(folder, mf.MANIFEST), man)
        return cls.open(folder)

    # ------------------------------------------------------------------ search
    def search_vectors(self, descriptors, k: int = 10, num_threads: Optional[int] = None,
                       stored: bool = False, nprobe: Optional[int] = None,
                       rerank_k: Optional[int] = None) -> list:
        """As :meth:`ImageIndex.search_vectors`, over every shard, merged exactly. With re-rank
        stores (``ImageIndex.build(rerank_store=...)``, one beside every shard file) the first
        stage's global top ``rerank_k`` images are re-scored, each by its shard's store: the
        monolithic index's answer."""
        as_int(k, "k", 1)
        rerank_k = rerank_window(self._codebooks.rerank_store is not None, k, rerank_k,
                                 "this sharded index")
        q = self._stored_queries(descriptors, stored, int(self._codebooks.patch_index.dim))
        if not self._shards:
            return [[] for _ in range(len(q))]
        nt = num_threads if num_threads is not None else self._num_threads
        first_k = max(k, rerank_k)
        if self._codebooks.patch_index.is_ivf:
            first = self._search_lists(q, first_k, nt, nprobe)
        else:
            first = self._search_exhaustive(q, first_k, nt)
        if rerank_k:
            first = [cands[:k] for cands in self._rescore(q, first, nt)]
        return [[self._shards[s]._hit(rank, score, row, patch)
                 for rank, (s, row, patch, score) in enumerate(cands, 1)] for cands in first]

    def _search_exhaustive(self, q, k: int, num_threads) -> list:
        """One native scan over every shard: per query [(shard, row, patch, score)], best first."""
        # k needs no clamp to the live images: the core clamps it to the stored ones and pads
        # (row -1) where fewer are live, as PatchIndex.search does
        scores, shards, rows, patches = self._search_all().search(
            np.ascontiguousarray(q), min(k, INT32_MAX), threads(num_threads))
        return [[(s, row, patch, score) for score, s, row, patch in zip(sc, sh, rw, pt) if row >= 0]
                for sc, sh, rw, pt in zip(scores, shards.tolist(), rows.tolist(), patches.tolist())]

    def _search_lists(self, q, k: int, num_threads, nprobe) -> list:
        """Inverted-file shards: each searched on its own (same coarse centroids, so the same
        probed lists as one index), then the exact top-k merge."""
        per_shard = [shard.patch_index.search(q, k=min(k, INT32_MAX), num_threads=num_threads,
                                              nprobe=nprobe) if len(shard) else None
                     for shard in self._shards]
        return [merge_topk([None if r is None else (r[0][qi], r[1][qi], r[2][qi])
                            for r in per_shard], k) for qi in range(len(q))]

    def _rescore(self, q, first: list, num_threads) -> list:
        """Every query's candidates ``first[i]`` [(shard, row, patch, score)] re-scored over all
        their patches by their shards' re-rank stores (one batched call a shard), ordered by
        (score desc, shard, row) as one index's rows."""
        out = [[] for _ in first]
        for s, shard in enumerate(self._shards):
            rows = shard_rows(first, s)
            if rows is None:
                continue
            scores, patches = shard.rerank_store.score_images(q, rows, num_threads)
            for i in range(len(first)):
                out[i] += [(s, int(r), int(p), float(sc))
                           for r, p, sc in zip(rows[i], patches[i], scores[i]) if p >= 0]
        for cands in out:
            cands.sort(key=lambda c: (-c[3], c[0], c[1]))
        return out

    def _search_all(self):
        """The native search over the current shards (rebuilt when a shard is added)."""
        cores = [shard.patch_index._ix for shard in self._shards]
        if self._native is None or len(self._native[0]) != len(cores) or \
                any(a is not b for a, b in zip(self._native[0], cores)):
            self._native = (cores, _core.MultiIndexSearch(cores))
        return self._native[1]

    # ------------------------------------------------------------------ edits
    def add(self, source, progress: bool = True, new_shard: bool = False) -> list:
        """Embed and append images to the last shard (or, ``new_shard=True``, to a new one);
        ids already in any shard are skipped (``index.skipped``). Written by :meth:`save`."""
        items, self.skipped = [], []
        for item in iter_source(source):
            if item.id in self._where or any(item.id == i.id for i in items):
                self.skipped.append((item.path or item.id, f"duplicate image id {item.id!r}"))
            else:
                items.append(item)
        if new_shard:
            target = ImageIndex.load(os.path.join(self._folder, self._manifest["codebooks"]["file"]),
                                     mmap=False, num_threads=self._num_threads)
            self._shards.append(target)
            self._files.append(mf.shard_name(len(self._files)))
        s = len(self._shards) - 1
        target = self._shards[s]
        target.set_embedder(self._get_embedder())
        added = target.add(items, progress=progress)
        self.skipped += target.skipped
        for image_id in added:
            self._where[image_id] = s
        self._dirty.add(s)
        return added

    def remove(self, ids) -> int:
        """Tombstone images by id in whichever shard holds them (written by :meth:`save`)."""
        ids = self._known_ids(ids)
        by_shard: dict = {}
        for i in dict.fromkeys(ids):
            by_shard.setdefault(self._where[i], []).append(i)
        n = 0
        for s, shard_ids in by_shard.items():
            n += self._shards[s].remove(shard_ids)
            self._dirty.add(s)
            for i in shard_ids:
                del self._where[i]
        return n

    def save(self) -> None:
        """Write the changed shards (atomic each), then the manifest (atomic, last)."""
        from pypatch import __version__

        entries = list(self._manifest["shards"])
        for s in sorted(self._dirty):
            name = self._files[s]
            self._shards[s].save(os.path.join(self._folder, name))
            entry = mf.file_entry(self._folder, name, images=len(self._shards[s]),
                                  patches=int(self._shards[s].patch_index.num_patches))
            if s < len(entries):
                entries[s] = entry
            else:
                entries.append(entry)
        man = mf.new_manifest(self._manifest["model"], self._manifest["codebooks"], entries,
                              __version__)
        mf.write_json_atomic(os.path.join(self._folder, mf.MANIFEST), man)
        self._manifest, self._dirty = man, set()

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        return sum(len(s) for s in self._shards)

    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._where

    def __repr__(self) -> str:
        return f"ShardedIndex(images={len(self)}, shards={len(self._shards)}, {self._folder!r})"

    @property
    def ids(self) -> list:
        """Ids of the live images in global order (shard, then row)."""
        return [i for shard in self._shards for i in shard.ids]

    @property
    def shards(self) -> list:
        """The shards (ImageIndex), in global order."""
        return list(self._shards)

    @property
    def folder(self) -> str:
        return self._folder

    @property
    def transform(self):
        return self._codebooks.transform

    def to_stored(self, vectors) -> np.ndarray:
        return self._codebooks.to_stored(vectors)

    def image_info(self, image_id) -> dict:
        return self._shard_of(image_id).image_info(image_id)

    def patch_vectors(self, image_id) -> np.ndarray:
        return self._shard_of(image_id).patch_vectors(image_id)

    @property
    def _box_maps(self):
        """The shards' box maps as one lookup (``search(refine=True)``), None if none has."""
        if all(shard._box_maps is None for shard in self._shards):
            return None
        return _ShardedBoxMaps(self)

    def _shard_of(self, image_id) -> ImageIndex:
        s = self._where.get(str(image_id))
        if s is None:
            raise InvalidArgumentError(f"image id {image_id!r} is not in the index")
        return self._shards[s]

    def info(self) -> dict:
        """ImageIndex.info() summed over the shards, plus ``shards`` (file, images, patches)."""
        infos = [s.info() for s in self._shards]
        out = dict(infos[0])
        n = sum(i["images"] for i in infos)
        patches = sum(i["patches"] for i in infos)
        memory: dict = {}
        for i in infos:
            for key, v in i["memory_bytes"].items():
                memory[key] = memory.get(key, 0) + v
        if out.get("box_maps") is not None:  # bytes per image over every shard's images
            maps = [(i["box_maps"] or {}).get("bytes_per_image", 0.0) * i["images"] for i in infos]
            out["box_maps"] = dict(out["box_maps"],
                                   bytes_per_image=round(sum(maps) / n, 1) if n else 0.0)
        if out.get("rerank_store") is not None:  # bytes per image and memory over every shard
            stores = [i["rerank_store"] for i in infos]
            rerank_memory: dict = {}
            for store in stores:
                for key, v in store["memory_bytes"].items():
                    rerank_memory[key] = rerank_memory.get(key, 0) + v
            per_image = sum(r["bytes_per_image"] * i["images"] for r, i in zip(stores, infos))
            out["rerank_store"] = dict(out["rerank_store"], memory_bytes=rerank_memory,
                                       bytes_per_image=round(per_image / n, 1) if n else 0.0)
        out.update(images=n, removed=sum(i["removed"] for i in infos), patches=patches,
                   patches_per_image=round(patches / n, 3) if n else 0.0,
                   bytes_per_image=(round(patches * out["bytes_per_patch"] / n + 8, 1)
                                    if n else 0.0),
                   memory_bytes=memory, format="sharded", num_shards=len(infos),
                   shards=[{"file": f, "images": i["images"], "patches": i["patches"]}
                           for f, i in zip(self._files, infos)])
        return out

    def _get_embedder(self):
        embedder = self._codebooks._get_embedder()
        return embedder

    def set_embedder(self, embedder) -> None:
        """Use an already constructed :class:`~pypatch.Embedder` (checked against the index)."""
        self._codebooks.set_embedder(embedder)


class _ShardedBoxMaps:
    """What refinement asks of box maps (``id in maps``, ``maps.similarity(id, q)``), answered
    by the shard that holds the image (each shard keeps its maps beside its file)."""

    def __init__(self, index: ShardedIndex):
        self._index = index

    def _maps_of(self, image_id):
        s = self._index._where.get(str(image_id))
        return None if s is None else self._index._shards[s]._box_maps

    def __contains__(self, image_id) -> bool:
        maps = self._maps_of(image_id)
        return maps is not None and image_id in maps

    def similarity(self, image_id, query) -> np.ndarray:
        return self._maps_of(image_id).similarity(image_id, query)


def shard_rows(first: list, s: int):
    """Rows of shard ``s`` among every query's candidates ``first[i]`` [(shard, row, ...)] as
    an (nq, width) int64 array, -1 where a query has fewer there; None if it has none."""
    lists = [[c[1] for c in cands if c[0] == s] for cands in first]
    width = max(map(len, lists), default=0)
    if not width:
        return None
    rows = np.full((len(first), width), -1, dtype=np.int64)
    for i, r in enumerate(lists):
        rows[i, :len(r)] = r
    return rows


def _check_shard(folder, entry: dict, shard: ImageIndex, codebooks: ImageIndex) -> None:
    """A shard must hold what the manifest says, with the codebooks' model, grid, store,
    quantizer and pre-transform (else its scores would not merge with the others')."""
    name = entry["file"]
    meta, ref = shard._meta, codebooks._meta
    if not same_model(meta["model"], ref["model"]):
        raise ModelMismatchError(f"{folder!r}: shard {name} was built with model "
                                 f"{_label(meta['model'])}, the index with {_label(ref['model'])}")
    for key in ("regions", "mode", "dim"):
        if meta[key] != ref[key]:
            raise IndexFormatError(f"{folder!r}: shard {name} has {key}={meta[key]!r}, the "
                                   f"codebooks {ref[key]!r}")
    if len(shard) != entry.get("images"):
        raise IndexFormatError(f"{folder!r}: shard {name} holds {len(shard)} images, the "
                               f"manifest says {entry.get('images')}")
    a, b = shard.patch_index, codebooks.patch_index
    same = a.dim == b.dim and (a.pq is None) == (b.pq is None) and a.flat_dtype == b.flat_dtype
    if same and a.pq is not None:
        same = np.array_equal(a.pq.centroids, b.pq.centroids)
    ta, tb = shard.transform, codebooks.transform
    if same and (ta is None) != (tb is None):
        same = False
    if same and ta is not None:
        same = np.array_equal(ta.mean, tb.mean) and np.array_equal(ta.matrix, tb.matrix)
    if not same:
        raise IndexFormatError(f"{folder!r}: shard {name} was not built with the index's "
                               f"codebooks / pre-transform")
    # re-rank stores: every shard's of the codebooks' kind (and PQ codebooks), or none
    kinds = [_rerank_label(m.get("rerank")) for m in (meta, ref)]
    ra, rb = shard.rerank_store, codebooks.rerank_store
    if kinds[0] != kinds[1] or (ra is not None and ra.pq is not None
                                and not np.array_equal(ra.pq.centroids, rb.pq.centroids)):
        raise IndexFormatError(f"{folder!r}: shard {name} has re-rank store {kinds[0]}, the "
                               f"codebooks {kinds[1]}" + ("" if kinds[0] != kinds[1] else
                                                          " with other PQ codebooks"))


def _rerank_label(spec) -> str:
    if spec is None:
        return "none"
    return spec["kind"] + (f" m={spec['m']}" if spec.get("m") else "")


def _label(record: dict) -> str:
    card = record.get("card", {})
    return f"{card.get('name')!r} (weights {str(card.get('weights_sha256'))[:12]})"

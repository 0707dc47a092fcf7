"""The image-level index: photos in, ranked images with the winning patch's box out.

``ImageIndex`` puts the pieces together: an :class:`~pypatch.Embedder` turns every database
image into one descriptor per grid cell (the Patchify pyramid by default), the native
:class:`~pypatch.PatchIndex` stores them (PQ codes or flat float32/float16) and scores each
image by the MAX over its patches, and this class keeps what maps the core's image numbers
back to the user's world: ids, paths, image sizes, the grid, the model identity.

Everything is saved as ONE file: the native index file, with this class's state in its JSON
``metadata`` (see :data:`META_FORMAT`), including the learned pre-transform (whitened PCA, and
OPQ for PQ stores: :mod:`pypatch.index.transform`) that database patches and queries go through; its
mean and matrix go in the native file's XFRM section, where C++ programs can apply them too.
Boxes are not stored: the grid is a pure function of (image size, grid settings, patch
ordinal), so boxes are recomputed for the returned hits only.

This module is the facade; the parts live in :mod:`pypatch.index.meta` (the saved metadata,
written and checked), :mod:`pypatch.index.model_record` (the model the index was built with) and
:mod:`pypatch.index.training` (PQ codebooks and pre-transform training).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import numpy as np

from pypatch._checks import as_int, choice
from pypatch.errors import (IndexFormatError, InvalidArgumentError, InvalidTypeError,
                            NotTrainedError)
from pypatch.index.meta import (META_KEY, grid_from_dict, native_transform, new_meta, read_meta,
                                saved_meta, transform_from_meta, transform_summary)
from pypatch.index.model_record import check_model, model_info, new_embedder, recorded_model_location
from pypatch.extract.grid import DEFAULT_REGIONS
from pypatch.extract.modes import MODES
from pypatch.index.rerank_store import load_rerank_index, rerank_path, rerank_spec, rerank_window
from pypatch.index.results import SearchHit
from pypatch.index.searchable import SearchableIndex
from pypatch.index.sources import SourceItem, iter_source, source_length
from pypatch.index import ivf_settings
from pypatch.index.training import (CODEBOOKS, check_pq, new_patch_index, train_settings,
                                    train_store, training_rows, transform_spec)

log = logging.getLogger("pypatch")

STORES = ("pq", "flat", "flat16")
TRAIN_ON = ("patches", "global")
_CHUNK_IMAGES = 64  # images embedded before each add() to the native index
_TRAIN_BUFFER_BYTES = 1 << 30  # PQ: stop buffering for training past this many bytes
# pca_dim="auto" (every store since issue 14; before, per-crop flat stayed raw): whitened PCA to
# AUTO_PCA_DIM dims before storing. On the offline benchmark (D=1280, L3, 1000 images) PQ m=32
# went from 47.2 to 62.7 mAP (flat: 61.3), multi-scale flat from 52.4 to 63.2. Used only when
# the model's dimension is larger, pq_m divides it (PQ), and the training sample holds at least
# AUTO_PCA_MIN_TRAIN vectors (a covariance from fewer is too noisy to whiten by). They are read
# from this module at call time (pypatch.index.training gets them as arguments).
AUTO_PCA_DIM = 256
AUTO_PCA_POWER = -0.5
# Single-pass modes: half whitening. Full whitening of their (context-correlated) cells lost 5-8
# mAP on both small offline benchmarks (ms: 53.8 / 58.1 vs 59.3 / 66.1) for +1 on the large one.
AUTO_PCA_POWER_SINGLE_PASS = -0.25
AUTO_PCA_MIN_TRAIN = 8 * AUTO_PCA_DIM
# Per-crop flat stores whiten to AUTO_FLAT_PCA_DIM axes once the sample holds
# AUTO_FLAT_PCA_MIN_TRAIN vectors (16 per axis: ~210 images at L3s). L3s, mAP of PCA-256 -> 512:
# 200 images +1.5 / +3.0 (seeds 0 / 1), 300 +1.8 / +2.0, 1,000 +2.3 / +2.2, 5,000 +4.6 / +4.8, and
# likewise on one-positive pairs; at 100 images it lost on both small benchmarks (-2.9 / -3.2).
# Residual codebooks follow (they track the flat store); product codes stay at 256 (PQ32 over
# 512 lost up to 1.9). benchmarks/README.md, "Quality defaults" and "Residual codebooks".
AUTO_FLAT_PCA_DIM = 512
AUTO_FLAT_PCA_MIN_TRAIN = 16 * AUTO_FLAT_PCA_DIM
# ... followed by an OPQ rotation (opq="auto"): pq32 62.7 -> 63.3 (large), 63.0 -> 66.7 (small).


class ImageIndex(SearchableIndex):
    """Patch-wise image index (Patchify): build, add, remove, save/load, search.

    Create one with :meth:`build` or :meth:`load`. ``len(index)`` is the number of live
    (not removed) images. ``index.skipped`` lists the ``(source, reason)`` pairs of images
    the last :meth:`build` / :meth:`add` could not use.
    """

    def __init__(self, patch_index, meta: dict, *, model=None, embedder=None,
                 num_threads: Optional[int] = None):
        self._index = patch_index
        self._meta = meta
        self._ids: list = list(meta["ids"])
        self._paths: list = list(meta["paths"])
        self._sizes: list = [tuple(s) for s in meta["sizes"]]
        # live ids only; the tombstones themselves live in the native index (one source)
        removed = patch_index.removed
        self._row = {image_id: i for i, image_id in enumerate(self._ids) if not removed[i]}
        self._grid = grid_from_dict(meta["regions"]["grid"])
        self._transform = transform_from_meta(meta.get("transform"), native_transform(patch_index))
        self._grid_cache: dict = {}
        self._model_override = model
        self._embedder = embedder
        self._num_threads = num_threads
        self.skipped: list = []
        self._box_maps = None  # pypatch.index.box_maps.BoxMaps when built with box_maps=
        if meta.get("box_maps"):
            from pypatch.index.box_maps import BoxMaps

            self._box_maps = BoxMaps(_box_maps_dim(meta["box_maps"].get("dim")))
        # the exact re-rank store (pypatch.index.rerank_store): a second, exhaustive PatchIndex
        # of the same images, created once the first stage is trained (its dim is known then)
        self._rerank = None

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, source, model=None, regions=DEFAULT_REGIONS, store: str = "pq", pq_m: int = 32,
              pq_nbits: int = 8, mode: str = "crop", train_on: str = "patches",
              train_size: int = 65536, num_threads: Optional[int] = None,
              progress: bool = True, embedder=None, seed: int = 0,
              pca_dim="auto", pca_power="auto",
              opq="auto", nlist=None, nprobe=None, box_maps=None,
              rerank_store=None, pq_codebooks: str = "auto") -> "ImageIndex":
        """Embed every image of ``source`` and index its patches.

        Parameters
        ----------
        source : folder, image file, list of paths, or iterable of ``(id, image)``
            (see :mod:`pypatch.index.sources`).
        model : ``.onnx`` path or registered model name (None = the offline default).
        regions : region strategy (``"L0"``..``"L4"``, ``"L3s"``, ``"rmac"``, ...) or a ``PatchGrid``;
            default :data:`~pypatch.extract.grid.DEFAULT_REGIONS` (``"L3s"``: the paper's L3
            pyramid + 9 half-shifted finest cells, 39 patches; ``"L3"`` is the paper's 30).
        store : ``"pq"`` (``pq_m`` bytes per patch at 8 bits), ``"flat"`` (float32) or
            ``"flat16"`` (float16).
        pq_codebooks : the PQ store's codebooks, same bytes and same scan either way:
            ``"residual"`` (``pq_m`` additive full-dimension codebooks,
            :class:`~pypatch.ResidualQuantizer`: a longer training and a ``pq_m * 256 * dim``
            multiply-add table per query), ``"product"`` (:class:`~pypatch.ProductQuantizer`
            over sub-vectors; OPQ applies to these only) or ``"auto"``: residual codebooks
            wherever a per-crop store keeps its automatic PCA (a sample of
            :data:`AUTO_PCA_MIN_TRAIN` vectors, ~53 images at L3s), over the flat stores' axes
            (512 from :data:`AUTO_FLAT_PCA_MIN_TRAIN` vectors, ~210 images); product ones
            otherwise (single-pass modes, tiny or raw stores). Within 1.5 mAP of the flat store
            from 100 to 1,000 images on two seeds, +1.1 to +5.8 over product codes from 200
            up; benchmarks/README.md, "Residual codebooks".
        mode : ``"crop"`` embeds each cell separately (the paper); ``"single_pass"`` pools
            every cell from one feature map per image (8x faster at L3, 7-11 mAP lower);
            ``"multi_scale"`` pools them from three feature maps (288/384/576 px for the default
            model; 2.2-2.4x faster than per-crop, 0.4-4 mAP lower on the large offline benchmark).
        train_on : PQ codebooks trained on a sample of all patch descriptors (``"patches"``)
            or on whole-image (level-0) descriptors only (``"global"``).
        train_size : at most this many training vectors (sampled with ``seed``).
        pca_dim : project patch descriptors (and queries) onto this many principal axes,
            learned on the same training sample, before storing them (see
            :mod:`pypatch.index.transform`); None keeps the model's dimension; ``"auto"``: PQ
            stores use :data:`AUTO_PCA_DIM` whitened axes when the model's dimension is larger,
            ``pq_m`` divides it and the sample holds :data:`AUTO_PCA_MIN_TRAIN` vectors; so do
            flat stores (measured better at every collection size tried: benchmarks/README.md,
            "Quality defaults"), per-crop ones with :data:`AUTO_FLAT_PCA_DIM` axes once the
            sample holds :data:`AUTO_FLAT_PCA_MIN_TRAIN` vectors; ``pca_dim=None`` keeps a flat
            store exact.
        pca_power : eigenvalue power of the PCA (0 = rotation only, -0.5 = full whitening);
            ``"auto"``: :data:`AUTO_PCA_POWER` per-crop, :data:`AUTO_PCA_POWER_SINGLE_PASS` else.
        opq : PQ stores with a PCA: also learn an OPQ rotation of the projected vectors
            (:func:`pypatch.index.transform.fit_opq_rotation`), folded into the stored matrix;
            ``"auto"`` (= True there; ignored without PQ or PCA): +0.6 mAP at m=32 on the
            large offline benchmark, +3.7 on the small one, for a longer training.
        nlist : PQ stores: an inverted file of ``nlist`` lists over the patches (a search
            probes ``nprobe`` of them, default :data:`~pypatch.index.ivf_settings.DEFAULT_NPROBE`,
            and ranks images by their best probed patch); ``"auto"``: exhaustive below
            :data:`~pypatch.index.ivf_settings.AUTO_MIN_PATCHES` patches (counted from the
            source when it is a folder, a file list or a sized collection), an inverted file
            above; None (default): exhaustive.
        box_maps : keep a small similarity map of every image (per-crop pyramids: the finest
            crops' feature maps, from the same backbone runs; :mod:`pypatch.index.box_maps`)
            so that ``search(refine=True)`` needs no backbone pass per hit. ``True`` =
            :data:`pypatch.index.box_maps.DEFAULT_DIM` dims, or an int; about
            ``196 x (dim + 2)`` bytes per image, saved beside the index file
            (``<file>.boxmaps.npz``). None (default): refinement runs the backbone per hit.
        rerank_store : PQ stores: also keep the stored patch vectors in a second, exhaustive
            store that re-scores the first stage's top ``rerank_k`` images exactly over all
            their patches (:mod:`pypatch.index.rerank_store`): ``"flat16"`` (float16, ``2 x
            dim`` bytes per patch: 512 at the default 256 dims), ``"flat"`` (float32) or
            ``"pq8"`` (8-bit PQ codes with ``pq_m`` sub-quantizers: ``pq_m`` bytes) or
            ``"pq8-d4"`` (8-bit PQ codes over 4-dim sub-vectors: ``dim / 4`` bytes, 128 at
            512 axes). For IVF-4-bit speed at 8-bit (pq8) or float (flat16) quality, and for
            large collections, where 32-byte codes alone lose to the flat store (5,000
            images: pq8-d4 or flat16 bring the residual default back). Saved beside the index
            file (``<file>.rerank.ptch``, mapped by ``load(mmap=True)``). None (default): none.
        """
        if isinstance(nlist, str) and nlist == "auto":
            if isinstance(source, (str, os.PathLike)):  # walk a folder once, not again to embed
                source = list(iter_source(source))
            nlist = ("auto", _source_patches(source, regions))
        self = cls.create(model=model, regions=regions, store=store, pq_m=pq_m,
                          pq_nbits=pq_nbits, mode=mode, train_on=train_on,
                          train_size=train_size, num_threads=num_threads, embedder=embedder,
                          seed=seed, pca_dim=pca_dim, pca_power=pca_power, opq=opq,
                          nlist=nlist, nprobe=nprobe, box_maps=box_maps,
                          rerank_store=rerank_store, pq_codebooks=pq_codebooks)
        self._ingest(source, progress=progress, training=not self.is_trained)
        if len(self._ids) == 0:
            detail = f" (first: {self.skipped[0][0]}: {self.skipped[0][1]})" if self.skipped else ""
            raise InvalidArgumentError(
                f"source: no usable image; {len(self.skipped)} skipped{detail}")
        return self

    @classmethod
    def create(cls, model=None, regions=DEFAULT_REGIONS, store: str = "pq", pq_m: int = 32,
               pq_nbits: int = 8, mode: str = "crop", train_on: str = "patches",
               train_size: int = 65536, num_threads: Optional[int] = None, embedder=None,
               seed: int = 0, pca_dim="auto", pca_power="auto", opq="auto", nlist=None,
               nprobe=None, box_maps=None, rerank_store=None,
               pq_codebooks: str = "auto") -> "ImageIndex":
        """An empty index with :meth:`build`'s settings, not yet trained (PQ or a
        pre-transform: see :meth:`train_embedded`); a flat store without one is ready.
        ``nlist="auto"`` does not know the collection's size here: it stays exhaustive (pass
        ``("auto", n_patches)`` to decide for n_patches, as :meth:`build` does)."""
        choice(store, "store", STORES)
        choice(mode, "mode", MODES)
        choice(train_on, "train_on", TRAIN_ON)
        grid, regions_spec = _make_grid(regions)
        if embedder is None:
            embedder = new_embedder(model, num_threads)
        if mode != "crop" and hasattr(embedder, "pass_sizes"):
            embedder.pass_sizes(mode)  # e.g. multi_scale on a static-size model: fail up front
        dim = int(getattr(embedder, "dim", embedder.model_card["dim"]))
        store_info = {"kind": store}
        if isinstance(pca_power, str) and pca_power == "auto":
            pca_power = AUTO_PCA_POWER if mode == "crop" else AUTO_PCA_POWER_SINGLE_PASS
        if store == "pq":
            choice(pq_codebooks, "pq_codebooks", CODEBOOKS)
        transform = transform_spec(pca_dim, pca_power, opq, store=store, pq_m=pq_m, dim=dim,
                                   train_size=train_size, seed=seed, auto_dim=AUTO_PCA_DIM,
                                   mode=mode, codebooks=pq_codebooks)
        stored_dim = dim if transform is None else transform["dim"]
        if store == "pq":
            check_pq(stored_dim, pq_m, pq_nbits, train_size, pq_codebooks)
            store_info.update(m=int(pq_m), nbits=int(pq_nbits), codebooks=pq_codebooks,
                              train_on=train_on,
                              train_size=int(train_size), seed=int(seed))
        n_patches = None
        if isinstance(nlist, tuple):  # ("auto", patches the source will give) from build()
            nlist, n_patches = nlist
        nlist, nprobe = ivf_settings.check(nlist, nprobe, store_info)
        store_info.update(ivf_settings.resolve(nlist, nprobe, n_patches=n_patches,
                                               train_vectors=int(train_size)))
        rerank = rerank_spec(rerank_store, store_info, stored_dim)
        maps_dim = _box_maps_dim(box_maps)
        if maps_dim is not None:
            from pypatch.extract.embedder import _check_maps

            _check_maps(grid, mode, getattr(embedder, "_feat_out", "features"),
                        getattr(embedder, "model_path", model))
        meta = new_meta(grid=grid, regions_spec=regions_spec, mode=mode, store=store_info,
                        model=model_info(embedder, model), dim=dim, transform=transform)
        if maps_dim is not None:
            meta["box_maps"] = {"dim": maps_dim}
        if rerank is not None:
            meta["rerank"] = rerank
        self = cls(new_patch_index(stored_dim, store_info), meta, model=model,
                   embedder=embedder, num_threads=num_threads)
        self._grid = grid
        return self

    def add(self, source, progress: bool = True, replace: bool = False) -> list:
        """Embed and append the images of ``source`` (after build/training); returns their ids.

        An id already in the index raises :class:`~pypatch.errors.InvalidArgumentError` before
        anything is embedded (as a duplicate key does in faiss or usearch), and so does an id
        given twice in ``source``. ``replace=True`` replaces the indexed image of such an id
        with the new one instead (the old one is removed once the new one is embedded; an
        unreadable new image, listed in ``index.skipped``, leaves the old one in place); the
        replaced id moves to the end of ``ids``."""
        self._ensure_trained()
        if not isinstance(replace, bool):
            raise InvalidTypeError(f"replace: expected True or False, got {replace!r}")
        items = list(iter_source(source))  # ids first: nothing is embedded on a duplicate
        seen: set = set()
        for item in items:
            if item.id in seen:
                raise InvalidArgumentError(f"source: image id {item.id!r} is given twice")
            seen.add(item.id)
        present = [item.id for item in items if item.id in self._row]
        if present and not replace:
            raise InvalidArgumentError(
                f"source: {len(present)} image id(s) already in the index, e.g. {present[0]!r}: "
                f"pass replace=True to replace them, or remove() them first")
        old_rows = {i: self._row[i] for i in present}
        before = len(self._ids)
        self._ingest(items, progress=progress, training=False, replacing=set(present))
        added = self._ids[before:]
        stale = sorted(old_rows[i] for i in added if i in old_rows)
        if stale:  # the new rows already own the ids in self._row
            self._remove_rows(stale)
        return list(added)

    def _ingest(self, source, *, progress: bool, training: bool,
                replacing: frozenset = frozenset()) -> None:
        """Embed ``source`` chunk by chunk into the native index.

        Decoding overlaps inference (``Embedder.embed_many``). With ``training`` the first
        images are buffered until enough training vectors exist (or the buffer cap / end of
        source), the PQ codebooks are trained on a seeded sample of them, then all streams."""
        self.skipped = []
        embedder = self._get_embedder()
        fed: dict = {}  # position in the embedder's input -> SourceItem (filled by its thread)
        seen_ids: set = set()

        def images():
            for item in iter_source(source):
                if (item.id in self._row and item.id not in replacing) or item.id in seen_ids:
                    self.skipped.append((_describe(item), f"duplicate image id {item.id!r}"))
                    continue
                seen_ids.add(item.id)
                fed[len(seen_ids) - 1] = item
                yield item.image

        extra = {"maps": True} if self._box_maps is not None else {}
        results = embedder.embed_many(
            images(), regions=self._grid, mode=self._meta["mode"], on_error="skip",
            show_progress=bool(progress) and sys.stderr.isatty(), **extra)
        pending: list = []  # (item, vectors, (w, h)) not yet added to the native index
        pending_bytes = 0
        train_count = 0
        try:
            for emb in results:
                item = fed.pop(emb.index)
                size = (int(emb.width), int(emb.height))
                if not np.array_equal(emb.boxes, self._cells(size)[0]):
                    # Boxes are recomputed from the grid at search time: they must agree.
                    raise AssertionError(f"embedder boxes differ from the grid's for {item.id!r}")
                vectors = np.ascontiguousarray(emb.vectors, dtype=np.float32)
                if self._box_maps is not None:
                    if getattr(emb, "maps", None) is None:  # a custom embedder without maps=
                        raise InvalidArgumentError(
                            f"box maps: the embedder returned no feature map for {item.id!r} "
                            f"(embed_many(..., maps=True) must set PatchEmbedding.maps)")
                    self._box_maps.add(item.id, emb.maps)
                pending.append((item, vectors, size))
                pending_bytes += vectors.nbytes
                if training:
                    train_count += self._train_vectors_count(vectors, size)
                    if (train_count >= train_settings(self._meta)[1]
                            or pending_bytes >= _TRAIN_BUFFER_BYTES):
                        self._train(pending)
                        training = False
                if not training and len(pending) >= _CHUNK_IMAGES:
                    self._append(pending)
                    pending, pending_bytes = [], 0
            if training and pending:
                self._train(pending)
            if pending:
                self._append(pending)
        finally:
            results.close()
        if self._box_maps is not None:
            self._box_maps.finish()
        for skip in results.skipped:
            item = fed.pop(skip.index, None)
            where = _describe(item) if item is not None else skip.name
            reason = skip.reason
            if reason.startswith(f"{skip.name}: "):  # ImageError messages start with the name
                reason = reason[len(skip.name) + 2:]
            self.skipped.append((where, reason))
        if self.skipped:
            log.warning("skipped %d image(s); first: %s: %s", len(self.skipped),
                        *self.skipped[0])

    def train_embedded(self, embedded) -> int:
        """Train on already embedded images exactly as :meth:`build` would on the same source:
        ``embedded`` yields ``(vectors (P, D), (w, h))`` in source order; the sample is drawn
        from the first images until enough training vectors (or the buffer cap) are reached.
        Returns how many images were consumed (a distributed build embeds only those)."""
        if self.is_trained:
            raise InvalidArgumentError("train_embedded: the index is already trained")
        pending, count, nbytes = [], 0, 0
        for vectors, size in embedded:
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            size = (int(size[0]), int(size[1]))
            pending.append((None, vectors, size))
            count += self._train_vectors_count(vectors, size)
            nbytes += vectors.nbytes
            if count >= train_settings(self._meta)[1] or nbytes >= _TRAIN_BUFFER_BYTES:
                break
        self._train(pending)
        return len(pending)

    def add_embedded(self, items, stored: bool = False) -> list:
        """Append already embedded images: ``items`` yields ``(id, path or None, vectors,
        (w, h))`` with this index's model and grid (``stored=True``: vectors already went
        through :meth:`to_stored`). Returns the ids added; duplicates raise."""
        self._ensure_trained()
        batch = []
        for image_id, path, vectors, size in items:
            image_id = str(image_id)
            size = (int(size[0]), int(size[1]))
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            if image_id in self._row or any(image_id == b[0].id for b in batch):
                raise InvalidArgumentError(f"add_embedded: duplicate image id {image_id!r}")
            if len(vectors) != len(self._cells(size)[0]):
                raise InvalidArgumentError(
                    f"add_embedded: {image_id!r} has {len(vectors)} vectors but the grid gives "
                    f"{len(self._cells(size)[0])} cells for an image of size {size}")
            batch.append((SourceItem(image_id, path, path), vectors, size))
        if batch:
            self._append(batch, stored=stored)
        return [b[0].id for b in batch]

    def codebooks(self) -> "ImageIndex":
        """An empty index sharing this one's settings, trained quantizer and pre-transform:
        saved, it is what every shard of a sharded index is built from."""
        from pypatch.index.patch_index import PatchIndex

        self._ensure_trained()
        pq, nlist = self._index.pq, self._index.nlist
        native = (PatchIndex(int(self._index.dim), pq=pq.copy(), nlist=nlist or None)
                  if pq is not None else new_patch_index(int(self._index.dim), self._meta["store"]))
        if nlist:  # the same lists: a shard's search probes what the whole index would
            native.set_coarse_centroids(self._index.coarse_centroids)
            native.nprobe = self._index.nprobe
        meta = dict(self._meta, ids=[], paths=[], sizes=[], removed=[])
        empty = type(self)(native, meta, model=self._model_override, embedder=self._embedder,
                           num_threads=self._num_threads)
        empty._transform = self._transform
        if self._box_maps is not None:  # same projection: shards' maps read alike
            empty._box_maps = self._box_maps.empty_like()
        if self._rerank is not None:  # same store, same PQ codebooks
            from pypatch.index.rerank_store import empty_like

            empty._rerank = empty_like(self._rerank)
        return empty

    def subset(self, ids) -> "ImageIndex":
        """A new index (same codebooks and pre-transform) holding only the live images ``ids``,
        in this index's order; their stored codes / vectors are copied, not re-encoded, so
        each image scores exactly as it does here."""
        wanted = {str(i) for i in ids}
        unknown = wanted - set(self._row)
        if unknown:
            raise InvalidArgumentError(
                f"ids: {len(unknown)} image id(s) not in the index, e.g. {sorted(unknown)[0]!r}")
        # live rows only: after add(replace=True) a removed row still carries its id
        rows = [r for r, i in enumerate(self._ids) if i in wanted and self._row.get(i) == r]
        out = self.codebooks()
        if not rows:
            return out
        offsets = np.asarray(self._index.image_offsets)
        counts = np.asarray([offsets[r + 1] - offsets[r] for r in rows], dtype=np.int64)
        if self._index.pq is not None:
            codes = self._index._ix.codes()  # the stored bytes: copied, never re-quantised
            lists = self._index.patch_lists() if self._index.is_ivf else None
            pick = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows])
            out._index.add_codes(np.ascontiguousarray(codes[pick]), patches_per_image=counts,
                                 lists=None if lists is None else lists[pick])
        else:  # reconstruct is exact for flat stores (float16 values round-trip)
            out._index.add(np.concatenate([self._index.reconstruct(r) for r in rows]),
                           patches_per_image=counts)
        if self._rerank is not None:  # the re-rank store's rows too, copied the same way
            if self._rerank.pq is not None:
                codes = self._rerank._ix.codes()
                pick = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows])
                out._rerank.add_codes(np.ascontiguousarray(codes[pick]), patches_per_image=counts)
            else:
                out._rerank.add(np.concatenate([self._rerank.reconstruct(r) for r in rows]),
                                patches_per_image=counts)
        if self._box_maps is not None:
            out._box_maps.take(self._box_maps, [self._ids[r] for r in rows])
        for r in rows:
            out._row[self._ids[r]] = len(out._ids)
            out._ids.append(self._ids[r])
            out._paths.append(self._paths[r])
            out._sizes.append(self._sizes[r])
        return out

    @property
    def is_trained(self) -> bool:
        """True once the PQ codebooks and the pre-transform (those used) are fitted."""
        store_ready = self._meta["store"]["kind"] != "pq" or bool(self._index.is_trained)
        return store_ready and (not self._meta.get("transform") or self._transform is not None)

    def _train_vectors_count(self, vectors, size) -> int:
        return len(training_rows(self._meta, vectors, self._cells(size)[1]))

    def _train(self, pending: list) -> None:
        """Fit the pre-transform (if any), then the PQ codebooks (if any), on one sample."""
        parts = [training_rows(self._meta, v, self._cells(size)[1]) for _, v, size in pending]
        self._index, transform = train_store(self._meta, self._index, parts,
                                             min_auto_train=AUTO_PCA_MIN_TRAIN,
                                             wide_auto=(AUTO_FLAT_PCA_DIM, AUTO_FLAT_PCA_MIN_TRAIN),
                                             num_threads=self._num_threads)
        if transform is not None:
            self._transform = transform
        spec = self._meta.get("rerank")
        if spec is not None:
            from pypatch.index.rerank_store import PQ_KINDS, new_rerank_index

            sample = np.zeros((0, int(self._index.dim)), np.float32)
            _, train_size, seed = train_settings(self._meta)
            if spec["kind"] in PQ_KINDS:  # the first stage's sample, in the stored space
                sample = np.concatenate(parts) if parts else np.zeros((0, self._meta["dim"]), np.float32)
                if len(sample) > train_size:
                    rng = np.random.default_rng(seed)
                    sample = sample[np.sort(rng.choice(len(sample), train_size, replace=False))]
                sample = self.to_stored(sample)
            self._rerank = new_rerank_index(int(self._index.dim), spec, sample, seed=seed,
                                            num_threads=self._num_threads)

    def to_stored(self, vectors) -> np.ndarray:
        """Model descriptors (n, D) or (D,) -> the vectors this index stores and searches
        (the fitted pre-transform applied; unchanged without one)."""
        v = np.asarray(vectors, dtype=np.float32)
        return v if self._transform is None else self._transform.apply(v)

    @property
    def transform(self):
        """The fitted :class:`~pypatch.index.transform.PCATransform` (None when not used)."""
        return self._transform

    def _append(self, pending: list, stored: bool = False) -> None:
        counts = [len(v) for _, v, _ in pending]
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        # transformed image by image: an image's stored vectors then do not depend on which
        # images share its chunk (BLAS may sum differently for other batch shapes), so a
        # sharded or distributed build stores exactly what one in-process build stores
        vectors = np.concatenate([v if stored else self.to_stored(v) for _, v, _ in pending])
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._rerank is not None:  # first: its float16 range check must not leave one behind
            self._rerank.add(vectors, image_offsets=offsets)
        self._index.add(vectors, image_offsets=offsets)
        for item, _, size in pending:
            self._row[item.id] = len(self._ids)
            self._ids.append(item.id)
            self._paths.append(item.path)
            self._sizes.append(size)

    # ------------------------------------------------------------------ removal
    def remove(self, ids) -> int:
        """Tombstone images by id (excluded from search at once; space is reclaimed by
        :meth:`compact` or :meth:`save`). Returns how many were removed."""
        ids = self._known_ids(ids)
        rows = sorted({self._row[i] for i in ids})
        self._remove_rows(rows)
        for r in rows:
            if self._box_maps is not None:
                self._box_maps.remove(self._ids[r])
            del self._row[self._ids[r]]
        return len(rows)

    def _remove_rows(self, rows) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self._index.remove(rows)
        if self._rerank is not None:
            self._rerank.remove(rows)

    def compact(self) -> None:
        """Drop tombstoned images from the native store (and the re-rank store) and renumber
        the rest."""
        if not self._index.num_removed:
            return
        mapping = np.asarray(self._index.compact())
        if self._rerank is not None:
            if not np.array_equal(np.asarray(self._rerank.compact()), mapping):
                raise RuntimeError("compact: the re-rank store fell out of step with the index")
        keep = np.flatnonzero(mapping >= 0)
        order = keep[np.argsort(mapping[keep], kind="stable")]
        self._ids = [self._ids[i] for i in order]
        self._paths = [self._paths[i] for i in order]
        self._sizes = [self._sizes[i] for i in order]
        self._row = {image_id: i for i, image_id in enumerate(self._ids)}

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the index as one file (atomic). Tombstoned images are compacted away. An index
        not yet trained (``create`` without ``train_embedded``) raises NotTrainedError: its
        file could not be searched or loaded."""
        if not self.is_trained:
            raise NotTrainedError("cannot save an index that is not trained yet (its PQ codebooks "
                                  "or pre-transform are not fitted): use ImageIndex.build or "
                                  "train_embedded first")
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(folder):  # the native writer would name its temporary file
            raise FileNotFoundError(f"cannot save the index to {os.fspath(path)!r}: folder "
                                    f"{folder!r} does not exist")
        self.compact()
        from pypatch import __version__

        meta = saved_meta(self._meta, self._ids, self._paths, self._sizes, __version__,
                          self._transform)
        if self._rerank is not None:
            # written first, the index file last; a token in both pairs them (a crash between
            # the two leaves a mismatch that load() reports, never a wrong re-rank)
            from pypatch.index.rerank_store import new_token, save_rerank_index

            meta["rerank"] = dict(meta["rerank"], token=new_token())
            save_rerank_index(self._rerank, rerank_path(path), meta["rerank"]["token"])
            self._meta["rerank"] = meta["rerank"]
        if self._transform is not None:  # binary XFRM section: C++ programs can apply it too
            self._index.set_transform(self._transform.mean, self._transform.matrix)
        self._index.metadata = {META_KEY: meta}
        self._index.save(os.fspath(path))
        if self._box_maps is not None:
            self._box_maps.save(box_maps_path(path), self._ids)

    @classmethod
    def load(cls, path, mmap: bool = True, model=None,
             num_threads: Optional[int] = None, *, verify: bool = False) -> "ImageIndex":
        """Open an index written by :meth:`save`.

        ``model`` overrides where the model is found (a path or name); by default the
        recorded model is used. The model is only loaded on the first image query.
        ``mmap`` and ``verify`` as in :meth:`PatchIndex.load`: a mapped file's big sections
        (codes, vectors) are CRC-checked only with ``verify=True``; an eager load checks all.
        The image metadata is always checked against the native index (types, one entry per
        image, each image's patch count against the grid): a bad file raises
        :class:`~pypatch.errors.IndexFormatError`."""
        from pypatch.index.patch_index import PatchIndex

        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"index file not found: {path!r}")
        if os.path.isdir(path):
            raise IndexFormatError(f"{path!r} is a folder, not a pypatch index file")
        patch_index = PatchIndex.load(path, mmap=mmap, verify=verify)
        meta = read_meta(patch_index, path)
        out = cls(patch_index, meta, model=model, num_threads=num_threads)
        if meta.get("rerank") is not None:
            out._rerank = load_rerank_index(path, meta["rerank"], patch_index, mmap=mmap,
                                            verify=verify)
        if out._box_maps is not None:
            from pypatch.index.box_maps import BoxMaps

            side = box_maps_path(path)
            if os.path.exists(side):
                out._box_maps = BoxMaps.load(side, out._box_maps.dim)
            else:  # refinement falls back to a backbone pass per hit
                log.warning("%s: box maps file %s is missing", path, side)
                out._box_maps = None
        return out

    # ------------------------------------------------------------------ search
    def search_vectors(self, descriptors, k: int = 10,
                       num_threads: Optional[int] = None, stored: bool = False,
                       nprobe: Optional[int] = None, rerank_k: Optional[int] = None) -> list:
        """Rank images for precomputed query descriptors ``(nq, D)`` or ``(D,)`` float32
        (L2-normalised, from the index's model). Returns one list of hits per query.

        ``stored=True``: the descriptors are already in the stored space (:meth:`to_stored`,
        e.g. built from reconstructed patches), so the pre-transform is not applied again.
        ``nprobe``: lists probed by an inverted-file index (default :attr:`nprobe`).
        ``rerank_k``: with a re-rank store (``build(rerank_store=...)``), the first stage's top
        ``rerank_k`` images (default ``max(4 * k, 100)``, at least k) are re-scored over all
        their patches by it, and hits carry its scores and winning patches; 0 turns it off
        (the first stage's own ranking). An index without one refuses a positive value."""
        as_int(k, "k", 1)
        window = rerank_window(self._rerank is not None, k, rerank_k)
        q = self._stored_queries(descriptors, stored, int(self._index.dim))
        n_live = len(self)
        if n_live == 0:
            return [[] for _ in range(len(q))]
        kk = min(k, n_live)
        threads = num_threads if num_threads is not None else self._num_threads
        exact = {"rerank": self._rerank, "rerank_k": window} if window else {}
        scores, images, patches = self._index.search(
            np.ascontiguousarray(q), k=kk, num_threads=threads, nprobe=nprobe, **exact)
        return [self._hits(s, im, p) for s, im, p in zip(scores, images, patches)]

    def _hits(self, scores, images, patches) -> list:
        hits = []
        for score, row, patch in zip(scores, images, patches):
            row, patch = int(row), int(patch)
            if row < 0:  # padding: fewer live images than k (removed ones never rank)
                continue
            hits.append(self._hit(len(hits) + 1, score, row, patch))
        return hits

    def _hit(self, rank: int, score, row: int, patch: int) -> SearchHit:
        """The hit of image row ``row`` (its winning patch ``patch``) at ``rank``."""
        boxes, levels = self._cells(self._sizes[row])
        cell = tuple(int(v) for v in boxes[patch])
        return SearchHit(rank=rank, image=self._ids[row], path=self._paths[row],
                         score=float(score), box=cell, cell=cell, level=int(levels[patch]),
                         patch=patch)

    @property
    def nprobe(self) -> int:
        """Lists a search probes (inverted file; 0 for an exhaustive index). Settable; saved."""
        return self._index.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._index.nprobe = value
        self._meta["store"]["nprobe"] = self._index.nprobe

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        return len(self._ids) - self._index.num_removed

    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._row

    def __repr__(self) -> str:
        store = self._meta["store"]
        kind = f"pq{store['m']}x{store['nbits']}" if store["kind"] == "pq" else store["kind"]
        if self._rerank is not None:
            kind += f" + rerank {self._meta['rerank']['kind']}"
        return (f"ImageIndex(images={len(self)}, regions={self._meta['regions']['spec']!r}, "
                f"store={kind!r}, model={self._meta['model'].get('name')!r})")

    @property
    def ids(self) -> list:
        """Ids of the live images, in index order."""
        return [i for r, i in enumerate(self._ids) if self._row.get(i) == r]

    def patch_vectors(self, image_id) -> np.ndarray:
        """(P, stored dim) float32 stored vectors of one live image (decoded for PQ)."""
        row = self._row.get(str(image_id))
        if row is None:
            raise InvalidArgumentError(f"image id {image_id!r} is not in the index")
        return self._index.reconstruct(row)

    @property
    def patch_index(self):
        """The underlying native :class:`~pypatch.PatchIndex` (advanced use)."""
        return self._index

    def image_info(self, image_id) -> dict:
        """Path, size and cells of one indexed image."""
        row = self._row.get(str(image_id))
        if row is None:
            raise InvalidArgumentError(f"image id {image_id!r} is not in the index")
        boxes, levels = self._cells(self._sizes[row])
        return {"id": self._ids[row], "path": self._paths[row], "size": list(self._sizes[row]),
                "cells": boxes.tolist(), "levels": levels.tolist()}

    def info(self) -> dict:
        """Counts, bytes per image, model, regions and store settings."""
        from pypatch import __version__

        n_live = len(self)
        num_patches = int(self._index.num_patches)
        removed = np.flatnonzero(self._index.removed)
        live_patches = num_patches - sum(len(self._cells(self._sizes[r])[0]) for r in removed)
        store = dict(self._meta["store"])
        if self._index.is_ivf:
            store["nprobe"] = self._index.nprobe
        per_patch = _bytes_per_patch(store, int(self._index.dim))
        model = self._meta["model"]
        try:
            memory = {k: int(v) for k, v in dict(self._index.memory_usage()).items()}
        except Exception:  # memory_usage is informative only
            memory = {}
        return {
            "images": n_live,
            "removed": len(removed),
            "patches": live_patches,
            "patches_per_image": round(live_patches / n_live, 3) if n_live else 0.0,
            "bytes_per_patch": per_patch,
            # codes plus the 8-byte CSR offset of each image
            "bytes_per_image": round(live_patches * per_patch / n_live + 8, 1) if n_live else 0.0,
            "dim": self._meta["dim"],
            "stored_dim": int(self._index.dim),
            "transform": transform_summary(self._meta.get("transform")),
            "regions": self._meta["regions"]["spec"],
            "mode": self._meta["mode"],
            "store": store,
            "model": {"name": model.get("name"), "path": model.get("path"),
                      "sha256": model.get("sha256")},
            "memory_bytes": memory,
            "rerank_store": self._rerank_info(live_patches, n_live),
            "box_maps": None if self._box_maps is None else {
                "dim": int(self._box_maps.dim),
                "bytes_per_image": round(self._box_maps.nbytes_per_image(), 1)},
            "pypatch_version": self._meta.get("pypatch_version", __version__),
        }

    def _rerank_info(self, live_patches: int, n_live: int):
        if self._rerank is None:
            return None
        from pypatch.index.rerank_store import bytes_per_patch

        spec = self._meta["rerank"]
        per_patch = bytes_per_patch(spec, int(self._rerank.dim))
        out = {k: v for k, v in spec.items() if k != "token"}
        memory = {k: int(v) for k, v in dict(self._rerank.memory_usage()).items()}
        out.update(bytes_per_patch=per_patch,
                   bytes_per_image=round(live_patches * per_patch / n_live, 1) if n_live else 0.0,
                   memory_bytes=memory)
        return out

    @property
    def rerank_store(self):
        """The exhaustive re-rank :class:`~pypatch.PatchIndex` (None without one)."""
        return self._rerank

    # ------------------------------------------------------------------ helpers
    def _cells(self, size):
        """(boxes (P, 4) int32, levels (P,) uint8) of an image of ``size`` = (w, h)."""
        cached = self._grid_cache.get(size)
        if cached is None:
            w, h = size
            cached = (np.asarray(self._grid.boxes(w, h), dtype=np.int32),
                      np.asarray(self._grid.levels_of(w, h)))
            if len(self._grid_cache) > 4096:
                self._grid_cache.clear()
            self._grid_cache[size] = cached
        return cached

    def _ensure_trained(self) -> None:
        if not self.is_trained:
            raise NotTrainedError("the index has no trained codebooks yet: use ImageIndex.build")

    def _get_embedder(self):
        if self._embedder is None:
            spec = self._model_override
            if spec is None:
                spec = recorded_model_location(self._meta["model"])
            embedder = new_embedder(spec, self._num_threads)
            check_model(self._meta["model"], embedder)
            self._embedder = embedder
        return self._embedder

    def set_embedder(self, embedder) -> None:
        """Use an already constructed :class:`~pypatch.Embedder` (checked against the index)."""
        check_model(self._meta["model"], embedder)
        self._embedder = embedder


# ---------------------------------------------------------------------- module helpers
def _make_grid(regions):
    """(PatchGrid, spec string) from a regions argument ("L3", "rmac", ... or a PatchGrid)."""
    from pypatch.extract.grid import parse_regions

    grid = parse_regions(regions)
    if grid.kind == "custom":
        # Boxes are recomputed from (image size, grid) at search time; fixed pixel boxes
        # cannot follow images of different sizes.
        raise InvalidArgumentError("regions: custom boxes are not supported by ImageIndex")
    return grid, regions if isinstance(regions, str) else repr(grid)


def box_maps_path(path) -> str:
    """Where :meth:`ImageIndex.save` writes the box maps of the index file ``path``."""
    return os.fspath(path) + ".boxmaps.npz"


def _box_maps_dim(box_maps):
    """``box_maps`` argument -> None (off) or the projected dimension."""
    if box_maps is None or box_maps is False:
        return None
    if box_maps is True:
        from pypatch.index.box_maps import DEFAULT_DIM

        return DEFAULT_DIM
    return as_int(box_maps, "box_maps", 1, 4096)


def _bytes_per_patch(store: dict, dim: int) -> float:
    if store["kind"] == "pq":  # an inverted file adds its 4-byte ids (image << bits | ordinal)
        return store["m"] * store["nbits"] / 8 + (4 if store.get("nlist") else 0)
    return dim * (2 if store["kind"] == "flat16" else 4)


def _describe(item: SourceItem) -> str:
    return item.path if item.path is not None else item.id


def _source_patches(source, regions) -> Optional[int]:
    """About how many patches ``source`` will give (nlist="auto"), None when unknown without
    consuming it (a sized collection is counted; build() lists a folder's files first); each
    image is taken to give the grid's cells of a 640 x 480 photo (pyramids: every size)."""
    n_images = source_length(source)
    if n_images is None:
        return None
    grid, _ = _make_grid(regions)
    return n_images * len(grid.boxes(640, 480))

"""Real ImageIndex configurations for ``pypatch eval`` (the harness in :mod:`pypatch.evaluation`).

Importing this module registers, in the evaluation registry, one configuration per name of
the grammar ``patchify-<regions>-<store>[-global][-sp|-ms]`` plus ``global``:

- ``regions``: ``L1``, ``L2``, ``L3`` (the paper's pyramid), ``L4`` (one level finer), ``L3s``
  (L3 + half-shifted finest cells) or ``rmac`` (overlapping regions);
- ``store``: ``flat`` (float32), ``flat16``, or ``pq8`` / ``pq16`` / ``pq32`` / ``pq64``
  (m sub-quantizers of 8 bits = m bytes per patch); ``pq<m>x4``: m sub-quantizers of 4 bits
  (the fast-scan store, m/2 bytes per patch), e.g. ``pq64x4`` = 32 bytes like ``pq32``;
  ``pq<m>`` takes ImageIndex's default codebooks (``pq_codebooks="auto"``: residual ones on
  large enough per-crop databases, product ones below); ``rq<m>`` residual ones and ``ppq<m>``
  product ones whatever the size (same bytes);
- ``-global``: PQ codebooks trained on whole-image descriptors instead of all patches;
- ``-pca<d>`` / ``-pcah<d>`` / ``-pcaw<d>``: a PCA pre-transform to d dims learned on the
  database patches (no / half / full whitening; :mod:`pypatch.index.transform`), e.g.
  ``patchify-L3-pq32-pca256``; without it ImageIndex's default applies (``pca_dim="auto"``:
  every store gets whitened PCA-256, PQ stores + OPQ, on large enough databases); ``-nopca``: the raw
  descriptors (the pre-PCA behaviour); ``-opq`` after an explicit PCA: an OPQ rotation too;
- ``-sp``: single-pass extraction (cells pooled from one feature map) instead of per-crop;
  ``-ms``: multi-scale single-pass (cells pooled from three feature maps, summed);
- ``global`` = ``patchify-L0-flat``: one whole-image descriptor per image (the baseline);
  ``global-sp``, ``global-pq32`` likewise.
- second stage (search-time, see :func:`split_second_stage`): ``-qe`` / ``-mp`` rerank
  (query expansion / multi-patch), ``-refine`` / ``-cells`` refined boxes, e.g.
  ``patchify-L3-pq32-mp-refine``.

Each configuration builds an :class:`~pypatch.ImageIndex` over the benchmark's database with
the offline default model (``PYPATCH_EVAL_MODEL`` overrides it). Patch and query descriptors
are cached per process, so an ablation over stores/PQ settings embeds each image once.
"""
from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np

REGIONS = ("L1", "L2", "L3", "L4", "L3s", "rmac")
STORES = ("flat", "flat16", "pq8", "pq16", "pq32", "pq64", "rq16", "rq32", "rq64", "ppq32")
FOUR_BIT_STORES = ("pq64x4",)  # same bytes as pq32 (benchmarks/README.md, issue 14 item 2)
_NAME = re.compile(r"^(?:global|patchify-(L[0-4]|L[1-4]s|rmac))"
                   r"(?:-(flat|flat16|(?:pp|p|r)q\d+(?:x4)?))?"
                   r"(-global)?(?:-pca(w|h)?(\d+)(-opq)?|(-nopca))?(-sp|-ms)?$")
PCA_DIMS = (128, 256)
_MODES = ("", "-sp", "-ms")  # name suffixes: per-crop, single-pass, multi-scale single-pass
# -pca<d>: PCA rotation to d dims; -pcah<d>: half whitening (power -0.25); -pcaw<d>: full (-0.5)
PCA_POWERS = {None: 0.0, "h": -0.25, "w": -0.5}


# Second-stage suffixes (pypatch.index.rerank / pypatch.index.refine), after the index part of the name:
# -qe / -mp rerank (alpha-QE / multi-patch MaxSim), -refine / -cells box refinement.
_SECOND_STAGE = re.compile(r"(-qe|-mp)?(-refine|-cells)?$")
REFINE_K = 100  # eval refines every returned hit: LocScore counts positives at any rank


def split_second_stage(name: str) -> tuple:
    """``"patchify-L3-pq32-mp-refine"`` -> (``"patchify-L3-pq32"``, search keyword arguments)."""
    m = _SECOND_STAGE.search(name)
    kwargs: dict = {}
    if m.group(1):
        kwargs["rerank"] = {"-qe": "qe", "-mp": "multipatch"}[m.group(1)]
    if m.group(2):
        kwargs.update(refine="simmap" if m.group(2) == "-refine" else "cells",
                      refine_k=REFINE_K)
    return name[:m.start()] if m.group(0) else name, kwargs


def parse_config(name: str) -> dict:
    """``"patchify-L3-pq32-global-sp"`` -> ImageIndex.build keyword arguments."""
    name = split_second_stage(name)[0]
    m = _NAME.match(name)
    if not m:
        from pypatch.errors import InvalidArgumentError

        raise InvalidArgumentError(f"not an index configuration name: {name!r}")
    regions = m.group(1) or "L0"
    store = m.group(2) or "flat"
    kwargs = {"regions": regions, "mode": {"-sp": "single_pass", "-ms": "multi_scale"}.get(m.group(8), "crop")}
    if m.group(5):  # an explicit PCA: OPQ only when named
        kwargs.update(pca_dim=int(m.group(5)), pca_power=PCA_POWERS[m.group(4)],
                      opq=bool(m.group(6)))
    elif m.group(7):
        kwargs["pca_dim"] = None
    if store[:2] in ("pq", "rq", "pp"):
        kind, digits = store.split("q", 1)
        m_text, _, four = digits.partition("x")
        kwargs.update(store="pq", pq_m=int(m_text), pq_nbits=4 if four else 8,
                      train_on="global" if m.group(3) else "patches")
        if kind != "p":
            kwargs["pq_codebooks"] = "residual" if kind == "r" else "product"
    else:
        kwargs["store"] = store
    return kwargs


# what `pypatch eval` runs without --config (and `pypatch demo` builds): the baseline, the
# paper's pyramid and ImageIndex's default grid (L3s), each with the default PQ store and the exact one
DEFAULT_CONFIGS = ("global", "patchify-L3s-pq32", "patchify-L3s-flat", "patchify-L3-pq32",
                   "patchify-L3-flat")
_REGION_WORDS = {"L0": "whole image", "L1": "L1 grid (5 cells)", "L2": "L2 grid (14 cells)",
                 "L3": "L3 grid (30 cells)", "L4": "L4 grid (55 cells)",
                 "L3s": "L3 grid + 9 half-shifted cells (39 cells)",
                 "rmac": "R-MAC regions"}


def describe_config(name: str) -> str:
    """A few words on what configuration ``name`` builds, e.g. ``"L3 grid (30 cells), PQ 32
    bytes/patch, single-pass"`` (``pypatch eval --list-configs``)."""
    base, second = split_second_stage(name)
    kw = parse_config(base)
    words = [_REGION_WORDS.get(kw["regions"], kw["regions"])]
    if kw["store"] == "pq":
        size = (f"{kw['pq_m']} x 4 bits = {kw['pq_m'] // 2} bytes/patch" if kw["pq_nbits"] == 4
                else f"{kw['pq_m']} bytes/patch")
        codebooks = kw.get("pq_codebooks", "auto")
        words.append({"auto": "PQ ", "residual": "RQ ", "product": "product PQ "}[codebooks] + size
                     + (" (codebooks from whole images)" if kw["train_on"] == "global" else ""))
    else:
        words.append({"flat": "exact float32", "flat16": "float16"}[kw["store"]])
    if "pca_dim" in kw:
        if kw["pca_dim"] is None:
            words.append("no PCA")
        else:
            white = {0.0: "", -0.25: " half-whitened", -0.5: " whitened"}[kw["pca_power"]]
            words.append(f"PCA-{kw['pca_dim']}{white}{' + OPQ' if kw['opq'] else ''}")
    words.append({"crop": "", "single_pass": "single-pass",
                  "multi_scale": "multi-scale"}[kw["mode"]])
    if "rerank" in second:
        words.append({"qe": "query expansion", "multipatch": "multi-patch rerank"}[second["rerank"]])
    if "refine" in second:
        words.append("boxes refined by similarity map" if second["refine"] == "simmap"
                     else "boxes fused from cells")
    return ", ".join(w for w in words if w)


def config_names() -> list:
    names = ["global", "global-sp", "global-ms", "global-pq32"]
    for regions in REGIONS:
        for store in STORES:
            for sp in _MODES:
                names.append(f"patchify-{regions}-{store}{sp}")
                if store.startswith("pq") and regions == "L3":
                    names.append(f"patchify-{regions}-{store}-global{sp}")
    names += [f"patchify-L3-{store}{sp}" for store in FOUR_BIT_STORES for sp in _MODES]
    names += [f"patchify-L3-{store}-pcaw192-opq" for store in ("pq32", *FOUR_BIT_STORES)]
    for store in ("flat", "pq16", "pq32", "pq64"):
        for d in PCA_DIMS:
            for w in ("", "h", "w"):
                for sp in _MODES:
                    names.append(f"patchify-L3-{store}-pca{w}{d}{sp}")
            if store != "flat":
                names += [f"patchify-L3-{store}-pcaw{d}-opq{sp}" for sp in _MODES]
            if d == PCA_DIMS[0]:
                names += [f"patchify-L3-{store}-nopca{sp}" for sp in _MODES]
    for base in ("patchify-L3-flat", "patchify-L3-pq32", "patchify-L3-flat-sp",
                 "patchify-L3-pq32-sp", "patchify-L3-flat-ms", "patchify-L3-pq32-ms"):
        names += [f"{base}{s}" for s in ("-qe", "-mp", "-refine", "-cells", "-mp-refine")]
    return names


class CachingEmbedder:
    """Wraps an Embedder; remembers patch descriptors per (image, regions, mode) and query
    descriptors per (image, box), so several configurations embed each image once.

    Pyramid levels are nested (the L1 cells are the first 5 of L3's 30, in the same order,
    each embedded on its own or pooled from the same feature map), so a coarser pyramid is
    served from the first cells of a finer one already cached."""

    def __init__(self, embedder):
        self._e = embedder
        self._patches: dict = {}  # (image, mode) -> {grid key: PatchEmbedding}
        self._queries: dict = {}

    def __getattr__(self, name):  # model_card, dim, model_path, ...
        return getattr(self._e, name)

    def embed_query(self, image, box=None, **kwargs):
        if not isinstance(image, (str, os.PathLike)):
            return self._e.embed_query(image, box=box, **kwargs)
        # the query's input sizes depend on the index's regions and mode (Embedder.query_sizes)
        sizes = self._e.query_sizes(kwargs.get("regions", "L3"), kwargs.get("mode", "crop")) \
            if kwargs.get("size") is None else kwargs["size"]
        key = (str(image), None if box is None else tuple(int(v) for v in box), str(sizes))
        if key not in self._queries:
            self._queries[key] = self._e.embed_query(image, box=box, **kwargs)
        return self._queries[key]

    def embed_queries(self, images, boxes=None, **kwargs):
        images = list(images)
        boxes = [None] * len(images) if boxes is None else list(boxes)
        return np.stack([self.embed_query(img, box=b, **kwargs) for img, b in zip(images, boxes)])

    def embed_many(self, images, regions="L3", mode="crop", **kwargs):
        from pypatch.extract.grid import parse_regions

        if kwargs.get("maps"):  # feature maps are not cached: every image needs its backbone runs
            return self._e.embed_many(images, regions=regions, mode=mode, **kwargs)
        return _CachedResults(self, list(images), parse_regions(regions), mode, kwargs)

    def lookup(self, image, grid, mode):
        """A cached PatchEmbedding of ``image`` for ``grid`` (or None)."""
        from pypatch.extract.embeddings import PatchEmbedding

        cached = self._patches.get((str(image), mode), {})
        d = grid.to_dict()
        hit = cached.get(_grid_key(d))
        if hit is not None or d["kind"] != "pyramid" or d.get("shifted"):
            return hit
        n = grid.num_patches  # a plain pyramid is the first cells of any finer one, shifted or not
        for key, emb in cached.items():
            if key.startswith("pyramid:") and len(emb.vectors) >= n:
                return PatchEmbedding(emb.index, emb.name, emb.width, emb.height,
                                      emb.vectors[:n], emb.boxes[:n], emb.levels[:n])
        return None

    def store(self, image, grid, mode, emb) -> None:
        self._patches.setdefault((str(image), mode), {})[_grid_key(grid.to_dict())] = emb


def _grid_key(d: dict) -> str:
    if d["kind"] == "pyramid":
        return f"pyramid:{d['levels']}{'s' if d.get('shifted') else ''}"
    return repr(sorted(d.items()))


class _CachedResults:
    """The EmbedResults protocol (iterator of PatchEmbedding + ``skipped``) over a cache."""

    def __init__(self, owner: CachingEmbedder, images: list, grid, mode, kwargs):
        self.skipped: list = []
        self._it = self._generate(owner, images, grid, mode, kwargs)

    def _generate(self, owner, images, grid, mode, kwargs):
        from pypatch.extract.embeddings import PatchEmbedding

        cacheable = [isinstance(im, (str, os.PathLike)) for im in images]
        found = [owner.lookup(im, grid, mode) if ok else None
                 for im, ok in zip(images, cacheable)]
        missing = [i for i, emb in enumerate(found) if emb is None]
        if missing:
            results = owner._e.embed_many([images[i] for i in missing], regions=grid,
                                          mode=mode, **kwargs)
            for emb in results:
                i = missing[emb.index]
                found[i] = emb
                if cacheable[i]:
                    owner.store(images[i], grid, mode, emb)
            for skip in results.skipped:
                skip.index = missing[skip.index]
                self.skipped.append(skip)
        for i, emb in enumerate(found):
            if emb is not None:
                yield PatchEmbedding(i, emb.name, emb.width, emb.height, emb.vectors,
                                     emb.boxes, emb.levels)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def close(self) -> None:
        self._it.close()


_SHARED: dict = {}


def shared_embedder(model=None, num_threads: Optional[int] = None) -> CachingEmbedder:
    """One caching embedder per (model, threads) for the whole process."""
    key = (model, num_threads)
    if key not in _SHARED:
        from pypatch.extract.embedder import Embedder

        _SHARED[key] = CachingEmbedder(Embedder(model, num_threads=num_threads))
    return _SHARED[key]


class IndexRanker:
    """``ranker(query, k)`` over an ImageIndex built on a benchmark's database."""

    def __init__(self, index, description: str = "", search_kwargs: Optional[dict] = None):
        self.index = index
        info = index.info()
        self.bytes_per_image = float(info["bytes_per_image"])
        self.description = description
        self.search_kwargs = dict(search_kwargs or {})  # rerank= / refine= (second stage)

    def __call__(self, query, k: int):
        hits = self.index.search(str(query.image), box=query.box, k=k, **self.search_kwargs)
        return [(h.image, h.score, h.box) for h in hits]


def build_for_benchmark(benchmark, config: str, model=None, num_threads=None, progress=False,
                        **build_args):
    """ImageIndex of configuration ``config`` over ``benchmark.database``; ``build_args`` add
    to (or override) the configuration's ``ImageIndex.build`` arguments."""
    from pypatch.index.image_index import ImageIndex

    kwargs = dict(parse_config(config), **build_args)
    embedder = shared_embedder(model, num_threads)
    source = [(d.id, str(d.image)) for d in benchmark.database]
    return ImageIndex.build(source, embedder=embedder, progress=progress, **kwargs)


def _factory(config: str):
    def factory(benchmark):
        model = os.environ.get("PYPATCH_EVAL_MODEL") or None
        index = build_for_benchmark(benchmark, config, model=model)
        search_kwargs = split_second_stage(config)[1]
        return IndexRanker(index, description=f"ImageIndex {config}: {parse_config(config)}"
                           f"{' ' + str(search_kwargs) if search_kwargs else ''}",
                           search_kwargs=search_kwargs)

    factory.__name__ = f"factory_{config}"
    factory.description = describe_config(config)  # pypatch eval --list-configs
    return factory


def register_all() -> None:
    from pypatch.evaluation.harness import available_rankers, register_ranker

    have = set(available_rankers())
    for name in config_names():
        if name not in have:
            register_ranker(name, _factory(name))


register_all()

__all__ = ["parse_config", "split_second_stage", "config_names", "describe_config", "DEFAULT_CONFIGS", "CachingEmbedder", "IndexRanker",
           "build_for_benchmark", "shared_embedder", "register_all"]

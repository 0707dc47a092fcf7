"""Real ImageIndex configurations for ``pypatch eval`` (the harness in :mod:`pypatch.evaluation`).

Importing this module registers, in the evaluation registry, one configuration per name of
the grammar ``patchify-<regions>-<store>[-global][-sp]`` plus ``global``:

- ``regions``: ``L1``, ``L2``, ``L3`` (the paper's pyramid) or ``rmac`` (overlapping regions);
- ``store``: ``flat`` (float32), ``flat16``, or ``pq8`` / ``pq16`` / ``pq32`` / ``pq64``
  (m sub-quantizers of 8 bits = m bytes per patch);
- ``-global``: PQ codebooks trained on whole-image descriptors instead of all patches;
- ``-sp``: single-pass extraction (cells pooled from one feature map) instead of per-crop;
- ``global`` = ``patchify-L0-flat``: one whole-image descriptor per image (the baseline);
  ``global-sp``, ``global-pq32`` likewise.

Each configuration builds an :class:`~pypatch.ImageIndex` over the benchmark's database with
the offline default model (``PYPATCH_EVAL_MODEL`` overrides it). Patch and query descriptors
are cached per process, so an ablation over stores/PQ settings embeds each image once.
"""
from __future__ import annotations

import os
import re
from typing import Optional

REGIONS = ("L1", "L2", "L3", "rmac")
STORES = ("flat", "flat16", "pq8", "pq16", "pq32", "pq64")
_NAME = re.compile(r"^(?:global|patchify-(L[0-3]|rmac))(?:-(flat|flat16|pq\d+))?"
                   r"(-global)?(-sp)?$")


def parse_config(name: str) -> dict:
    """``"patchify-L3-pq32-global-sp"`` -> ImageIndex.build keyword arguments."""
    m = _NAME.match(name)
    if not m:
        from pypatch.errors import InvalidArgumentError

        raise InvalidArgumentError(f"not an index configuration name: {name!r}")
    regions = m.group(1) or "L0"
    store = m.group(2) or "flat"
    kwargs = {"regions": regions, "mode": "single_pass" if m.group(4) else "crop"}
    if store.startswith("pq"):
        kwargs.update(store="pq", pq_m=int(store[2:]), pq_nbits=8,
                      train_on="global" if m.group(3) else "patches")
    else:
        kwargs["store"] = store
    return kwargs


def config_names() -> list:
    names = ["global", "global-sp", "global-pq32"]
    for regions in REGIONS:
        for store in STORES:
            for sp in ("", "-sp"):
                names.append(f"patchify-{regions}-{store}{sp}")
                if store.startswith("pq") and regions == "L3":
                    names.append(f"patchify-{regions}-{store}-global{sp}")
    return names


class CachingEmbedder:
    """Wraps an Embedder; remembers patch descriptors per (image, regions, mode) and query
    descriptors per (image, box), so several configurations embed each image once."""

    def __init__(self, embedder):
        self._e = embedder
        self._patches: dict = {}
        self._queries: dict = {}

    def __getattr__(self, name):  # model_card, dim, model_path, ...
        return getattr(self._e, name)

    def embed_query(self, image, box=None):
        key = (str(image), None if box is None else tuple(int(v) for v in box))
        if not isinstance(image, (str, os.PathLike)):
            return self._e.embed_query(image, box=box)
        if key not in self._queries:
            self._queries[key] = self._e.embed_query(image, box=box)
        return self._queries[key]

    def embed_many(self, images, regions="L3", mode="crop", **kwargs):
        from pypatch.grid import parse_regions

        grid_key = repr(sorted(parse_regions(regions).to_dict().items()))
        return _CachedResults(self, list(images), regions, mode, grid_key, kwargs)


class _CachedResults:
    """The EmbedResults protocol (iterator of PatchEmbedding + ``skipped``) over a cache."""

    def __init__(self, owner: CachingEmbedder, images: list, regions, mode, grid_key, kwargs):
        self.skipped: list = []
        self._it = self._generate(owner, images, regions, mode, grid_key, kwargs)

    def _generate(self, owner, images, regions, mode, grid_key, kwargs):
        from pypatch.embedder import PatchEmbedding

        keys = [(str(im), grid_key, mode) if isinstance(im, (str, os.PathLike)) else None
                for im in images]
        missing = [i for i, key in enumerate(keys) if key is None or key not in owner._patches]
        fresh = {}
        if missing:
            results = owner._e.embed_many([images[i] for i in missing], regions=regions,
                                          mode=mode, **kwargs)
            for emb in results:
                fresh[missing[emb.index]] = emb
            for skip in results.skipped:
                skip.index = missing[skip.index]
                self.skipped.append(skip)
        skipped = {s.index for s in self.skipped}
        for i, key in enumerate(keys):
            if i in skipped:
                continue
            emb = fresh.get(i)
            if emb is None:
                emb = owner._patches[key]
            elif key is not None:
                owner._patches[key] = emb
            yield PatchEmbedding(i, emb.name, emb.width, emb.height, emb.vectors, emb.boxes,
                                 emb.levels)

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
        from pypatch.embedder import Embedder

        _SHARED[key] = CachingEmbedder(Embedder(model, num_threads=num_threads))
    return _SHARED[key]


class IndexRanker:
    """``ranker(query, k)`` over an ImageIndex built on a benchmark's database."""

    def __init__(self, index, description: str = ""):
        self.index = index
        info = index.info()
        self.bytes_per_image = float(info["bytes_per_image"])
        self.description = description

    def __call__(self, query, k: int):
        hits = self.index.search(str(query.image), box=query.box, k=k)
        return [(h.image, h.score, h.box) for h in hits]


def build_for_benchmark(benchmark, config: str, model=None, num_threads=None, progress=False):
    """ImageIndex of configuration ``config`` over ``benchmark.database``."""
    from pypatch.image_index import ImageIndex

    kwargs = parse_config(config)
    embedder = shared_embedder(model, num_threads)
    source = [(d.id, str(d.image)) for d in benchmark.database]
    return ImageIndex.build(source, embedder=embedder, progress=progress, **kwargs)


def _factory(config: str):
    def factory(benchmark):
        model = os.environ.get("PYPATCH_EVAL_MODEL") or None
        index = build_for_benchmark(benchmark, config, model=model)
        return IndexRanker(index, description=f"ImageIndex {config}: {parse_config(config)}")

    factory.__name__ = f"factory_{config}"
    return factory


def register_all() -> None:
    from pypatch.evaluation import available_rankers, register_ranker

    have = set(available_rankers())
    for name in config_names():
        if name not in have:
            register_ranker(name, _factory(name))


register_all()

__all__ = ["parse_config", "config_names", "CachingEmbedder", "IndexRanker",
           "build_for_benchmark", "shared_embedder", "register_all"]

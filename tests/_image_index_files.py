"""Small real index files without a model, for format tests and the fuzzer (tests/fuzz/).

Seeded "model-space" descriptors stand in for embeddings; the META is what ImageIndex.build
records (pypatch.index.meta.new_meta), the native index is filled through the public API and
saved by ImageIndex.save, so every file is one a user could have.
"""
from __future__ import annotations

import json
import os

import numpy as np

SIZES = [(64, 48), (80, 80), (50, 70), (33, 90), (120, 40), (70, 70)]
FAKE_MODEL = {"name": "fake", "spec": None, "path": None, "sha256": None,
              "card": {"name": "fake", "dim": 24}}


def fake_image_index(store: str = "flat", regions: str = "L1", *, pca_dim=None, dim: int = 24,
                     sizes=SIZES, seed: int = 7, model: dict | None = None, removed=()):
    """An ImageIndex as build() leaves it (``store`` flat / flat16 / pq with m=4, nbits=4;
    ``pca_dim``: a whitened PCA pre-transform, saved in the XFRM section), without a model."""
    from pypatch.index.image_index import ImageIndex, _make_grid
    from pypatch.index.meta import new_meta
    from pypatch.index.training import new_patch_index, transform_spec
    from pypatch.index.transform import PCATransform

    grid, spec = _make_grid(regions)
    counts = [grid.count(w, h) for w, h in sizes]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((sum(counts), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    store_info = {"kind": store}
    if store == "pq":
        store_info.update(m=4, nbits=4, train_on="patches", train_size=len(x), seed=0)
    tspec, transform = None, None
    if pca_dim is not None:
        transform = PCATransform.fit(x, pca_dim, -0.5)
        tspec = transform_spec(pca_dim, -0.5, store == "pq", store=store, pq_m=4, dim=dim,
                               train_size=len(x), seed=0, auto_dim=256, mode="crop")
        tspec["fitted"] = transform.to_dict()
        tspec["trained_on_vectors"] = len(x)
    card = dict(FAKE_MODEL["card"], dim=dim)
    meta = new_meta(grid=grid, regions_spec=spec, mode="crop", store=store_info,
                    model=model or dict(FAKE_MODEL, card=card), dim=dim, transform=tspec)
    meta.update(ids=[f"img{i}" for i in range(len(sizes))],
                paths=[f"/photos/img{i}.jpg" for i in range(len(sizes))],
                sizes=[list(s) for s in sizes])
    y = x if transform is None else transform.apply(x)
    patch_index = new_patch_index(y.shape[1], store_info)
    if store == "pq":
        patch_index.train(y, iters=3)
        store_info["trained_on_vectors"] = len(y)
    patch_index.add(y, patches_per_image=counts)
    index = ImageIndex(patch_index, meta)
    index._transform = transform
    if removed:
        index.remove([f"img{i}" for i in removed])
    return index


def read_image_meta(path) -> dict:
    """The ImageIndex META (the ``pypatch.index.image_index`` entry) of a saved file."""
    from pypatch import PatchIndex
    from pypatch.index.image_index import META_KEY

    return PatchIndex.load(path, mmap=False).metadata[META_KEY]


def write_user_metadata(src, dst, text: str) -> None:
    """Copy the index file ``src`` to ``dst`` with its metadata JSON replaced by ``text``
    verbatim (valid JSON or not): the native writer saves it, so every CRC is valid and only
    the loaders' own checks can refuse it."""
    from pypatch import PatchIndex

    index = PatchIndex.load(os.fspath(src), mmap=False)
    index._ix.metadata_json = text  # the public setter refuses what is not JSON
    index._ix.save(os.fspath(dst))


def write_image_meta(src, dst, meta) -> None:
    """``src`` with its ImageIndex META replaced by ``meta`` (any JSON value)."""
    from pypatch.index.image_index import META_KEY

    write_user_metadata(src, dst, json.dumps({META_KEY: meta}))

"""Residual codebooks in ImageIndex: the pq_codebooks setting, its "auto" rule (residual, without
OPQ, wherever a per-crop store keeps its automatic PCA, over the flat stores' axes; product
otherwise), files, META and the eval configuration names. Real photos and the default model
where an index is built."""
from __future__ import annotations

import numpy as np
import pytest

from pypatch.errors import IndexFormatError, InvalidArgumentError
from pypatch.index.image_index import (AUTO_FLAT_PCA_DIM, AUTO_FLAT_PCA_MIN_TRAIN, AUTO_PCA_DIM,
                                       AUTO_PCA_MIN_TRAIN)
from pypatch.index.training import new_patch_index, train_store, transform_spec

from _image_index_files import read_image_meta, write_image_meta
from _photo_folder import write_photos_and_crops

skimage_data = pytest.importorskip("skimage.data")


def _auto_meta(dim: int, n_train: int, *, m: int = 4, nbits: int = 4, mode: str = "crop"):
    store = {"kind": "pq", "m": m, "nbits": nbits, "codebooks": "auto", "train_on": "patches",
             "train_size": n_train, "seed": 0}
    spec = transform_spec("auto", -0.5, "auto", store="pq", pq_m=m, dim=dim, train_size=n_train,
                          seed=0, auto_dim=AUTO_PCA_DIM, mode=mode, codebooks="auto")
    return {"store": store, "transform": spec, "dim": dim, "mode": mode}


def _descriptors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # decaying spectrum: something for a PCA to find
    x = rng.standard_normal((n, dim)) * (1.0 / np.sqrt(1 + np.arange(dim)))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("n_train,codebooks,axes", [
    (AUTO_FLAT_PCA_MIN_TRAIN, "residual", AUTO_FLAT_PCA_DIM),
    (AUTO_FLAT_PCA_MIN_TRAIN - 1, "residual", AUTO_PCA_DIM),
    (AUTO_PCA_MIN_TRAIN - 1, "product", 640),  # too few to whiten by: raw descriptors
])
def test_auto_codebooks_follow_the_automatic_pca(n_train, codebooks, axes):
    dim = 640
    meta = _auto_meta(dim, n_train)
    index = new_patch_index(AUTO_PCA_DIM, meta["store"])
    assert index.pq.kind == "product"  # "auto" is product until trained
    index, transform = train_store(meta, index, [_descriptors(n_train, dim)],
                                   min_auto_train=AUTO_PCA_MIN_TRAIN,
                                   wide_auto=(AUTO_FLAT_PCA_DIM, AUTO_FLAT_PCA_MIN_TRAIN))
    assert meta["store"]["codebooks"] == codebooks == index.pq.kind
    assert index.dim == axes and index.is_trained
    if codebooks == "residual":
        assert meta["transform"]["dim"] == transform.dim_out == axes
        assert meta["transform"]["opq"] is False  # no rotation for full-dimension codebooks
    else:
        assert meta["transform"] is None and transform is None


def test_auto_codebooks_stay_product_without_the_automatic_per_crop_pca():
    dim, n = 640, AUTO_FLAT_PCA_MIN_TRAIN
    x = _descriptors(n, dim)
    single = _auto_meta(dim, n, mode="single_pass")
    index, _ = train_store(single, new_patch_index(AUTO_PCA_DIM, single["store"]), [x],
                           min_auto_train=2048, wide_auto=(AUTO_FLAT_PCA_DIM, AUTO_FLAT_PCA_MIN_TRAIN))
    assert single["store"]["codebooks"] == "product" and index.dim == AUTO_PCA_DIM
    assert single["transform"]["opq"] is True
    explicit = dict(_auto_meta(dim, n), transform=None)  # pca_dim=None
    index, _ = train_store(explicit, new_patch_index(dim, explicit["store"]), [x],
                           min_auto_train=2048, wide_auto=(AUTO_FLAT_PCA_DIM, AUTO_FLAT_PCA_MIN_TRAIN))
    assert explicit["store"]["codebooks"] == "product" and index.dim == dim


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Six photos + their crops + two more real photos: 270 single-pass L3 cells >= 256."""
    root = write_photos_and_crops(tmp_path_factory.mktemp("rq_photos"))
    files = sorted(str(p) for p in root.iterdir())
    return files + [("chelsea", skimage_data.chelsea()), ("coffee", skimage_data.coffee())]


def test_a_residual_store_builds_searches_and_reloads(sources, embedder, tmp_path):
    from pypatch import ImageIndex, ResidualQuantizer

    index = ImageIndex.build(sources, regions="L3", store="pq", pq_m=12, mode="single_pass",
                             pq_codebooks="residual", embedder=embedder, progress=False)
    info = index.info()
    assert info["store"]["codebooks"] == "residual" and info["store"]["m"] == 12
    assert isinstance(index._index.pq, ResidualQuantizer)  # pq_m=12 need not divide the dim
    assert info["bytes_per_image"] == pytest.approx(30 * 12 + 8)
    for s in [s for s in sources[:6] if s.endswith(".png") and not s.endswith("_crop.png")]:
        assert {h.image for h in index.search(s, k=2)} == {s, s[:-4] + "_crop.png"}
    path = tmp_path / "rq.ptch"
    index.save(path)
    again = ImageIndex.load(path)
    assert again._index.pq.kind == "residual"
    q = sources[4]
    assert again.search(q, k=5) == index.search(q, k=5)
    # META that contradicts the native quantizer is refused on load
    meta = read_image_meta(path)
    meta["store"]["codebooks"] = "product"
    write_image_meta(path, tmp_path / "bad.ptch", meta)
    with pytest.raises(IndexFormatError, match="store.codebooks"):
        ImageIndex.load(tmp_path / "bad.ptch")
    meta["store"]["codebooks"] = "additive"
    write_image_meta(path, tmp_path / "bad2.ptch", meta)
    with pytest.raises(IndexFormatError, match="store.codebooks"):
        ImageIndex.load(tmp_path / "bad2.ptch")


def test_codebook_settings_are_checked(embedder):
    from pypatch import ImageIndex

    with pytest.raises(InvalidArgumentError, match="pq_codebooks"):
        ImageIndex.create(embedder=embedder, pq_codebooks="additive")
    with pytest.raises(InvalidArgumentError, match="pq_m"):
        ImageIndex.create(embedder=embedder, pq_codebooks="residual", pq_m=257)
    with pytest.raises(InvalidArgumentError, match="pq_m must divide"):
        ImageIndex.create(embedder=embedder, pq_codebooks="product", pq_m=7)
    assert ImageIndex.create(embedder=embedder, pq_codebooks="residual", pq_m=7)._meta["store"][
        "codebooks"] == "residual"


def test_eval_names_pick_the_codebooks():
    from pypatch.evaluation.rankers import describe_config, parse_config

    assert "pq_codebooks" not in parse_config("patchify-L3s-pq32")  # ImageIndex's default
    assert parse_config("patchify-L3s-rq32")["pq_codebooks"] == "residual"
    assert parse_config("patchify-L3s-ppq32")["pq_codebooks"] == "product"
    assert "RQ 32 bytes/patch" in describe_config("patchify-L3s-rq32")


def test_cli_pq_flag_takes_the_codebooks():
    import argparse

    from pypatch.commands.index import parse_pq

    assert parse_pq("m=16,codebooks=residual") == {"m": 16, "nbits": 8, "codebooks": "residual"}
    assert parse_pq("")["codebooks"] == "auto"
    with pytest.raises(argparse.ArgumentTypeError, match="codebooks=auto"):
        parse_pq("codebooks=additive")

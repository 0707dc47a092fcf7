"""mode="multi_scale": single passes at 0.75/1/1.5 x S, cell and query descriptors summed over scales.

References are computed independently of the pooling code: the model's own ``embedding`` output
(GeM inside the ONNX graph) on the whole image resized to each pass size, and hand-built sums.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from pypatch import Embedder, ImageIndex
from pypatch.extract.preprocess import preprocess_boxes
from pypatch.errors import InvalidArgumentError
from pypatch.index.training import transform_spec


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _model_embedding(embedder, image: np.ndarray, box, size: int) -> np.ndarray:
    x = preprocess_boxes(Image.fromarray(image), np.array([box]), (size, size), 3,
                         np.asarray(embedder.model_card["mean"], np.float32),
                         np.asarray(embedder.model_card["std"], np.float32))
    return unit(embedder._session.run(["embedding"], {"input": x})[0][0])


def test_pass_and_query_sizes_of_the_default_model(embedder):
    assert embedder.pass_sizes("single_pass") == [(384, 384)]
    assert embedder.pass_sizes("multi_scale") == [(288, 288), (384, 384), (576, 576)]
    # the query is seen at each pass's finest cell: a quarter of the side for L3, capped at 224
    assert embedder.query_sizes("L3", "multi_scale") == [(72, 72), (96, 96), (144, 144)]
    assert embedder.query_sizes("L1", "multi_scale") == [(144, 144), (192, 192), (224, 224)]
    assert embedder.query_size("L3", "multi_scale") == (96, 96)
    assert embedder.query_sizes("L3", "crop") == [(224, 224)]
    with pytest.raises(InvalidArgumentError, match="crop"):
        embedder.pass_sizes("crop")
    with pytest.raises(InvalidArgumentError, match="mode"):
        embedder.pass_sizes("tiles")


def test_whole_image_cell_is_the_sum_of_model_embeddings_at_each_pass(embedder):
    coffee = data.coffee()  # 400x600
    reference = unit(sum(_model_embedding(embedder, coffee, [0, 0, 600, 400], s)
                         for s in (288, 384, 576)))
    vec, box = embedder.embed_patches(coffee, regions="L0", mode="multi_scale")
    assert box.tolist() == [[0, 0, 600, 400]]
    np.testing.assert_allclose(vec[0], reference, atol=2e-5)
    single, _ = embedder.embed_patches(coffee, regions="L0", mode="single_pass")
    assert float(vec[0] @ single[0]) < 0.999  # really a different descriptor


def test_cells_are_the_normalised_sum_of_single_pass_cells(embedder, default_model_path):
    astronaut = data.astronaut()
    total = 0.0
    for side in (288, 384, 576):
        single = Embedder(default_model_path, num_threads=2, single_pass_size=side)
        total = total + single.embed_patches(astronaut, regions="L3", mode="single_pass")[0]
    vecs, boxes = embedder.embed_patches(astronaut, regions="L3", mode="multi_scale")
    assert vecs.shape == (30, 1280) and len(boxes) == 30
    np.testing.assert_allclose(vecs, unit(total), atol=2e-5)


def test_query_is_the_sum_over_the_matching_sizes(embedder):
    coffee = data.coffee()
    box = (150, 60, 420, 330)
    reference = unit(sum(_model_embedding(embedder, coffee, list(box), s) for s in (72, 96, 144)))
    q = embedder.embed_query(coffee, box=box, regions="L3", mode="multi_scale")
    np.testing.assert_allclose(q, reference, atol=2e-5)
    # an explicit size still means one embedding at that size
    np.testing.assert_allclose(embedder.embed_query(coffee, box=box, mode="multi_scale", size=96),
                               _model_embedding(embedder, coffee, list(box), 96), atol=2e-5)


def test_static_size_model_refuses_multi_scale(tmp_path):
    from pypatch.models import export_model

    path = tmp_path / "vit.onnx"
    export_model("vit_base_patch16_siglip_224", path, input_size=96, pool="avg", pretrained=False,
                 seed=3, model_kwargs={"depth": 1})
    vit = Embedder(path, num_threads=1)
    with pytest.raises(InvalidArgumentError, match="dynamic input size"):
        vit.embed_patches(data.coffee(), regions="L1", mode="multi_scale")
    with pytest.raises(InvalidArgumentError, match="dynamic input size"):  # before any embedding
        ImageIndex.build([("c", data.coffee())], regions="L1", store="flat", mode="multi_scale",
                         embedder=vit, progress=False)


def test_auto_pca_covers_flat_stores_of_every_mode():
    # per-crop flat stores too since the quality-defaults sweep (benchmarks/README.md
    # "Quality defaults": +4.7 to +7.7 mAP at 100-1,000 images on two seeds)
    kw = {"pca_power": -0.5, "opq": "auto", "pq_m": 32, "dim": 1280, "train_size": 65536,
          "seed": 0, "auto_dim": 256}
    for mode in ("crop", "single_pass", "multi_scale"):
        for store in ("flat", "flat16"):
            spec = transform_spec("auto", store=store, mode=mode, **kw)
            assert spec["dim"] == 256 and spec["auto"] and not spec["opq"], (mode, store)
    assert transform_spec("auto", store="pq", mode="crop", **kw)["opq"]
    assert transform_spec(None, store="flat", mode="multi_scale", **kw) is None
    assert transform_spec("auto", store="flat", mode="multi_scale",
                          **{**kw, "dim": 128}) is None  # nothing to reduce


def test_index_round_trip_searches_with_the_multi_scale_query(embedder, tmp_path):
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    index = ImageIndex.build([(f"p{i}", p) for i, p in enumerate(photos)], regions="L2",
                             store="flat", mode="multi_scale", embedder=embedder, progress=False)
    assert index.info()["mode"] == "multi_scale"
    path = tmp_path / "ms.ptch"
    index.save(path)
    loaded = ImageIndex.load(path)
    crop = data.chelsea()[40:260, 100:380]
    q = embedder.embed_query(crop, regions="L2", mode="multi_scale")
    vecs, boxes = embedder.embed_patches(photos[1], regions="L2", mode="multi_scale")
    for ix in (index, loaded):
        hit = ix.search(crop, k=1)[0]
        assert hit.image == "p1"
        assert hit.score == pytest.approx(float((vecs @ q).max()), abs=1e-5)
        assert list(hit.cell) == boxes[int((vecs @ q).argmax())].tolist()


def test_flat_multi_scale_index_gets_the_half_whitened_pca(embedder):
    # 70 crops of real photos x 30 cells >= the 2048 vectors an automatic PCA needs
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera()]
    rng = np.random.default_rng(0)
    crops = []
    for i in range(70):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        y, x = rng.integers(0, h // 3), rng.integers(0, w // 3)
        crops.append((f"c{i}", p[y:y + 2 * h // 3, x:x + 2 * w // 3]))
    index = ImageIndex.build(crops, regions="L3", store="flat", mode="multi_scale",
                             embedder=embedder, progress=False)
    info = index.info()["transform"]
    assert info["dim"] == 256 and info["power"] == -0.25 and info["auto"]
    assert index.info()["bytes_per_image"] < 30 * 256 * 4 + 64
    # the stored cells are the transformed multi-scale cells: the search score is their max
    q = embedder.embed_query(photos[1], regions="L3", mode="multi_scale")
    stored = index.to_stored(embedder.embed_patches(crops[1][1], regions="L3", mode="multi_scale")[0])
    hits = {h.image: h.score for h in index.search(photos[1], k=70)}
    assert hits["c1"] == pytest.approx(float((stored @ index.to_stored(q)).max()), abs=1e-4)
    explicit = ImageIndex.build(crops, regions="L3", store="flat", mode="multi_scale",
                                pca_power=-0.5, embedder=embedder, progress=False)
    assert explicit.info()["transform"]["power"] == -0.5

"""The Embedder with the real default model (efficientnet_lite0, ImageNet weights) on real photos."""
from __future__ import annotations

import numpy as np
import pytest
from _subprocess import run_python
from PIL import Image
from skimage import data

from pypatch import Embedder, PatchGrid
from pypatch.extract.ort_session import physical_cores
from pypatch.extract.preprocess import preprocess_boxes
from pypatch.extract.roi_pool import roi_pool
from pypatch.errors import ImageError, InvalidArgumentError
from pypatch.extract.whitening import PCAWhitening


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return data.coffee()  # 400x600x3


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_model_card_and_session_settings(embedder, default_model_card):
    card = embedder.model_card
    assert card == default_model_card
    assert card["input_size"] == [3, 224, 224] and embedder.dim == card["dim"] == 1280
    opts = embedder._session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert embedder._session.get_providers() == ["CPUExecutionProvider"]
    import os

    assert 1 <= physical_cores() <= os.cpu_count()
    # model=None resolves the offline default (PYPATCH_HOME is the test cache, see conftest)
    assert Embedder(num_threads=1).model_card["weights_sha256"] == card["weights_sha256"]


@pytest.mark.parametrize("photo, crop_mode", [("astronaut", "center"), ("coffee", "squash"), ("rocket", "squash")])
def test_preprocessing_matches_timm_eval_transform(embedder, photo, crop_mode):
    # timm's eval transform with crop_pct=1.0: on a square photo its default (short-side resize +
    # centre crop) is the identity crop; on non-square photos crop_mode="squash" is timm's own
    # no-crop resize, which is what we do to every patch.
    import timm.data

    card = embedder.model_card
    img = Image.fromarray(getattr(data, photo)())
    transform = timm.data.create_transform(
        input_size=tuple(card["input_size"]), interpolation=card["interpolation"],
        mean=tuple(card["mean"]), std=tuple(card["std"]), crop_pct=card["crop_pct"],
        crop_mode=crop_mode, is_training=False)
    expected = transform(img).numpy()
    ours = embedder.preprocess(img)[0]
    assert ours.shape == expected.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_embed_patches_shapes_norms_and_boxes(embedder, coffee):
    vecs, boxes = embedder.embed_patches(coffee, regions="L3")
    assert vecs.shape == (30, 1280) and vecs.dtype == np.float32
    assert boxes.dtype == np.int32 and np.array_equal(boxes, PatchGrid(3).boxes(600, 400))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # different patches of a photo are different descriptors
    assert np.abs(vecs @ vecs.T - np.eye(30)).max() > 0.1
    v_rmac, b_rmac = embedder.embed_patches(coffee, regions="rmac2")
    assert np.array_equal(b_rmac, PatchGrid.rmac(2).boxes(600, 400)) and len(v_rmac) == len(b_rmac)


def test_embedding_is_deterministic(embedder, default_model_path, coffee):
    a, _ = embedder.embed_patches(coffee, regions="L2")
    b, _ = embedder.embed_patches(coffee, regions="L2")
    assert np.array_equal(a, b)
    c, _ = Embedder(default_model_path, num_threads=1).embed_patches(coffee, regions="L2")
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_each_patch_is_its_box_embedded(embedder, coffee):
    vecs, boxes = embedder.embed_patches(coffee, regions="L2")
    for i in (0, 3, 9, 13):
        np.testing.assert_allclose(vecs[i], embedder.embed_query(coffee, box=boxes[i]), atol=1e-5)


def test_query_box_equals_embedding_the_cropped_image(embedder, coffee, tmp_path):
    x0, y0, x1, y1 = 120, 40, 377, 301
    crop = coffee[y0:y1, x0:x1]
    q_box = embedder.embed_query(coffee, box=(x0, y0, x1, y1))
    q_crop = embedder.embed_query(crop)
    assert q_box.shape == (1280,) and q_box.dtype == np.float32
    np.testing.assert_allclose(q_box, q_crop, atol=1e-5)
    # float boxes (revisitop bbx) are rounded outwards
    np.testing.assert_allclose(embedder.embed_query(coffee, box=(120.7, 40.2, 376.1, 300.5)), q_box, atol=1e-5)
    assert float(q_box @ embedder.embed_query(coffee)) < 0.99  # the crop is not the whole image


def test_multi_patch_query_boxes_in_image_pixels(embedder, coffee):
    box = (100, 50, 401, 352)
    vecs, boxes = embedder.embed_query_patches(coffee, box=box, regions="L1")
    assert vecs.shape == (5, 1280)
    assert boxes[0].tolist() == list(box)
    assert np.array_equal(boxes, PatchGrid(1).boxes(301, 302) + np.array([100, 50, 100, 50]))
    np.testing.assert_allclose(vecs[0], embedder.embed_query(coffee, box=box), atol=1e-5)
    np.testing.assert_allclose(vecs[4], embedder.embed_query(coffee, box=boxes[4]), atol=1e-5)


@pytest.mark.parametrize("box", [(0, 0, 601, 10), (-1, 0, 10, 10), (10, 10, 10, 20), (5, 5, 4, 8),
                                 (1, 2, 3), (0, 0, float("nan"), 4)])
def test_bad_query_boxes_raise(embedder, coffee, box):
    with pytest.raises(InvalidArgumentError, match="box"):
        embedder.embed_query(coffee, box=box)


def test_bad_arguments_raise(embedder, coffee, default_model_path):
    with pytest.raises(InvalidArgumentError, match="mode"):
        embedder.embed_patches(coffee, mode="fast")
    with pytest.raises(InvalidArgumentError, match="regions"):
        embedder.embed_patches(coffee, regions="L9")
    for kw in ({"num_threads": 0}, {"batch_size": 0}, {"single_pass_size": 100}):
        with pytest.raises(InvalidArgumentError):
            Embedder(default_model_path, **kw)
    with pytest.raises(ImageError, match="zero-size"):
        embedder.embed_patches(np.zeros((0, 5, 3), np.uint8))


def test_bad_model_files_raise_naming_the_file(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from pypatch.errors import ModelNotFoundError

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model" * 10)
    with pytest.raises(InvalidArgumentError, match="junk.onnx"):
        Embedder(junk)
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["embedding"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 3])])
    plain = tmp_path / "nocard.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), plain)
    with pytest.raises(InvalidArgumentError, match="nocard.onnx.*model_card"):
        Embedder(plain)
    with pytest.raises(ModelNotFoundError, match="missing.onnx"):
        Embedder(tmp_path / "missing.onnx")


def test_single_pass_whole_image_equals_model_embedding(embedder, coffee):
    size = embedder.single_pass_size
    assert size == (384, 384)
    x = preprocess_boxes(Image.fromarray(coffee), np.array([[0, 0, 600, 400]]), size, 3,
                         np.asarray(embedder.model_card["mean"], np.float32),
                         np.asarray(embedder.model_card["std"], np.float32))
    reference = unit(embedder._session.run(["embedding"], {"input": x})[0][0])
    vec, box = embedder.embed_patches(coffee, regions="L0", mode="single_pass")
    assert box.tolist() == [[0, 0, 600, 400]]
    np.testing.assert_allclose(vec[0], reference, atol=1e-5)


def test_single_pass_cells_pool_exactly_their_feature_cells(embedder):
    # a 384x384 image maps pixel boxes onto whole cells of the 12x12 feature map
    img = np.asarray(Image.fromarray(data.astronaut()).resize((384, 384)))
    x = preprocess_boxes(
        Image.fromarray(img), np.array([[0, 0, 384, 384]]), (384, 384), 3,
        np.asarray(embedder.model_card["mean"], np.float32), np.asarray(embedder.model_card["std"], np.float32))
    feats = embedder._session.run(["features"], {"input": x})[0][0]
    assert feats.shape == (1280, 12, 12)
    boxes = PatchGrid(3).boxes(384, 384)
    p = embedder.model_card["gem_p"]
    ours = roi_pool(feats, boxes, 384, 384, "gem", p)
    for k, (x0, y0, x1, y1) in enumerate(boxes // 32):
        cells = np.maximum(feats[:, y0:y1, x0:x1].astype(np.float64), 1e-6)
        expected = np.mean(cells ** p, axis=(1, 2)) ** (1 / p)
        np.testing.assert_allclose(ours[k], expected, rtol=1e-5, atol=1e-6)
    vecs, _ = embedder.embed_patches(img, regions="L3", mode="single_pass")
    np.testing.assert_allclose(vecs, unit(ours), atol=1e-5)
    # a box smaller than one feature cell still pools (at least) one cell
    tiny = roi_pool(feats, np.array([[40, 40, 41, 41]]), 384, 384, "gem", p)[0]  # centre in cell (1, 1)
    np.testing.assert_allclose(tiny, np.maximum(feats[:, 1, 1], 1e-6), rtol=1e-5)


def test_single_pass_cells_line_up_with_image_content(embedder):
    # 2x2 mosaic of four photos: each single-pass L1 cell is closest to the photo placed there
    names = ["chelsea", "coffee", "astronaut", "rocket"]
    tiles = [np.asarray(Image.fromarray(getattr(data, n)()).resize((200, 200))) for n in names]
    mosaic = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
    whole = np.stack([embedder.embed_query(t) for t in tiles])
    for mode in ("crop", "single_pass"):
        vecs, boxes = embedder.embed_patches(mosaic, regions="L1", mode=mode)
        assert boxes[1:].tolist() == [[0, 0, 200, 200], [200, 0, 400, 200], [0, 200, 200, 400], [200, 200, 400, 400]]
        assert np.array_equal((vecs[1:] @ whole.T).argmax(1), np.arange(4)), mode


def bad_files(tmp_path):
    cut = tmp_path / "cut.jpg"
    Image.fromarray(data.chelsea()).save(cut, quality=95)
    cut.write_bytes(cut.read_bytes()[:3000])
    return [str(tmp_path / "missing.jpg"), str(cut), np.zeros((0, 3, 3), np.uint8)]


@pytest.mark.parametrize("mode", ["crop", "single_pass"])
def test_embed_many_continues_past_bad_images(embedder, tmp_path, mode):
    good = [data.chelsea(), data.coffee(), data.rocket()]
    bad = bad_files(tmp_path)
    images = [good[0], bad[0], good[1], bad[1], bad[2], good[2]]
    results = embedder.embed_many(images, regions="L1", mode=mode, show_progress=False)
    out = list(results)
    assert [r.index for r in out] == [0, 2, 5]
    for r, img in zip(out, good):
        vecs, boxes = embedder.embed_patches(img, regions="L1", mode=mode)
        np.testing.assert_allclose(r.vectors, vecs, atol=1e-5)
        assert np.array_equal(r.boxes, boxes) and r.levels.tolist() == [0, 1, 1, 1, 1]
        assert (r.width, r.height) == (img.shape[1], img.shape[0])
    assert [s.index for s in results.skipped] == [1, 3, 4]
    reasons = [s.reason for s in results.skipped]
    assert "missing.jpg" in reasons[0] and "not found" in reasons[0]
    assert "cut.jpg" in reasons[1] and "truncated" in reasons[1]
    assert "zero-size" in reasons[2]


def test_embed_many_raise_mode_and_names(embedder, tmp_path):
    images = [data.chelsea(), np.zeros((0, 3, 3), np.uint8)]
    with pytest.raises(ImageError, match="zero-size"):
        list(embedder.embed_many(images, regions="L0", on_error="raise", show_progress=False))
    res = embedder.embed_many(images, regions="L0", names=["a.jpg", "b.jpg"], show_progress=False)
    assert [r.name for r in res] == ["a.jpg"] and res.skipped[0].name == "b.jpg"
    with pytest.raises(InvalidArgumentError):
        embedder.embed_many(images, on_error="ignore")


def test_whitening_matches_sklearn_and_round_trips(embedder, default_model_path, tmp_path):
    from sklearn.decomposition import PCA

    train = np.concatenate([embedder.embed_patches(getattr(data, n)(), regions="L1")[0]
                            for n in ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat")])
    w = PCAWhitening.fit(train, dim=16)
    reference = PCA(n_components=16, whiten=True, svd_solver="full").fit(train)
    probe = embedder.embed_patches(data.immunohistochemistry(), regions="L1")[0]
    ref = unit(reference.transform(probe))
    ours = w.apply(probe)
    assert ours.shape == (5, 16)
    # PCA axes are defined up to sign: compare |cosine| per vector
    np.testing.assert_allclose(np.abs(np.sum(ours * ref, axis=1)), 1.0, atol=1e-3)
    w.save(tmp_path / "w.npz")
    again = PCAWhitening.load(tmp_path / "w.npz")
    assert np.array_equal(again.apply(probe), ours)
    whitened = Embedder(default_model_path, num_threads=2, whitening=tmp_path / "w.npz")
    assert whitened.dim == 16
    v = whitened.embed_patches(data.coffee(), regions="L0")[0]
    np.testing.assert_allclose(v, w.apply(embedder.embed_patches(data.coffee(), regions="L0")[0]), atol=1e-5)


def test_embed_queries_batches_what_embed_query_does_one_by_one(embedder):
    # one backbone run for many queries (what `pypatch serve` batches): each row is the query
    # embedded alone, for boxes, whole images and the multi-scale sizes
    images = [data.coffee(), data.astronaut(), data.chelsea()]
    boxes = [(10, 20, 300, 250), None, [50.5, 0, 200, 120.2]]
    for mode in ("crop", "multi_scale"):
        alone = np.stack([embedder.embed_query(im, box=b, regions="L2", mode=mode)
                          for im, b in zip(images, boxes)])
        batched = embedder.embed_queries(images, boxes, regions="L2", mode=mode)
        np.testing.assert_allclose(batched, alone, atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="one box"):
        embedder.embed_queries(images, boxes[:2])


def test_embedding_never_imports_torch(default_model_path):
    code = (
        "import sys, numpy as np\n"
        "import pypatch\n"
        f"e = pypatch.Embedder({str(default_model_path)!r}, num_threads=1)\n"
        "img = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)\n"
        "e.embed_patches(img, regions='L1'); e.embed_patches(img, regions='L1', mode='single_pass')\n"
        "e.embed_query(img, box=(0, 0, 40, 30))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow  # exports a (tiny) ViT with torch: about 3 s, plus torch's import when first
def test_static_size_vit_runs_both_modes(tmp_path):
    # A seeded one-block ViT (static input, average-pooled tokens): single-pass runs at the model's
    # own input size, so its whole-image vector is exactly the per-crop one.
    from pypatch.models import export_model

    path = tmp_path / "vit.onnx"
    export_model("vit_base_patch16_siglip_224", path, input_size=96, pool="avg", pretrained=False,
                 seed=3, model_kwargs={"depth": 1})
    vit = Embedder(path, num_threads=2)
    assert vit.single_pass_size == (96, 96)
    with pytest.raises(InvalidArgumentError, match="dynamic"):
        Embedder(path, single_pass_size=192)
    assert vit.query_size("L3", "single_pass") == (96, 96)  # a static model sees queries at its input size
    with pytest.raises(InvalidArgumentError, match="static"):
        vit.embed_query(data.coffee(), size=192)
    coffee = data.coffee()
    crop, _ = vit.embed_patches(coffee, regions="L0")
    single, _ = vit.embed_patches(coffee, regions="L0", mode="single_pass")
    np.testing.assert_allclose(single, crop, atol=1e-5)
    vecs, boxes = vit.embed_patches(coffee, regions="L3", mode="single_pass")
    assert vecs.shape == (30, 768) and np.array_equal(boxes, PatchGrid(3).boxes(600, 400))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- single-pass query scale
def test_query_size_is_the_finest_single_pass_cell(embedder, default_model_path):
    # per-crop cells are resized to the model input (224), so is the query; single-pass cells
    # are S / (level + 1) pixels of the S = 384 input: 192, 128, 96 (at most 224, whole stride cells)
    for regions in ("L0", "L1", "L2", "L3", "rmac"):
        assert embedder.query_size(regions) == (224, 224)
    expected = {"L0": 224, "L1": 192, "L2": 128, "L3": 96}
    for regions, side in expected.items():
        assert embedder.query_size(regions, "single_pass") == (side, side), regions
    assert embedder.query_size(PatchGrid(3), "single_pass") == (96, 96)
    assert embedder.query_size([[0, 0, 10, 10]], "single_pass") == (224, 224)  # explicit boxes: no cell scale
    wide = Embedder(default_model_path, num_threads=1, single_pass_size=768)
    assert wide.query_size("L3", "single_pass") == (192, 192)  # 768 / 4
    assert wide.query_size("L2", "single_pass") == (224, 224)  # 256 capped at the input size


def test_single_pass_query_is_the_model_embedding_at_that_size(embedder, coffee):
    box = (150, 60, 420, 330)
    x = preprocess_boxes(Image.fromarray(coffee), np.array([box]), (96, 96), 3,
                         np.asarray(embedder.model_card["mean"], np.float32),
                         np.asarray(embedder.model_card["std"], np.float32))
    reference = unit(embedder._session.run(["embedding"], {"input": x})[0][0])
    q = embedder.embed_query(coffee, box=box, regions="L3", mode="single_pass")
    np.testing.assert_allclose(q, reference, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_query(coffee, box=box, size=96), reference, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_query(coffee, box=box, size=(96, 96)), reference, atol=1e-5)
    # crop mode (the default) is unchanged: the 224 input
    np.testing.assert_allclose(embedder.embed_query(coffee, box=box, regions="L3", mode="crop"),
                               embedder.embed_query(coffee, box=box, size=224), atol=1e-6)
    assert float(q @ embedder.embed_query(coffee, box=box)) < 0.99
    for bad in (0, -96, "96", (96,), (96, 0), 9.6, True):
        with pytest.raises(InvalidArgumentError, match="size"):
            embedder.embed_query(coffee, size=bad)
    with pytest.raises(InvalidArgumentError, match="mode"):
        embedder.embed_query(coffee, mode="fast")


def _mosaic_of_photos():
    """A 384x384 4x4 mosaic: ten different photos as 96 px tiles (the L3 cells), six grey tiles."""
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
             "colorwheel", "retina"]
    photos = [getattr(data, n)()[..., :3] for n in names] + [data.stereo_motorcycle()[0], data.logo()[..., :3]]
    tiles = [np.asarray(Image.fromarray(p).resize((96, 96), Image.BICUBIC)) for p in photos]
    tiles += [np.full((96, 96, 3), 128, np.uint8)] * 6
    return photos, np.vstack([np.hstack(tiles[r * 4:(r + 1) * 4]) for r in range(4)])


def test_single_pass_query_scale_finds_the_cell_not_the_whole_image(embedder):
    # Why the query is embedded at the cell's scale: at 224 the whole-image patch (a generic mix of
    # everything) out-scores the photo's own 96 px cell; at 96 the photo's cell wins.
    photos, mosaic = _mosaic_of_photos()
    vecs, boxes = embedder.embed_patches(mosaic, regions="L3", mode="single_pass")
    own_cell = 14 + np.arange(len(photos))  # L3 cells follow the 1 + 4 + 9 coarser ones, row-major
    hits = {}
    for kw in ({}, {"regions": "L3", "mode": "single_pass"}):
        q = np.stack([embedder.embed_query(p, **kw) for p in photos])
        hits[bool(kw)] = int(np.sum((q @ vecs.T).argmax(1) == own_cell))
    assert hits[True] >= 5 and hits[True] >= hits[False] + 3, hits


def test_single_pass_index_search_uses_the_cell_scale_query(embedder):
    from pypatch import ImageIndex

    photos, mosaic = _mosaic_of_photos()
    index = ImageIndex.build([("mosaic", mosaic)], regions="L3", store="flat", mode="single_pass",
                             embedder=embedder, progress=False)
    vecs, boxes = embedder.embed_patches(mosaic, regions="L3", mode="single_pass")
    for photo in photos[:3]:
        scores = vecs @ embedder.embed_query(photo, regions="L3", mode="single_pass")
        hit = index.search(photo, k=1)[0]
        assert hit.score == pytest.approx(float(scores.max()), abs=1e-5)
        assert list(hit.box) == boxes[int(scores.argmax())].tolist()

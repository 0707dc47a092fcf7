"""ImageIndex end to end: the default model on real photos, real index files.

References are independent of the index: per-image max over patch descriptors computed with
numpy from the Embedder's own outputs, the grid's boxes, and IoU against the pasted truth.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from pypatch.errors import (  # noqa: E402
    ImageError,
    IndexFormatError,
    InvalidArgumentError,
    ModelMismatchError,
)

OBJECT_BOX = (230, 160, 380, 260)  # where the cat is pasted in the coffee scene (x1/y1 exclusive)


def _photos() -> dict:
    d = skimage_data
    return {
        "astronaut.png": d.astronaut(),
        "rocket.png": d.rocket(),
        "motorcycle.png": d.stereo_motorcycle()[0],
        "ihc.png": d.immunohistochemistry(),
        "hubble.png": d.hubble_deep_field()[::2, ::2],
        "camera.png": d.camera(),
    }


def _scene() -> Image.Image:
    """A cluttered real photo (coffee) with a small real object (the chelsea cat) pasted in."""
    scene = Image.fromarray(skimage_data.coffee()).copy()
    x0, y0, x1, y1 = OBJECT_BOX
    cat = Image.fromarray(skimage_data.chelsea()).resize((x1 - x0, y1 - y0), Image.BICUBIC)
    scene.paste(cat, (x0, y0))
    return scene


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for name, arr in _photos().items():
        Image.fromarray(arr).save(root / name)
    _scene().save(root / "scene.png")
    return root


# `embedder` and `flat_index` (flat L2 index of this module's photo_dir): tests/conftest.py


def _reference_ranking(embedder, photo_dir, ids, query_vec, regions):
    """Per-image max of q . patch over the Embedder's own patch descriptors (numpy)."""
    out = []
    for image_id in ids:
        vecs, boxes = embedder.embed_patches(str(photo_dir / image_id), regions=regions)
        scores = vecs @ query_vec
        p = int(np.argmax(scores))
        out.append((-float(scores[p]), image_id, p, tuple(int(v) for v in boxes[p])))
    out.sort()
    return out


def test_build_indexes_every_photo_with_ids_paths_and_cells(flat_index, photo_dir):
    assert len(flat_index) == 7
    assert sorted(flat_index.ids) == sorted(list(_photos()) + ["scene.png"])
    info = flat_index.info()
    assert info["images"] == 7 and info["patches"] == 7 * 14
    assert info["bytes_per_image"] == pytest.approx(14 * 1280 * 4 + 8)
    assert info["model"]["name"] == "efficientnet_lite0" and len(info["model"]["sha256"]) == 64
    one = flat_index.image_info("rocket.png")
    assert one["path"] == str(photo_dir / "rocket.png") and one["size"] == [640, 427]
    assert one["cells"][0] == [0, 0, 640, 427] and one["levels"][:2] == [0, 1]


def test_search_equals_numpy_per_image_max(flat_index, embedder, photo_dir):
    q = embedder.embed_query(str(photo_dir / "astronaut.png"), box=[100, 0, 300, 200])
    hits = flat_index.search(str(photo_dir / "astronaut.png"), box=[100, 0, 300, 200], k=7)
    ref = _reference_ranking(embedder, photo_dir, flat_index.ids, q, "L2")
    assert [h.image for h in hits] == [r[1] for r in ref]
    np.testing.assert_allclose([h.score for h in hits], [-r[0] for r in ref], atol=1e-5)
    assert [h.patch for h in hits] == [r[2] for r in ref]
    assert [h.box for h in hits] == [r[3] for r in ref] == [h.cell for h in hits]
    assert [h.rank for h in hits] == list(range(1, 8))
    assert hits[0].image == "astronaut.png" and hits[0].level == 2


def test_pasted_object_is_found_with_its_box(flat_index, photo_dir, embedder):
    from pypatch import ImageIndex

    cat = skimage_data.chelsea()
    hits = flat_index.search(cat, k=3)  # numpy array query
    top = hits[0]
    assert top.image == "scene.png" and top.path == str(photo_dir / "scene.png")
    assert top.level >= 1 and _iou(top.box, OBJECT_BOX) > 0.3
    # the whole-image descriptor of the scene matches the cat far less than its best cell
    global_index = ImageIndex.build(photo_dir, regions="L0", store="flat", embedder=embedder,
                                    progress=False)
    whole = next(h for h in global_index.search(cat, k=7) if h.image == "scene.png")
    assert whole.box == whole.cell == (0, 0, 600, 400) and whole.level == 0
    assert top.score > whole.score + 0.2


def test_search_many_matches_single_searches(flat_index, photo_dir):
    queries = [str(photo_dir / "rocket.png"), Image.open(photo_dir / "camera.png")]
    many = flat_index.search_many(queries, [None, [0, 0, 256, 256]], k=3)
    assert many[0] == flat_index.search(queries[0], k=3)
    assert many[1] == flat_index.search(queries[1], box=[0, 0, 256, 256], k=3)
    assert many[0][0].image == "rocket.png" and many[0][0].score == pytest.approx(1.0, abs=1e-4)


def test_save_load_eager_and_mmap_give_identical_results(flat_index, photo_dir, tmp_path,
                                                         embedder):
    from pypatch import ImageIndex

    path = tmp_path / "photos.ptch"
    flat_index.save(path)
    query = str(photo_dir / "motorcycle.png")
    before = flat_index.search(query, k=5)
    for mmap in (True, False):
        loaded = ImageIndex.load(path, mmap=mmap)
        assert len(loaded) == 7 and loaded.info()["regions"] == "L2"
        assert loaded.search(query, k=5) == before  # builds its embedder from the recorded model
    loaded.set_embedder(embedder)
    assert loaded.search(query, k=5) == before


def test_remove_add_compact_and_save(photo_dir, embedder, tmp_path):
    from pypatch import ImageIndex

    sources = [(f"img{i}", str(photo_dir / name)) for i, name in
               enumerate(["rocket.png", "camera.png", "astronaut.png"])]
    index = ImageIndex.build(sources, regions="L1", store="flat16", embedder=embedder,
                             progress=False)
    assert index.ids == ["img0", "img1", "img2"]
    assert index.remove(["img1"]) == 1
    assert len(index) == 2 and "img1" not in index
    hits = index.search(str(photo_dir / "camera.png"), k=5)
    assert [h.image for h in hits] != [] and "img1" not in [h.image for h in hits]
    with pytest.raises(InvalidArgumentError, match="img1"):
        index.remove("img1")
    added = index.add([("img3", str(photo_dir / "camera.png"))])
    assert added == ["img3"] and index.skipped == []
    assert index.search(str(photo_dir / "camera.png"), k=1)[0].image == "img3"
    index.save(tmp_path / "small.ptch")
    loaded = ImageIndex.load(tmp_path / "small.ptch", mmap=False)
    loaded.set_embedder(embedder)
    assert loaded.ids == ["img0", "img2", "img3"] and loaded.info()["removed"] == 0
    assert loaded.patch_index.num_patches == 3 * 5
    q = str(photo_dir / "astronaut.png")
    assert [(h.image, h.patch) for h in loaded.search(q, k=3)] == \
           [(h.image, h.patch) for h in index.search(q, k=3)]


def test_pq_store_trained_on_the_database_patches(photo_dir, embedder):
    from pypatch import ImageIndex

    files = sorted(p for p in os.listdir(photo_dir) if p.endswith(".png"))
    # 7 images x 30 cells + 2 more sources = 270 training patches >= 256 centroids
    sources = [str(photo_dir / f) for f in files] + \
              [("chelsea", skimage_data.chelsea()), ("coffee", skimage_data.coffee())]
    index = ImageIndex.build(sources, regions="L3", store="pq", pq_m=16, mode="single_pass",
                             embedder=embedder, progress=False)
    info = index.info()
    assert info["store"]["kind"] == "pq" and info["store"]["trained_on_vectors"] == 270
    assert info["bytes_per_image"] == pytest.approx(30 * 16 + 8)
    for f in files[:3]:
        assert index.search(str(photo_dir / f), k=1)[0].image == str(photo_dir / f)
    with pytest.raises(InvalidArgumentError, match="at least 256 training vectors"):
        ImageIndex.build(sources, regions="L3", store="pq", train_on="global",
                         mode="single_pass", embedder=embedder, progress=False)


def test_bad_images_are_skipped_and_reported(photo_dir, embedder, tmp_path):
    from pypatch import ImageIndex

    (tmp_path / "good.png").write_bytes((photo_dir / "rocket.png").read_bytes())
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    index = ImageIndex.build(tmp_path, regions="L1", store="flat", embedder=embedder,
                             progress=False)
    assert index.ids == ["good.png"]
    skipped = dict(index.skipped)
    assert set(skipped) == {str(tmp_path / "empty.jpg"), str(tmp_path / "text.png")}
    assert all(reason for reason in skipped.values())
    (tmp_path / "good.png").unlink()
    with pytest.raises(InvalidArgumentError, match="no usable image"):
        ImageIndex.build(tmp_path, regions="L1", store="flat", embedder=embedder, progress=False)


def test_bad_arguments_raise_typed_errors(flat_index, photo_dir, tmp_path, embedder):
    from pypatch import ImageIndex

    with pytest.raises(InvalidArgumentError, match="box"):
        flat_index.search(str(photo_dir / "rocket.png"), box=[600, 0, 700, 100])  # 640 wide
    with pytest.raises(ImageError):
        flat_index.search(str(tmp_path / "missing.jpg"))
    bogus = tmp_path / "bogus.jpg"
    bogus.write_text("hello")
    with pytest.raises(ImageError):
        flat_index.search(str(bogus))
    with pytest.raises(InvalidArgumentError, match="k"):
        flat_index.search(str(photo_dir / "rocket.png"), k=0)
    with pytest.raises(InvalidArgumentError, match="store"):
        ImageIndex.build(photo_dir, store="ivf", embedder=embedder)
    with pytest.raises(InvalidArgumentError, match="pq_m"):
        ImageIndex.build(photo_dir, store="pq", pq_m=7, embedder=embedder)
    with pytest.raises(InvalidArgumentError, match="no such file or folder"):
        ImageIndex.build(tmp_path / "nope", embedder=embedder)


def test_bad_index_files_raise_typed_errors(flat_index, tmp_path):
    from pypatch import ImageIndex, PatchIndex

    with pytest.raises(FileNotFoundError):
        ImageIndex.load(tmp_path / "missing.ptch")
    (tmp_path / "text.ptch").write_text("not an index at all")
    with pytest.raises(IndexFormatError):
        ImageIndex.load(tmp_path / "text.ptch")
    good = tmp_path / "good.ptch"
    flat_index.save(good)
    data = bytearray(good.read_bytes())
    (tmp_path / "truncated.ptch").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError):
        ImageIndex.load(tmp_path / "truncated.ptch")
    data[200] ^= 0xFF  # inside the section table / metadata: the CRC catches it
    (tmp_path / "flipped.ptch").write_bytes(data)
    with pytest.raises(IndexFormatError):
        ImageIndex.load(tmp_path / "flipped.ptch", mmap=False)
    vectors_only = PatchIndex(4)
    vectors_only.add(np.eye(4, dtype=np.float32), patches_per_image=2)
    vectors_only.save(tmp_path / "vectors.ptch")
    with pytest.raises(IndexFormatError, match="PatchIndex"):
        ImageIndex.load(tmp_path / "vectors.ptch")


def test_searching_with_another_model_is_refused(flat_index, tmp_path, embedder):
    from pypatch import ImageIndex, PatchIndex

    path = tmp_path / "other_model.ptch"
    flat_index.save(path)
    raw = PatchIndex.load(path, mmap=False)
    meta = raw.metadata
    meta["pypatch.image_index"]["model"]["card"]["weights_sha256"] = "0" * 64
    raw.metadata = meta
    raw.save(path)
    loaded = ImageIndex.load(path)
    with pytest.raises(ModelMismatchError, match="weights_sha256"):
        loaded.search(skimage_data.rocket())
    with pytest.raises(ModelMismatchError):
        loaded.set_embedder(embedder)


def test_eval_configuration_names():
    from pypatch.evaluation.rankers import config_names, parse_config

    assert parse_config("global") == {"regions": "L0", "mode": "crop", "store": "flat"}
    assert parse_config("patchify-L3-pq32-global-sp") == {
        "regions": "L3", "mode": "single_pass", "store": "pq", "pq_m": 32, "pq_nbits": 8,
        "train_on": "global"}
    assert parse_config("patchify-rmac-flat16") == {"regions": "rmac", "mode": "crop",
                                                    "store": "flat16"}
    assert parse_config("patchify-L4-flat16") == {"regions": "L4", "mode": "crop", "store": "flat16"}
    names = config_names()
    assert {"global", "patchify-L3-pq32", "patchify-L3-flat", "patchify-L1-flat-sp",
            "patchify-L4-flat16", "patchify-L4-pq16"} <= set(names)
    assert all(parse_config(n) for n in names)
    with pytest.raises(InvalidArgumentError):
        parse_config("patchify-L9-flat")


def test_saving_an_untrained_index_is_refused(embedder, tmp_path):
    from pypatch import ImageIndex
    from pypatch.errors import NotTrainedError

    # pq: no codebooks yet; flat: its automatic whitened PCA is not fitted either
    for store in ("pq", "flat"):
        index = ImageIndex.create(embedder=embedder, store=store)
        with pytest.raises(NotTrainedError, match="not trained"):
            index.save(tmp_path / "untrained.ptch")
        assert not (tmp_path / "untrained.ptch").exists()

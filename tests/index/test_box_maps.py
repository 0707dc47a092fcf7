"""Box maps kept at index time (issue 14, item 3): stitching against a numpy loop, the maps
``embed_many(maps=True)`` returns against the finest crops run one by one through the real
default model, and on real photos an index built with ``box_maps`` whose refined boxes come
from the stored maps (no backbone pass), frame a pasted object, survive save/load, and fall
back to the live pass when the maps file is gone."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from _photo_folder import CAT_BOX, write_cat_scene  # noqa: E402

from pypatch.errors import InvalidArgumentError, InvalidTypeError, IndexFormatError  # noqa: E402
from pypatch.evaluation.metrics import iou  # noqa: E402
from pypatch.index.box_maps import BoxMaps, stitch_cell_maps  # noqa: E402
from pypatch.index.refine import BOX_T, box_from_map, cell_descriptors  # noqa: E402


def test_stitch_cell_maps_against_a_loop():
    rng = np.random.default_rng(0)
    n, d, h, w = 3, 5, 7, 7
    f = rng.random((n * n, d, h, w)).astype(np.float32)
    big = np.zeros((d, n * h, n * w), np.float32)
    for k in range(n * n):
        r, c = divmod(k, n)  # row-major, as the grid orders the finest cells
        big[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = f[k]
    np.testing.assert_array_equal(stitch_cell_maps(f, n, pool=1), big)
    pooled = stitch_cell_maps(f, n, pool=2)  # 21 -> 10 cells, the ragged last row/col dropped
    assert pooled.shape == (d, 10, 10)
    np.testing.assert_allclose(pooled[:, 3, 4], big[:, 6:8, 8:10].mean((1, 2)), rtol=1e-6)
    with pytest.raises(InvalidArgumentError):
        stitch_cell_maps(f[:8], n)


def test_box_maps_similarity_is_the_projected_cosine():
    rng = np.random.default_rng(1)
    maps = BoxMaps(dim=16)
    fmaps = [rng.random((32, 6, 5)).astype(np.float32) for _ in range(4)]
    for i, f in enumerate(fmaps):
        maps.add(f"im{i}", f)
    maps.finish()
    q = rng.random(32).astype(np.float32)
    q /= np.linalg.norm(q)
    cells = cell_descriptors(fmaps[2])
    ref = (cells @ maps.basis.T) @ (maps.basis @ q)  # unquantised projection
    got = maps.similarity("im2", q).ravel()
    np.testing.assert_allclose(got, ref, atol=2e-2 * np.abs(ref).max())
    assert maps.similarity("im2", q).shape == (6, 5)
    assert maps.nbytes_per_image() == 30 * (16 + 2)
    with pytest.raises(InvalidArgumentError):
        BoxMaps(dim=0)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxmaps-photo")
    Image.fromarray(skimage_data.coffee()).save(root / "coffee.png")
    return root / "coffee.png"


def test_embed_many_maps_are_the_finest_crops_feature_maps(embedder, photo):
    from pypatch.extract.imageio import load_image
    from pypatch.extract.preprocess import preprocess_boxes

    with_maps = list(embedder.embed_many([str(photo)], regions="L2", mode="crop", maps=True))[0]
    plain = list(embedder.embed_many([str(photo)], regions="L2", mode="crop"))[0]
    np.testing.assert_allclose(with_maps.vectors, plain.vectors, rtol=1e-5, atol=1e-6)
    assert plain.maps is None
    # reference: each of the 9 finest (L2 = 3 x 3) crops run alone, tiled, 2 x 2 mean-pooled
    img = load_image(str(photo))
    finest = plain.boxes[plain.levels == plain.levels.max()]
    assert len(finest) == 9
    feats = [embedder._run(preprocess_boxes(img, np.asarray([b]), embedder._size_hw,
                                            embedder._resample, embedder._mean, embedder._std),
                           embedder._feat_out)[0] for b in finest]
    d, h, w = feats[0].shape
    tiled = np.concatenate([np.concatenate(feats[r * 3:(r + 1) * 3], axis=2) for r in range(3)], axis=1)
    hh, ww = 3 * h // 2, 3 * w // 2
    ref = tiled[:, :2 * hh, :2 * ww].reshape(d, hh, 2, ww, 2).mean((2, 4))
    np.testing.assert_allclose(with_maps.maps, ref, rtol=1e-3, atol=1e-4)
    # a shifted grid's extra cells stay out of the map: L2s gives L2's map and 14 + 4 vectors
    shifted = list(embedder.embed_many([str(photo)], regions="L2s", mode="crop", maps=True))[0]
    assert len(shifted.vectors) == 18
    np.testing.assert_allclose(shifted.maps, with_maps.maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shifted.vectors[:14], plain.vectors, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidArgumentError):
        embedder.embed_many([str(photo)], regions="L2", mode="single_pass", maps=True)
    with pytest.raises(InvalidArgumentError):
        embedder.embed_many([str(photo)], regions="rmac", mode="crop", maps=True)


OBJECT = CAT_BOX  # where the cat is pasted in coffee


@pytest.fixture(scope="module")
def maps_index(tmp_path_factory, embedder):
    from pypatch import ImageIndex

    root = write_cat_scene(tmp_path_factory.mktemp("boxmaps"))
    index = ImageIndex.build(root, regions="L3", store="flat", embedder=embedder,
                             progress=False, box_maps=32)
    return index


def test_refined_boxes_come_from_the_stored_maps(maps_index):
    index = maps_index
    cat = skimage_data.chelsea()
    grid = index.search(cat, k=4)
    refined = index.search(cat, k=4, refine=True)
    # no backbone pass: the live refiner (and its feature-map cache) is never created
    assert getattr(index, "_pypatch_refiner", None) is None
    assert [(h.image, h.score, h.cell, h.level, h.rank) for h in refined] == \
        [(h.image, h.score, h.cell, h.level, h.rank) for h in grid]
    top = refined[0]
    assert top.image == "scene.png"
    q = index._get_embedder().embed_query(cat, regions=index._grid, mode="crop")
    w, h = index.image_info("scene.png")["size"]
    expect = box_from_map(index._box_maps.similarity("scene.png", q), w, h, top.cell, t=BOX_T, factor=4)
    assert top.box == expect
    assert iou(top.box, OBJECT) >= iou(top.cell, OBJECT)
    assert iou(top.box, OBJECT) > 0.45
    assert len(index._box_maps) == 4


def test_box_maps_survive_save_and_load(maps_index, tmp_path, embedder):
    from pypatch import ImageIndex
    from pypatch.index.image_index import box_maps_path

    path = tmp_path / "maps.ptch"
    maps_index.save(path)
    back = ImageIndex.load(path)
    back.set_embedder(embedder)
    cat = skimage_data.chelsea()
    assert [h.box for h in back.search(cat, k=4, refine=True)] == \
        [h.box for h in maps_index.search(cat, k=4, refine=True)]
    assert getattr(back, "_pypatch_refiner", None) is None
    # without its maps file the index still refines, with the live backbone pass
    import os

    os.remove(box_maps_path(path))
    bare = ImageIndex.load(path)
    bare.set_embedder(embedder)
    hits = bare.search(cat, k=1, refine=True)
    assert getattr(bare, "_pypatch_refiner", None) is not None and hits[0].image == "scene.png"
    # a damaged maps file is an IndexFormatError, not a crash
    with open(box_maps_path(path), "wb") as f:
        f.write(b"not an npz")
    with pytest.raises(IndexFormatError):
        ImageIndex.load(path)


def test_box_maps_argument_checks(embedder):
    from pypatch import ImageIndex

    with pytest.raises(InvalidTypeError):
        ImageIndex.create(embedder=embedder, store="flat", box_maps="yes")
    with pytest.raises(InvalidArgumentError):
        ImageIndex.create(embedder=embedder, store="flat", box_maps=0)
    with pytest.raises(InvalidArgumentError):
        ImageIndex.create(embedder=embedder, store="flat", mode="single_pass", box_maps=True)
    with pytest.raises(InvalidArgumentError):
        ImageIndex.create(embedder=embedder, store="flat", regions="rmac", box_maps=True)


def test_box_maps_before_any_image_and_through_a_caching_embedder(tmp_path, embedder, photo):
    from pypatch import ImageIndex
    from pypatch.evaluation.rankers import CachingEmbedder

    empty = ImageIndex.create(embedder=embedder, store="flat", pca_dim=None, box_maps=8)
    empty.save(tmp_path / "empty.ptch")  # no map yet, no projection learned: still loads
    back = ImageIndex.load(tmp_path / "empty.ptch")
    assert back.info()["box_maps"] == {"dim": 8, "bytes_per_image": 0.0}
    # a caching wrapper (pypatch eval, the CLI) passes maps=True through to the real embedder
    index = ImageIndex.build([str(photo)], store="flat", box_maps=8, embedder=CachingEmbedder(embedder),
                             progress=False)
    assert len(index._box_maps) == 1 and index.info()["box_maps"]["bytes_per_image"] > 0


def test_an_embedder_without_maps_is_refused(embedder, photo):
    from pypatch import ImageIndex

    class NoMaps:  # an embedder that ignores maps=True
        def __getattr__(self, name):
            return getattr(embedder, name)

        def embed_many(self, images, maps=False, **kwargs):
            return embedder.embed_many(images, **kwargs)

    with pytest.raises(InvalidArgumentError, match="no feature map"):
        ImageIndex.build([str(photo)], store="flat", box_maps=8, embedder=NoMaps(), progress=False)

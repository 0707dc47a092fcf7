"""The opt-in finer grids through ImageIndex: build, search against a numpy reference over the
Embedder's own patch descriptors, save / load round trip, and the META check.

L4 = L3's 30 cells + a 5 x 5 grid (55); L3s = L3 + 9 half-shifted L3-size cells (39)
(issue 14, item 4; benchmarks/README.md, "Item 4")."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from pypatch import ImageIndex, PatchGrid  # noqa: E402
from pypatch.errors import IndexFormatError  # noqa: E402


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos_l4")
    d = skimage_data
    for name, arr in {"astronaut.png": d.astronaut(), "rocket.png": d.rocket(),
                      "coffee.png": d.coffee()}.items():
        Image.fromarray(arr).save(root / name)
    return root


GRIDS = {"L4": (PatchGrid(4), 55), "L3s": (PatchGrid(3, shifted=True), 39)}


@pytest.fixture(scope="module", params=sorted(GRIDS))
def fine_index(request, photo_dir, embedder):
    return request.param, ImageIndex.build(photo_dir, regions=request.param, store="flat",
                                           pca_dim=None, embedder=embedder, progress=False)


def test_fine_index_holds_its_cells_with_the_grid_boxes(fine_index, photo_dir):
    name, index = fine_index
    grid, n = GRIDS[name]
    info = index.info()
    assert info["images"] == 3 and info["patches"] == 3 * n and info["regions"] == name
    assert info["bytes_per_image"] == pytest.approx(n * 1280 * 4 + 8)
    one = index.image_info("rocket.png")
    assert one["cells"] == grid.boxes(640, 427).tolist()
    if name == "L4":
        assert one["levels"] == [0] + [1] * 4 + [2] * 9 + [3] * 16 + [4] * 25
        assert one["cells"][30] == [0, 0, 128, 85]  # first 5x5 cell: cuts 640 // 5, 427 // 5
    else:
        assert one["levels"] == [0] + [1] * 4 + [2] * 9 + [3] * 25
        assert one["cells"][30] == [80, 53, 240, 160]  # (640 // 8, 427 // 8, 3 * 640 // 8, ...)


def test_fine_search_equals_numpy_per_image_max_and_survives_save_load(fine_index, embedder,
                                                                      photo_dir, tmp_path):
    name, index = fine_index
    grid, n = GRIDS[name]
    query, box = str(photo_dir / "astronaut.png"), [150, 60, 260, 170]
    q = embedder.embed_query(query, box=box)
    ref = []
    for image_id in index.ids:
        vecs, boxes = embedder.embed_patches(str(photo_dir / image_id), regions=grid)
        assert len(vecs) == n
        s = vecs @ q
        p = int(np.argmax(s))
        ref.append((-float(s[p]), image_id, p, tuple(int(v) for v in boxes[p])))
    ref.sort()
    hits = index.search(query, box=box, k=3)
    assert [h.image for h in hits] == [r[1] for r in ref]
    np.testing.assert_allclose([h.score for h in hits], [-r[0] for r in ref], atol=1e-5)
    assert [h.patch for h in hits] == [r[2] for r in ref]
    assert [h.box for h in hits] == [r[3] for r in ref]
    assert [h.level for h in hits] == [int(grid.levels_of(*Image.open(photo_dir / r[1]).size)[r[2]])
                                       for r in ref]
    path = tmp_path / "l4.ptch"
    index.save(path)
    for mmap in (True, False):
        loaded = ImageIndex.load(path, mmap=mmap)
        loaded.set_embedder(embedder)
        assert loaded.info()["regions"] == name and loaded.info()["patches"] == 3 * n
        assert loaded.search(query, box=box, k=3) == hits


def test_meta_check_accepts_level_4_and_rejects_level_5(tmp_path):
    """The META check bounds pyramid levels by PatchGrid's maximum (4; it was 3), and still
    checks each image's patch count against the recorded grid (real files, model-free)."""
    from _image_index_files import fake_image_index, read_image_meta, write_image_meta

    path = tmp_path / "l4.ptch"
    fake_image_index("flat", "L4").save(path)
    loaded = ImageIndex.load(path)
    assert loaded.info()["patches"] == 6 * 55 and loaded.image_info("img0")["levels"][-1] == 4
    meta = read_image_meta(path)
    for levels, match in ((5, "regions.grid.levels"), (3, "levels=3")):
        bad = json.loads(json.dumps(meta))
        bad["regions"]["grid"]["levels"] = levels
        write_image_meta(path, tmp_path / "bad.ptch", bad)
        with pytest.raises(IndexFormatError, match=match):
            ImageIndex.load(tmp_path / "bad.ptch")


def test_meta_check_of_shifted_grids(tmp_path):
    """``shifted`` is recorded only when set, must be a boolean, and changes the patch count the
    loader expects (a plain L3 META over L3s files is refused, and the reverse)."""
    from _image_index_files import fake_image_index, read_image_meta, write_image_meta

    path = tmp_path / "l3s.ptch"
    fake_image_index("flat", "L3s").save(path)
    loaded = ImageIndex.load(path)
    assert loaded.info()["patches"] == 6 * 39 and loaded.info()["regions"] == "L3s"
    meta = read_image_meta(path)
    assert meta["regions"]["grid"] == {"kind": "pyramid", "levels": 3, "shifted": True}
    for shifted, match in (("yes", "regions.grid.shifted"), (1, "regions.grid.shifted"),
                           (False, "levels=3\\)"), (None, "regions.grid.shifted")):
        bad = json.loads(json.dumps(meta))
        bad["regions"]["grid"]["shifted"] = shifted
        write_image_meta(path, tmp_path / "bad.ptch", bad)
        with pytest.raises(IndexFormatError, match=match):
            ImageIndex.load(tmp_path / "bad.ptch")
    plain = tmp_path / "l3.ptch"
    fake_image_index("flat", "L3").save(plain)
    bad = read_image_meta(plain)
    bad["regions"]["grid"]["shifted"] = True
    write_image_meta(plain, tmp_path / "bad.ptch", bad)
    with pytest.raises(IndexFormatError, match="shifted=True"):
        ImageIndex.load(tmp_path / "bad.ptch")


def test_eval_cache_serves_coarser_pyramids_but_never_a_shifted_grid_from_another():
    """rankers.CachingEmbedder slices a plain pyramid out of any finer cached one (nested
    cells); a shifted grid's extra cells are not the next level's, so it is served only by
    itself (keyed apart: before, L3s and L3 shared the key "pyramid:3")."""
    from pypatch.evaluation.rankers import CachingEmbedder
    from pypatch.extract.embeddings import PatchEmbedding

    cache = CachingEmbedder(None)
    l4, l3s, l3 = PatchGrid(4), PatchGrid(3, shifted=True), PatchGrid(3)

    def emb(grid, offset):
        b, lv = grid.boxes(640, 480), grid.levels_of(640, 480)
        return PatchEmbedding(0, "a.jpg", 640, 480, np.arange(len(b), dtype=np.float32)[:, None] + offset, b, lv)

    cache.store("a.jpg", l4, "crop", emb(l4, 0))
    assert cache.lookup("a.jpg", l3s, "crop") is None  # L4's cells 30..38 are not L3s's
    got = cache.lookup("a.jpg", l3, "crop")
    assert got.vectors[:, 0].tolist() == list(range(30)) and got.boxes.tolist() == l3.boxes(640, 480).tolist()
    cache.store("a.jpg", l3s, "crop", emb(l3s, 1000))
    assert cache.lookup("a.jpg", l3s, "crop").vectors[:, 0].tolist() == [1000.0 + i for i in range(39)]
    assert cache.lookup("a.jpg", l4, "crop").vectors[0, 0] == 0  # L4 kept under its own key

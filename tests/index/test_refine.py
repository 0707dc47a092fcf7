"""Box refinement: hand-computed similarity maps and cell fusions, the cell descriptors against
numpy, and on real photos (default model) a small object pasted into a cluttered photo whose
refined box overlaps the truth at least as well as the winning grid cell."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from pypatch.errors import InvalidArgumentError  # noqa: E402
from pypatch.evaluation.metrics import iou  # noqa: E402
from pypatch.index.refine import box_from_map, check_refine, fuse_cells, similarity_map  # noqa: E402


# ------------------------------------------------------------------------------- hand cases
def _block_map(n=8, cells=((2, 4), (2, 4))):
    m = np.zeros((n, n))
    (r0, r1), (c0, c1) = cells
    m[r0:r1, c0:c1] = 1.0
    return m


def test_box_from_map_hand_computed():
    # 8x8 map over an 800x800 image (100 px per cell), cells 2..3 high in both axes (pixels
    # 200..400). Cell i's value sits at its centre, index i; fine pixel k of the 1/8-cell grid
    # has its centre at index (k + .5) / 8 - .5 and spans [k / 8, (k + 1) / 8] cells. Between
    # index 1 (0) and 2 (1) the map crosses t = 0.3 at 1.3: the first fine pixel at or above is
    # k = 14 -> 1.75 cells = 175 px; between 3 (1) and 4 (0) it falls below at 3.7: the last is
    # k = 33 -> edge 34 / 8 = 4.25 cells = 425 px. The median (background) is 0.
    box = box_from_map(_block_map(), 800, 800, cell=(200, 200, 400, 400), t=0.3, factor=8)
    assert box == (175, 175, 425, 425)
    # t = 0.7: crossings at 1.7 (k = 18 -> 225 px) and 3.3 (k = 29 -> 30 / 8 -> 375 px)
    assert box_from_map(_block_map(), 800, 800, (200, 200, 400, 400), t=0.7) == (225, 225, 375, 375)


def test_box_from_map_takes_the_peak_inside_the_winning_cell():
    m = _block_map(cells=((0, 2), (0, 2)))  # top-left blob, strongest
    m[5:7, 5:7] = 0.8  # a weaker blob bottom-right
    # the winning cell covers the weaker blob: the box is that blob's, not the global peak's
    box = box_from_map(m, 800, 800, cell=(400, 400, 800, 800), t=0.3)
    assert box[0] >= 400 and box[1] >= 400
    top_left = box_from_map(m, 800, 800, cell=(0, 0, 400, 400), t=0.3)
    assert top_left[2] <= 300 and top_left[3] <= 300


def test_box_from_map_on_a_non_square_image():
    # 4x4 map over 400x200 (cells 100 x 50 px), row 1, columns 1..2 high; factor 4 (fine pixels
    # 25 x 12.5 px). x: crossings of 0.5 at index 0.5 (k = 4 -> 1 cell) and 2.5 (k = 11 ->
    # 12 / 4 = 3 cells); y: on the plateau the value is the y profile alone, >= 0.5 on index
    # [0.5, 1.5] -> k = 4..7 -> cells 1..2. Fewer than half the fine pixels are non-zero, so
    # the median is 0.
    m = _block_map(n=4, cells=((1, 2), (1, 3)))
    assert box_from_map(m, 400, 200, cell=(0, 0, 400, 200), t=0.5, factor=4) == (100, 50, 300, 100)


def test_flat_map_gives_no_box():
    assert box_from_map(np.ones((6, 6)), 300, 300, (0, 0, 300, 300)) is None


def test_fuse_cells_hand_computed():
    cells = [[0, 0, 10, 10], [10, 0, 20, 10], [50, 50, 60, 60]]
    # within 0.02 of the best: the first two; weights = score - (best - delta) = .02 and .01
    box = fuse_cells(cells, [1.0, 0.99, 0.5], delta=0.02)
    assert box == (round(10 * 0.01 / 0.03), 0, round((10 * 0.02 + 20 * 0.01) / 0.03), 10)
    assert fuse_cells(cells, [0.1, 0.2, 0.9]) == (50, 50, 60, 60)
    with pytest.raises(InvalidArgumentError, match="fuse_cells"):
        fuse_cells(cells, [1.0])


def test_similarity_map_equals_numpy_cosine_of_clamped_cells():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(16, 3, 5)).astype(np.float32)  # negatives are clamped like GeM's
    q = rng.normal(size=16).astype(np.float32)
    q /= np.linalg.norm(q)
    sim = similarity_map(feats, q)
    assert sim.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            v = np.maximum(feats[:, i, j].astype(np.float64), 1e-6)
            assert sim[i, j] == pytest.approx(float(v @ q / np.linalg.norm(v)), abs=1e-5)


def test_refine_argument_checks():
    assert check_refine(False) is None and check_refine(None) is None
    assert check_refine(True) == "simmap" and check_refine("cells") == "cells"
    with pytest.raises(InvalidArgumentError, match="refine"):
        check_refine("grabcut")


# ------------------------------------------------------------------------------- real photos
OBJECTS = [(60, 220, 200, 330), (420, 40, 560, 150)]  # where the cat is pasted in coffee


@pytest.fixture(scope="module", params=OBJECTS, ids=["bottom-left", "top-right"])
def scene_index(request, tmp_path_factory, embedder):
    from pypatch import ImageIndex

    root = tmp_path_factory.mktemp("refine")
    d = skimage_data
    for name, arr in {"astronaut.png": d.astronaut(), "rocket.png": d.rocket(),
                      "ihc.png": d.immunohistochemistry()}.items():
        Image.fromarray(arr).save(root / name)
    scene = Image.fromarray(d.coffee()).copy()
    x0, y0, x1, y1 = request.param
    scene.paste(Image.fromarray(d.chelsea()).resize((x1 - x0, y1 - y0), Image.BICUBIC), (x0, y0))
    scene.save(root / "scene.png")
    index = ImageIndex.build(root, regions="L2", store="flat", embedder=embedder, progress=False)
    return index, request.param


def test_refined_box_overlaps_the_pasted_object_better_than_the_grid_cell(scene_index):
    index, truth = scene_index
    cat = skimage_data.chelsea()
    grid = index.search(cat, k=3)
    refined = index.search(cat, k=3, refine=True, refine_k=1)
    assert grid[0].image == refined[0].image == "scene.png"
    top = refined[0]
    assert top.cell == grid[0].cell == grid[0].box  # the grid cell stays available
    assert top.box != top.cell
    assert iou(top.box, truth) >= iou(top.cell, truth)
    assert iou(top.box, truth) > 0.45
    # only the top refine_k hits are refined; scores and order are untouched
    assert [h.box for h in refined[1:]] == [h.cell for h in refined[1:]]
    assert [(h.image, h.score) for h in refined] == [(h.image, h.score) for h in grid]


def test_cell_fusion_stays_inside_the_image_and_keeps_the_cell(scene_index):
    index, _ = scene_index
    hits = index.search(skimage_data.chelsea(), k=2, refine="cells")
    w, h = index.image_info(hits[0].image)["size"]
    x0, y0, x1, y1 = hits[0].box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert hits[0].cell == index.search(skimage_data.chelsea(), k=1)[0].cell


def test_in_memory_images_keep_their_cell(embedder):
    """No file to run the backbone on again: the hit keeps the grid cell as its box."""
    from pypatch import ImageIndex

    index = ImageIndex.build([("rocket", skimage_data.rocket()), ("ihc", skimage_data.immunohistochemistry())],
                             regions="L1", store="flat", embedder=embedder, progress=False)
    hits = index.search(skimage_data.rocket(), k=2, refine=True)
    assert all(h.box == h.cell for h in hits)
    with pytest.raises(InvalidArgumentError, match="refine_k"):
        index.search(skimage_data.rocket(), k=2, refine=True, refine_k=-1)

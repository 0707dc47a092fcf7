"""Region strategies: exact pyramid boxes, R-MAC / sliding / custom geometry, parsing, round trips."""
from __future__ import annotations

import numpy as np
import pytest

from pypatch import PatchGrid
from pypatch.errors import InvalidArgumentError, InvalidTypeError
from pypatch.extract.grid import from_xywh, parse_regions, to_xywh

ODD_SIZES = [(7, 5), (101, 37), (4, 4), (333, 1001), (640, 480)]


def coverage(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    cov = np.zeros((height, width), dtype=np.int32)
    for x0, y0, x1, y1 in boxes:
        cov[y0:y1, x0:x1] += 1
    return cov


@pytest.mark.parametrize("levels, expected", [(0, 1), (1, 5), (2, 14), (3, 30), (4, 55)])
def test_pyramid_patch_counts(levels, expected):
    grid = PatchGrid(levels)
    assert len(grid) == grid.num_patches == expected
    assert grid.boxes(640, 480).shape == (expected, 4)
    assert grid.boxes(640, 480).dtype == np.int32


@pytest.mark.parametrize("width, height", ODD_SIZES)
def test_pyramid_levels_tile_the_image_exactly(width, height):
    grid = PatchGrid(3)
    boxes, levels = grid.boxes(width, height), grid.levels_of(width, height)
    assert levels.dtype == np.uint8
    assert np.array_equal(np.bincount(levels), [1, 4, 9, 16])
    for level in range(4):
        lb = boxes[levels == level]
        # every pixel in exactly one cell of each level, no empty cell
        assert np.all(coverage(lb, width, height) == 1)
        assert np.all(lb[:, 2] > lb[:, 0]) and np.all(lb[:, 3] > lb[:, 1])
        # cells of one level differ by at most one pixel per side
        widths, heights = lb[:, 2] - lb[:, 0], lb[:, 3] - lb[:, 1]
        assert widths.max() - widths.min() <= 1 and heights.max() - heights.min() <= 1


def test_pyramid_boxes_hand_computed_for_7x5():
    boxes = PatchGrid(2).boxes(7, 5)
    expected = [
        [0, 0, 7, 5],                                                    # L0
        [0, 0, 3, 2], [3, 0, 7, 2], [0, 2, 3, 5], [3, 2, 7, 5],          # L1: cuts x 0,3,7  y 0,2,5
        [0, 0, 2, 1], [2, 0, 4, 1], [4, 0, 7, 1],                        # L2: cuts x 0,2,4,7  y 0,1,3,5
        [0, 1, 2, 3], [2, 1, 4, 3], [4, 1, 7, 3],
        [0, 3, 2, 5], [2, 3, 4, 5], [4, 3, 7, 5],
    ]
    assert boxes.tolist() == expected


def test_l4_level_boxes_hand_computed_for_11x7():
    """The opt-in L4 level: a 5x5 grid after L3's 30 cells; cuts x (i*11)//5 = 0,2,4,6,8,11 and
    y (i*7)//5 = 0,1,2,4,5,7."""
    grid = PatchGrid(4)
    boxes, levels = grid.boxes(11, 7), grid.levels_of(11, 7)
    assert boxes.shape == (55, 4) and levels.dtype == np.uint8
    assert levels.tolist() == [0] + [1] * 4 + [2] * 9 + [3] * 16 + [4] * 25
    assert boxes[:30].tolist() == PatchGrid(3).boxes(11, 7).tolist()  # nested: L3 comes first
    xs, ys = [0, 2, 4, 6, 8, 11], [0, 1, 2, 4, 5, 7]
    expected = [[xs[c], ys[r], xs[c + 1], ys[r + 1]] for r in range(5) for c in range(5)]
    assert expected[:6] == [[0, 0, 2, 1], [2, 0, 4, 1], [4, 0, 6, 1], [6, 0, 8, 1], [8, 0, 11, 1],
                            [0, 1, 2, 2]]
    assert boxes[30:].tolist() == expected
    assert np.all(coverage(boxes[30:], 11, 7) == 1)
    assert grid.counts([[11, 7], [640, 480]]).tolist() == [55, 55]
    assert PatchGrid.from_dict(grid.to_dict()) == grid and repr(grid) == "PatchGrid(levels=4)"


@pytest.mark.parametrize("width, height", [(5, 5), (101, 37), (333, 1001), (640, 480)])
def test_l4_tiles_the_image_exactly(width, height):
    boxes, levels = PatchGrid(4).boxes(width, height), PatchGrid(4).levels_of(width, height)
    assert np.array_equal(np.bincount(levels), [1, 4, 9, 16, 25])
    for level in range(5):
        lb = boxes[levels == level]
        assert np.all(coverage(lb, width, height) == 1)
        widths, heights = lb[:, 2] - lb[:, 0], lb[:, 3] - lb[:, 1]
        assert widths.min() >= 1 and widths.max() - widths.min() <= 1
        assert heights.min() >= 1 and heights.max() - heights.min() <= 1


def test_l4_needs_five_pixels_per_side_and_l5_does_not_exist():
    with pytest.raises(InvalidArgumentError, match="level-4 grid"):
        PatchGrid(4).boxes(4, 10)
    with pytest.raises(InvalidArgumentError, match="level-4 grid"):
        PatchGrid(4).counts([[10, 10], [10, 4]])
    with pytest.raises(InvalidArgumentError, match="0..4"):
        PatchGrid(5)


def test_shifted_l3_boxes_hand_computed_for_800x600_and_13x9():
    """L3s: L3's 30 cells, then 9 cells of the L3 cell size moved by half a cell, row-major;
    cut points ((2i+1) * W) // 8 and ((2i+3) * W) // 8."""
    grid = PatchGrid(3, shifted=True)
    assert len(grid) == grid.num_patches == 39 and repr(grid) == "PatchGrid(levels=3, shifted=True)"
    boxes, levels = grid.boxes(800, 600), grid.levels_of(800, 600)
    assert boxes[:30].tolist() == PatchGrid(3).boxes(800, 600).tolist()
    assert boxes[30:].tolist() == [
        [100, 75, 300, 225], [300, 75, 500, 225], [500, 75, 700, 225],
        [100, 225, 300, 375], [300, 225, 500, 375], [500, 225, 700, 375],
        [100, 375, 300, 525], [300, 375, 500, 525], [500, 375, 700, 525]]
    assert levels.tolist() == [0] + [1] * 4 + [2] * 9 + [3] * 25
    # 13 x 9: x cuts (k * 13) // 8 = 0,1,3,4,6,8,9,11,13; y (k * 9) // 8 = 0,1,2,3,4,5,6,7,9
    b = grid.boxes(13, 9)[30:]
    assert b[0].tolist() == [1, 1, 4, 3] and b[2].tolist() == [8, 1, 11, 3] and b[8].tolist() == [8, 5, 11, 7]
    assert grid.counts([[13, 9], [640, 480]]).tolist() == [39, 39]
    # shifted L1 / L4: 1 and 16 more cells; the dict round-trips, plain pyramids keep theirs
    assert len(PatchGrid(1, shifted=True)) == 6 and len(PatchGrid(4, shifted=True)) == 71
    assert PatchGrid(1, shifted=True).boxes(40, 20)[-1].tolist() == [10, 5, 30, 15]
    assert grid.to_dict() == {"kind": "pyramid", "levels": 3, "shifted": True}
    assert PatchGrid(3).to_dict() == {"kind": "pyramid", "levels": 3}
    assert PatchGrid.from_dict(grid.to_dict()) == grid != PatchGrid(3)


def test_shifted_needs_a_pyramid_of_level_1_or_more():
    with pytest.raises(InvalidArgumentError, match="shifted"):
        PatchGrid(0, shifted=True)
    with pytest.raises(InvalidArgumentError, match="shifted"):
        PatchGrid(2, kind="rmac", shifted=True)
    with pytest.raises(InvalidTypeError, match="shifted"):
        PatchGrid(3, shifted=1)


def test_pyramid_is_row_major():
    boxes = PatchGrid(3).boxes(400, 300)[14:]  # the 4x4 level
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    rows = centres[:, 1].reshape(4, 4)
    cols = centres[:, 0].reshape(4, 4)
    assert np.all(np.diff(rows[:, 0]) > 0) and np.all(rows == rows[:, :1])
    assert np.all(np.diff(cols, axis=1) > 0) and np.all(cols == cols[:1])


@pytest.mark.parametrize("bad", [(0, 10), (10, -1), (3.5, 10), ("a", 4)])
def test_bad_sizes_raise(bad):
    with pytest.raises(InvalidArgumentError):
        PatchGrid(3).boxes(*bad)


def test_image_too_small_for_level_raises():
    with pytest.raises(InvalidArgumentError, match="too small"):
        PatchGrid(3).boxes(3, 100)
    assert PatchGrid(1).boxes(2, 2).shape == (5, 4)


@pytest.mark.parametrize("levels, error", [(-1, InvalidArgumentError), (5, InvalidArgumentError),
                                           (2.0, InvalidTypeError), (True, InvalidTypeError)])
def test_bad_levels_raise(levels, error):
    with pytest.raises(error, match="levels"):
        PatchGrid(levels)


def test_rmac_square_image_counts_and_sizes():
    grid = PatchGrid.rmac(levels=3)
    boxes, levels = grid.boxes(300, 300), grid.levels_of(300, 300)
    # square image: l x l regions at level l, side floor(2*300/(l+1)), plus the whole image
    assert np.array_equal(np.bincount(levels), [1, 1, 4, 9])
    for level in (1, 2, 3):
        lb = boxes[levels == level]
        side = int(np.floor(2 * 300 / (level + 1)))
        assert np.all(lb[:, 2] - lb[:, 0] == side) and np.all(lb[:, 3] - lb[:, 1] == side)


@pytest.mark.parametrize("width, height", [(640, 480), (480, 640), (1001, 333)])
def test_rmac_regions_are_squares_inside_and_cover_the_image(width, height):
    grid = PatchGrid.rmac(levels=3)
    boxes, levels = grid.boxes(width, height), grid.levels_of(width, height)
    assert boxes[0].tolist() == [0, 0, width, height] and levels[0] == 0
    r = boxes[1:]
    assert np.all(r[:, 2] - r[:, 0] == r[:, 3] - r[:, 1])
    assert r[:, :2].min() >= 0 and r[:, 2].max() <= width and r[:, 3].max() <= height
    for level in (1, 2, 3):  # every level reaches both far edges of the long side
        lb = boxes[levels == level]
        assert lb[:, 0].min() == 0 and lb[:, 1].min() == 0
        assert lb[:, 2].max() >= width - 2 and lb[:, 3].max() >= height - 2
    # overlapping: more regions than a non-overlapping tiling of the long side would need
    assert (levels == 1).sum() >= 2


def test_sliding_windows_cover_and_align_to_edges():
    grid = PatchGrid.sliding(window=0.5, stride=0.5)
    w, h = 641, 479
    boxes = grid.boxes(w, h)
    side = round(0.5 * 479)
    assert boxes[0].tolist() == [0, 0, w, h]
    win = boxes[1:]
    assert np.all(win[:, 2] - win[:, 0] == side) and np.all(win[:, 3] - win[:, 1] == side)
    assert np.all(coverage(win, w, h) >= 1)
    assert win[:, 2].max() == w and win[:, 3].max() == h
    assert grid.num_patches is None and grid.count(w, h) == len(boxes)
    with pytest.raises(TypeError):
        len(grid)


def test_custom_boxes_validated_against_image():
    grid = PatchGrid.custom([[0, 0, 10, 10], [5, 5, 20, 30], [0, 0, 20, 30]])
    assert len(grid) == 3
    assert grid.boxes(20, 30).tolist() == [[0, 0, 10, 10], [5, 5, 20, 30], [0, 0, 20, 30]]
    assert grid.levels_of(20, 30).tolist() == [1, 1, 0]  # the whole-image box is level 0
    with pytest.raises(InvalidArgumentError, match="inside"):
        grid.boxes(19, 30)
    for bad in ([[0, 0, 0, 5]], [[-1, 0, 4, 4]], [[0, 0, 4.5, 4]], [[0, 0, 4]]):
        with pytest.raises(InvalidArgumentError):
            PatchGrid.custom(bad)


@pytest.mark.parametrize("grid", [PatchGrid(0), PatchGrid(3), PatchGrid.rmac(2, 0.3),
                                  PatchGrid.sliding(0.4, 0.25), PatchGrid.custom([[1, 2, 3, 4]])])
def test_dict_round_trip(grid):
    import json

    again = PatchGrid.from_dict(json.loads(json.dumps(grid.to_dict())))
    assert again == grid
    assert np.array_equal(again.boxes(50, 40), grid.boxes(50, 40))


def test_parse_regions():
    assert parse_regions("L0") == PatchGrid(0)
    assert parse_regions("l3") == PatchGrid(3)
    assert parse_regions("L4") == PatchGrid(4) and len(parse_regions("l4")) == 55
    assert parse_regions("L3s") == PatchGrid(3, shifted=True) == parse_regions("l3S")
    assert parse_regions("rmac") == PatchGrid.rmac(3) == parse_regions("rmac3")
    assert parse_regions("rmac2") == PatchGrid.rmac(2)
    assert parse_regions("sliding") == PatchGrid.sliding()
    g = PatchGrid(2)
    assert parse_regions(g) is g
    for bad in ("L5", "L0s", "L5s", "L3x", "rmac9", "grid", "", 3):
        with pytest.raises(InvalidArgumentError):
            parse_regions(bad)


def test_xywh_round_trip():
    boxes = PatchGrid(2).boxes(7, 5)
    xywh = to_xywh(boxes)
    assert xywh[0].tolist() == [0, 0, 7, 5] and xywh[-1].tolist() == [4, 3, 3, 2]
    assert np.array_equal(from_xywh(xywh), boxes)

"""PatchGrid.counts (the vectorised per-image patch count ImageIndex.load checks files with)
equals count(w, h) of every size: tiny, square, extreme aspect ratios, large, for every grid
kind and a range of R-MAC overlaps and sliding windows; bad sizes raise like boxes() does."""
from __future__ import annotations

import numpy as np
import pytest

from pypatch.errors import InvalidArgumentError
from pypatch.extract.grid import PatchGrid


def _sizes():
    tiny = np.stack(np.meshgrid(np.arange(1, 17), np.arange(1, 17)), -1).reshape(-1, 2)
    rng = np.random.default_rng(3)
    return np.concatenate([tiny, rng.integers(1, 4000, (150, 2)), [[1, 5000], [5000, 1]],
                           rng.integers(1, 2 ** 31 - 1, (20, 2))])


GRIDS = ([PatchGrid(l) for l in range(4)]
         + [PatchGrid.rmac(l, o) for l in (1, 3, 6) for o in (0.0, 0.4, 0.99)]
         + [PatchGrid.sliding(w, s) for w in (0.1, 0.5, 0.77, 1.0) for s in (0.1, 0.5, 1.0)])


@pytest.mark.parametrize("grid", GRIDS, ids=repr)
def test_counts_equal_count_for_every_size(grid):
    sizes = _sizes()
    if grid.kind == "pyramid":  # too small for the pyramid: refused, as boxes() refuses it
        sizes = sizes[(sizes >= grid.levels + 1).all(axis=1)]
    expected = [grid.count(int(w), int(h)) for w, h in sizes]
    assert grid.counts(sizes).tolist() == expected


def test_bad_sizes_raise_like_boxes():
    with pytest.raises(InvalidArgumentError, match="too small"):
        PatchGrid(3).counts([[64, 48], [3, 48]])
    with pytest.raises(InvalidArgumentError, match="positive"):
        PatchGrid.rmac().counts([[64, 0]])
    with pytest.raises(InvalidArgumentError, match=r"\(n, 2\) integer"):
        PatchGrid(1).counts([[64.0, 48.0]])
    assert PatchGrid(1).counts(np.zeros((0, 2), np.int64)).tolist() == []

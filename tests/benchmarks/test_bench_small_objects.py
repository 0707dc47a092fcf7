"""benchmarks/bench_small_objects.py measured the finer grids from extra cells embedded on
their own: those cells must be exactly the product grids' extra cells (PatchGrid(4)'s 5x5
level, PatchGrid(3, shifted=True)'s shifted cells), in the same order, for any image size."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_small_objects as bso  # noqa: E402

from pypatch import PatchGrid  # noqa: E402


@pytest.mark.parametrize("width, height", [(5, 5), (13, 9), (640, 427), (1001, 333)])
def test_extra_cells_are_the_product_grids_cells(width, height):
    assert np.array_equal(bso.l4_cells(width, height), PatchGrid(4).boxes(width, height)[30:])
    assert np.array_equal(bso.shifted_cells(width, height),
                          PatchGrid(3, shifted=True).boxes(width, height)[30:])
    assert bso.extra_cells(width, height).shape == (34, 4)


def test_measurement_grids_match_the_product_grids(monkeypatch):
    import pypatch.index.image_index as ii

    monkeypatch.setattr(ii, "grid_from_dict", ii.grid_from_dict)  # grids() patches it; restored after
    grids = bso.grids()
    for name, product in (("L4", PatchGrid(4)), ("L3s", PatchGrid(3, shifted=True))):
        g = grids[name]
        assert g.num_patches == product.num_patches
        for size in ((640, 480), (37, 101)):
            assert np.array_equal(g.boxes(*size), product.boxes(*size))
            assert np.array_equal(g.levels_of(*size), product.levels_of(*size))

"""Flat search is bit-identical at every SIMD level (hardening issue, item 5): scores, images
and patches, float32 and float16 stores, odd dims (every tail length), exact and near ties.
The kernels share one summation order (simd/README.md, "Flat dot products")."""
from __future__ import annotations

import numpy as np
import pytest

from pypatch import PatchIndex

from _simd_levels import simd_level, usable_levels

DIMS = [1, 3, 8, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65, 100, 127, 255, 256, 257, 384]


def _search_every_level(ix, q, k, threads=1):
    return {lv: _at(lv, ix, q, k, threads) for lv in usable_levels()}


def _at(level, ix, q, k, threads):
    with simd_level(level):
        return ix.search(q, k=k, num_threads=threads)


def _assert_identical(results):
    ref = results["scalar"]
    for level, got in results.items():
        assert got[0].tobytes() == ref[0].tobytes(), f"{level}: scores differ from scalar"
        assert np.array_equal(got[1], ref[1]), f"{level}: images differ from scalar"
        assert np.array_equal(got[2], ref[2]), f"{level}: patches differ from scalar"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("dim", DIMS)
def test_random_floats_bit_identical(dtype, dim):
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((120 * 5, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ix = PatchIndex(dim, flat_dtype=dtype)
    ix.add(x, patches_per_image=5)
    q = rng.standard_normal((6, dim)).astype(np.float32)
    results = _search_every_level(ix, q, k=120)  # every image: the whole order is compared
    _assert_identical(results)
    # and the scores are the inner products (float32 rounding of the float64 reference)
    s, im, pa = results["scalar"]
    stored = np.stack([ix.reconstruct(i) for i in range(120)]).astype(np.float64)
    ref = np.einsum("ipd,qd->qip", stored, q.astype(np.float64))
    got_ref = ref[np.arange(6)[:, None], im, pa]
    tol = 1e-5 * np.abs(stored).sum(-1).max() * np.abs(q).max() + 1e-6
    assert np.allclose(s, got_ref, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("dim", [33, 256, 257])
def test_ties_and_near_ties_bit_identical(dtype, dim):
    """Duplicated images tie exactly (broken by image index); permuted copies of a patch
    tie in exact arithmetic but may differ in the last bit, so their order is decided by the
    summation order: it must be the same at every level."""
    rng = np.random.default_rng(100 + dim)
    base = rng.standard_normal((10 * 4, dim)).astype(np.float32)
    perm = base.copy()
    perm[:, :] = base[:, rng.permutation(dim)]
    x = np.concatenate([base, base, perm, base[::-1]])  # 40 images of 4 patches
    ix = PatchIndex(dim, flat_dtype=dtype)
    ix.add(x, patches_per_image=4)
    q = np.concatenate([base[[0, 7, 13]], rng.standard_normal((3, dim)).astype(np.float32)])
    for threads in (1, 2):
        _assert_identical(_search_every_level(ix, q, k=40, threads=threads))


def test_large_dynamic_range_bit_identical():
    """Cancellation-heavy sums (values from 1e-6 to 1e6): where a reassociated sum differs most."""
    rng = np.random.default_rng(7)
    dim = 97
    x = (rng.standard_normal((200, dim)) * 10.0 ** rng.integers(-6, 7, (200, dim))).astype(np.float32)
    ix = PatchIndex(dim)
    ix.add(x, patches_per_image=2)
    q = (rng.standard_normal((5, dim)) * 10.0 ** rng.integers(-3, 4, (5, dim))).astype(np.float32)
    _assert_identical(_search_every_level(ix, q, k=100))

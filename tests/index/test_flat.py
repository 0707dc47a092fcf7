"""The exact flat store (float32 / float16) against numpy, at every SIMD level."""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from _scan_reference import random_offsets, reference_search
from _simd_levels import simd_level, usable_levels


@pytest.mark.parametrize("level", usable_levels())
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("dim", [1, 7, 17, 97])
def test_flat_matches_numpy_exactly_on_integer_vectors(level, dtype, dim):
    rng = np.random.default_rng(dim)
    offsets = random_offsets(rng, 50, 8)
    x = rng.integers(-6, 7, size=(int(offsets[-1]), dim)).astype(np.float32)
    q = rng.integers(-3, 4, size=(4, dim)).astype(np.float32)
    ix = pypatch.PatchIndex(dim, flat_dtype=dtype)
    ix.add(x, image_offsets=offsets)
    ref = reference_search(q @ x.T, offsets, k=9)
    with simd_level(level):
        got = ix.search(q, k=9)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_flat_random_floats_and_reconstruct(dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((30 * 40, 33)).astype(np.float32)
    ix = pypatch.PatchIndex(33, flat_dtype=dtype)
    new = ix.add(x, patches_per_image=30)
    assert new.tolist() == list(range(40)) and len(ix) == 40 and ix.num_patches == 1200
    stored = x.astype(np.float16).astype(np.float32) if dtype == "float16" else x
    np.testing.assert_array_equal(ix.reconstruct(3), stored[90:120])
    q = rng.standard_normal((3, 33)).astype(np.float32)
    s, i, p = ix.search(q, k=5)
    ref_s, ref_i, ref_p = reference_search((q @ stored.T).astype(np.float32), ix.image_offsets, 5)
    np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(p, ref_p)
    assert ix.memory_usage()["vectors"] == 1200 * 33 * (4 if dtype == "float32" else 2)


def test_add_in_several_calls_continues_image_numbering():
    rng = np.random.default_rng(10)
    ix = pypatch.PatchIndex(8)
    a = ix.add(rng.standard_normal((6, 8)).astype(np.float32), patches_per_image=[1, 0, 5])
    b = ix.add(rng.standard_normal((4, 8)).astype(np.float32), image_offsets=[0, 4])
    assert a.tolist() == [0, 1, 2] and b.tolist() == [3]
    assert ix.image_offsets.tolist() == [0, 1, 1, 6, 10]
    assert ix.reconstruct(1).shape == (0, 8)

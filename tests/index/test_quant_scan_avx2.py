"""The AVX2 quantised 8-bit PQ scan: at the avx2 level searches go through it and return the
same scores, images and patches, bit for bit, as the scalar level (exact float scan)."""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from _scan_reference import random_offsets, reference_search
from _simd_levels import simd_level, usable_levels

pytestmark = pytest.mark.skipif("avx2" not in usable_levels(), reason="AVX2 not available here")


def test_levels_name_their_quantised_kernel():
    with simd_level("scalar"):
        assert pypatch.simd_info()["quant_scan"] == ""
    with simd_level("avx2"):
        assert pypatch.simd_info()["quant_scan"] == "avx2"
    if "avx512" in usable_levels():
        with simd_level("avx512"):
            assert pypatch.simd_info()["quant_scan"] in ("avx2", "avx512vbmi")


def _codes(rng, kind: str, n: int, m: int) -> np.ndarray:
    if kind == "random":  # scores crowd together: many candidates near the cut
        return rng.integers(0, 256, size=(n, m)).astype(np.uint8)
    proto = rng.integers(0, 256, size=(12, m)).astype(np.uint8)  # clustered, with exact repeats
    codes = proto[rng.integers(0, len(proto), n)]
    moved = rng.random(codes.shape) < 0.1
    codes[moved] = rng.integers(0, 256, int(moved.sum())).astype(np.uint8)
    return codes


def _same_at_all_levels(ix, q, k):
    """Search at every usable level with 1 and 2 threads; all equal the scalar run, bit for bit.
    Returns the scalar result."""
    runs = {}
    for level in usable_levels():
        with simd_level(level):
            runs[level] = [ix.search(q, k=k, num_threads=t) for t in (1, 2)]
    ref = runs["scalar"][0]
    for level_runs in runs.values():
        for run in level_runs:
            for a, b in zip(run, ref):
                np.testing.assert_array_equal(a, b)
    return ref


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("m", [1, 5, 33, 100])
def test_avx2_quantised_scan_is_bit_identical_to_scalar(m, kind):
    # Odd m, m = 1; images of 0..70 patches so they straddle 64-patch blocks and the last
    # block is a padded tail; a few removed images.
    rng = np.random.default_rng(1000 + m)
    offsets = random_offsets(rng, 900, 70)
    c = rng.standard_normal((m, 256, 3)).astype(np.float32)
    ix = pypatch.PatchIndex(3 * m, pypatch.ProductQuantizer.from_centroids(c))
    codes = _codes(rng, kind, int(offsets[-1]), m)
    ix.add_codes(codes, image_offsets=offsets)
    removed = rng.choice(len(offsets) - 1, size=5, replace=False)
    ix.remove(removed.tolist())
    q = rng.standard_normal((3, 3 * m)).astype(np.float32)
    for k in (1, 10):
        ref = _same_at_all_levels(ix, q, k)
        mask = np.zeros(len(offsets) - 1, bool)
        mask[removed] = True
        m_luts = np.einsum("qjd,jkd->qjk", q.reshape(3, m, 3), c)
        scores = m_luts[:, np.arange(m), codes].sum(-1)
        ref_s, _, _ = reference_search(scores.astype(np.float32), offsets, k, removed=mask)
        np.testing.assert_allclose(ref[0], ref_s, rtol=1e-5, atol=1e-5)


def test_avx2_quantised_scan_with_exact_ties_and_a_constant_table():
    # Identical images tie exactly (broken by image index); a constant table makes every image
    # tie, so every image is a candidate of the quantised stage.
    rng = np.random.default_rng(7)
    m, P = 9, 5
    base = rng.integers(0, 256, size=(40, P, m)).astype(np.uint8)
    codes = np.ascontiguousarray(np.repeat(base, 15, axis=0).reshape(-1, m))
    for c in (rng.standard_normal((m, 256, 2)).astype(np.float32), np.ones((m, 256, 2), np.float32)):
        ix = pypatch.PatchIndex(2 * m, pypatch.ProductQuantizer.from_centroids(c))
        ix.add_codes(codes, patches_per_image=P)
        q = rng.standard_normal((2, 2 * m)).astype(np.float32)
        for k in (1, 16, 40):
            _same_at_all_levels(ix, q, k)

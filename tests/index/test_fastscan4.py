"""The 4-bit PQ fast scan (nbits=4, "blocked32_fs4" codes): at every SIMD level and thread
count a search returns the same scores, images and patches, bit for bit, as the scalar level's
exact float scan, which itself matches a numpy reference of 4-bit ADC + per-image max; the
codes survive add in pieces, remove, compact; searches running while another thread adds see
one of the index's states."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import pypatch
from _scan_reference import random_offsets, reference_search
from _simd_levels import simd_level, usable_levels


def _index(rng, m, dsub=2, centroids=None):
    c = rng.standard_normal((m, 16, dsub)).astype(np.float32) if centroids is None else centroids
    return pypatch.PatchIndex(m * dsub, pypatch.ProductQuantizer.from_centroids(c)), c


def _codes(rng, kind, n, m):
    if kind == "random":  # scores crowd together: many candidates near the cut
        return rng.integers(0, 16, size=(n, m)).astype(np.uint8)
    proto = rng.integers(0, 16, size=(12, m)).astype(np.uint8)  # clustered, with exact repeats
    codes = proto[rng.integers(0, len(proto), n)]
    moved = rng.random(codes.shape) < 0.1
    codes[moved] = rng.integers(0, 16, int(moved.sum())).astype(np.uint8)
    return codes


def _same_at_all_levels(ix, q, k):
    """Every usable level, 1 and 2 threads: equal to the scalar one-thread run. Returns it."""
    runs = {}
    for level in usable_levels():
        with simd_level(level):
            runs[level] = [ix.search(q, k=k, num_threads=t) for t in (1, 2)]
    ref = runs["scalar"][0]
    for level, level_runs in runs.items():
        for run in level_runs:
            for a, b in zip(run, ref):
                np.testing.assert_array_equal(a, b, err_msg=level)
    return ref


def _numpy_reference(q, c, codes, offsets, k, removed=None):
    m, _, dsub = c.shape
    luts = np.einsum("qjd,jkd->qjk", q.reshape(len(q), m, dsub), c)
    scores = luts[:, np.arange(m), codes].sum(-1).astype(np.float32)
    return reference_search(scores, offsets, k, removed=removed)


def test_levels_name_their_fastscan4_kernel():
    with simd_level("scalar"):
        assert pypatch.simd_info()["fastscan4"] == ""
    if "avx2" in usable_levels():
        with simd_level("avx2"):
            assert pypatch.simd_info()["fastscan4"] == "avx2"
    if "avx512" in usable_levels():
        with simd_level("avx512"):
            assert pypatch.simd_info()["fastscan4"] == "avx512"
    if "neon" in usable_levels():  # aarch64: both quantised scans have NEON kernels
        with simd_level("neon"):
            assert pypatch.simd_info()["fastscan4"] == "neon"
            assert pypatch.simd_info()["quant_scan"] == "neon"


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("m", [1, 2, 5, 16, 33, 64])
def test_fastscan4_is_bit_identical_to_the_exact_scan(m, kind):
    # Odd m, m = 1; images of 0..70 patches straddle 32-patch blocks; a few removed images.
    rng = np.random.default_rng(2000 + m)
    offsets = random_offsets(rng, 900, 70)
    ix, c = _index(rng, m, dsub=3)
    codes = _codes(rng, kind, int(offsets[-1]), m)
    ix.add_codes(codes, image_offsets=offsets)
    np.testing.assert_array_equal(ix._ix.codes(), codes)
    removed = rng.choice(len(offsets) - 1, size=7, replace=False)
    ix.remove(removed.tolist())
    mask = np.zeros(len(offsets) - 1, bool)
    mask[removed] = True
    q = rng.standard_normal((3, 3 * m)).astype(np.float32)
    for k in (1, 10, 50):
        got = _same_at_all_levels(ix, q, k)
        ref_s, ref_i, _ = _numpy_reference(q, c, codes, offsets, k, mask)
        np.testing.assert_allclose(got[0], ref_s, rtol=1e-5, atol=1e-5)
        assert not np.isin(got[1], removed).any()


def test_fastscan4_with_exact_ties_and_a_constant_table():
    # Identical images tie exactly (broken by image index); a constant table makes every image
    # tie, so every image is a candidate of the quantised stage.
    rng = np.random.default_rng(8)
    m, P = 9, 5
    base = rng.integers(0, 16, size=(40, P, m)).astype(np.uint8)
    codes = np.ascontiguousarray(np.repeat(base, 15, axis=0).reshape(-1, m))
    for c in (rng.standard_normal((m, 16, 2)).astype(np.float32), np.ones((m, 16, 2), np.float32)):
        ix, _ = _index(rng, m, centroids=c)
        ix.add_codes(codes, patches_per_image=P)
        q = rng.standard_normal((2, 2 * m)).astype(np.float32)
        for k in (1, 16, 40):
            got = _same_at_all_levels(ix, q, k)
            ref = _numpy_reference(q, c, codes, np.arange(0, len(codes) + 1, P), k)
            np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)


def test_large_m_and_overflowing_tables_take_the_exact_path():
    rng = np.random.default_rng(9)
    # m = 258: u16 sums could wrap, the exact float path runs at every level
    ix, c = _index(rng, 258, dsub=1)
    codes = _codes(rng, "random", 600, 258)
    ix.add_codes(codes, patches_per_image=6)
    q = rng.standard_normal((2, 258)).astype(np.float32)
    got = _same_at_all_levels(ix, q, 5)
    ref = _numpy_reference(q, c, codes, np.arange(0, 601, 6), 5)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)
    # finite centroids and queries whose products overflow to +-inf: no float -> int of those.
    # (Where the value rule |x| <= 1e15 refuses such centroids, the largest allowed ones.)
    c = rng.standard_normal((4, 16, 2)).astype(np.float32) * np.float32(1e38)
    try:
        ix, _ = _index(rng, 4, centroids=c)
    except pypatch.errors.InvalidArgumentError:
        ix, _ = _index(rng, 4, centroids=np.clip(c, -1e15, 1e15))
    ix.add_codes(_codes(rng, "random", 300, 4), patches_per_image=3)
    _same_at_all_levels(ix, np.full((1, 8), 100, np.float32), 5)


def test_add_in_pieces_remove_and_compact():
    rng = np.random.default_rng(10)
    m = 7
    offsets = random_offsets(rng, 300, 40)
    codes = _codes(rng, "random", int(offsets[-1]), m)
    whole, c = _index(rng, m)
    whole.add_codes(codes, image_offsets=offsets)
    pieces, _ = _index(rng, m, centroids=c)
    for a, b in ((0, 1), (1, 17), (17, 150), (150, 300)):  # pieces end inside 32-patch blocks
        pieces.add_codes(codes[offsets[a]:offsets[b]], image_offsets=offsets[a:b + 1] - offsets[a])
    np.testing.assert_array_equal(pieces._ix.codes(), codes)
    q = rng.standard_normal((2, 2 * m)).astype(np.float32)
    for x, y in zip(_same_at_all_levels(pieces, q, 10), _same_at_all_levels(whole, q, 10)):
        np.testing.assert_array_equal(x, y)
    # remove then compact: the same as an index of the kept images only
    drop = rng.choice(300, size=40, replace=False)
    pieces.remove(drop.tolist())
    before = _same_at_all_levels(pieces, q, 10)
    mapping = pieces.compact()
    keep = np.setdiff1d(np.arange(300), drop)
    kept, _ = _index(rng, m, centroids=c)
    counts = np.diff(offsets)[keep]
    kept.add_codes(np.concatenate([codes[offsets[i]:offsets[i + 1]] for i in keep]), patches_per_image=counts)
    np.testing.assert_array_equal(pieces._ix.codes(), kept._ix.codes())
    after = _same_at_all_levels(pieces, q, 10)
    for x, y in zip(after, _same_at_all_levels(kept, q, 10)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(mapping[before[1]], after[1])
    np.testing.assert_array_equal(before[0], after[0])


def test_searches_while_another_thread_adds_see_a_consistent_state():
    rng = np.random.default_rng(11)
    m, P, n_batches, per_batch = 8, 30, 12, 50
    c = rng.standard_normal((m, 16, 2)).astype(np.float32)
    batches = [_codes(rng, "random", per_batch * P, m) for _ in range(n_batches)]
    q = rng.standard_normal((1, 2 * m)).astype(np.float32)
    # the answer for every state the index passes through (b batches added)
    expected = []
    for b in range(n_batches + 1):
        ix, _ = _index(rng, m, centroids=c)
        if b:
            ix.add_codes(np.concatenate(batches[:b]), patches_per_image=P)
        expected.append(ix.search(q, k=5, num_threads=1))
    ix, _ = _index(rng, m, centroids=c)
    seen, errors = [], []

    def search_loop():
        try:
            while len(seen) < 400 and not done.is_set():
                s, i, p = ix.search(q, k=5, num_threads=1)
                seen.append((s, i, p))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    done = threading.Event()
    threads = [threading.Thread(target=search_loop) for _ in range(2)]
    for t in threads:
        t.start()
    for b in batches:
        ix.add_codes(b, patches_per_image=P)
    done.set()
    for t in threads:
        t.join()
    assert not errors and seen
    for s, i, p in seen:
        assert any(np.array_equal(s, e[0]) and np.array_equal(i, e[1]) and np.array_equal(p, e[2])
                   for e in expected)

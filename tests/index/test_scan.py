"""The fused PQ scan (per-image max, argmax, top-k) against a numpy reference, at every SIMD
level: exact on integer-valued tables, within float tolerance on random data."""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from _scan_reference import random_offsets, reference_search
from _subprocess import run_python
from _simd_levels import simd_level, usable_levels


def integer_index(m: int, dsub: int, offsets: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    c = rng.integers(-4, 5, size=(m, 256, dsub)).astype(np.float32)
    pq = pypatch.ProductQuantizer.from_centroids(c)
    ix = pypatch.PatchIndex(m * dsub, pq)
    codes = rng.integers(0, 256, size=(int(offsets[-1]), m)).astype(np.uint8)
    ix.add_codes(codes, image_offsets=offsets)
    return ix, c, codes


def adc_scores(q: np.ndarray, c: np.ndarray, codes: np.ndarray) -> np.ndarray:
    m, _, dsub = c.shape
    luts = np.einsum("qjd,jkd->qjk", q.reshape(len(q), m, dsub), c)
    return luts[:, np.arange(m), codes].sum(-1) if len(codes) else np.zeros((len(q), 0), np.float32)


@pytest.mark.parametrize("level", usable_levels())
@pytest.mark.parametrize("m", [1, 2, 8, 16, 32, 48, 64])
def test_scan_matches_numpy_exactly_on_integer_tables(level, m):
    rng = np.random.default_rng(m)
    dsub = 3  # odd dims: 3 * m
    offsets = random_offsets(rng, 60, 9)
    ix, c, codes = integer_index(m, dsub, offsets, seed=m)
    q = rng.integers(-3, 4, size=(5, m * dsub)).astype(np.float32)
    ref = reference_search(adc_scores(q, c, codes).astype(np.float32), offsets, k=7)
    with simd_level(level):
        for nq in (1, 5):  # one and many queries
            got = ix.search(q[:nq], k=7)
            for g, r in zip(got, ref):
                np.testing.assert_array_equal(g, r[:nq])


@pytest.mark.parametrize("level", usable_levels())
def test_scan_on_random_float_data_and_trained_pq(level):
    rng = np.random.default_rng(11)
    offsets = random_offsets(rng, 200, 12)
    x = rng.standard_normal((int(offsets[-1]), 40)).astype(np.float32)
    pq = pypatch.ProductQuantizer(40, 8).train(x, iters=3)
    ix = pypatch.PatchIndex(40, pq)
    ix.add(x, image_offsets=offsets)
    q = rng.standard_normal((4, 40)).astype(np.float32)
    ref_s, ref_i, _ = reference_search(adc_scores(q, pq.centroids, ix._ix.codes()), offsets, k=10)
    with simd_level(level):
        s, i, p = ix.search(q, k=10)
    np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-5)
    # order may differ only between images whose scores are within rounding of each other
    for qi in range(4):
        if not np.array_equal(i[qi], ref_i[qi]):
            assert np.allclose(np.sort(s[qi]), np.sort(ref_s[qi]), atol=1e-5)
    # the winning patch really scores the image's score
    for qi in range(4):
        for r in range(10):
            rec = ix.reconstruct(int(i[qi, r]))
            assert abs(rec[p[qi, r]] @ q[qi] - s[qi, r]) < 1e-4


def test_k_larger_than_images_pads_and_removed_images_are_skipped():
    offsets = np.array([0, 2, 2, 5, 6], dtype=np.int64)  # image 1 is empty
    ix, c, codes = integer_index(4, 2, offsets, seed=3)
    q = np.ones((1, 8), np.float32)
    s, i, p = ix.search(q, k=6)  # k is clamped to the 4 images; the empty one is padding
    assert s.shape == i.shape == p.shape == (1, 4)
    assert (i[0, 3:] == -1).all() and (p[0, 3:] == -1).all() and np.isneginf(s[0, 3:]).all()
    assert sorted(i[0, :3]) == [0, 2, 3]
    ix.remove([2])
    assert len(ix) == 4 and ix.is_removed(2) and ix.removed.tolist() == [False, False, True, False]
    ref = reference_search(adc_scores(q, c, codes).astype(np.float32), offsets, 4,
                           removed=[False, False, True, False])
    for g, r in zip(ix.search(q, k=6), ref):
        np.testing.assert_array_equal(g, r)
    mapping = ix.compact()
    assert mapping.tolist() == [0, 1, -1, 2] and len(ix) == 3 and ix.num_patches == 3
    assert ix.image_offsets.tolist() == [0, 2, 2, 3]


def test_single_1d_query_is_accepted():
    offsets = np.arange(0, 31, 3, dtype=np.int64)
    ix, _, _ = integer_index(2, 2, offsets, seed=4)
    q = np.arange(4, dtype=np.float32)
    one = ix.search(q, k=3)
    batch = ix.search(q[None, :], k=3)
    for a, b in zip(one, batch):
        np.testing.assert_array_equal(a, b)
    assert one[0].shape == (1, 3)


def test_levels_are_bit_identical_on_integer_data():
    rng = np.random.default_rng(5)
    offsets = random_offsets(rng, 300, 30)
    ix, _, _ = integer_index(32, 3, offsets, seed=5)
    q = rng.integers(-3, 4, size=(3, 96)).astype(np.float32)
    results = []
    for level in usable_levels():
        with simd_level(level):
            results.append(ix.search(q, k=20))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("m", [8, 32])
def test_levels_are_bit_identical_on_random_codes_and_float_tables(m):
    # Uniformly random codes make scores crowd together: the quantised AVX-512 path must still
    # return exactly the float ranking (it re-scores its candidates with the float tables).
    rng = np.random.default_rng(m)
    offsets = random_offsets(rng, 3000, 30)
    c = rng.standard_normal((m, 256, 4)).astype(np.float32)
    ix = pypatch.PatchIndex(4 * m, pypatch.ProductQuantizer.from_centroids(c))
    codes = rng.integers(0, 256, size=(int(offsets[-1]), m)).astype(np.uint8)
    ix.add_codes(codes, image_offsets=offsets)
    q = rng.standard_normal((4, 4 * m)).astype(np.float32)
    results = {}
    for level in usable_levels():
        with simd_level(level):
            results[level] = [ix.search(q, k=25, num_threads=t) for t in (1, 2)]
    ref = results["scalar"][0]
    for level, runs in results.items():
        for run in runs:
            for a, b in zip(run, ref):
                np.testing.assert_array_equal(a, b)
    ref_s, ref_i, ref_p = reference_search(adc_scores(q, c, codes), offsets, k=25)
    np.testing.assert_allclose(ref[0], ref_s, rtol=1e-5, atol=1e-5)


def test_empty_index_returns_no_columns():
    ix = pypatch.PatchIndex(6, pypatch.ProductQuantizer.from_centroids(np.ones((3, 256, 2), np.float32)))
    s, i, p = ix.search(np.ones((2, 6), np.float32), k=4)
    assert s.shape == i.shape == p.shape == (2, 0)  # k is clamped to the 0 images
    assert len(ix) == 0 and ix.num_patches == 0


def test_env_var_forces_the_level_in_a_fresh_process():
    code = "import pypatch; print(pypatch.simd_info()['selected'])"
    for level in usable_levels():
        out = run_python("-c", code, env={"PYPATCH_SIMD": level})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == level


@pytest.mark.parametrize("level", usable_levels())
def test_four_bit_index_matches_numpy(level):
    rng = np.random.default_rng(44)
    offsets = random_offsets(rng, 80, 10)
    c = rng.integers(-4, 5, size=(6, 16, 3)).astype(np.float32)
    ix = pypatch.PatchIndex(18, pypatch.ProductQuantizer.from_centroids(c))
    codes = rng.integers(0, 16, size=(int(offsets[-1]), 6)).astype(np.uint8)
    ix.add_codes(codes, image_offsets=offsets)
    q = rng.integers(-3, 4, size=(3, 18)).astype(np.float32)
    ref = reference_search(adc_scores(q, c, codes).astype(np.float32), offsets, k=8)
    with simd_level(level):
        got = ix.search(q, k=8)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_levels_are_bit_identical_with_exact_and_near_ties_at_the_cut(k):
    # Clustered-like data: groups of identical images (exact ties, broken by image index) and
    # copies differing in one code (near-ties far below the 8-bit table's resolution). The
    # quantised path re-scores best-first and stops early; the k-th place must still be exact.
    rng = np.random.default_rng(100 + k)
    m, P = 16, 7
    c = rng.standard_normal((m, 256, 4)).astype(np.float32)
    base = rng.integers(0, 256, size=(60, P, m)).astype(np.uint8)
    images = np.repeat(base, 20, axis=0)  # 1200 images, each pattern 20 times, in runs
    tweak = rng.random(len(images)) < 0.5  # half the copies get one code moved by one
    rows, cols = rng.integers(0, P, len(images)), rng.integers(0, m, len(images))
    images[tweak, rows[tweak], cols[tweak]] ^= 1
    perm = rng.permutation(len(images))  # spread ties across tasks and threads
    codes = np.ascontiguousarray(images[perm].reshape(-1, m))
    ix = pypatch.PatchIndex(4 * m, pypatch.ProductQuantizer.from_centroids(c))
    ix.add_codes(codes, patches_per_image=P)
    q = np.concatenate([rng.standard_normal((3, 4 * m)),
                        c[np.arange(m), base[0, 0]].reshape(1, -1)]).astype(np.float32)
    results = {}
    for level in usable_levels():
        with simd_level(level):
            results[level] = [ix.search(q, k=k, num_threads=t) for t in (1, 2)]
    ref = results["scalar"][0]
    for runs in results.values():
        for run in runs:
            for a, b in zip(run, ref):
                np.testing.assert_array_equal(a, b)
    offsets = np.arange(len(images) + 1) * P
    ref_s, ref_i, _ = reference_search(adc_scores(q, c, codes), offsets, k=k)
    np.testing.assert_allclose(ref[0], ref_s, rtol=1e-5, atol=1e-5)
    # exact ties in the reference ranking come out by ascending image index
    s, i = ref[0], ref[1]
    tied = s[:, 1:] == s[:, :-1]
    assert (i[:, 1:][tied] > i[:, :-1][tied]).all()

"""Exact re-rank from a second store: ``PatchIndex.score_images`` (the exact per-image max over
ALL an image's patches, at every SIMD level, against numpy and bit for bit against the store's own
search) and ``search(rerank=, rerank_k=)`` (a first stage's top rerank_k images re-scored by
another index of the same images), including mapped second stores and layout checks.

Integer-valued vectors, centroids and queries make every score an exact small integer whatever
the summation order, so the numpy references are exact and ties (by image, by patch) are common."""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from _scan_reference import random_offsets
from _simd_levels import simd_level, usable_levels
from pypatch.errors import InvalidArgumentError, InvalidTypeError

DIM, M = 16, 8


def _int_data(rng, n, dim=DIM):
    return rng.integers(-2, 3, size=(n, dim)).astype(np.float32)


def _store(kind, rng, x, offsets):
    """An exhaustive index of kind f32 | f16 | pq8 | pq4 | ivf4 | ivf8 holding x grouped by offsets."""
    if kind in ("f32", "f16"):
        ix = pypatch.PatchIndex(DIM, flat_dtype="float32" if kind == "f32" else "float16")
    else:
        ksub = 16 if kind.endswith("4") else 256
        c = rng.integers(-2, 3, size=(M, ksub, DIM // M)).astype(np.float32)
        pq = pypatch.ProductQuantizer.from_centroids(c)
        if kind.startswith("ivf"):
            ix = pypatch.PatchIndex(DIM, pq, nlist=4)
            ix.set_coarse_centroids(rng.standard_normal((4, DIM)).astype(np.float32))
            ix.nprobe = 2
        else:
            ix = pypatch.PatchIndex(DIM, pq)
    ix.add(x, image_offsets=offsets)
    return ix


def _patch_scores(ix, q):
    """numpy: (nq, n_patches) exact scores of every stored patch (integer-valued, so exact)."""
    if ix.pq is None:
        rows = np.concatenate([ix.reconstruct(i) for i in range(len(ix))]) if len(ix) else \
            np.zeros((0, DIM), np.float32)
        return (q.astype(np.float64) @ rows.astype(np.float64).T).astype(np.float32)
    c = ix.pq.centroids.astype(np.float64)                       # (m, ksub, dsub)
    luts = np.einsum("qjd,jkd->qjk", q.astype(np.float64).reshape(len(q), M, -1), c)
    codes = ix._ix.codes()                                       # (n_patches, m) row-major
    return luts[:, np.arange(M), codes].sum(-1).astype(np.float32)


def _numpy_score_images(patch_scores, offsets, removed, cand):
    nq, nc = cand.shape
    s = np.full((nq, nc), -np.inf, np.float32)
    p = np.full((nq, nc), -1, np.int64)
    for qi in range(nq):
        for c in range(nc):
            i = cand[qi, c]
            if i < 0 or removed[i] or offsets[i] == offsets[i + 1]:
                continue
            seg = patch_scores[qi, offsets[i]:offsets[i + 1]]
            p[qi, c] = int(np.argmax(seg))  # lowest ordinal on ties
            s[qi, c] = seg[p[qi, c]]
    return s, p


@pytest.mark.parametrize("kind", ["f32", "f16", "pq8", "pq4"])
def test_score_images_matches_numpy_at_every_level(kind):
    rng = np.random.default_rng(1)
    offsets = random_offsets(rng, 90, 40)
    x = _int_data(rng, int(offsets[-1]))
    ix = _store(kind, rng, x, offsets)
    ix.remove([int(np.flatnonzero(np.diff(offsets))[0]), 7])  # a non-empty one and image 7
    q = _int_data(rng, 5)
    cand = rng.integers(-1, len(ix), size=(5, 60)).astype(np.int64)  # -1 padding, repeats
    cand[:, 0] = -1
    cand[:, 1] = 7
    ref_s, ref_p = _numpy_score_images(_patch_scores(ix, q), offsets, ix.removed, cand)
    assert (ref_p[:, 2:] >= 0).any() and (ref_p == -1).any()
    for level in usable_levels():
        with simd_level(level):
            for nt in (1, 2):
                s, p = ix.score_images(q, cand, num_threads=nt)
                assert s.dtype == np.float32 and p.dtype == np.int64 and s.shape == cand.shape
                np.testing.assert_array_equal(s, ref_s, err_msg=f"{kind} {level} {nt}")
                np.testing.assert_array_equal(p, ref_p, err_msg=f"{kind} {level} {nt}")


@pytest.mark.parametrize("kind", ["f32", "f16", "pq8", "pq4"])
def test_score_images_is_the_stores_own_search_bit_for_bit(kind):
    """Real-valued data: the scores and winning patches equal what the store's exhaustive search
    returns for each image (the scan's quantised paths included), at every level."""
    rng = np.random.default_rng(2)
    offsets = random_offsets(rng, 150, 50)
    x = rng.standard_normal((int(offsets[-1]), DIM)).astype(np.float32)
    if kind in ("f32", "f16"):
        ix = pypatch.PatchIndex(DIM, flat_dtype="float32" if kind == "f32" else "float16")
    else:
        pq = pypatch.ProductQuantizer(DIM, M, nbits=4 if kind == "pq4" else 8).train(x, iters=4)
        ix = pypatch.PatchIndex(DIM, pq)
    ix.add(x, image_offsets=offsets)
    q = rng.standard_normal((4, DIM)).astype(np.float32)
    cand = np.tile(np.arange(len(ix), dtype=np.int64), (4, 1))
    for level in usable_levels():
        with simd_level(level):
            s_all, i_all, p_all = ix.search(q, k=len(ix))
            s, p = ix.score_images(q, cand)
            for qi in range(len(q)):
                hit = i_all[qi] >= 0
                np.testing.assert_array_equal(s[qi, i_all[qi, hit]], s_all[qi, hit], err_msg=level)
                np.testing.assert_array_equal(p[qi, i_all[qi, hit]], p_all[qi, hit], err_msg=level)
                missing = np.setdiff1d(np.arange(len(ix)), i_all[qi, hit])  # the empty images
                assert (np.diff(offsets)[missing] == 0).all()
                assert (p[qi, missing] == -1).all() and np.isneginf(s[qi, missing]).all()


def test_score_images_refuses_bad_input():
    rng = np.random.default_rng(3)
    x = _int_data(rng, 40)
    ix = _store("f32", rng, x, np.arange(0, 41, 10))
    q = _int_data(rng, 2)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        ix.score_images(q, np.array([[0, 4], [0, 1]], np.int64))
    with pytest.raises(InvalidArgumentError, match="out of range"):
        ix.score_images(q, np.array([[0, -2], [0, 1]], np.int64))
    with pytest.raises(InvalidArgumentError, match="one row per query"):
        ix.score_images(q, np.zeros((3, 2), np.int64))
    with pytest.raises(InvalidTypeError):
        ix.score_images(q, np.zeros((2, 2), np.int32))
    with pytest.raises(InvalidTypeError):
        ix.score_images(q, [[0, 1], [1, 2]])
    ivf = _store("ivf4", rng, _int_data(rng, 40), np.arange(0, 41, 10))
    with pytest.raises(InvalidArgumentError, match="inverted-file"):
        ivf.score_images(q, np.zeros((2, 2), np.int64))
    s, p = ix.score_images(q, np.zeros((2, 0), np.int64))
    assert s.shape == (2, 0) and p.shape == (2, 0)


def _reference_rerank(first, second, q, k, rerank_k, nprobe=None):
    """First stage's top rerank_k from first.search, then numpy's exact max over the candidates'
    vectors in the second store, then (score desc, image asc)."""
    _, cand, _ = first.search(q, k=rerank_k, nprobe=nprobe)
    offsets = second.image_offsets
    s, p = _numpy_score_images(_patch_scores(second, q), offsets, second.removed, cand)
    kk = min(k, cand.shape[1])
    out = [np.full((len(q), kk), -np.inf, np.float32), np.full((len(q), kk), -1, np.int64),
           np.full((len(q), kk), -1, np.int64)]
    for qi in range(len(q)):
        ok = p[qi] >= 0
        order = np.lexsort((cand[qi, ok], -s[qi, ok]))[:kk]
        n = len(order)
        out[0][qi, :n] = s[qi, ok][order]
        out[1][qi, :n] = cand[qi, ok][order]
        out[2][qi, :n] = p[qi, ok][order]
    return tuple(out)


@pytest.mark.parametrize("first_kind,second_kind", [("ivf4", "f16"), ("ivf4", "pq8"), ("pq4", "f32"),
                                                    ("ivf8", "f32")])
def test_search_rerank_matches_numpy(first_kind, second_kind):
    rng = np.random.default_rng(4)
    offsets = random_offsets(rng, 300, 20)
    x = _int_data(rng, int(offsets[-1]))
    first = _store(first_kind, rng, x, offsets)
    second = _store(second_kind, rng, x, offsets)
    q = _int_data(rng, 6)
    first.remove([3, 11])
    top = first.search(q[:2], k=2)[1].ravel()  # removed in the exact store only: dropped
    gone = np.unique(np.concatenate([[11, 40], top]))
    second.remove(gone)  # removed in either: never returned
    for level in usable_levels():
        with simd_level(level):
            for k, rk in ((10, 30), (5, 5), (1, 2)):
                got = first.search(q, k=k, rerank=second, rerank_k=rk, num_threads=2)
                ref = _reference_rerank(first, second, q, k, rk)
                for a, b in zip(got, ref):
                    np.testing.assert_array_equal(a, b, err_msg=f"{level} k={k} rerank_k={rk}")
                assert not np.isin(got[1], np.concatenate([[3], gone])).any()
            got = first.search(q, k=7, rerank=second)  # default rerank_k: max(4k, 100)
            for a, b in zip(got, _reference_rerank(first, second, q, 7, 100)):
                np.testing.assert_array_equal(a, b, err_msg=level)
    if first.is_ivf:  # nprobe reaches the first stage
        got = first.search(q, k=10, rerank=second, rerank_k=40, nprobe=1)
        for a, b in zip(got, _reference_rerank(first, second, q, 10, 40, nprobe=1)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("flat", ["float32", "float16"])
def test_rerank_all_candidates_equals_the_flat_stores_own_search(flat):
    rng = np.random.default_rng(5)
    offsets = random_offsets(rng, 200, 30)
    x = rng.standard_normal((int(offsets[-1]), DIM)).astype(np.float32)
    pq = pypatch.ProductQuantizer(DIM, M, nbits=4).train(x, iters=4)
    first = pypatch.PatchIndex(DIM, pq)
    first.add(x, image_offsets=offsets)
    second = pypatch.PatchIndex(DIM, flat_dtype=flat)
    second.add(x, image_offsets=offsets)
    for ix in (first, second):
        ix.remove([0, 5, 77])
    q = rng.standard_normal((5, DIM)).astype(np.float32)
    for level in usable_levels():
        with simd_level(level):
            for k in (1, 10, 250):  # 250: more than the non-empty images, so padded rows
                got = first.search(q, k=k, rerank=second, rerank_k=max(k, len(first)))
                want = second.search(q, k=k)
                for a, b in zip(got, want):
                    np.testing.assert_array_equal(a, b, err_msg=f"{level} k={k}")


def test_rerank_refuses_mismatched_stores_and_bad_arguments():
    rng = np.random.default_rng(6)
    x = _int_data(rng, 60)
    first = _store("ivf4", rng, x, np.arange(0, 61, 6))
    q = _int_data(rng, 2)
    fewer = _store("f16", rng, x[:54], np.arange(0, 55, 6))
    with pytest.raises(InvalidArgumentError, match="same images"):
        first.search(q, rerank=fewer)
    other_counts = _store("f16", rng, x, np.array([0, 5, 12, 18, 24, 30, 36, 42, 48, 54, 60]))
    with pytest.raises(InvalidArgumentError, match="different per-image patch counts"):
        first.search(q, rerank=other_counts)
    with pytest.raises(InvalidArgumentError, match="exhaustive"):
        first.search(q, rerank=_store("ivf8", rng, x, np.arange(0, 61, 6)))
    wide = pypatch.PatchIndex(2 * DIM, flat_dtype="float16")
    wide.add(np.zeros((60, 2 * DIM), np.float32), patches_per_image=6)
    with pytest.raises(InvalidArgumentError, match="dim"):
        first.search(q, rerank=wide)
    with pytest.raises(InvalidTypeError):
        first.search(q, rerank="index.ptch")
    good = _store("f16", rng, x, np.arange(0, 61, 6))
    with pytest.raises(InvalidArgumentError, match="rerank_k must be >= k"):
        first.search(q, k=10, rerank=good, rerank_k=9)
    with pytest.raises(InvalidArgumentError, match="rerank_k"):
        first.search(q, k=1, rerank=good, rerank_k=0)
    with pytest.raises(InvalidTypeError):
        first.search(q, k=1, rerank=good, rerank_k=2.5)
    with pytest.raises(InvalidArgumentError, match="needs rerank"):
        first.search(q, k=1, rerank_k=5)
    first.search(q, rerank=good)  # accepted (and the verdict cached) ...
    good.remove([1, 2])
    good.compact()  # ... then the layout changes while len and num_patches come back equal
    good.add(x[:12], patches_per_image=[2, 10])
    assert len(good) == len(first) and good.num_patches == first.num_patches
    with pytest.raises(InvalidArgumentError, match="different per-image patch counts"):
        first.search(q, rerank=good)


def test_rerank_from_a_mapped_store(tmp_path):
    rng = np.random.default_rng(7)
    offsets = random_offsets(rng, 400, 25)
    x = _int_data(rng, int(offsets[-1]))
    first = _store("ivf4", rng, x, offsets)
    second = _store("f16", rng, x, offsets)
    second.remove([2])
    path = tmp_path / "exact.ptch"
    second.save(path)
    mapped = pypatch.PatchIndex.load(path, mmap=True)
    assert mapped._ix.is_view
    q = _int_data(rng, 4)
    got = first.search(q, k=10, rerank=mapped, rerank_k=50)
    for a, b in zip(got, first.search(q, k=10, rerank=second, rerank_k=50)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(got, _reference_rerank(first, mapped, q, 10, 50)):
        np.testing.assert_array_equal(a, b)

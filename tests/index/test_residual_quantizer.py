"""ResidualQuantizer against numpy (exact on integer-valued codebooks), faiss's
ResidualQuantizer as a peer, and the PatchIndex scans it shares with ProductQuantizer."""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from pypatch.errors import InvalidArgumentError, NotTrainedError
from _simd_levels import simd_level, usable_levels


def integer_rq(m: int, dim: int, nbits: int = 8, seed: int = 0):
    """A quantizer with small integer codewords: every distance, dot and residual is exact."""
    rng = np.random.default_rng(seed)
    c = rng.integers(-6, 7, size=(m, 1 << nbits, dim)).astype(np.float32)
    return pypatch.ResidualQuantizer.from_centroids(c), c


def numpy_greedy_encode(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Stage by stage, the codeword nearest (L2) to what the earlier stages left; the first
    minimum on ties, as the core promises."""
    r = x.astype(np.float64).copy()
    codes = np.empty((len(x), len(c)), np.uint8)
    for j, cj in enumerate(c.astype(np.float64)):
        d = ((r[:, None, :] - cj[None]) ** 2).sum(-1)
        codes[:, j] = d.argmin(1)
        r -= cj[codes[:, j]]
    return codes


def clustered(rng, n: int, d: int, centers: int = 40) -> np.ndarray:
    c = rng.standard_normal((centers, d))
    x = c[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("level", usable_levels())
@pytest.mark.parametrize("m,dim,nbits", [(1, 3, 8), (3, 5, 8), (4, 19, 8), (2, 37, 4), (6, 16, 4)])
def test_encode_decode_lut_match_numpy_exactly(level, m, dim, nbits):
    """Odd dims and both code sizes reach every row and column tail of the ip_rows kernels."""
    rq, c = integer_rq(m, dim, nbits)
    rng = np.random.default_rng(1)
    x = rng.integers(-9, 10, size=(203, dim)).astype(np.float32)  # many exact ties
    q = rng.integers(-5, 6, size=(7, dim)).astype(np.float32)
    with simd_level(level):
        codes = rq.encode(x)
        luts = rq.compute_luts(q)
        one = rq.compute_lut(q[3])
        dec = rq.decode(codes)
    np.testing.assert_array_equal(codes, numpy_greedy_encode(x, c))
    np.testing.assert_array_equal(luts, np.einsum("jkd,qd->qjk", c, q))
    np.testing.assert_array_equal(one, luts[3])
    np.testing.assert_array_equal(dec, sum(c[j][codes[:, j]] for j in range(m)))


def test_codes_and_tables_are_bit_identical_at_every_level():
    rng = np.random.default_rng(2)
    x = clustered(rng, 3000, 40)
    rq = pypatch.ResidualQuantizer(40, 6).train(x, iters=4, seed=1)
    q = rng.standard_normal((9, 40)).astype(np.float32)
    got = {}
    for level in usable_levels():
        with simd_level(level):
            again = pypatch.ResidualQuantizer(40, 6).train(x, iters=4, seed=1)
            got[level] = (rq.encode(x[:500]), rq.compute_luts(q), again.centroids)
    first = next(iter(got.values()))
    for level, (codes, luts, cents) in got.items():
        np.testing.assert_array_equal(codes, first[0], err_msg=level)
        np.testing.assert_array_equal(luts, first[1], err_msg=level)
        np.testing.assert_array_equal(cents, first[2], err_msg=level)


def test_training_is_deterministic_and_thread_count_independent():
    x = clustered(np.random.default_rng(3), 2000, 24)
    a = pypatch.ResidualQuantizer(24, 4).train(x, iters=3, seed=7, num_threads=1).centroids
    b = pypatch.ResidualQuantizer(24, 4).train(x, iters=3, seed=7, num_threads=2).centroids
    c = pypatch.ResidualQuantizer(24, 4).train(x, iters=3, seed=8, num_threads=2).centroids
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_error_is_on_par_with_faiss_and_below_pq_at_the_same_bytes():
    """Greedy residual codes against faiss's ResidualQuantizer (beam 1, 10 iterations) and
    PQ with the same 16 bytes on clustered 64-d unit vectors."""
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    x = clustered(rng, 12000, 64)
    train, test = x[:10000], x[10000:]
    rq = pypatch.ResidualQuantizer(64, 16).train(train, iters=10, seed=0)
    err = ((test - rq.decode(rq.encode(test))) ** 2).sum(1).mean()
    peer = faiss.ResidualQuantizer(64, 16, 8)
    peer.max_beam_size = 1
    peer.cp.niter = 10
    peer.train(train)
    err_faiss = ((test - peer.decode(peer.compute_codes(test))) ** 2).sum(1).mean()
    pq = pypatch.ProductQuantizer(64, 16).train(train, iters=10, seed=0)
    err_pq = ((test - pq.decode(pq.encode(test))) ** 2).sum(1).mean()
    assert err < 1.05 * err_faiss, (err, err_faiss)
    assert err < 0.9 * err_pq, (err, err_pq)
    # each stage takes away error on the training rows
    codes, r, last = rq.encode(train), train.astype(np.float64), np.inf
    for j in range(rq.m):
        r = r - rq.centroids[j][codes[:, j]]
        now = (r ** 2).sum(1).mean()
        assert now < last
        last = now


def test_adc_scores_equal_dot_with_decoded_vectors():
    rng = np.random.default_rng(5)
    x = clustered(rng, 3000, 48)
    rq = pypatch.ResidualQuantizer(48, 8).train(x, iters=4)
    codes = rq.encode(x[:500])
    q = rng.standard_normal(48).astype(np.float32)
    lut = rq.compute_lut(q)
    adc = lut[np.arange(rq.m), codes].sum(1)
    np.testing.assert_allclose(adc, rq.decode(codes) @ q, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nbits", [8, 4])
@pytest.mark.parametrize("nlist", [None, 6])
def test_patch_index_search_equals_brute_force_over_decoded(nbits, nlist, tmp_path):
    """Exhaustive and inverted-file PatchIndexes over residual codes return the per-image max
    of q . decoded patch (the IVF probes every list), and so do their saved files."""
    rng = np.random.default_rng(6)
    d = 32
    counts = rng.integers(0, 25, 120)
    counts[:2] = [0, 24]
    x = clustered(rng, int(counts.sum()), d)
    rq = pypatch.ResidualQuantizer(d, 8, nbits=nbits).train(x, iters=4, seed=2)
    ix = pypatch.PatchIndex(d, rq, nlist=nlist)
    if nlist:
        ix.train(x, seed=1)
        ix.nprobe = nlist
    ix.add(x, patches_per_image=counts)
    assert ix.pq.kind == "residual" and isinstance(ix.pq, pypatch.ResidualQuantizer)
    q = rng.standard_normal((5, d)).astype(np.float32)
    y = rq.decode(rq.encode(x))
    off = np.concatenate([[0], np.cumsum(counts)])
    per = np.full((len(q), len(counts)), -np.inf)
    arg = np.full((len(q), len(counts)), -1)
    for i in range(len(counts)):
        if counts[i]:
            s = q @ y[off[i]:off[i + 1]].T
            per[:, i], arg[:, i] = s.max(1), s.argmax(1)
    ref = np.argsort(-per, axis=1, kind="stable")[:, :10]
    path = tmp_path / "rq.ptch"
    ix.save(path)
    for index in (ix, pypatch.PatchIndex.load(path), pypatch.PatchIndex.load(path, mmap=False)):
        scores, images, patches = index.search(q, k=10)
        np.testing.assert_array_equal(images, ref)
        np.testing.assert_allclose(scores, np.take_along_axis(per, ref, 1), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(patches, np.take_along_axis(arg, ref, 1))
        assert index.pq.kind == "residual"


def test_a_stored_quantizer_is_frozen_and_copies_are_not():
    x = clustered(np.random.default_rng(7), 600, 16)
    rq = pypatch.ResidualQuantizer(16, 2).train(x, iters=2)
    ix = pypatch.PatchIndex(16, rq)
    ix.add(x[:30], patches_per_image=10)
    with pytest.raises(InvalidArgumentError, match="ResidualQuantizer.train.*encodes the codes"):
        rq.train(x)
    twin = rq.copy()
    assert isinstance(twin, pypatch.ResidualQuantizer)
    np.testing.assert_array_equal(twin.centroids, rq.centroids)
    twin.train(x, iters=1)  # not frozen


def test_bad_arguments_raise_typed_errors():
    R = pypatch.ResidualQuantizer
    for args in ((8, 0), (8, 257), (1 << 20, 65), (0, 4)):
        with pytest.raises(InvalidArgumentError):
            R(*args)
    with pytest.raises(InvalidArgumentError, match="nbits"):
        R(8, 2, nbits=5)
    rq = R(8, 2)
    assert repr(rq) == "ResidualQuantizer(dim=8, m=2, nbits=8, untrained)"
    with pytest.raises(NotTrainedError, match="ResidualQuantizer.encode"):
        rq.encode(np.zeros((3, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="at least 2\\*\\*nbits=256"):
        rq.train(np.zeros((100, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="256 .* or 16"):
        R.from_centroids(np.zeros((2, 10, 8), np.float32))
    with pytest.raises(InvalidArgumentError):
        R.from_centroids(np.full((2, 16, 8), np.nan, np.float32))
    rq = R.from_centroids(np.ones((2, 16, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="codes must be < 2\\*\\*nbits=16"):
        rq.decode(np.full((1, 2), 16, np.uint8))
    with pytest.raises(InvalidArgumentError, match="pq.dim"):
        pypatch.PatchIndex(9, rq)

"""ProductQuantizer against numpy (exact on integer-valued data) and faiss as a peer."""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from pypatch.errors import InvalidArgumentError, NotTrainedError
from _simd_levels import simd_level, usable_levels


def integer_pq(m: int, dsub: int, nbits: int = 8, seed: int = 0):
    """A quantizer with small distinct integer centroids: every distance and dot is exact."""
    rng = np.random.default_rng(seed)
    ksub = 1 << nbits
    c = rng.integers(-8, 9, size=(m, ksub, dsub)).astype(np.float32)
    return pypatch.ProductQuantizer.from_centroids(c), c


def numpy_encode(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    m, ksub, dsub = c.shape
    codes = np.empty((len(x), m), dtype=np.uint8)
    for j in range(m):
        sub = x[:, j * dsub:(j + 1) * dsub].astype(np.float64)
        d = ((sub[:, None, :] - c[j][None, :, :].astype(np.float64)) ** 2).sum(-1)
        codes[:, j] = d.argmin(1)  # first minimum on ties, as the core promises
    return codes


@pytest.mark.parametrize("level", usable_levels())
@pytest.mark.parametrize("m,dsub,nbits", [(1, 3, 8), (2, 5, 8), (8, 3, 8), (16, 1, 8), (4, 7, 4)])
def test_encode_decode_lut_match_numpy_exactly(level, m, dsub, nbits):
    pq, c = integer_pq(m, dsub, nbits)
    rng = np.random.default_rng(1)
    x = rng.integers(-9, 10, size=(300, m * dsub)).astype(np.float32)  # many exact ties
    q = rng.integers(-5, 6, size=m * dsub).astype(np.float32)
    with simd_level(level):
        codes = pq.encode(x)
        lut = pq.compute_lut(q)
        dec = pq.decode(codes)
    np.testing.assert_array_equal(codes, numpy_encode(x, c))
    expected_lut = np.stack([c[j] @ q[j * dsub:(j + 1) * dsub] for j in range(m)])
    np.testing.assert_array_equal(lut, expected_lut)
    np.testing.assert_array_equal(dec, np.concatenate([c[j][codes[:, j]] for j in range(m)], 1))
    # decode(encode(centroid rows)) gives them back
    rows = np.concatenate([c[j][:5] for j in range(m)], 1)
    np.testing.assert_array_equal(pq.decode(pq.encode(rows)), rows)


def test_adc_scores_equal_dot_with_decoded_vectors():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4000, 48)).astype(np.float32)
    pq = pypatch.ProductQuantizer(48, 12).train(x, iters=5)
    codes = pq.encode(x[:500])
    q = rng.standard_normal(48).astype(np.float32)
    lut = pq.compute_lut(q)
    adc = lut[np.arange(pq.m), codes].sum(1)
    np.testing.assert_allclose(adc, pq.decode(codes) @ q, rtol=1e-5, atol=1e-5)


def test_training_is_deterministic_and_thread_count_independent():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    a = pypatch.ProductQuantizer(16, 4).train(x, iters=4, seed=7, num_threads=1).centroids
    b = pypatch.ProductQuantizer(16, 4).train(x, iters=4, seed=7, num_threads=2).centroids
    c = pypatch.ProductQuantizer(16, 4).train(x, iters=4, seed=8, num_threads=2).centroids
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_cap_limits_training_rows():
    # With a cap of 1 point per centroid, k-means on exactly ksub rows makes every sampled row
    # a centroid: the codebook is a subset of the data rows.
    rng = np.random.default_rng(4)
    x = rng.integers(-1000, 1000, size=(2000, 4)).astype(np.float32)
    pq = pypatch.ProductQuantizer(4, 1).train(x, iters=3, max_points_per_centroid=1)
    cents = {tuple(r) for r in pq.centroids[0]}
    assert len(cents) == 256 and cents <= {tuple(r) for r in x}


def test_four_bit_codes_stay_below_16():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    pq = pypatch.ProductQuantizer(32, 8, nbits=4).train(x)
    codes = pq.encode(x)
    assert pq.centroids.shape == (8, 16, 4) and codes.max() < 16
    with pytest.raises(InvalidArgumentError):
        pq.decode(np.full((1, 8), 16, dtype=np.uint8))


def test_untrained_quantizer_raises_not_trained():
    pq = pypatch.ProductQuantizer(8, 2)
    assert not pq.is_trained
    with pytest.raises(NotTrainedError):
        pq.encode(np.zeros((1, 8), np.float32))
    with pytest.raises(NotTrainedError):
        pq.compute_lut(np.zeros(8, np.float32))


# ----------------------------------------------------------------- faiss as a peer
faiss = pytest.importorskip("faiss")


def test_codes_and_ip_tables_agree_with_faiss_on_our_centroids():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    pq = pypatch.ProductQuantizer(32, 8).train(x, iters=5)
    fpq = faiss.ProductQuantizer(32, 8, 8)
    faiss.copy_array_to_vector(pq.centroids.ravel(), fpq.centroids)
    ours, theirs = pq.encode(x), fpq.compute_codes(x)
    # faiss computes |x|^2 + |c|^2 - 2 x.c, we sum squared differences: only near-ties may differ,
    # and then both picks must be equally near.
    diff = ours != theirs
    assert diff.mean() < 1e-3
    for i, j in zip(*np.nonzero(diff)):
        sub = x[i, j * 4:(j + 1) * 4]
        d = ((pq.centroids[j] - sub) ** 2).sum(1)
        assert abs(d[ours[i, j]] - d[theirs[i, j]]) <= 1e-5 * max(1.0, d.min())
    q = x[:3]
    tab = np.empty((3, 8, 256), dtype=np.float32)
    fpq.compute_inner_prod_tables(3, faiss.swig_ptr(q), faiss.swig_ptr(tab))
    for i in range(3):
        np.testing.assert_allclose(pq.compute_lut(q[i]), tab[i], rtol=1e-5, atol=1e-5)


def test_training_mse_within_two_percent_of_faiss():
    rng = np.random.default_rng(7)
    # clustered data, so the quality of the k-means matters
    centers = rng.standard_normal((64, 32)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 64, 8192)] + rng.standard_normal((8192, 32))).astype(np.float32)
    pq = pypatch.ProductQuantizer(32, 4).train(x, iters=25, seed=0)
    ours = ((pq.decode(pq.encode(x)) - x) ** 2).sum(1).mean()
    fpq = faiss.ProductQuantizer(32, 4, 8)
    fpq.cp.niter = 25
    fpq.cp.max_points_per_centroid = 256
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # OpenMP spinning on a busy 2-core box makes it 5x slower
    try:
        fpq.train(x)
    finally:
        faiss.omp_set_num_threads(threads)
    theirs = ((fpq.decode(fpq.compute_codes(x)) - x) ** 2).sum(1).mean()
    assert ours <= 1.02 * theirs, (ours, theirs)

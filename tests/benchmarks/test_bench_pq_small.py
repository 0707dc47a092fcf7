"""benchmarks/bench_pq_small.py's pieces that need no model: the score-aware (anisotropic)
encoder against its loss computed directly, and the numpy ranker against a per-image loop."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_pq_small  # noqa: E402


def _quantizer(seed=0, n=600, d=16, m=4):
    from pypatch.index.pq import ProductQuantizer

    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, d)).astype(np.float32)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    pq = ProductQuantizer(d, m, nbits=4).train(y, iters=10, seed=seed)
    return y, pq


def _loss(y, decoded, eta):
    r = y.astype(np.float64) - decoded
    return (r * r).sum(1) + (eta - 1.0) * (r * y).sum(1) ** 2


def test_eta_one_keeps_the_nearest_codes():
    y, pq = _quantizer()
    codes = pq.encode(y)
    got = bench_pq_small.anisotropic_codes(y, pq.centroids, codes, 1.0)
    np.testing.assert_array_equal(got, codes)


def test_anisotropic_codes_lower_the_score_aware_loss():
    y, pq = _quantizer(seed=3)
    codes = pq.encode(y)
    got = bench_pq_small.anisotropic_codes(y, pq.centroids, codes, 10.0)
    before, after = _loss(y, pq.decode(codes), 10.0), _loss(y, pq.decode(got), 10.0)
    assert np.all(after <= before + 1e-9)  # coordinate descent from the nearest codes
    assert (got != codes).any(axis=1).mean() > 0.1
    par = lambda c: np.abs(((y - pq.decode(c)) * y).sum(1)).mean()  # noqa: E731
    assert par(got) < par(codes)  # less error along each vector's own direction


def test_numpy_ranker_is_max_over_patches():
    rng = np.random.default_rng(5)
    counts = [3, 1, 4, 2]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    y = rng.standard_normal((sum(counts), 8)).astype(np.float32)
    q = rng.standard_normal((2, 8)).astype(np.float32)
    ids = ["a", "b", "c", "d"]
    got = bench_pq_small.NumpyRanker(ids, offsets, y, q).rank_batch([None, None], 3)
    for qi, hits in enumerate(got):
        ref = sorted(((float(np.max(y[offsets[i]:offsets[i + 1]] @ q[qi])), ids[i])
                      for i in range(4)), reverse=True)[:3]
        assert [h[0] for h in hits] == [i for _, i in ref]
        np.testing.assert_allclose([h[1] for h in hits], [s for s, _ in ref], rtol=1e-5)

"""Limits of PatchIndex arguments: what saves also loads (dim), k clamped to the index size,
ints beyond the core's C types as typed errors, and a quantizer that holds an index's codes
refusing to be retrained."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import pypatch
from pypatch.errors import InvalidArgumentError

MAX_DIM = 2**20


# ------------------------------------------------------------------ dim: save => load
def test_largest_dim_saves_pickles_and_loads(tmp_path):
    ix = pypatch.PatchIndex(MAX_DIM, flat_dtype="float16")
    ix.add(np.full((1, MAX_DIM), 0.5, np.float32), patches_per_image=1)
    ix.save(tmp_path / "big.ptch")
    for back in (pypatch.PatchIndex.load(tmp_path / "big.ptch"), pickle.loads(pickle.dumps(ix))):
        assert back.dim == MAX_DIM and len(back) == 1
        np.testing.assert_array_equal(back.reconstruct(0), np.full((1, MAX_DIM), 0.5, np.float32))


@pytest.mark.parametrize("dim", [MAX_DIM + 1, 2**31 - 1, 2**31, 2**64])
def test_dim_beyond_what_a_file_can_hold_is_refused_at_construction(dim):
    with pytest.raises(InvalidArgumentError, match="dim"):
        pypatch.PatchIndex(dim)


def test_pq_index_dim_is_bounded_too():
    pq = pypatch.ProductQuantizer(MAX_DIM + 2, 2)  # a quantizer alone is not saved
    with pytest.raises(InvalidArgumentError, match="dim"):
        pypatch.PatchIndex(MAX_DIM + 2, pq)


# ------------------------------------------------------------------ k is clamped
def hundred_images() -> pypatch.PatchIndex:
    rng = np.random.default_rng(0)
    ix = pypatch.PatchIndex(8)
    ix.add(rng.standard_normal((300, 8)).astype(np.float32), patches_per_image=3)
    return ix


@pytest.mark.parametrize("k", [100, 101, 2**31 - 1, 2**31, 2**63, 10**30])
def test_k_beyond_the_index_size_returns_every_image_once(k):
    ix = hundred_images()
    q = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    s, i, p = ix.search(q, k=k)
    assert s.shape == i.shape == p.shape == (2, 100)
    ref = ix.search(q, k=100)
    for got, want in zip((s, i, p), ref):
        np.testing.assert_array_equal(got, want)
    assert sorted(i[0]) == list(range(100))
    # independent reference: the best patch of every image, by brute force
    vecs = np.stack([ix.reconstruct(j) for j in range(100)])  # (100, 3, 8)
    best = (vecs @ q[0]).max(axis=1)
    # 8-term float32 sums in another order: ~1 ulp of the terms' magnitude apart
    np.testing.assert_allclose(s[0], np.sort(best)[::-1], rtol=1e-6, atol=1e-6)


def test_removed_images_are_padding_inside_the_clamped_columns():
    ix = hundred_images()
    ix.remove([3, 50])
    s, i, _ = ix.search(np.ones(8, np.float32), k=10**6)
    assert i.shape == (1, 100) and (i[0, 98:] == -1).all() and np.isneginf(s[0, 98:]).all()
    assert 3 not in i[0] and 50 not in i[0]


def test_empty_index_gives_zero_columns_and_untrained_still_raises():
    s, i, p = pypatch.PatchIndex(4).search(np.ones((3, 4), np.float32), k=5)
    assert s.shape == i.shape == p.shape == (3, 0)
    with pytest.raises(pypatch.errors.NotTrainedError):
        pypatch.PatchIndex(4, pypatch.ProductQuantizer(4, 2)).search(np.ones(4, np.float32), k=5)


# ------------------------------------------------------------------ ints beyond C types
@pytest.mark.parametrize("call", [
    lambda ix: ix.search(np.ones(8, np.float32), k=3, num_threads=2**31),
    lambda ix: ix.reconstruct(2**63),
    lambda ix: ix.reconstruct(-2**63 - 1),
    lambda ix: ix.is_removed(2**64),
    lambda ix: ix.add(np.ones((2, 8), np.float32), patches_per_image=2, num_threads=2**40),
    lambda ix: pypatch.ProductQuantizer(2**31, 1),
    lambda ix: pypatch.ProductQuantizer(8, 2**31),
    lambda ix: pypatch.ProductQuantizer(8, 2).train(np.ones((256, 8), np.float32), iters=2**31),
    lambda ix: pypatch.ProductQuantizer(8, 2).train(np.ones((256, 8), np.float32), seed=2**64),
    lambda ix: pypatch.PatchIndex(8, pypatch.ProductQuantizer(8, 2)).train(
        np.ones((256, 8), np.float32), iters=2**31),
    lambda ix: pypatch.set_num_threads(2**31),
], ids=["search-threads", "reconstruct-big", "reconstruct-small", "is_removed", "add-threads",
        "pq-dim", "pq-m", "pq-iters", "pq-seed", "index-iters", "set_num_threads"])
def test_ints_beyond_the_core_types_are_invalid_argument_errors(call):
    with pytest.raises(InvalidArgumentError):
        call(hundred_images())


def test_largest_seed_is_accepted():
    x = np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32)
    assert pypatch.ProductQuantizer(8, 2).train(x, iters=1, seed=2**64 - 1).is_trained


# ------------------------------------------------------------------ quantizer with codes
def trained_pq_index(n_images: int = 20):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((512, 8)).astype(np.float32)
    pq = pypatch.ProductQuantizer(8, 4).train(x, iters=3)
    ix = pypatch.PatchIndex(8, pq)
    if n_images:
        ix.add(x[: 2 * n_images], patches_per_image=2)
    return ix, x


def test_retraining_the_quantizer_of_a_filled_index_is_refused(tmp_path):
    ix, x = trained_pq_index()
    q = x[:3]
    before = ix.search(q, k=5)
    centroids = ix.pq.centroids
    with pytest.raises(InvalidArgumentError, match="codes"):
        ix.pq.train(x[::-1].copy(), iters=2, seed=9)
    np.testing.assert_array_equal(ix.pq.centroids, centroids)
    for got, want in zip(ix.search(q, k=5), before):
        np.testing.assert_array_equal(got, want)
    # the same for a quantizer the caller kept, and for one loaded with its codes
    ix.save(tmp_path / "pq.ptch")
    loaded = pypatch.PatchIndex.load(tmp_path / "pq.ptch")
    with pytest.raises(InvalidArgumentError, match="codes"):
        loaded.pq.train(x, iters=2, seed=9)


def test_a_trained_quantizer_without_codes_may_still_be_retrained():
    ix, x = trained_pq_index(n_images=0)
    old = ix.pq.centroids
    ix.pq.train(x[::-1].copy(), iters=3, seed=9)
    assert not np.array_equal(ix.pq.centroids, old)
    ix.add(x[:4], patches_per_image=2)  # codes from the new centroids
    np.testing.assert_array_equal(ix.reconstruct(1), ix.pq.decode(ix.pq.encode(x[2:4])))

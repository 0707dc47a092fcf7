"""_core.MultiIndexSearch: several PatchIndex searched by ONE native scan (the shards of a
sharded index) answer exactly as one PatchIndex holding their images in order: bit-equal
scores, the same winning patches, and ties ordered by global image number (shard, then row).

The reference is a monolithic PatchIndex built from the same vectors with the same centroids,
searched at the scalar level with one thread; every store (8-bit PQ: exact and quantised
scans; 4-bit PQ: fast scan and exact path; flat f32 and f16) at every usable SIMD level, 1 and
2 threads, one query and a batch, with removed images, empty shards, uneven shards and exact
ties planted across shards. Shards that cannot be scanned as one are refused with typed errors.
"""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from pypatch import _core
from pypatch.errors import InvalidArgumentError
from _scan_reference import random_offsets
from _simd_levels import simd_level, usable_levels

DIM = 32


def _store(kind, centroids):
    if kind.startswith("pq"):
        return lambda: pypatch.PatchIndex(DIM, pypatch.ProductQuantizer.from_centroids(centroids))
    return lambda: pypatch.PatchIndex(DIM, flat_dtype=kind)


def _data(rng, n_images):
    """Clustered unit vectors with exact repeats (ties), CSR offsets, some empty images."""
    counts = np.diff(random_offsets(rng, n_images, 9))
    twins = (3, n_images // 2, n_images - 2)  # identical images, in different shards: exact ties
    counts[list(twins)] = 4
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    proto = rng.standard_normal((40, DIM)).astype(np.float32)
    x = proto[rng.integers(0, len(proto), n)] + 0.05 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lone = rng.standard_normal(DIM).astype(np.float32)  # a direction far from every cluster
    for twin in twins:
        x[offsets[twin]:offsets[twin + 1]] = lone / np.linalg.norm(lone)
    return x.astype(np.float32), offsets


def _split(store, x, offsets, bounds, removed):
    """Monolithic index and shards (images [bounds[s], bounds[s+1]) each), same removals."""
    whole = store()
    whole.add(x, image_offsets=offsets)
    whole.remove(np.flatnonzero(removed))
    shards = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        shard = store()
        if b > a:
            shard.add(x[offsets[a]:offsets[b]], image_offsets=offsets[a:b + 1] - offsets[a])
            gone = np.flatnonzero(removed[a:b])
            if len(gone):
                shard.remove(gone)
        shards.append(shard)
    return whole, shards


def _global(shard, rows, bounds):
    return np.where(rows >= 0, np.asarray(bounds)[np.maximum(shard, 0)] + rows, -1)


def _check(kind, n_images, splits, ks, seed=5):
    """Every split of the images into shards, searched as one, equals the monolithic index."""
    rng = np.random.default_rng(seed)
    nbits = 4 if kind == "pq4" else 8
    centroids = rng.standard_normal((DIM // 2, 2 ** nbits, 2)).astype(np.float32)
    x, offsets = _data(rng, n_images)
    removed = np.zeros(n_images, bool)
    removed[[5, 60, 61, n_images - 1]] = True
    store = _store(kind, centroids)
    q = np.concatenate([x[offsets[3]:offsets[3] + 1],  # hits the planted ties
                        rng.standard_normal((4, DIM)).astype(np.float32)])
    for bounds in splits:
        whole, shards = _split(store, x, offsets, bounds, removed)
        multi = _core.MultiIndexSearch([s._ix for s in shards])
        assert multi.n_shards == len(shards) and multi.n_images == n_images
        for k in ks:
            with simd_level("scalar"):
                ref = whole.search(q, k=k, num_threads=1)
            for level in usable_levels():
                with simd_level(level):
                    for nt in (1, 2):
                        for qs in (q[:1], q):  # one query, a batch
                            sc, sh, rows, pa = multi.search(qs, min(k, 2 ** 31 - 1), nt)
                            n = len(qs)
                            msg = f"{kind} {level} threads={nt} k={k} nq={n} shards={len(shards)}"
                            np.testing.assert_array_equal(sc, ref[0][:n], err_msg=msg)
                            np.testing.assert_array_equal(_global(sh, rows, bounds), ref[1][:n],
                                                          err_msg=msg)
                            np.testing.assert_array_equal(pa, ref[2][:n], err_msg=msg)
                            assert ((sh >= 0) == (rows >= 0)).all()
        # the planted ties really are ties, and they come from different shards
        sc, sh, rows, _ = multi.search(q[:1], 3, 1)
        assert sc[0, 0] == sc[0, 1] == sc[0, 2] and len(set(sh[0].tolist())) >= 2


@pytest.mark.parametrize("kind", ["pq8", "pq4", "float32", "float16"])
def test_one_scan_over_shards_equals_monolithic(kind):
    n = 150
    _check(kind, n, [[0, 40, 40, 97, n],  # uneven, one empty shard
                     list(np.linspace(0, n, 17).round().astype(int))],  # 16 shards
           ks=(1, 7, n, n + 5))


@pytest.mark.parametrize("kind", ["pq8", "float32"])
def test_shards_of_several_scan_tasks(kind):
    """Shards long enough for several scan tasks each (a short tail task joins the one before
    it: pq8 cuts 4096 patches a task, float32 at dim 32 1024)."""
    n = 2400  # ~10,800 patches
    _check(kind, n, [[0, 1100, 2400], [0, 230, 1500, 2400]], ks=(1, 10), seed=6)


def test_shards_that_cannot_be_scanned_as_one_are_refused():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((8, 256, 4)).astype(np.float32)
    x = rng.standard_normal((20, 32)).astype(np.float32)

    def pq_index(centroids):
        ix = pypatch.PatchIndex(32, pypatch.ProductQuantizer.from_centroids(centroids))
        ix.add(x, patches_per_image=2)
        return ix

    a, b = pq_index(c), pq_index(c)
    _core.MultiIndexSearch([a._ix, b._ix])  # same centroids, different objects: fine
    other = c.copy()
    other[0, 0, 0] += 1
    flat = pypatch.PatchIndex(32)
    flat.add(x, patches_per_image=2)
    untrained = pypatch.PatchIndex(32, pypatch.ProductQuantizer(32, 8))
    for shards, what in (([a, pq_index(other)], "centroids"),
                         ([a, flat], "another store"),
                         ([a, pq_index(c[:, :16].copy())], "another quantizer"),
                         ([a, a], "twice"),
                         ([], "no index"),
                         ([a, untrained], "not trained")):
        with pytest.raises(InvalidArgumentError, match=what):
            _core.MultiIndexSearch([s._ix for s in shards])
    multi = _core.MultiIndexSearch([a._ix, b._ix])
    with pytest.raises(InvalidArgumentError, match="columns"):
        multi.search(np.zeros((1, 16), np.float32), 3, 1)
    with pytest.raises(InvalidArgumentError, match="k must be"):
        multi.search(np.zeros((1, 32), np.float32), 0, 1)
    with pytest.raises(InvalidArgumentError):  # the value rule of every search
        multi.search(np.full((1, 32), 1e30, np.float32), 3, 1)
    # an empty shard whose quantizer is not frozen yet: its centroids are checked per search
    empty = pypatch.PatchIndex(32, pypatch.ProductQuantizer.from_centroids(c))
    multi = _core.MultiIndexSearch([a._ix, empty._ix])
    assert multi.search(x[:1], 3, 1)[1].tolist() == [[0, 0, 0]]
    empty.pq._pq.set_centroids(other)
    with pytest.raises(InvalidArgumentError, match="changed"):
        multi.search(x[:1], 3, 1)

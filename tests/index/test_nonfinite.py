"""Non-finite and huge values (hardening issue, item 2): the |x| <= 1e15 rule at every entry
point, loads that reject NaN/inf payloads, NaN scores that never rank, and the same answer at
every SIMD level. Rule and reasons: csrc/pypatch/util/value_limits.h, simd/README.md."""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from pypatch import PatchIndex, ProductQuantizer
from pypatch.errors import IndexFormatError, InvalidArgumentError

from _ptch_bytes import replace_section, section_table
from _simd_levels import simd_level, usable_levels

HUGE = np.float32(3e38)  # finite, accepted by the old checks, overflows any inner product


def _pq(dim=16, m=4, seed=0):
    rng = np.random.default_rng(seed)
    return ProductQuantizer.from_centroids(rng.standard_normal((m, 256, dim // m)).astype(np.float32))


def _search_all_levels(ix, q, k):
    out = {}
    for level in usable_levels():
        with simd_level(level):
            out[level] = ix.search(q, k=k, num_threads=1)
    return out


def _assert_same(results):
    ref = results["scalar"]
    for level, got in results.items():
        assert got[0].tobytes() == ref[0].tobytes(), level  # scores, bit for bit
        assert np.array_equal(got[1], ref[1]) and np.array_equal(got[2], ref[2]), level


# ---------------------------------------------------------------- the rule at the entry points
@pytest.mark.parametrize("value", [3e38, -3e38, 1.01e15])
def test_from_centroids_rejects_huge_values(value):
    c = np.zeros((2, 256, 4), np.float32)
    c[1, 7, 2] = value
    with pytest.raises(InvalidArgumentError, match=r"centroids.*row 263, column 2"):
        ProductQuantizer.from_centroids(c)


def test_limit_itself_is_accepted():
    c = np.zeros((2, 256, 4), np.float32)
    c[0, 0, 0] = np.float32(1e15)
    ProductQuantizer.from_centroids(c)
    ix = PatchIndex(4)
    ix.add(np.full((2, 4), np.float32(1e15)), patches_per_image=1)
    ix.search(np.full(4, np.float32(-1e15)), k=2)


@pytest.mark.parametrize("store", ["pq", "float32", "float16"])
def test_search_with_huge_query_is_a_typed_error(store):
    """Used to return NaN-scored hits first (flat) or hit UB in the quantised scan (PQ)."""
    ix = PatchIndex(16, _pq()) if store == "pq" else PatchIndex(16, flat_dtype=store)
    ix.add(np.random.default_rng(1).standard_normal((40, 16)).astype(np.float32), patches_per_image=4)
    q = np.zeros((2, 16), np.float32)
    q[1, 3] = HUGE
    for level in usable_levels():
        with simd_level(level), pytest.raises(InvalidArgumentError, match=r"queries.*row 1, column 3"):
            ix.search(q, k=5)


@pytest.mark.parametrize("store", ["pq", "float32"])
def test_add_rejects_huge_vectors_and_leaves_the_index_unchanged(store):
    ix = PatchIndex(8, _pq(8, 2)) if store == "pq" else PatchIndex(8, flat_dtype=store)
    x = np.ones((6, 8), np.float32)
    ix.add(x, patches_per_image=3)
    bad = x.copy()
    bad[4, 1] = -HUGE
    with pytest.raises(InvalidArgumentError, match="vectors"):
        ix.add(bad, patches_per_image=3)
    assert len(ix) == 2 and ix._ix.n_patches == 6


def test_pq_train_and_encode_reject_huge_values():
    pq = ProductQuantizer(8, 2)
    x = np.random.default_rng(2).standard_normal((300, 8)).astype(np.float32)
    x[5, 0] = HUGE
    with pytest.raises(InvalidArgumentError, match="x"):
        pq.train(x, iters=1)
    with pytest.raises(InvalidArgumentError, match="x"):
        _pq(8, 2).encode(x)
    with pytest.raises(InvalidArgumentError, match="q"):
        _pq(8, 2).compute_lut(x[5])


# ---------------------------------------------------------------- loads
def _poke(data: bytes, kind: str, dtype, index: int, value) -> bytes:
    _, off, size = section_table(data)[kind]
    body = np.frombuffer(data[off:off + size], dtype=dtype).copy()
    body[index] = value
    return replace_section(data, kind, body.tobytes(), fix_crc=True)


def _load_all_ways(tmp_path, data: bytes):
    p = tmp_path / "bad.ptch"
    p.write_bytes(data)
    return {
        "eager": lambda: PatchIndex.load(p, mmap=False),
        "mmap": lambda: PatchIndex.load(p, mmap=True),
        "mmap_verify": lambda: PatchIndex.load(p, mmap=True, verify=True),
        "bytes": lambda: PatchIndex.from_bytes(data),
    }


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 3e38])
def test_load_rejects_bad_pq_centroids_every_way(tmp_path, value):
    ix = PatchIndex(16, _pq())
    ix.add(np.random.default_rng(3).standard_normal((20, 16)).astype(np.float32), patches_per_image=2)
    data = _poke(ix.to_bytes(), "PQCB", np.float32, 1234, value)
    for load in _load_all_ways(tmp_path, data).values():
        with pytest.raises(IndexFormatError, match="PQCB"):
            load()


@pytest.mark.parametrize("dtype,np_dtype,value", [
    ("float32", np.float32, np.nan), ("float32", np.float32, np.inf), ("float32", np.float32, 3e38),
    ("float16", np.uint16, 0x7c00), ("float16", np.uint16, 0xfe00)])  # f16 +inf, NaN bits
def test_load_rejects_bad_flat_vectors(tmp_path, dtype, np_dtype, value):
    """A section whose bytes are read anyway (eager, bytes, verify, or <= 1 MiB) is checked."""
    ix = PatchIndex(16, flat_dtype=dtype)
    ix.add(np.random.default_rng(4).standard_normal((30, 16)).astype(np.float32), patches_per_image=3)
    data = _poke(ix.to_bytes(), "VECS", np_dtype, 77, value)
    for load in _load_all_ways(tmp_path, data).values():
        with pytest.raises(IndexFormatError, match="VECS"):
            load()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mapped_unverified_vectors_nan_never_ranks(tmp_path, dtype):
    """A big mapped VECS is not read at open (like its CRC); the scan copes with any bytes:
    NaN patches are skipped, an all-NaN image is never returned, every level agrees."""
    dim, per = 64, 4
    n_img = (1 << 20) // (dim * per * (4 if dtype == "float32" else 2)) + 8  # VECS > 1 MiB
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n_img * per, dim)).astype(np.float32)
    ix = PatchIndex(dim, flat_dtype=dtype)
    ix.add(x, patches_per_image=per)
    q = x[[0, 5, 9]] * 3  # images 0, 1 and 2 are the best matches of queries 0, 1, 2
    nan = np.float32(np.nan) if dtype == "float32" else np.uint16(0x7e00)
    view = np.float32 if dtype == "float32" else np.uint16
    data = ix.to_bytes()
    for p in range(per):  # image 0: every patch NaN
        data = _poke(data, "VECS", view, p * dim + 3, nan)
    data = _poke(data, "VECS", view, 5 * dim + 1, nan)  # image 1: its best patch (1) is NaN
    data = _poke(data, "VECS", view, 8 * dim, nan)  # image 2: its first patch is NaN
    path = tmp_path / "nan.ptch"
    path.write_bytes(data)
    with pytest.raises(IndexFormatError):
        PatchIndex.load(path, mmap=True, verify=True)
    mapped = PatchIndex.load(path, mmap=True)
    results = _search_all_levels(mapped, q, k=n_img)
    _assert_same(results)
    scores, images, patches = results["scalar"]
    assert not np.isnan(scores).any()
    assert 0 not in images  # all-NaN image never ranks
    assert images.shape[1] == n_img and (images[:, -1] == -1).all()  # padded instead
    # reference: numpy scores with NaN patches excluded
    vec = np.stack([mapped.reconstruct(i) for i in range(n_img)])  # (n_img, per, dim)
    ref = np.einsum("ipd,qd->qip", vec.astype(np.float64), q.astype(np.float64))
    ref[np.isnan(ref)] = -np.inf
    for qi in range(3):
        for r in range(n_img - 1):
            i, pch = images[qi, r], patches[qi, r]
            assert np.argmax(ref[qi, i]) == pch and ref[qi, i, pch] > -np.inf
    assert patches[1][images[1] == 1][0] != 1 and patches[2][images[2] == 2][0] != 0


# ---------------------------------------------------------------- the float path on any table
def test_pq_every_level_agrees_near_the_limit():
    """Large but legal values: tables stay finite, the quantised path stays exact."""
    rng = np.random.default_rng(6)
    c = (rng.standard_normal((4, 256, 4)) * 1e14).astype(np.float32)
    ix = PatchIndex(16, ProductQuantizer.from_centroids(c))
    ix.add_codes(rng.integers(0, 256, (300, 4), dtype=np.uint8), patches_per_image=3)
    q = (rng.standard_normal((3, 16)) * 1e14).astype(np.float32)
    results = _search_all_levels(ix, q, k=20)
    _assert_same(results)
    assert np.isfinite(results["scalar"][0]).all()

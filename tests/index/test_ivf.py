"""The inverted file over patches (PatchIndex(dim, pq, nlist=N), issue 11 item 2).

Reference: numpy. Patch scores are exact ADC summed like the core (float32, j ascending from
0, on the quantizer's own tables), restricted to the patches of the lists each query probes;
per image the max over its probed patches (first patch on ties), images by (score desc, image
asc). Search must equal it bit for bit at every SIMD level and thread count, for 8-bit and
4-bit codes, odd m, ties, removed images and 0..40 patches per image; with nprobe = nlist it
equals the exhaustive index. Lists and probes are checked against numpy's own L2 assignment
(up to float near-ties). Files: round trips (mmap, eager, bytes, pickle), damaged IVF sections
raise IndexFormatError, golden files of tests/data/format_ivf (version 2: u32 image + u8 ordinal)
and tests/data/format_ivf3 (version 3: packed 4-byte ids) load and answer as recorded.
"""
from __future__ import annotations

import pickle
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import pypatch
from _ptch_bytes import replace_section, section_table
from _simd_levels import simd_level, usable_levels
from pypatch.errors import IndexFormatError, InvalidArgumentError, InvalidTypeError, NotTrainedError

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "format_ivf"
GOLDEN3 = Path(__file__).resolve().parent.parent / "data" / "format_ivf3"


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(rng, n, d, centers=12):
    c = _unit(rng, centers, d)
    x = c[rng.integers(0, centers, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _build(rng, *, d=24, m=6, nbits=8, nlist=8, n_images=160, max_patches=40):
    counts = rng.integers(0, max_patches + 1, n_images)
    counts[:3] = [0, 1, max_patches]
    off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    x = _clustered(rng, int(off[-1]), d)
    ix = pypatch.PatchIndex(d, pypatch.ProductQuantizer(d, m, nbits=nbits), nlist=nlist)
    ix.train(_clustered(rng, 2000, d), iters=6, seed=3)
    ix.add(x, image_offsets=off)
    return ix, x, off


def _adc_scores(ix, q):
    """(nq, n_patches) exact ADC scores summed like the core: float32, j ascending from 0."""
    codes = ix._ix.codes()
    out = np.empty((len(q), len(codes)), np.float32)
    for i, qi in enumerate(q):
        lut = ix.pq.compute_lut(qi)
        s = np.zeros(len(codes), np.float32)
        for j in range(codes.shape[1]):
            s = s + lut[j, codes[:, j]]
        out[i] = s
    return out


def _reference(ix, q, k, nprobe):
    """numpy: the exhaustive ADC scan restricted to the probed lists' patches."""
    scores = _adc_scores(ix, q)
    lists = ix.patch_lists()
    off = ix.image_offsets
    removed = ix.removed
    probes = ix.probe(q, nprobe)
    kk = min(k, len(ix))
    out = (np.full((len(q), kk), -np.inf, np.float32), np.full((len(q), kk), -1, np.int64),
           np.full((len(q), kk), -1, np.int64))
    for qi in range(len(q)):
        probed = np.isin(lists, probes[qi])
        rows = []
        for i in range(len(off) - 1):
            a, b = off[i], off[i + 1]
            sel = np.nonzero(probed[a:b])[0]
            if removed[i] or not len(sel):
                continue
            seg = scores[qi, a:b][sel]
            j = int(np.argmax(seg))  # first max = lowest ordinal (sel ascending)
            rows.append((-float(seg[j]), i, int(sel[j]), seg[j]))
        rows.sort()
        for r, (_, i, p, s) in enumerate(rows[:kk]):
            out[0][qi, r], out[1][qi, r], out[2][qi, r] = s, i, p
    return out


def _same(got, want):
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def _at_every_level(ix, q, k, nprobe):
    runs = []
    for level in usable_levels():
        with simd_level(level):
            for t in (1, 2):
                runs.append((level, t, ix.search(q, k=k, num_threads=t, nprobe=nprobe)))
    return runs


@pytest.mark.parametrize("nbits,m", [(8, 6), (8, 3), (4, 6), (4, 3)])
def test_search_is_the_exhaustive_scan_restricted_to_probed_lists(nbits, m):
    rng = np.random.default_rng(100 + 10 * nbits + m)
    ix, x, off = _build(rng, m=m, nbits=nbits)
    ix.remove([5, 17, 40])
    q = np.concatenate([x[rng.integers(0, len(x), 3)] + 0.05, _unit(rng, 2, ix.dim)]).astype(np.float32)
    for nprobe in (1, 3, 8):
        for k in (1, 10, 200):
            want = _reference(ix, q, k, nprobe)
            for level, t, got in _at_every_level(ix, q, k, nprobe):
                for g, w in zip(got, want):
                    np.testing.assert_array_equal(g, w, err_msg=f"{level} threads={t} nprobe={nprobe} k={k}")


@pytest.mark.parametrize("nbits", [8, 4])
def test_probing_every_list_equals_the_exhaustive_index(nbits):
    rng = np.random.default_rng(7 + nbits)
    ix, x, off = _build(rng, nbits=nbits, nlist=5)
    ix.remove([2, 9])
    ex = pypatch.PatchIndex(ix.dim, ix.pq)
    ex.add_codes(ix._ix.codes(), image_offsets=off)
    ex.remove([2, 9])
    q = _unit(rng, 4, ix.dim)
    for k in (1, 7, 500):
        want = ex.search(q, k=k)
        _same(ix.search(q, k=k, nprobe=5), want)
        _same(ix.search(q, k=k, nprobe=10**6), want)  # clamped to nlist
    ix.nprobe = 99
    assert ix.nprobe == 5
    _same(ix.search(q, k=10), ex.search(q, k=10))


def test_lists_and_probes_follow_numpy_l2_assignment():
    rng = np.random.default_rng(3)
    ix, x, off = _build(rng, nlist=12)
    c = ix.coarse_centroids
    assert c.shape == (12, ix.dim)
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    lists = ix.patch_lists()
    assert lists.shape == (len(x),) and lists.dtype == np.int32
    assert (d2[np.arange(len(x)), lists] <= d2.min(1) + 1e-5).all()
    q = _unit(rng, 6, ix.dim)
    probes = ix.probe(q, 4)
    assert probes.shape == (6, 4)
    dq = (c.astype(np.float64) ** 2).sum(1)[None] - 2 * q.astype(np.float64) @ c.T.astype(np.float64)
    for i in range(6):
        rest = np.setdiff1d(np.arange(12), probes[i])
        assert dq[i, probes[i]].max() <= dq[i, rest].min() + 1e-5
        assert (np.diff(dq[i, probes[i]]) >= -1e-5).all()  # nearest first
    # the codes are the exhaustive encoding of the same vectors (no residuals)
    np.testing.assert_array_equal(ix._ix.codes(), ix.pq.encode(x))


def test_ties_break_by_image_then_lowest_ordinal_across_lists():
    rng = np.random.default_rng(4)
    d, m, nlist = 8, 4, 4
    pq = pypatch.ProductQuantizer(d, m)
    pq.train(_unit(rng, 600, d), iters=2)
    ix = pypatch.PatchIndex(d, pq, nlist=nlist)
    ix.set_coarse_centroids(_unit(rng, nlist, d))
    code = rng.integers(0, 256, (1, m)).astype(np.uint8)
    other = rng.integers(0, 256, (5, m)).astype(np.uint8)
    # image 0: the winning code at ordinals 3 (list 0) and 1 (list 2); image 1: the same code
    # at ordinal 0 (list 1), so it ties image 0 and loses on the image index.
    codes = np.concatenate([other[:1], code, other[1:3], code, code, other[3:]])
    lists = np.array([0, 2, 1, 3, 0, 1, 2, 3], np.int32)
    ix.add_codes(codes, image_offsets=[0, 5, 8], lists=lists)
    np.testing.assert_array_equal(ix.patch_lists(), lists)
    q = _unit(rng, 1, d)
    want_score = ix.pq.compute_lut(q[0])[np.arange(m), code[0]]
    s = np.float32(0)
    for v in want_score:
        s = np.float32(s + v)
    for probes, want in (([0, 1, 2, 3], ([0, 1], [1, 0])), ([0, 1], ([0, 1], [4, 0])),
                         ([1, 3], ([1, 0], [0, 2]))):
        centroid_q = ix.coarse_centroids[probes].mean(0)  # a query whose nearest lists are these
        np.testing.assert_array_equal(np.sort(ix.probe(centroid_q, len(probes))[0]), probes)
        got = ix.search(centroid_q, k=2, nprobe=len(probes))
        ref = _reference(ix, centroid_q[None], 2, len(probes))
        _same(got, ref)
    # the winning-patch rule, directly: both lists of image 0 probed -> ordinal 1 wins
    ex = pypatch.PatchIndex(d, pq)
    ex.add_codes(codes, image_offsets=[0, 5, 8])
    _same(ix.search(q, k=2, nprobe=4), ex.search(q, k=2))


def test_ivf4_an_image_winning_in_every_probed_list_does_not_hide_the_others():
    # The 4-bit search carries one running k-th best across a query's lists; it must count
    # distinct images. Image 0 holds the best code in every list: counted once per list, it
    # would fill the top k alone and its threshold would skip the true runners-up.
    rng = np.random.default_rng(11)
    d, m, nlist = 16, 8, 4
    pq = pypatch.ProductQuantizer(d, m, nbits=4)
    pq.train(_unit(rng, 800, d), iters=3)
    ix = pypatch.PatchIndex(d, pq, nlist=nlist)
    ix.set_coarse_centroids(_unit(rng, nlist, d))
    q = _unit(rng, 1, d)
    best = ix.pq.compute_lut(q[0]).argmax(1).astype(np.uint8)
    n_img, per = 120, 2 * nlist
    codes = rng.integers(0, 16, (n_img * per, m)).astype(np.uint8)
    lists = np.tile(np.arange(nlist, dtype=np.int32).repeat(2), n_img)
    codes[:per] = best          # image 0: the best code twice in every list
    codes[per + 5] = best       # image 1 ties it (and loses on the image index)
    ix.add_codes(codes, patches_per_image=per, lists=lists)
    ix.remove([7])
    for nprobe in (2, nlist):
        for k in (2, 3, 5, 20):
            want = _reference(ix, q, k, nprobe)
            for qq in (q, np.concatenate([q, q])):  # one query: its lists split over 2 threads
                for level, t, got in _at_every_level(ix, qq, k, nprobe):
                    for g, w in zip(got, want):
                        np.testing.assert_array_equal(g[-1], w[0], err_msg=f"{level} t={t} nprobe={nprobe} k={k}")


def test_typed_errors():
    d = 8
    pq = pypatch.ProductQuantizer(d, 4)
    for bad in (0, -3):
        with pytest.raises(InvalidArgumentError, match="nlist"):
            pypatch.PatchIndex(d, pq, nlist=bad)
    with pytest.raises(InvalidTypeError, match="nlist"):
        pypatch.PatchIndex(d, pq, nlist=2.5)
    with pytest.raises(InvalidArgumentError, match="PQ store"):
        pypatch.PatchIndex(d, None, nlist=4)
    ix = pypatch.PatchIndex(d, pq, nlist=50)
    assert ix.is_ivf and ix.nlist == 50 and ix.nprobe == 16 and "ivf(nlist=50, nprobe=16)" in repr(ix)
    assert pypatch.PatchIndex(d, pq, nlist=5).nprobe == 5
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidArgumentError, match="nlist=300 vectors; got 280"):
        pypatch.PatchIndex(d, pq, nlist=300).train(_unit(rng, 280, d))
    with pytest.raises(NotTrainedError):
        ix.search(_unit(rng, 1, d))
    with pytest.raises(InvalidArgumentError, match="nprobe"):
        ix.nprobe = 0
    with pytest.raises(InvalidArgumentError, match="nprobe"):
        ix.search(_unit(rng, 1, d), nprobe=0)
    ix.train(_unit(rng, 400, d), iters=2)
    with pytest.raises(InvalidArgumentError, match="at most 256 patches per image"):
        ix.add(_unit(rng, 257, d), patches_per_image=257)
    assert len(ix) == 0
    ix.add(_unit(rng, 256, d), patches_per_image=256)
    with pytest.raises(InvalidArgumentError, match="before adding"):
        ix.set_coarse_centroids(_unit(rng, 50, d))
    with pytest.raises(InvalidArgumentError, match="50 rows"):
        pypatch.PatchIndex(d, pq, nlist=50).set_coarse_centroids(_unit(rng, 49, d))
    with pytest.raises(InvalidArgumentError, match=r"lists: values must be in \[0, 50\)"):
        ix.add_codes(np.zeros((2, 4), np.uint8), patches_per_image=2, lists=[0, 50])
    with pytest.raises(InvalidArgumentError, match="2 entries"):
        ix.add_codes(np.zeros((2, 4), np.uint8), patches_per_image=2, lists=[0])
    ex = pypatch.PatchIndex(d, pq)
    assert not ex.is_ivf and ex.nlist == 0 and ex.nprobe == 0 and ex.coarse_centroids is None
    with pytest.raises(InvalidArgumentError, match="exhaustive"):
        ex.nprobe = 4
    with pytest.raises(InvalidArgumentError, match="exhaustive"):
        ex.add_codes(np.zeros((2, 4), np.uint8), patches_per_image=2, lists=[0, 1])


def test_add_codes_without_lists_assigns_by_decoded_vectors():
    rng = np.random.default_rng(5)
    ix, x, off = _build(rng, nlist=6, n_images=30)
    codes = ix._ix.codes()
    other = pypatch.PatchIndex(ix.dim, ix.pq, nlist=6)
    other.set_coarse_centroids(ix.coarse_centroids)
    other.add_codes(codes, image_offsets=off)
    dec = ix.pq.decode(codes).astype(np.float64)
    c = ix.coarse_centroids.astype(np.float64)
    d2 = ((dec[:, None] - c[None]) ** 2).sum(-1)
    got = other.patch_lists()
    assert (d2[np.arange(len(dec)), got] <= d2.min(1) + 1e-5).all()
    # with the lists given, the copy is exact: same lists, same answers
    same = pypatch.PatchIndex(ix.dim, ix.pq, nlist=6)
    same.set_coarse_centroids(ix.coarse_centroids)
    same.add_codes(codes, image_offsets=off, lists=ix.patch_lists())
    q = _unit(rng, 3, ix.dim)
    _same(same.search(q, k=20, nprobe=2), ix.search(q, k=20, nprobe=2))


@pytest.mark.parametrize("nbits", [8, 4])
def test_add_remove_compact_reconstruct_after_training(nbits):
    rng = np.random.default_rng(20 + nbits)
    ix, x, off = _build(rng, nbits=nbits, n_images=80)
    more = _clustered(rng, 90, ix.dim)
    assert list(ix.add(more, patches_per_image=30)) == [80, 81, 82]
    ex = pypatch.PatchIndex(ix.dim, ix.pq)
    ex.add_codes(ix._ix.codes(), image_offsets=ix.image_offsets)
    for i in (0, 2, 50, 82):
        np.testing.assert_array_equal(ix.reconstruct(i), ex.reconstruct(i))
    ix.remove([1, 2, 81])
    q = _unit(rng, 3, ix.dim)
    before = ix.search(q, k=30, nprobe=3)
    _same(before, _reference(ix, q, 30, 3))
    mapping = ix.compact()
    assert len(ix) == 80 and ix.num_removed == 0
    after = ix.search(q, k=30, nprobe=3)
    _same(after, _reference(ix, q, 30, 3))
    hit = before[1] >= 0
    np.testing.assert_array_equal(mapping[before[1][hit]], after[1][hit])
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(ix.reconstruct(79), ex.reconstruct(82))


@pytest.mark.parametrize("nbits", [8, 4])
def test_save_load_round_trips(tmp_path, nbits):
    rng = np.random.default_rng(30 + nbits)
    ix, x, off = _build(rng, nbits=nbits)
    ix.remove([4])
    ix.nprobe = 3
    ix.metadata["note"] = "ivf"
    q = _unit(rng, 3, ix.dim)
    want = ix.search(q, k=15)
    path = tmp_path / "ivf.ptch"
    ix.save(path)
    copies = [pypatch.PatchIndex.load(path, mmap=True), pypatch.PatchIndex.load(path, mmap=False),
              pypatch.PatchIndex.load(path, mmap=True, verify=True),
              pypatch.PatchIndex.from_bytes(ix.to_bytes()), pickle.loads(pickle.dumps(ix))]
    for c in copies:
        assert c.nlist == 8 and c.nprobe == 3 and c.metadata == {"note": "ivf"} and c.num_removed == 1
        np.testing.assert_array_equal(c.coarse_centroids, ix.coarse_centroids)
        np.testing.assert_array_equal(c.patch_lists(), ix.patch_lists())
        np.testing.assert_array_equal(c._ix.codes(), ix._ix.codes())
        _same(c.search(q, k=15), want)
    mapped = copies[0]
    usage = mapped.memory_usage()
    assert usage["mapped"] == usage["codes"] + usage["ivf_ids"] > 0
    # a mapped index copies its lists on the first edit and keeps answering like the original
    mapped.add(x[:60], patches_per_image=30)
    ix.add(x[:60], patches_per_image=30)
    assert mapped.memory_usage()["mapped"] == 0
    _same(mapped.search(q, k=15), ix.search(q, k=15))
    mapped.compact()
    ix.compact()
    _same(mapped.search(q, k=15), ix.search(q, k=15))
    # an untrained, empty IVF index round-trips too
    empty = pypatch.PatchIndex(8, pypatch.ProductQuantizer(8, 2), nlist=3)
    back = pypatch.PatchIndex.from_bytes(empty.to_bytes())
    assert back.nlist == 3 and not back.is_trained and back.coarse_centroids is None


def test_memory_per_patch_ivf4_m32():
    rng = np.random.default_rng(9)
    d, m = 64, 32
    ix = pypatch.PatchIndex(d, pypatch.ProductQuantizer(d, m, nbits=4), nlist=16)
    x = _clustered(rng, 30 * 400, d)
    ix.train(x[:2000], iters=3)
    ix.add(x, patches_per_image=30)
    u = ix.memory_usage()
    assert u["ivf_ids"] == 4 * len(x)  # image << 5 | ordinal
    # 16 bytes of codes a patch plus at most one padded 32-patch block per list
    assert 16 * len(x) <= u["codes"] <= 16 * (len(x) + 32 * 16)


def _damaged(data: bytes, kind: str, edit) -> bytes:
    _, off, size = section_table(data)[kind]
    body = bytearray(data[off:off + size])
    edit(body)
    return replace_section(data, kind, bytes(body), fix_crc=True)


def test_damaged_ivf_sections_raise_index_format_error():
    rng = np.random.default_rng(12)
    ix, x, off = _build(rng, n_images=40)
    data = ix.to_bytes()
    pypatch.PatchIndex.from_bytes(data)  # intact
    lists = np.frombuffer(data, np.uint64, count=9, offset=section_table(data)["IVFN"][1])
    first = int(np.nonzero(np.diff(lists.astype(np.int64)) >= 2)[0][0])  # a list with >= 2 entries
    e0 = int(lists[first])
    ids_at = section_table(data)["IVFP"][1]
    bits = struct.unpack_from("<I", data, ids_at + 4)[0]
    assert bits == 6  # images of up to 40 patches
    ids = np.frombuffer(data, np.uint32, offset=ids_at + 64, count=len(x))
    im0 = int(ids[0]) >> bits
    assert off[im0 + 1] - off[im0] < 63

    def set_id(i, v):
        return lambda b: struct.pack_into("<I", b, 64 + 4 * i, v)

    cases = {  # what: (section, edit, the loader's message)
        "image out of range": ("IVFP", set_id(0, 40 << bits), "names image 40 of 40"),
        "huge image": ("IVFP", set_id(0, 0xFFFFFFFF), "names image"),
        "unsorted list": ("IVFP", set_id(e0, 39 << bits), "not sorted"),
        "ordinal past its image": ("IVFP", set_id(0, im0 << bits | 63), "ordinal 63 but image"),
        "ordinal bits too few": ("IVFP", lambda b: struct.pack_into("<I", b, 4, 5), "ordinal bits 5 cannot hold"),
        "ordinal bits too many": ("IVFP", lambda b: struct.pack_into("<I", b, 4, 9), "ordinal bits 9 cannot hold"),
        "id section version": ("IVFP", lambda b: struct.pack_into("<I", b, 0, 2), "unknown IVFP version 2"),
        "list offsets past the patches": ("IVFN", lambda b: struct.pack_into("<Q", b, 8, 10**9),
                                          "exceeds the patch count"),
        "list offsets decrease": ("IVFN", lambda b: struct.pack_into("<Q", b, 8 * 8, 0), "decrease"),
        "centroid NaN": ("IVFC", lambda b: struct.pack_into("<f", b, 0, float("nan")), "IVFC holds a NaN"),
        "centroid too large": ("IVFC", lambda b: struct.pack_into("<f", b, 4, 1e30), "IVFC holds"),
        "nlist": ("PIDX", lambda b: struct.pack_into("<I", b, 56, 0), "implausible nlist 0"),
        "nlist past the sections": ("PIDX", lambda b: struct.pack_into("<I", b, 56, 9), "IVF"),
        "nprobe above nlist": ("PIDX", lambda b: struct.pack_into("<I", b, 60, 9), "nprobe 9 outside"),
        "layout": ("PIDX", lambda b: struct.pack_into("<I", b, 28, 2), "needs nbits = 4"),
    }
    for what, (kind, edit, message) in cases.items():
        with pytest.raises(IndexFormatError, match=message):
            pypatch.PatchIndex.from_bytes(_damaged(data, kind, edit))
            pytest.fail(what)
    # a patch listed twice (and so another one missing): copy entry e0 over entry e0 + 1
    twin = _damaged(data, "IVFP", set_id(e0 + 1, int(ids[e0])))
    with pytest.raises(IndexFormatError, match="sorted|two inverted lists"):
        pypatch.PatchIndex.from_bytes(twin)
    # a stale CRC on the ids is caught even on a mapped open
    _, o, s = section_table(data)["IVFP"]
    stale = data[:o] + bytes([data[o] ^ 1]) + data[o + 1:]
    with pytest.raises(IndexFormatError):
        pypatch.PatchIndex.from_bytes(stale)


def test_searches_while_another_thread_adds_see_a_consistent_state():
    rng = np.random.default_rng(11)
    d, P, n_batches, per = 16, 30, 10, 40
    base, _, _ = _build(rng, d=d, m=4, nlist=6, n_images=3)
    batches = [_clustered(rng, per * P, d) for _ in range(n_batches)]
    q = _unit(rng, 1, d)

    def fresh():
        ix = pypatch.PatchIndex(d, base.pq, nlist=6)
        ix.set_coarse_centroids(base.coarse_centroids)
        return ix

    expected = []
    for b in range(n_batches + 1):
        ix = fresh()
        if b:
            ix.add(np.concatenate(batches[:b]), patches_per_image=P)
        expected.append(ix.search(q, k=5, num_threads=1, nprobe=2))
    ix = fresh()
    seen, errors, done = [], [], threading.Event()

    def loop():
        try:
            while len(seen) < 300 and not done.is_set():
                seen.append(ix.search(q, k=5, num_threads=1, nprobe=2))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    for b in batches:
        ix.add(b, patches_per_image=P)
    done.set()
    for t in threads:
        t.join()
    assert not errors and seen
    for got in seen:
        assert any(all(np.array_equal(g, e) for g, e in zip(got, exp)) for exp in expected)


@pytest.mark.parametrize("folder", [GOLDEN, GOLDEN3], ids=["v2", "v3"])
@pytest.mark.parametrize("name", ["ivf8", "ivf4"])
def test_golden_files_load_and_answer_as_recorded(name, folder):
    want = np.load(folder / f"{name}_expected.npz")
    for mmap in (True, False):
        ix = pypatch.PatchIndex.load(folder / f"{name}.ptch", mmap=mmap, verify=True)
        assert ix.is_ivf and ix.nlist == int(want["nlist"]) and ix.nprobe == int(want["nprobe"])
        for level in usable_levels():
            with simd_level(level):
                got = ix.search(want["queries"], k=10)
            np.testing.assert_array_equal(got[0], want["scores"])
            np.testing.assert_array_equal(got[1], want["images"])
            np.testing.assert_array_equal(got[2], want["patches"])
        _same(ix.search(want["queries"], k=10), _reference(ix, want["queries"], 10, ix.nprobe))


@pytest.mark.parametrize("name", ["ivf8", "ivf4"])
def test_version_2_files_load_into_packed_ids_and_resave_as_version_3(name, tmp_path):
    old = pypatch.PatchIndex.load(GOLDEN / f"{name}.ptch", mmap=True)
    new = pypatch.PatchIndex.load(GOLDEN3 / f"{name}.ptch", mmap=True)
    assert old.memory_usage()["ivf_ids"] == 4 * old.num_patches  # converted in memory
    np.testing.assert_array_equal(old.patch_lists(), new.patch_lists())
    old.save(tmp_path / "a.ptch")
    assert (tmp_path / "a.ptch").read_bytes() == (GOLDEN3 / f"{name}.ptch").read_bytes()
    table = section_table((tmp_path / "a.ptch").read_bytes())
    assert "IVFP" in table and "IVFI" not in table and "IVFO" not in table


def test_ordinal_bits_widen_as_images_with_more_patches_arrive(tmp_path):
    """Ids start with no ordinal bits (one patch an image) and are repacked as later adds bring
    images of 3, then 40 patches; search, files and memory follow."""
    rng = np.random.default_rng(21)
    d, nlist = 16, 5
    ix = pypatch.PatchIndex(d, pypatch.ProductQuantizer(d, 4, nbits=4), nlist=nlist)
    ix.train(_clustered(rng, 2000, d), iters=4, seed=1)
    q = _unit(rng, 3, d)
    for counts, bits in (([1] * 30, 0), ([3, 1, 2] * 10, 2), ([40, 0, 7], 6)):
        off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        ix.add(_clustered(rng, int(off[-1]), d), image_offsets=off)
        assert ix.memory_usage()["ivf_ids"] >= 4 * ix.num_patches
        data = ix.to_bytes()
        assert struct.unpack_from("<I", data, section_table(data)["IVFP"][1] + 4)[0] == bits
        for nprobe in (1, nlist):
            _same(ix.search(q, k=20, nprobe=nprobe), _reference(ix, q, 20, nprobe))
        back = pypatch.PatchIndex.from_bytes(data)
        _same(back.search(q, k=20), ix.search(q, k=20))
    ix.remove([1, 31])
    mapping = ix.compact()
    assert len(mapping) == 63
    _same(ix.search(q, k=20, nprobe=nlist), _reference(ix, q, 20, nlist))


def test_image_index_subset_keeps_each_patch_in_its_list(embedder):
    from pypatch import ImageIndex

    rng = np.random.default_rng(1)
    n, dim = 60, embedder.dim
    vecs = _unit(rng, n * 5, dim).reshape(n, 5, dim)
    sizes = [(200 + i, 150) for i in range(n)]
    index = ImageIndex.create(regions="L1", store="pq", pq_m=16, train_size=256, embedder=embedder,
                              opq=False)
    if not index.is_trained:
        index.train_embedded(zip(vecs, sizes))
    index.add_embedded((f"img{i:03d}", None, vecs[i], sizes[i]) for i in range(n))
    # the same images in an inverted-file PatchIndex (same quantizer and codes)
    flat = index._index
    ivf = pypatch.PatchIndex(flat.dim, flat.pq, nlist=4)
    ivf.set_coarse_centroids(_unit(rng, 4, flat.dim))
    ivf.add(np.concatenate([flat.reconstruct(i) for i in range(len(flat))]), image_offsets=flat.image_offsets)
    ivf.nprobe = 2
    index._index = ivf
    keep = [f"img{i:03d}" for i in range(0, n, 3)]
    sub = index.subset(keep)
    assert sub._index.is_ivf and sub._index.nlist == 4 and sub._index.nprobe == 2
    np.testing.assert_array_equal(sub._index.coarse_centroids, ivf.coarse_centroids)
    rows = [index.ids.index(i) for i in keep]
    lists = ivf.patch_lists()
    off = ivf.image_offsets
    np.testing.assert_array_equal(sub._index.patch_lists(),
                                  np.concatenate([lists[off[r]:off[r + 1]] for r in rows]))
    # every kept image scores as before: the subset's ranking is the original one filtered
    q = _unit(rng, 3, flat.dim)
    for nprobe in (1, 2, 4):
        s_all, i_all, p_all = ivf.search(q, k=n, nprobe=nprobe)
        s_sub, i_sub, p_sub = sub._index.search(q, k=n, nprobe=nprobe)
        for r in range(len(q)):
            kept = np.isin(i_all[r], rows)
            np.testing.assert_array_equal(s_sub[r][i_sub[r] >= 0], s_all[r][kept])
            np.testing.assert_array_equal(np.asarray(rows)[i_sub[r][i_sub[r] >= 0]], i_all[r][kept])
            np.testing.assert_array_equal(p_sub[r][i_sub[r] >= 0], p_all[r][kept])

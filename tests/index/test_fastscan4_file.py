"""4-bit indexes in files: written in the "blocked32_fs4" layout (PIDX code_layout 2, two codes
a byte), read back mapped or eager with the same codes and search results; files written before
the fast scan (4-bit codes one a byte) still load; damaged files raise IndexFormatError."""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

import pypatch
from _ptch_bytes import replace_section, section_table
from _simd_levels import simd_level, usable_levels
from pypatch.errors import IndexFormatError

HERE = Path(__file__).resolve().parents[1] / "data" / "format_fs4"


def _golden():
    spec = importlib.util.spec_from_file_location("make_golden_fs4", HERE / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _all_levels(ix, q, k=4):
    out = {}
    for level in usable_levels():
        with simd_level(level):
            out[level] = ix.search(q, k=k, num_threads=1)
    return out


def _same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("name", ["pq_m5_nbits4_blocked64.ptch", "pq_m5_nbits4_fs4.ptch"])
def test_golden_4bit_files_load_as_the_index_they_hold(name, mmap):
    g = _golden()
    want = g.build()
    ix = pypatch.PatchIndex.load(HERE / name, mmap=mmap)
    _, codes = g.parts()
    np.testing.assert_array_equal(ix._ix.codes(), codes)
    np.testing.assert_array_equal(ix.image_offsets, want.image_offsets)
    np.testing.assert_array_equal(ix.removed, want.removed)
    assert ix.metadata == want.metadata and ix.pq.nbits == 4
    np.testing.assert_array_equal(ix.pq.centroids, want.pq.centroids)
    q = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    ref = want.search(q, k=4)
    for got in _all_levels(ix, q).values():
        _same(got, ref)
    # a fs4 file is viewed in place (map or eager buffer); an old one is converted into memory
    assert ix._ix.is_view == name.endswith("fs4.ptch")
    # saved again, either is byte for byte the fs4 golden file
    assert ix.to_bytes() == (HERE / "pq_m5_nbits4_fs4.ptch").read_bytes()


@pytest.mark.parametrize("m", [1, 4, 7, 32])
def test_save_load_round_trip(tmp_path, m):
    rng = np.random.default_rng(m)
    c = rng.standard_normal((m, 16, 2)).astype(np.float32)
    ix = pypatch.PatchIndex(2 * m, pypatch.ProductQuantizer.from_centroids(c))
    counts = rng.integers(0, 50, 60)
    codes = rng.integers(0, 16, (int(counts.sum()), m)).astype(np.uint8)
    ix.add_codes(codes, patches_per_image=counts)
    ix.remove([2, 7])
    ix.save(tmp_path / "a.ptch")
    q = rng.standard_normal((2, 2 * m)).astype(np.float32)
    ref = ix.search(q, k=8)
    mu = ix.memory_usage()
    assert mu["codes"] == -(-int(counts.sum()) // 32) * 32 * ((m + 1) // 2)  # m/2 bytes a patch
    for mmap in (True, False):
        back = pypatch.PatchIndex.load(tmp_path / "a.ptch", mmap=mmap, verify=True)
        np.testing.assert_array_equal(back._ix.codes(), codes)
        for got in _all_levels(back, q, 8).values():
            _same(got, ref)
        # add and remove after loading (a mapped file is copied first)
        back.add_codes(codes[:40], patches_per_image=[15, 25])
        back.remove([0])
        np.testing.assert_array_equal(back._ix.codes(), np.concatenate([codes, codes[:40]]))
        _same(back.search(q, k=8), _all_levels(back, q, 8)["scalar"])


def _pidx(data, **fields):
    """data with PIDX fields replaced (CRCs made valid again)."""
    names = ("version", "kind", "dim", "m", "nbits", "code_size", "trained", "code_layout")
    _, off, size = section_table(data)["PIDX"]
    body = bytearray(data[off:off + size])
    for k, v in fields.items():
        struct.pack_into("<I", body, 4 * names.index(k), v)
    return replace_section(data, "PIDX", bytes(body), fix_crc=True)


def test_damaged_4bit_files_raise_typed_errors(tmp_path):
    fs4 = (HERE / "pq_m5_nbits4_fs4.ptch").read_bytes()
    old = (HERE / "pq_m5_nbits4_blocked64.ptch").read_bytes()
    cases = {
        "layout3": (_pidx(fs4, code_layout=3), "unknown code layout"),
        # the fs4 CODE section read as one code a byte: sizes disagree
        "fs4_as_blocked64": (_pidx(fs4, code_layout=1), "CODE"),
        # a blocked64 CODE section read as fs4: sizes disagree
        "blocked64_as_fs4": (_pidx(old, code_layout=2), "CODE"),
        "fs4_with_nbits8": (_pidx(fs4, nbits=8), "nbits"),
    }
    for name, (data, match) in cases.items():
        path = tmp_path / f"{name}.ptch"
        path.write_bytes(data)
        for mmap in (True, False):
            with pytest.raises(IndexFormatError, match=match):
                pypatch.PatchIndex.load(path, mmap=mmap)
    # a flipped code byte with a stale CRC: caught by verify (mapped) and by an eager load
    _, off, size = section_table(fs4)["CODE"]
    body = bytearray(fs4[off:off + size])
    body[7] ^= 0x11
    path = tmp_path / "flip.ptch"
    path.write_bytes(replace_section(fs4, "CODE", bytes(body), fix_crc=False))
    for kw in (dict(mmap=True, verify=True), dict(mmap=False)):
        with pytest.raises(IndexFormatError, match="checksum"):
            pypatch.PatchIndex.load(path, **kw)

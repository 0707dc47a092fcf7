"""An independent reader of the .ptch format: parses saved index files with only ``struct`` and
``zlib.crc32``, following csrc/pypatch/io/README.md (container, XFRM) and the PIDX/META/IOFF/
TOMB/CODE/VECS/PQCB description at the top of csrc/pypatch/index/patch_index_io.cpp, checks every
rule and every value against what the index holds. A format change that the C++ reader and
writer agree on but the documentation does not describe fails here."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import pypatch

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "format_v1"
MAGIC = b"\x89PTCH\r\n\x1a"
HEADER = struct.Struct("<8sHHIIIII QQ II 72s")  # README "Header": 128 bytes
ENTRY = struct.Struct("<4sIQQII")                # README "Section table": 32 bytes
PIDX = struct.Struct("<8I3Q8x")                  # patch_index_io.cpp "PIDX layout": 64 bytes
XFRM = struct.Struct("<4I48x")                   # README "XFRM": 64-byte header, then floats
STORE = {0: "pq", 1: "flat_float32", 2: "flat_float16"}


def parse(data: bytes) -> dict[str, bytes]:
    """Every README rule, in the README's order; returns {kind: section bytes}."""
    assert len(data) >= 128 and HEADER.size == 128 and ENTRY.size == 32 and PIDX.size == 64
    (magic, major, minor, header_bytes, endian, _flags, count, reserved0, table_off, file_bytes,
     table_crc, header_crc, reserved) = HEADER.unpack_from(data, 0)
    assert magic == MAGIC
    assert (major, minor) == (1, 0)
    assert endian == 0x01020304 and header_bytes == 128
    assert header_crc == zlib.crc32(data[:52] + b"\0\0\0\0" + data[56:128])
    assert reserved0 == 0 and reserved == bytes(72)
    assert file_bytes == len(data) and file_bytes % 64 == 0
    assert count <= 4096 and table_off == 128
    table = data[128:128 + 32 * count]
    assert table_crc == zlib.crc32(table)

    sections: dict[str, bytes] = {}
    end = 128 + 32 * count  # each section starts at the next multiple of 64 after this
    for i in range(count):
        kind, _sflags, offset, size, crc, sreserved = ENTRY.unpack_from(table, 32 * i)
        kind = kind.decode("ascii")
        assert sreserved == 0 and kind not in sections
        assert offset % 64 == 0 and offset == -(-end // 64) * 64, (kind, offset, end)
        assert data[end:offset] == bytes(offset - end), f"padding before {kind} is not zero"
        body = data[offset:offset + size]
        assert len(body) == size and zlib.crc32(body) == crc, f"{kind}: CRC mismatch"
        sections[kind] = body
        end = offset + size
    assert data[end:] == bytes(len(data) - end) and len(data) == -(-end // 64) * 64
    return sections


def pidx(sections) -> dict:
    names = ("version", "kind", "dim", "m", "nbits", "code_size", "trained", "code_layout",
             "n_images", "n_patches", "n_removed")
    assert len(sections["PIDX"]) == 64
    return dict(zip(names, PIDX.unpack(sections["PIDX"])))


def blocked64(rows: np.ndarray) -> bytes:
    """code_layout.h: blocks of 64 patches, sub-quantizer-major inside a block, zero-padded."""
    n, m = rows.shape
    padded = np.zeros((-(-n // 64) * 64, m), np.uint8)
    padded[:n] = rows
    return padded.reshape(-1, 64, m).transpose(0, 2, 1).tobytes()


def blocked32_fs4(rows: np.ndarray) -> bytes:
    """code_layout_fs4.h: blocks of 32 patches; per pair of sub-quantizers 32 bytes, one per
    patch, low nibble = code(p, 2g), high nibble = code(p, 2g + 1) (0 past m); zero-padded."""
    n, m = rows.shape
    G = (m + 1) // 2
    padded = np.zeros((-(-n // 32) * 32, 2 * G), np.uint8)
    padded[:n, :m] = rows
    packed = padded[:, 0::2] | (padded[:, 1::2] << 4)  # (n32, G)
    return packed.reshape(-1, 32, G).transpose(0, 2, 1).tobytes()


def check_index_file(data: bytes, ix: pypatch.PatchIndex, vectors: np.ndarray) -> dict:
    """Parses `data` and checks every section against the index it was saved from."""
    s = parse(data)
    h = pidx(s)
    pq = ix.pq is not None
    store = STORE[h["kind"]]
    assert h["version"] == 1 and store == ("pq" if pq else "flat_" + ix.flat_dtype)
    assert (h["dim"], h["n_images"], h["n_patches"]) == (ix.dim, len(ix), ix.num_patches)
    assert h["n_removed"] == int(ix.removed.sum())
    assert np.array_equal(np.frombuffer(s["IOFF"], "<u8"), ix.image_offsets)
    assert np.array_equal(np.frombuffer(s["TOMB"], np.uint8) != 0, ix.removed)
    if pq:
        assert (h["m"], h["nbits"], h["code_size"]) == (ix.pq.m, ix.pq.nbits, ix.pq.m)
        fs4 = h["nbits"] == 4
        assert h["trained"] == 1 and h["code_layout"] == (2 if fs4 else 1)
        ksub = 1 << h["nbits"]
        cb = np.frombuffer(s["PQCB"], "<f4").reshape(h["m"], ksub, ix.dim // h["m"])
        np.testing.assert_array_equal(cb, ix.pq.centroids)
        assert s["CODE"] == (blocked32_fs4 if fs4 else blocked64)(ix.pq.encode(vectors))
        assert set(s) - {"XFRM"} == {"PIDX", "META", "PQCB", "CODE", "IOFF", "TOMB"}
    else:
        width = 4 if ix.flat_dtype == "float32" else 2
        assert (h["m"], h["nbits"], h["code_size"], h["code_layout"]) == (0, 0, ix.dim * width, 0)
        stored = np.frombuffer(s["VECS"], "<f4" if width == 4 else "<f2").reshape(-1, ix.dim)
        np.testing.assert_array_equal(stored, vectors.astype(stored.dtype))
        assert set(s) - {"XFRM"} == {"PIDX", "META", "VECS", "IOFF", "TOMB"}
    assert ("XFRM" in s) == (ix.transform is not None)
    if ix.transform is not None:
        version, kind, dim_in, dim_out = XFRM.unpack_from(s["XFRM"])
        assert (version, kind, dim_out) == (1, 1, ix.dim) and s["XFRM"][16:64] == bytes(48)
        assert len(s["XFRM"]) == 64 + 4 * (dim_in + dim_out * dim_in)
        mean = np.frombuffer(s["XFRM"], "<f4", dim_in, 64)
        matrix = np.frombuffer(s["XFRM"], "<f4", dim_out * dim_in, 64 + 4 * dim_in)
        np.testing.assert_array_equal(mean, ix.transform[0])
        np.testing.assert_array_equal(matrix.reshape(dim_out, dim_in), ix.transform[1])

    meta = json.loads(s["META"].decode("utf-8"))
    assert list(meta)[-1] == "user" and meta["user"] == ix.metadata
    assert meta["format"] == "pypatch.PatchIndex" and meta["store"] == store
    assert (meta["dim"], meta["n_images"], meta["n_patches"]) == (ix.dim, len(ix), ix.num_patches)
    assert meta["code_layout"] == ("row_major" if not pq else "blocked32_fs4" if ix.pq.nbits == 4
                                   else "blocked64_u8")
    return s


@pytest.mark.parametrize("nbits", [8, 4])
def test_pq_file_matches_the_documented_layout(tmp_path, nbits):
    rng = np.random.default_rng(nbits)
    m = 4 if nbits == 8 else 3  # odd m: the last fs4 pair has an empty high nibble
    centroids = rng.standard_normal((m, 1 << nbits, 3)).astype(np.float32)
    x = rng.standard_normal((3 + 70 + 2, 3 * m)).astype(np.float32)  # > one 64-patch block
    ix = pypatch.PatchIndex(3 * m, pypatch.ProductQuantizer.from_centroids(centroids))
    ix.add(x, patches_per_image=[3, 70, 0, 2])
    ix.remove([1])
    ix.metadata = {"name": "é", "ids": [1, 2, 3, 4]}
    ix.save(tmp_path / "a.ptch")
    data = (tmp_path / "a.ptch").read_bytes()
    check_index_file(data, ix, x)
    assert ix.to_bytes() == data  # the in-memory form is the same file


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_flat_file_matches_the_documented_layout(tmp_path, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((11, 7)).astype(np.float32)
    ix = pypatch.PatchIndex(7, flat_dtype=dtype)
    ix.add(x, image_offsets=[0, 5, 5, 11])
    ix.save(tmp_path / "f.ptch")
    data = (tmp_path / "f.ptch").read_bytes()
    check_index_file(data, ix, x)
    assert ix.to_bytes() == data


@pytest.mark.parametrize("store", ["pq", "flat"])
def test_file_with_a_transform_matches_the_documented_layout(tmp_path, store):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 4)).astype(np.float32)
    pq = None if store == "flat" else pypatch.ProductQuantizer.from_centroids(
        rng.standard_normal((2, 16, 2)).astype(np.float32))
    ix = pypatch.PatchIndex(4, pq)
    ix.add(x, patches_per_image=3)
    ix.set_transform(rng.standard_normal(7).astype(np.float32),  # 7 floats: matrix not aligned
                     rng.standard_normal((4, 7)).astype(np.float32))
    ix.save(tmp_path / "t.ptch")
    data = (tmp_path / "t.ptch").read_bytes()
    check_index_file(data, ix, x)
    assert ix.to_bytes() == data


def test_empty_index_file_matches_the_documented_layout(tmp_path):
    ix = pypatch.PatchIndex(3, flat_dtype="float32")
    s = check_index_file(ix.to_bytes(), ix, np.zeros((0, 3), np.float32))
    assert s["VECS"] == b"" and s["TOMB"] == b"" and s["IOFF"] == bytes(8)


def test_golden_v1_files_follow_the_documented_layout():
    for name in ("pq_m4_nbits8.ptch", "flat_float16.ptch"):
        data = (GOLDEN / name).read_bytes()
        s = parse(data)
        h = pidx(s)
        ix = pypatch.PatchIndex.load(GOLDEN / name, mmap=False)
        assert (h["n_images"], h["n_patches"], h["dim"]) == (len(ix), ix.num_patches, ix.dim)
        assert np.array_equal(np.frombuffer(s["IOFF"], "<u8"), ix.image_offsets)
        assert json.loads(s["META"])["user"] == ix.metadata

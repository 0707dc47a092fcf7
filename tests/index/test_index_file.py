"""Index files: eager and mmap loads equal the saved index; damaged, foreign or newer files
raise typed errors; the golden format-1 files still load."""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

import pypatch
from pypatch.errors import IndexFormatError, IndexVersionError

from _ptch_bytes import replace_section, section_table
from _subprocess import run_python

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "format_v1"


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def built():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120 * 14, 24)).astype(np.float32)
    pq = pypatch.ProductQuantizer(24, 6).train(x, iters=3)
    ix = pypatch.PatchIndex(24, pq)
    ix.add(x, patches_per_image=14)
    ix.remove([3, 7])
    ix.metadata = {"ids": list(range(120)), "model": {"name": "tiny", "dim": 24}}
    return ix, rng.standard_normal((5, 24)).astype(np.float32)


def _rewrite(data: bytes, kind: str, body: bytes) -> bytes:
    return replace_section(data, kind, body, fix_crc=True)


def _corrupt(data: bytes, kind: str, body: bytes) -> bytes:
    return replace_section(data, kind, body, fix_crc=False)


def assert_same_index(a, b, q):
    for x, y in zip(a.search(q, k=12), b.search(q, k=12)):
        np.testing.assert_array_equal(x, y)
    assert len(a) == len(b) and a.num_patches == b.num_patches and a.metadata == b.metadata
    np.testing.assert_array_equal(a.image_offsets, b.image_offsets)
    np.testing.assert_array_equal(a.removed, b.removed)
    for i in range(len(a)):
        np.testing.assert_array_equal(a.reconstruct(i), b.reconstruct(i))
    if a.pq is not None:
        np.testing.assert_array_equal(a.pq.centroids, b.pq.centroids)


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_eager_and_mmap(tmp_path, built, mmap):
    ix, q = built
    path = tmp_path / "a.ptch"
    ix.save(path)
    loaded = pypatch.PatchIndex.load(path, mmap=mmap)
    assert_same_index(ix, loaded, q)
    usage = loaded.memory_usage()
    assert usage["mapped"] == (usage["codes"] if mmap else usage["mapped"])
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_flat_round_trip_and_bytes_and_pickle(tmp_path):
    rng = np.random.default_rng(1)
    ix = pypatch.PatchIndex(9, flat_dtype="float16")
    ix.add(rng.standard_normal((40, 9)).astype(np.float32), image_offsets=[0, 0, 15, 40])
    ix.metadata["k"] = "v"
    q = rng.standard_normal((2, 9)).astype(np.float32)
    ix.save(tmp_path / "f.ptch")
    for other in (pypatch.PatchIndex.load(tmp_path / "f.ptch"),
                  pypatch.PatchIndex.from_bytes(ix.to_bytes()),
                  pickle.loads(pickle.dumps(ix))):
        assert other.flat_dtype == "float16"
        assert_same_index(ix, other, q)


def test_adding_to_a_mapped_index_copies_and_leaves_the_file_alone(tmp_path, built):
    ix, q = built
    path = tmp_path / "a.ptch"
    ix.save(path)
    before = path.read_bytes()
    loaded = pypatch.PatchIndex.load(path, mmap=True)
    loaded.add(np.ones((14, 24), np.float32), patches_per_image=14)
    assert len(loaded) == len(ix) + 1 and loaded.memory_usage()["mapped"] == 0
    assert path.read_bytes() == before
    loaded.save(path)  # overwriting the file it was mapped from is safe (atomic rename)
    assert len(pypatch.PatchIndex.load(path)) == len(ix) + 1


def test_truncated_file_raises_format_error(tmp_path, built):
    ix, _ = built
    path = tmp_path / "a.ptch"
    ix.save(path)
    data = path.read_bytes()
    for cut in (0, 10, 127, 200, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        for mmap in (True, False):
            with pytest.raises(IndexFormatError):
                pypatch.PatchIndex.load(path, mmap=mmap)


def test_flipped_byte_raises_format_error(tmp_path, built):
    ix, _ = built
    path = tmp_path / "a.ptch"
    ix.save(path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(2)
    for pos in [9, 60, 130] + list(rng.integers(256, len(data), 12)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(IndexFormatError):
            pypatch.PatchIndex.load(path, mmap=False)


def test_wrong_magic_and_foreign_file(tmp_path, built):
    ix, _ = built
    path = tmp_path / "a.ptch"
    ix.save(path)
    data = bytearray(path.read_bytes())
    data[1:5] = b"NOPE"
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="magic|not a pypatch"):
        pypatch.PatchIndex.load(path)
    path.write_bytes(b"this is a text file, not an index\n" * 10)
    with pytest.raises(IndexFormatError):
        pypatch.PatchIndex.load(path)


def test_newer_major_version_raises_version_error(tmp_path, built):
    ix, _ = built
    path = tmp_path / "a.ptch"
    ix.save(path)
    data = bytearray(path.read_bytes())
    data[8:10] = (2).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(IndexVersionError, match="2"):
        pypatch.PatchIndex.load(path)


def test_newer_index_header_version_raises_version_error(tmp_path, built):
    ix, _ = built
    path = tmp_path / "a.ptch"
    ix.save(path)
    data = path.read_bytes()
    _, off, _ = section_table(data)["PIDX"]
    pidx = bytearray(data[off:off + 64])
    pidx[0:4] = (5).to_bytes(4, "little")  # 2-3: inverted files (test_ivf.py), 4: residual codebooks
    path.write_bytes(_rewrite(data, "PIDX", bytes(pidx)))
    for mmap in (True, False):
        with pytest.raises(IndexVersionError, match="version 5 is newer"):
            pypatch.PatchIndex.load(path, mmap=mmap)
    pidx[0:4] = (0).to_bytes(4, "little")
    path.write_bytes(_rewrite(data, "PIDX", bytes(pidx)))
    with pytest.raises(IndexFormatError, match="version 0"):
        pypatch.PatchIndex.load(path)


def test_big_offsets_and_removed_mask_are_crc_checked_on_a_plain_mapped_load(tmp_path):
    # Over 1 MiB each (the container's always-verified limit): 1.1M one-patch images.
    n = 1_100_000
    ix = pypatch.PatchIndex(1, flat_dtype="float16")
    ix.add(np.ones((n, 1), np.float32), patches_per_image=1)
    path = tmp_path / "big.ptch"
    ix.save(path)
    data = path.read_bytes()
    assert section_table(data)["IOFF"][2] > 1 << 20 and section_table(data)["TOMB"][2] > 1 << 20
    off = np.arange(n + 1, dtype="<u8")
    off[500_000] = off[499_999]  # still a valid CSR (image 499999 empty, 500000 has 2)
    tomb = np.zeros(n, np.uint8)
    tomb[700_000] = 1            # a removed image that was never removed
    for kind, body in (("IOFF", off.tobytes()), ("TOMB", tomb.tobytes())):
        path.write_bytes(_corrupt(data, kind, body))
        with pytest.raises(IndexFormatError, match="checksum mismatch"):
            pypatch.PatchIndex.load(path, mmap=True, verify=False)
        path.write_bytes(_rewrite(data, kind, body))  # with a valid CRC it loads as written
        assert len(pypatch.PatchIndex.load(path, mmap=True, verify=False)) == n


def test_4bit_code_beyond_nbits_raises_format_error(tmp_path):
    # Files before the fast scan store 4-bit codes one a byte (blocked64): a byte >= 16 there is
    # damage. (Since then 4-bit codes are nibbles, which cannot exceed 15.)
    path = tmp_path / "a.ptch"
    data = (Path(__file__).resolve().parents[1] / "data" / "format_fs4" / "pq_m5_nbits4_blocked64.ptch").read_bytes()
    _, off, size = section_table(data)["CODE"]
    codes = bytearray(data[off:off + size])
    codes[64 + 5] = 16  # sub-quantizer 1 of patch 5 (blocked64 layout)
    path.write_bytes(_rewrite(data, "CODE", bytes(codes)))
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match="exceeds 2\\*\\*nbits"):
            pypatch.PatchIndex.load(path, mmap=mmap)


def test_to_bytes_equals_the_saved_file_and_from_bytes_reads_it(tmp_path, built):
    ix, q = built
    ix.save(tmp_path / "a.ptch")
    blob = ix.to_bytes()
    assert type(blob) is bytes and blob == (tmp_path / "a.ptch").read_bytes()
    assert_same_index(ix, pypatch.PatchIndex.from_bytes(blob), q)
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        pypatch.PatchIndex.from_bytes(_corrupt(blob, "CODE", bytes(section_table(blob)["CODE"][2])))


_READ_WHILE_ADDING = """
import threading, numpy as np, pypatch
rng = np.random.default_rng(0)
pq = pypatch.ProductQuantizer.from_centroids(rng.standard_normal((16, 256, 4)).astype(np.float32))
ix = pypatch.PatchIndex(64, pq)
ix.add(rng.standard_normal((14, 64)).astype(np.float32), patches_per_image=14)
x = rng.standard_normal((100_000, 64)).astype(np.float32)
th = threading.Thread(target=lambda: ix.add(x, patches_per_image=16, num_threads=1))
th.start()
n = 0
while th.is_alive() or n == 0:
    ix.reconstruct(0); ix.is_removed(0); ix.memory_usage(); ix.to_bytes(); ix.metadata = {"n": n}
    n += 1
th.join()
assert len(pypatch.PatchIndex.from_bytes(ix.to_bytes())) == 1 + 100_000 // 16
print("done", n)
"""


def test_reading_and_serialising_while_another_thread_adds_does_not_deadlock():
    # add() holds the index lock while it polls for Ctrl-C under the GIL; a binding that
    # waited for the lock with the GIL held used to hang here forever.
    r = run_python("-c", _READ_WHILE_ADDING, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("done"), r.stderr


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        pypatch.PatchIndex.load(tmp_path / "nope.ptch")


@pytest.mark.parametrize("mmap", [True, False])
def test_golden_format_v1_files_load(mmap):
    gen = _golden_module()
    q = np.array([[1, -2, 0, 3, 1, 1, -1, 0, 2, 2, -3, 1]], np.float32)
    pq_loaded = pypatch.PatchIndex.load(gen.PQ_FILE, mmap=mmap, verify=True)
    assert_same_index(gen.build_pq(), pq_loaded, q)
    assert pq_loaded.removed.tolist() == [i == 5 for i in range(7)]
    assert pq_loaded.metadata["ids"][6] == "img6"
    flat_loaded = pypatch.PatchIndex.load(gen.FLAT_FILE, mmap=mmap)
    assert_same_index(gen.build_flat(), flat_loaded, q[:, :5])
    np.testing.assert_array_equal(flat_loaded.reconstruct(2), gen.flat_parts()[3:6])

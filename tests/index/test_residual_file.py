"""Index files over a ResidualQuantizer (PIDX version 4 + RQCB; csrc/pypatch/index/patch_index_io.cpp).

Golden files of tests/data/format_rq (8-bit and 4-bit exhaustive, 8-bit inverted file) stand for
files in users' hands: they must load mapped and eager with verify=True and answer as recorded at
every usable SIMD level, and their answers must equal an independent numpy brute force over the
stored codes' reconstructions (float64 dot products with the decoded vectors, per-image max,
ties to the lower patch ordinal and then the lower image). The bytes: a residual index writes a
128-byte PIDX of version 4 with codebooks = 1 and its codebooks in RQCB (never PQCB), META
says "codebooks": "residual"; product-quantizer files stay byte for byte as they were (version 1 or 3, a
64-byte PIDX, PQCB). save -> load -> save and to_bytes -> from_bytes keep every byte. Damaged
headers and codebook sections (unknown codebook kind, residual codebooks on a flat store, RQCB
missing, renamed, resized or holding a NaN, a version-4 PIDX of 64 bytes) raise
IndexFormatError naming the check, with every CRC valid so only the loader's own checks can
refuse them.
"""
from __future__ import annotations

import importlib.util
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import pypatch
from _ptch_bytes import replace_section, section_table
from _simd_levels import simd_level, usable_levels
from pypatch.errors import IndexFormatError, IndexVersionError

TESTS = Path(__file__).resolve().parents[1]
GOLDEN = TESTS / "data" / "format_rq"
NAMES = ["rq8", "rq4", "ivf_rq8"]


def _fuzz_module():
    """tests/fuzz/fuzz_index_files.py: read_sections / build_container rebuild a container
    whose sections change size or go missing (every CRC valid)."""
    spec = importlib.util.spec_from_file_location("fuzz_index_files", TESTS / "fuzz" / "fuzz_index_files.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FUZZ = _fuzz_module()


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng, n, centers):
    noise = 0.3 * rng.standard_normal((n, centers.shape[1])) / np.sqrt(centers.shape[1])
    return _unit(centers[rng.integers(0, len(centers), n)] + noise)


def _build(rng, *, d=16, m=4, nbits=8, nlist=None, n_images=60, kind="residual"):
    """A small trained index of 0..30 patches an image, two removed, with user metadata."""
    counts = rng.integers(0, 31, n_images)
    counts[:2] = [0, 30]
    centers = _unit(rng.standard_normal((10, d)))
    x = _clustered(rng, int(counts.sum()), centers)
    quant = (pypatch.ResidualQuantizer if kind == "residual" else pypatch.ProductQuantizer)(d, m, nbits=nbits)
    ix = pypatch.PatchIndex(d, quant, nlist=nlist)
    ix.train(_clustered(rng, 1200, centers), iters=4, seed=1)
    ix.add(x, patches_per_image=counts)
    ix.remove([3, 11])
    ix.metadata = {"note": kind, "n": [1, 2]}
    return ix, x


def _reference(ix, q, k, nprobe=None):
    """numpy brute force over the decoded stored codes: float64 q . decoded per patch, per image
    the max (lowest ordinal on ties), images by (score desc, image asc); removed and empty images
    skipped. IVF with nprobe < nlist: only the patches of the lists each query probes."""
    decoded = ix.pq.decode(ix._ix.codes()).astype(np.float64)
    scores = np.asarray(q, np.float64) @ decoded.T
    off, removed = ix.image_offsets, ix.removed
    kk = min(k, len(ix))
    out = (np.full((len(q), kk), -np.inf), np.full((len(q), kk), -1, np.int64),
           np.full((len(q), kk), -1, np.int64))
    probed = np.ones_like(scores, bool)
    if ix.is_ivf and nprobe is not None and nprobe < ix.nlist:
        lists = ix.patch_lists()
        probed = np.stack([np.isin(lists, p) for p in ix.probe(q, nprobe)])
    for qi in range(len(q)):
        rows = []
        for i in range(len(off) - 1):
            sel = np.nonzero(probed[qi, off[i]:off[i + 1]])[0]
            if removed[i] or not len(sel):
                continue
            seg = scores[qi, off[i]:off[i + 1]][sel]
            j = int(np.argmax(seg))  # first max: the lowest ordinal
            rows.append((-seg[j], i, int(sel[j])))
        rows.sort()
        for r, (s, i, p) in enumerate(rows[:kk]):
            out[0][qi, r], out[1][qi, r], out[2][qi, r] = -s, i, p
    return out


def _equals_reference(got, want, what=""):
    np.testing.assert_array_equal(got[1], want[1], err_msg=f"images {what}")
    np.testing.assert_array_equal(got[2], want[2], err_msg=f"patches {what}")
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5, err_msg=f"scores {what}")


def _same(got, want):
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def _pidx(data: bytes) -> bytes:
    _, off, size = section_table(data)["PIDX"]
    return data[off:off + size]


def _meta(data: bytes) -> dict:
    _, off, size = section_table(data)["META"]
    return json.loads(data[off:off + size].decode("utf-8"))


def _edit(data: bytes, kind: str, edit) -> bytes:
    """``data`` with section ``kind`` edited in place (same size), every CRC made valid."""
    _, off, size = section_table(data)[kind]
    body = bytearray(data[off:off + size])
    edit(body)
    return replace_section(data, kind, bytes(body), fix_crc=True)


def _set32(at: int, value: int):
    return lambda b: struct.pack_into("<I", b, at, value)


def _rebuilt(data: bytes, change) -> bytes:
    """A new valid container of ``change([(kind, flags, body)])``: sections renamed, resized,
    dropped."""
    return FUZZ.build_container(change(FUZZ.read_sections(data)))


# ------------------------------------------------------------------------------ golden files
@pytest.mark.parametrize("name", NAMES)
def test_golden_files_load_and_answer_as_recorded(name):
    want = np.load(GOLDEN / f"{name}_expected.npz")
    q = want["queries"]
    for mmap in (True, False):
        ix = pypatch.PatchIndex.load(GOLDEN / f"{name}.ptch", mmap=mmap, verify=True)
        assert ix.pq.kind == "residual" and isinstance(ix.pq, pypatch.ResidualQuantizer)
        assert ix.pq.dim == 12 and ix.pq.m == (5 if name == "rq4" else 3)
        assert ix.pq.nbits == (4 if name == "rq4" else 8)
        assert ix.pq.centroids.shape == (ix.pq.m, 1 << ix.pq.nbits, 12)
        assert ix.nlist == int(want["nlist"]) and ix.nprobe == int(want["nprobe"])
        assert len(ix) == 160 and ix.num_removed == 2 and list(np.nonzero(ix.removed)[0]) == [7, 40]
        assert ix.metadata == {"golden": name}
        for level in usable_levels():
            with simd_level(level):
                for t in (1, 2):
                    got = ix.search(q, k=10, num_threads=t)
                    for g, key in zip(got, ("scores", "images", "patches")):
                        np.testing.assert_array_equal(g, want[key], err_msg=f"{name} {level} threads={t} {key}")
        _equals_reference(ix.search(q, k=10), _reference(ix, q, 10, ix.nprobe or None), f"{name} mmap={mmap}")
        for k in (1, 25):
            _equals_reference(ix.search(q, k=k, nprobe=ix.nlist or None), _reference(ix, q, k), f"{name} k={k}")


def test_golden_files_hold_exact_ties_between_copied_images():
    """Image 3 repeats image 2 in every golden file: both score alike and image 2 ranks first."""
    for name in ("rq8", "ivf_rq8"):
        want = np.load(GOLDEN / f"{name}_expected.npz")
        images = list(want["images"][3])
        r = images.index(2)
        assert images[r + 1] == 3 and want["scores"][3, r] == want["scores"][3, r + 1]
        assert want["patches"][3, r] == want["patches"][3, r + 1] == 17
    ix = pypatch.PatchIndex.load(GOLDEN / "rq4.ptch")
    np.testing.assert_array_equal(ix.reconstruct(2), ix.reconstruct(3))


@pytest.mark.parametrize("name", NAMES)
def test_golden_files_resave_byte_for_byte(name, tmp_path):
    golden = (GOLDEN / f"{name}.ptch").read_bytes()
    for mmap in (True, False):
        ix = pypatch.PatchIndex.load(GOLDEN / f"{name}.ptch", mmap=mmap)
        assert ix.to_bytes() == golden
        ix.save(tmp_path / "again.ptch")
        assert (tmp_path / "again.ptch").read_bytes() == golden


# ------------------------------------------------------------------------------ the bytes
@pytest.mark.parametrize("nbits,nlist", [(8, None), (4, None), (8, 5), (4, 5)])
def test_residual_files_are_version_4_with_rqcb(nbits, nlist):
    rng = np.random.default_rng(40 + nbits + (nlist or 0))
    ix, _ = _build(rng, m=3, nbits=nbits, nlist=nlist)
    data = ix.to_bytes()
    table = section_table(data)
    assert "RQCB" in table and "PQCB" not in table
    h = _pidx(data)
    assert len(h) == 128
    version, kind, dim, m, bits, code_size, trained, layout = struct.unpack_from("<8I", h, 0)
    assert (version, kind, dim, m, bits, code_size, trained) == (4, 0, 16, 3, nbits, 3, 1)
    assert layout == (2 if nbits == 4 else 1)
    assert struct.unpack_from("<3Q", h, 32) == (len(ix), ix.num_patches, 2)
    assert struct.unpack_from("<2I", h, 56) == ((nlist, ix.nprobe) if nlist else (0, 0))
    assert struct.unpack_from("<I", h, 64)[0] == 1  # codebooks: residual
    assert h[68:] == bytes(60)
    _, off, size = table["RQCB"]
    assert size == 4 * 3 * (1 << nbits) * 16
    np.testing.assert_array_equal(np.frombuffer(data, "<f4", size // 4, off).reshape(3, 1 << nbits, 16),
                                  ix.pq.centroids)
    meta = _meta(data)
    assert meta["codebooks"] == "residual" and meta["store"] == "pq" and meta["user"] == ix.metadata
    assert ("ivf" in meta) == bool(nlist)


@pytest.mark.parametrize("nlist", [None, 5])
def test_product_quantizer_files_are_unchanged(nlist):
    """Version 1 (exhaustive) or 3 (inverted file), a 64-byte PIDX, PQCB, META without a
    "codebooks" key: the bytes older pypatch wrote and reads."""
    ix, _ = _build(np.random.default_rng(50), kind="product", nlist=nlist)
    data = ix.to_bytes()
    table = section_table(data)
    assert "PQCB" in table and "RQCB" not in table
    h = _pidx(data)
    assert len(h) == 64 and struct.unpack_from("<I", h, 0)[0] == (3 if nlist else 1)
    assert "codebooks" not in _meta(data)  # META's bytes as before residual codebooks too
    back = pypatch.PatchIndex.from_bytes(data)
    assert back.pq.kind == "product" and isinstance(back.pq, pypatch.ProductQuantizer)
    # flat stores name no codebooks
    flat = pypatch.PatchIndex(8)
    flat.add(np.eye(8, dtype=np.float32), patches_per_image=4)
    fdata = flat.to_bytes()
    assert len(_pidx(fdata)) == 64 and "codebooks" not in _meta(fdata)


def test_an_untrained_residual_index_keeps_its_kind():
    for nlist in (None, 3):
        empty = pypatch.PatchIndex(10, pypatch.ResidualQuantizer(10, 7, nbits=4), nlist=nlist)
        data = empty.to_bytes()
        assert "RQCB" not in section_table(data) and "PQCB" not in section_table(data)
        h = _pidx(data)
        assert len(h) == 128 and struct.unpack_from("<I", h, 0)[0] == 4
        assert struct.unpack_from("<I", h, 24)[0] == 0 and struct.unpack_from("<I", h, 64)[0] == 1
        back = pypatch.PatchIndex.from_bytes(data)
        assert back.pq.kind == "residual" and (back.pq.m, back.pq.nbits) == (7, 4)
        assert not back.is_trained and back.nlist == (nlist or 0)
        assert back.to_bytes() == data


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("nbits,nlist", [(8, None), (4, None), (8, 4)])
def test_save_load_save_is_byte_identical(tmp_path, nbits, nlist):
    rng = np.random.default_rng(60 + nbits + (nlist or 0))
    ix, x = _build(rng, m=5, nbits=nbits, nlist=nlist)
    q = np.concatenate([x[rng.integers(0, len(x), 3)], _unit(rng.standard_normal((2, 16)))])
    want = ix.search(q, k=12)
    _equals_reference(ix.search(q, k=12, nprobe=nlist), _reference(ix, q, 12))
    path = tmp_path / "rq.ptch"
    ix.save(path)
    data = path.read_bytes()
    assert ix.to_bytes() == data
    copies = [pypatch.PatchIndex.load(path, mmap=True), pypatch.PatchIndex.load(path, mmap=False),
              pypatch.PatchIndex.load(path, mmap=True, verify=True), pypatch.PatchIndex.from_bytes(data),
              pickle.loads(pickle.dumps(ix))]
    for i, c in enumerate(copies):
        assert c.pq.kind == "residual" and c.metadata == ix.metadata and c.nlist == (nlist or 0)
        np.testing.assert_array_equal(c.pq.centroids, ix.pq.centroids)
        np.testing.assert_array_equal(c._ix.codes(), ix._ix.codes())
        np.testing.assert_array_equal(c.removed, ix.removed)
        _same(c.search(q, k=12), want)
        assert c.to_bytes() == data
        c.save(tmp_path / f"again{i}.ptch")
        assert (tmp_path / f"again{i}.ptch").read_bytes() == data
    # a loaded quantizer encodes as the original (the codes of the file stay meaningful)
    np.testing.assert_array_equal(copies[0].pq.encode(x[:100]), ix.pq.encode(x[:100]))
    # a mapped index taking more patches keeps answering like the original
    more = _clustered(rng, 40, _unit(rng.standard_normal((4, 16))))
    copies[0].add(more, patches_per_image=20)
    ix.add(more, patches_per_image=20)
    _same(copies[0].search(q, k=12), ix.search(q, k=12))
    assert copies[0].to_bytes() == ix.to_bytes()


# ------------------------------------------------------------------------------ damaged files
@pytest.fixture(scope="module")
def files():
    """(exhaustive 8-bit, exhaustive 4-bit, IVF 8-bit) residual index bytes, and a flat one."""
    rng = np.random.default_rng(70)
    out = [_build(rng, m=3, nbits=nbits, nlist=nlist, n_images=30)[0].to_bytes()
           for nbits, nlist in ((8, None), (4, None), (8, 4))]
    flat = pypatch.PatchIndex(16)
    flat.add(rng.standard_normal((20, 16)).astype(np.float32), patches_per_image=5)
    return out, flat.to_bytes()


def _refused(data: bytes, message: str, tmp_path: Path) -> None:
    """from_bytes and both file loads raise IndexFormatError matching ``message``."""
    with pytest.raises(IndexFormatError, match=message):
        pypatch.PatchIndex.from_bytes(data)
    path = tmp_path / "bad.ptch"
    path.write_bytes(data)
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match=message):
            pypatch.PatchIndex.load(path, mmap=mmap)


def test_intact_files_load(files):
    rq, flat = files
    for data in rq + [flat]:
        pypatch.PatchIndex.from_bytes(data)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["rq8", "rq4", "ivf_rq8"])
def test_damaged_headers_raise_index_format_error(files, which, tmp_path):
    data = files[0][which]
    cases = {  # what: (edit of the 128-byte PIDX, the loader's message)
        "codebooks 2": (_set32(64, 2), "unknown codebook kind 2"),
        "codebooks huge": (_set32(64, 0xFFFFFFFF), "unknown codebook kind 4294967295"),
        "residual codebooks on a flat store": (_set32(4, 1), "residual codebooks need a PQ store|"
                                                             "inverted file needs a PQ store"),
        "m 0": (_set32(12, 0), "invalid index settings: m must be in 1..256"),
        "m 257": (_set32(12, 257), "invalid index settings: m must be in 1..256"),
        "nbits 5": (_set32(16, 5), "invalid index settings: nbits must be 8 or 4"),
        "m * dim past 2**26": (lambda b: (struct.pack_into("<I", b, 8, 1 << 20),
                                          struct.pack_into("<I", b, 12, 65)),
                               "invalid index settings: m \\* dim must be <= 2\\*\\*26"),
        "code size": (_set32(20, 4), "code size does not match"),
    }
    for what, (edit, message) in cases.items():
        try:
            _refused(_edit(data, "PIDX", edit), message, tmp_path)
        except BaseException as e:  # name the case in the report
            raise AssertionError(f"{what}: {e}") from e
    # codebooks 0 (product) on residual codebooks: m = 3 does not divide dim 16 ...
    _refused(_edit(data, "PIDX", _set32(64, 0)), "m must divide dim", tmp_path)


def test_residual_codebook_kind_on_a_flat_file(files, tmp_path):
    """A flat file given a version-4 header: codebooks = 1 is refused, codebooks = 0 loads."""
    _, flat = files

    def v4(codebooks):
        def change(secs):
            out = []
            for kind, flags, body in secs:
                if kind == "PIDX":
                    body = bytearray(body + bytes(64))
                    struct.pack_into("<I", body, 0, 4)
                    struct.pack_into("<I", body, 64, codebooks)
                    body = bytes(body)
                out.append((kind, flags, body))
            return out
        return _rebuilt(flat, change)

    back = pypatch.PatchIndex.from_bytes(v4(0))
    assert back.pq is None and back.num_patches == 20
    _same(back.search(np.ones((1, 16), np.float32), k=3),
          pypatch.PatchIndex.from_bytes(flat).search(np.ones((1, 16), np.float32), k=3))
    _refused(v4(1), "residual codebooks need a PQ store", tmp_path)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["rq8", "rq4", "ivf_rq8"])
def test_damaged_codebook_sections_raise_index_format_error(files, which, tmp_path):
    data = files[0][which]

    def without(kind):
        return lambda secs: [s for s in secs if s[0] != kind]

    def renamed(old, new):
        return lambda secs: [((new if k == old else k), f, b) for k, f, b in secs]

    def resized(kind, delta):
        return lambda secs: [(k, f, b[:len(b) + delta] if delta < 0 else b + bytes(delta)) if k == kind
                             else (k, f, b) for k, f, b in secs]

    # trained with codes, but RQCB gone (or written under the product quantizer's name)
    _refused(_rebuilt(data, without("RQCB")), "required section 'RQCB' is missing", tmp_path)
    _refused(_rebuilt(data, renamed("RQCB", "PQCB")), "required section 'RQCB' is missing", tmp_path)
    _refused(_rebuilt(data, resized("RQCB", -4)), "section 'RQCB' has", tmp_path)
    _refused(_rebuilt(data, resized("RQCB", 64)), "section 'RQCB' has", tmp_path)
    for value, at in ((float("nan"), 0), (float("inf"), 4 * 17), (-1e30, 4 * 3 * 16 - 4)):
        _refused(_edit(data, "RQCB", lambda b: struct.pack_into("<f", b, at, value)),
                 "RQCB holds a NaN, infinite or too large centroid value", tmp_path)
    # a stale RQCB checksum is caught even by a plain mapped load
    _, off, _ = section_table(data)["RQCB"]
    stale = bytearray(data)
    stale[off + 5] ^= 0x10
    _refused(bytes(stale), "checksum", tmp_path)
    # a version-4 header cut to the 64 bytes of versions 1-3
    _refused(_rebuilt(data, lambda secs: [(k, f, b[:64] if k == "PIDX" else b) for k, f, b in secs]),
             "section 'PIDX' has 64 bytes, expected 128", tmp_path)
    # ... and a longer one
    _refused(_rebuilt(data, resized("PIDX", 64)), "section 'PIDX' has 192 bytes, expected 128", tmp_path)


def test_product_files_refuse_residual_sections_and_newer_versions(files, tmp_path):
    """A version-1/3 file (64-byte PIDX) whose header says 4 is a short version-4 header, not a
    newer-version file; version 5 is refused as newer; PQCB renamed RQCB leaves PQCB missing."""
    ix, _ = _build(np.random.default_rng(80), kind="product", n_images=20)
    data = ix.to_bytes()
    _refused(_edit(data, "PIDX", _set32(0, 4)), "section 'PIDX' has 64 bytes, expected 128", tmp_path)
    with pytest.raises(IndexVersionError, match="version 5 is newer than this pypatch reads \\(4\\)"):
        pypatch.PatchIndex.from_bytes(_edit(data, "PIDX", _set32(0, 5)))
    with pytest.raises(IndexVersionError, match="version 5 is newer"):
        pypatch.PatchIndex.from_bytes(_edit(files[0][0], "PIDX", _set32(0, 5)))
    renamed = _rebuilt(data, lambda secs: [("RQCB" if k == "PQCB" else k, f, b) for k, f, b in secs])
    _refused(renamed, "required section PQ_CENTROIDS is missing", tmp_path)

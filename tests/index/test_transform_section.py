"""The ImageIndex pre-transform in the native XFRM section (META format 3): round trips (flat and
PQ, eager and mmap) keep search identical, META stays small, damaged sections raise typed errors,
the golden format-2 file (matrix as base64 in META) still loads, and the core's apply equals
PCATransform.apply. No model is run: seeded descriptors stand in for embeddings."""
from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

import pypatch
from pypatch import ImageIndex, PatchIndex
from pypatch.errors import IndexFormatError, IndexVersionError, InvalidArgumentError, InvalidTypeError
from pypatch.index.meta import META_KEY
from pypatch.index.transform import PCATransform

from _ptch_bytes import replace_section, section_table

GOLDEN_V2 = Path(__file__).resolve().parents[1] / "data" / "format_v2"
SIZES = [(64, 48), (80, 80), (50, 70), (33, 90), (120, 40), (70, 70)]


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_golden_v2", GOLDEN_V2 / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _index(store: str, transform=None, dim: int = 24, pca_dim: int = 8) -> ImageIndex:
    """An ImageIndex as build() leaves it (L1 cells, single_pass), without a model."""
    from pypatch.index.image_index import _make_grid
    from pypatch.index.meta import new_meta
    from pypatch.index.training import new_patch_index, transform_spec

    grid, spec = _make_grid("L1")
    counts = [len(grid.boxes(w, h)) for w, h in SIZES]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((sum(counts), dim)).astype(np.float32)
    if transform is None:
        transform = PCATransform.fit(x, pca_dim, -0.5)
        if store == "pq":  # an orthogonal rotation folded in, as OPQ does
            q, _ = np.linalg.qr(rng.standard_normal((pca_dim, pca_dim)))
            transform = transform.rotated(q)
    tspec = transform_spec(transform.dim_out, transform.power, store == "pq", store=store,
                           pq_m=4, dim=dim, train_size=len(x), seed=0, auto_dim=256,
                           mode="single_pass")
    tspec["fitted"] = transform.to_dict()
    store_info = {"kind": store}
    if store == "pq":
        store_info.update(m=4, nbits=4, train_on="all", train_size=len(x), seed=0)
    model = {"name": "fake", "spec": None, "path": None, "sha256": None,
             "card": {"name": "fake", "dim": dim}}
    meta = new_meta(grid=grid, regions_spec=spec, mode="single_pass", store=store_info,
                    model=model, dim=dim, transform=tspec)
    meta.update(ids=[f"img{i}" for i in range(len(SIZES))],
                paths=[f"/p/img{i}.jpg" for i in range(len(SIZES))],
                sizes=[list(s) for s in SIZES])
    y = transform.apply(x)
    patch_index = new_patch_index(transform.dim_out, store_info)
    patch_index.train(y, iters=3)
    patch_index.add(y, patches_per_image=counts)
    return ImageIndex(patch_index, meta)


def _queries(dim: int = 24) -> np.ndarray:
    return np.random.default_rng(11).standard_normal((4, dim)).astype(np.float32)


def _hits(index, q):
    return [[(h.image, h.patch, h.score, h.box) for h in row] for row in index.search_vectors(q, k=4)]


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("store", ["flat", "pq"])
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_keeps_the_transform_and_the_results(tmp_path, store, mmap):
    index = _index(store)
    q = _queries()
    path = tmp_path / "a.ptch"
    index.save(path)
    back = ImageIndex.load(path, mmap=mmap)
    assert isinstance(back.transform, PCATransform) and back._meta["format"] == 3
    t, u = index.transform, back.transform
    for name in ("mean", "matrix", "eigenvalues"):
        np.testing.assert_array_equal(getattr(u, name), getattr(t, name))
    assert u.power == t.power
    np.testing.assert_array_equal(back.to_stored(q), index.to_stored(q))
    assert _hits(back, q) == _hits(index, q)
    # the arrays are in the native section, equal to the fitted ones
    mean, matrix = PatchIndex.load(path, mmap=mmap).transform
    np.testing.assert_array_equal(mean, t.mean)
    np.testing.assert_array_equal(matrix, t.matrix)
    # saving the loaded index again gives the same file
    back.save(tmp_path / "b.ptch")
    assert (tmp_path / "b.ptch").read_bytes() == path.read_bytes()


def test_meta_no_longer_holds_the_matrix(tmp_path):
    rng = np.random.default_rng(3)
    big = PCATransform(rng.standard_normal(1280), rng.standard_normal((256, 1280)) / 36,
                       np.sort(rng.random(256))[::-1], -0.25)
    index = _index("flat", transform=big, dim=1280)
    path = tmp_path / "big.ptch"
    index.save(path)
    data = path.read_bytes()
    sections = section_table(data)
    assert sections["META"][2] < 20_000  # was ~1.75 MB of base64 in format 2
    assert sections["XFRM"][2] == 64 + 4 * (1280 + 256 * 1280)
    meta = json.loads(data[sections["META"][1]:sections["META"][1] + sections["META"][2]])
    fitted = meta["user"][META_KEY]["transform"]["fitted"]
    assert fitted["arrays"] == "XFRM" and "matrix" not in fitted and "mean" not in fitted
    back = ImageIndex.load(path)
    q = _queries(1280)
    np.testing.assert_array_equal(back.to_stored(q), index.to_stored(q))


def test_an_index_without_transform_is_still_format_1(tmp_path):
    index = _index("flat")
    index._transform, index._meta["transform"], index._meta["dim"] = None, None, 8  # no PCA
    native = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    index.save(tmp_path / "raw.ptch")
    assert "XFRM" not in section_table((tmp_path / "raw.ptch").read_bytes())
    back = ImageIndex.load(tmp_path / "raw.ptch")
    assert back._meta["format"] == 1 and back.transform is None
    np.testing.assert_array_equal(back.to_stored(native), native)


# ---------------------------------------------------------------------- old files
@pytest.mark.parametrize("mmap", [True, False])
def test_golden_format_2_file_loads_and_searches_as_recorded(tmp_path, mmap):
    golden = _golden_module()
    expected = json.loads(golden.EXPECTED_FILE.read_text())
    assert "XFRM" not in section_table(golden.INDEX_FILE.read_bytes())
    index = ImageIndex.load(golden.INDEX_FILE, mmap=mmap)
    assert index._meta["format"] == 2 and isinstance(index.transform, PCATransform)

    def check(ix):
        got = golden.expected(ix)
        np.testing.assert_allclose(got["to_stored"], expected["to_stored"], rtol=0, atol=1e-6)
        for row, ref in zip(got["hits"], expected["hits"]):
            assert [(h[0], h[2]) for h in row] == [(h[0], h[2]) for h in ref]
            np.testing.assert_allclose([h[1] for h in row], [h[1] for h in ref], atol=1e-6)

    check(index)
    index.save(tmp_path / "v3.ptch")  # re-saved: format 3, same results
    again = ImageIndex.load(tmp_path / "v3.ptch", mmap=mmap)
    assert again._meta["format"] == 3
    check(again)


def test_an_older_pypatch_refuses_format_3(tmp_path, monkeypatch):
    import pypatch.index.meta as index_meta

    _index("flat").save(tmp_path / "a.ptch")
    monkeypatch.setattr(index_meta, "META_FORMAT", 2)  # what pypatch <= 0.1 supports
    with pytest.raises(IndexVersionError, match="newer than this pypatch"):
        ImageIndex.load(tmp_path / "a.ptch")


# ---------------------------------------------------------------------- damaged files
def test_damaged_xfrm_section_raises_typed_errors(tmp_path):
    good = tmp_path / "good.ptch"
    _index("flat").save(good)
    data = good.read_bytes()
    _, off, size = section_table(data)["XFRM"]
    body = bytearray(data[off:off + size])
    flipped = bytearray(body)
    flipped[64 + 4 * 24 + 9] ^= 0x10                   # a matrix byte
    wrong_out = bytearray(body)
    struct.pack_into("<I", wrong_out, 12, 9)           # dim_out 9 != index dim 8
    wrong_in = bytearray(body)
    struct.pack_into("<I", wrong_in, 8, 23)            # sizes no longer match the dims
    nan = bytearray(body)
    struct.pack_into("<f", nan, 64, float("nan"))      # a NaN in the mean
    newer = bytearray(body)
    struct.pack_into("<I", newer, 0, 2)
    # (a changed value under a valid CRC is just another transform: only the CRC guards values,
    # as for the PQ centroids)
    cases = [(flipped, False, IndexFormatError, "checksum mismatch"),
             (wrong_out, True, IndexFormatError, "maps to 9 dims but the index stores 8"),
             (wrong_in, True, IndexFormatError, "needs"),
             (nan, True, IndexFormatError, "NaN"),
             (newer, True, IndexVersionError, "upgrade pypatch")]
    bad = tmp_path / "bad.ptch"
    for new_body, fix_crc, error, match in cases:
        bad.write_bytes(replace_section(data, "XFRM", bytes(new_body), fix_crc))
        for mmap in (True, False):
            with pytest.raises(error, match=match):
                ImageIndex.load(bad, mmap=mmap)
    bad.write_bytes(data[:-64])  # truncated file
    with pytest.raises(IndexFormatError):
        ImageIndex.load(bad)


def test_meta_pointing_at_a_missing_or_mismatched_section_raises(tmp_path):
    good = tmp_path / "good.ptch"
    _index("flat").save(good)
    pidx = PatchIndex.load(good, mmap=False)
    pidx.clear_transform()  # META still says the arrays are in XFRM
    pidx.save(tmp_path / "missing.ptch")
    with pytest.raises(IndexFormatError, match="XFRM section, which is missing"):
        ImageIndex.load(tmp_path / "missing.ptch")
    pidx = PatchIndex.load(good, mmap=False)
    rng = np.random.default_rng(1)
    pidx.set_transform(rng.standard_normal(30).astype(np.float32),
                       rng.standard_normal((8, 30)).astype(np.float32))  # 30 -> 8, META says 24
    pidx.save(tmp_path / "other.ptch")
    with pytest.raises(IndexFormatError, match="30 -> 8 transform"):
        ImageIndex.load(tmp_path / "other.ptch")
    pidx = PatchIndex.load(good, mmap=False)
    pidx.metadata[META_KEY]["transform"]["fitted"]["arrays"] = "ELSEWHERE"
    pidx.save(tmp_path / "where.ptch")
    with pytest.raises(IndexFormatError, match="unknown arrays location"):
        ImageIndex.load(tmp_path / "where.ptch")


# ---------------------------------------------------------------------- the core's apply
def test_core_apply_equals_pcatransform_apply():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 64)).astype(np.float32) * 3 + 1
    for t in (PCATransform.fit(x, 16, -0.5), PCATransform.fit(x, 64, 0.0),
              PCATransform(rng.standard_normal(1280), rng.standard_normal((256, 1280)) / 36,
                           np.ones(256), 0.0)):
        ix = PatchIndex(t.dim_out)
        ix.set_transform(t.mean, t.matrix)
        q = (rng.standard_normal((50, t.dim_in)) * 2).astype(np.float32)
        np.testing.assert_allclose(ix.apply_transform(q), t.apply(q), atol=1e-5, rtol=0)
        np.testing.assert_allclose(ix.apply_transform(q[3]), t.apply(q[3]), atol=1e-5, rtol=0)
        back = PatchIndex.from_bytes(ix.to_bytes())
        np.testing.assert_array_equal(back.apply_transform(q), ix.apply_transform(q))


def test_set_transform_validates_its_arrays():
    ix = PatchIndex(4)
    mean, matrix = np.zeros(6, np.float32), np.ones((4, 6), np.float32)
    with pytest.raises(InvalidArgumentError, match="no transform"):
        ix.apply_transform(np.ones((1, 6), np.float32))
    with pytest.raises(InvalidArgumentError, match="4 rows"):
        ix.set_transform(mean, np.ones((3, 6), np.float32))
    with pytest.raises(InvalidArgumentError, match="6 columns"):
        ix.set_transform(mean, np.ones((4, 5), np.float32))
    with pytest.raises(InvalidTypeError, match="float32"):
        ix.set_transform(mean.astype(np.float64), matrix)
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        ix.set_transform(mean, np.ones((6, 4), np.float32).T)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        ix.set_transform(np.full(6, np.nan, np.float32), matrix)
    assert ix.transform is None
    ix.set_transform(mean, matrix)
    with pytest.raises(InvalidArgumentError, match="expected 6 columns"):
        ix.apply_transform(np.ones((2, 5), np.float32))
    assert ix.memory_usage()["transform"] == 4 * (6 + 24)
    ix.clear_transform()
    assert ix.transform is None and pypatch.PatchIndex.from_bytes(ix.to_bytes()).transform is None

"""ImageIndex META checked on load: CRC-valid files whose image metadata lacks or mistypes a key,
or disagrees with the native index (per-image patch counts against the grid, counts, store,
dims), raise IndexFormatError on load, and `pypatch info` / `pypatch search` print one line and
exit 2 (never a traceback). Files are real (written by the native writer, every CRC valid);
only the META JSON is edited. The default model is used only for the `pypatch search` runs."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from pypatch import ImageIndex
from pypatch.errors import IndexFormatError, IndexVersionError

from _image_index_files import (fake_image_index, read_image_meta, write_image_meta,
                                write_user_metadata)
from _subprocess import run_python

MISSING = object()  # drop the key


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """name -> (path, META) of good files: flat L1 (format 1), PQ + XFRM R-MAC (format 3)."""
    root = tmp_path_factory.mktemp("meta_bases")
    out = {}
    for name, index in (("flat", fake_image_index("flat", "L1")),
                        ("pq", fake_image_index("pq", "rmac1", pca_dim=8)),
                        ("sliding", fake_image_index("flat16", "sliding"))):
        path = root / f"{name}.ptch"
        index.save(path)
        out[name] = (path, read_image_meta(path))
    return out


def _edit(meta: dict, key: str, value) -> dict:
    """A copy of ``meta`` with the dotted ``key`` (list positions as numbers) set or dropped."""
    meta = copy.deepcopy(meta)
    *parents, last = key.split(".")
    node = meta
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is MISSING:
        del node[last]
    else:
        node[last] = value
    return meta


# ---------------------------------------------------------------------- the cases
REQUIRED = {  # base -> keys whose absence must be refused
    "flat": ["format", "ids", "paths", "sizes", "regions", "regions.spec", "regions.grid",
             "regions.grid.kind", "regions.grid.levels", "mode", "store", "store.kind", "model",
             "model.name", "model.card", "dim"],
    "pq": ["store.m", "store.nbits", "store.train_on", "store.train_size", "store.seed",
           "transform.kind", "transform.dim", "transform.power", "transform.fitted",
           "transform.fitted.kind", "transform.fitted.dim_in", "transform.fitted.dim_out",
           "transform.fitted.power", "transform.fitted.arrays", "transform.fitted.eigenvalues",
           "regions.grid.overlap", "transform"],
    "sliding": ["regions.grid.window", "regions.grid.stride"],
}
OPTIONAL = {"flat": ["removed", "pypatch_version", "model.spec", "model.path", "model.sha256",
                     "transform"],
            "pq": ["store.trained_on_vectors", "transform.train_size", "transform.seed",
                   "transform.auto", "transform.opq", "transform.trained_on_vectors"]}

# key -> values of the wrong type (or out of range) for it
WRONG_TYPE = {
    "flat": {
        "format": ["1", 1.0, True, None, [1], 0, -3],
        "ids": ["img0", {}, None, 6],
        "ids.0": [0, None, ["img0"], True],
        "paths": ["/p", {}, 1],
        "paths.0": [1, ["/p"], {"p": 1}],
        "sizes": ["64x48", {}, 1, None],
        "sizes.0": [[64], [64, 48, 1], [64, "48"], [64, 48.0], [True, 48], [0, 48], [64, -1],
                    64, "64,48", {"w": 64}, [2 ** 40, 48]],
        "removed": ["none", 0, {}],
        "regions": ["L1", [], None],
        "regions.spec": [1, None, ["L1"]],
        "regions.grid": ["pyramid", [], None],
        "regions.grid.kind": ["custom", "grid", 1, None],
        "regions.grid.levels": ["1", 1.0, True, 5, -1, None],
        "mode": ["fast", 0, None, ["crop"]],
        "store": ["flat", [], None],
        "store.kind": ["pq", "flat16", "float32", 0, None],
        "store.trained_on_vectors": ["20", -1, 2.5],
        "model": ["fake", [1], None],
        "model.name": [1, ["fake"], {}],
        "model.spec": [1, ["x"]],
        "model.path": [1, {}],
        "model.sha256": [0, ["0"]],
        "model.card": ["fake", [], None],
        "dim": ["24", 24.0, True, 0, 25, -24, None, 2 ** 21],
        "transform": ["pca", [], 1, {}],
        "pypatch_version": [0, ["0.1"]],
    },
    "pq": {
        "store.kind": ["flat", "flat16"],
        "store.m": ["4", 4.0, True, 8, 0],
        "store.nbits": ["4", 8, None],
        "store.train_on": [1, None],
        "store.train_size": ["20", 0, 1.5],
        "store.seed": ["0", -1, None],
        "regions.grid.overlap": ["0.4", 1.0, -0.1, None, float("nan")],
        "transform": [None, "pca", []],
        "transform.kind": ["pcb", 1, None],
        "transform.dim": [9, "8", 8.0, True],
        "transform.power": ["-0.5", 0.5, -2, None, float("nan"), float("inf")],
        "transform.auto": ["no", 0],
        "transform.opq": [1, None],
        "transform.seed": ["0", 1.5],
        "transform.fitted": ["XFRM", [], None],
        "transform.fitted.dim_in": [23, "24", 24.5, True, None, 2 ** 40],
        "transform.fitted.dim_out": [9, "8", 8.5, 0],
        "transform.fitted.power": ["x", None, float("nan")],
        "transform.fitted.arrays": ["META", 1, None],
        "transform.fitted.eigenvalues": ["x", None, {"dtype": "float32", "shape": [8]}],
    },
    "sliding": {
        "regions.grid.window": [0, 1.5, "0.5", None],
        "regions.grid.stride": [0.0, -1, [0.5]],
        "regions.grid.levels": [2, 0],
    },
}


def _cases():
    for base, keys in REQUIRED.items():
        for key in keys:
            yield pytest.param(base, key, MISSING, id=f"{base}-missing-{key}")
    for base, table in WRONG_TYPE.items():
        for key, values in table.items():
            for i, v in enumerate(values):
                yield pytest.param(base, key, v, id=f"{base}-{key}={v!r}"[:80] + f"#{i}")


def _mismatches(bases):
    """(name, META) pairs consistent in type but not with the native index."""
    flat = bases["flat"][1]
    pq = bases["pq"][1]
    sizes_pq = [list(s) for s in pq["sizes"]]
    sizes_pq[1] = [400, 80]  # R-MAC: another aspect ratio gives another patch count
    return [
        ("grid levels 2 (14 patches) over 5 per image", _edit(flat, "regions.grid.levels", 2)),
        ("grid levels 0 (1 patch) over 5 per image", _edit(flat, "regions.grid.levels", 0)),
        ("rmac levels 3 over rmac1 counts", _edit(pq, "regions.grid.levels", 3)),
        ("one size whose R-MAC count differs", dict(pq, sizes=sizes_pq)),
        ("image too small for the L1 grid", _edit(flat, "sizes.2", [1, 70])),
        ("one id fewer", dict(flat, ids=flat["ids"][:-1])),
        ("one path more", dict(flat, paths=flat["paths"] + ["/x.jpg"])),
        ("one size fewer", dict(flat, sizes=flat["sizes"][:-1])),
        ("duplicate ids", _edit(flat, "ids.1", flat["ids"][0])),
        ("meta declares pq, the store is flat", _edit(flat, "store", pq["store"])),
    ]


def _expect_refused(path):
    for mmap in (True, False):
        with pytest.raises(IndexFormatError) as info:
            ImageIndex.load(path, mmap=mmap, verify=True)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def _cli(argv) -> tuple:
    """(status, stderr lines) of an in-process `pypatch ...` run."""
    import contextlib
    import io

    from pypatch.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, err.getvalue().splitlines()


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("base,key,value", list(_cases()))
def test_a_missing_or_mistyped_key_is_refused_on_load(bases, tmp_path, base, key, value):
    path = tmp_path / "bad.ptch"
    write_image_meta(bases[base][0], path, _edit(bases[base][1], key, value))
    _expect_refused(path)
    rc, err = _cli(["info", str(path)])
    assert rc == 2 and len(err) == 1 and err[0].startswith("pypatch info: error: "), err


@pytest.mark.parametrize("base", sorted(OPTIONAL))
def test_optional_keys_may_be_absent(bases, tmp_path, base):
    for key in OPTIONAL[base]:
        if key == "transform" and bases[base][1]["transform"] is not None:
            continue
        path = tmp_path / "opt.ptch"
        write_image_meta(bases[base][0], path, _edit(bases[base][1], key, MISSING))
        index = ImageIndex.load(path)
        assert index.info()["images"] == len(bases[base][1]["ids"])
        q = np.random.default_rng(0).standard_normal((2, 24)).astype(np.float32)
        assert [len(hits) for hits in index.search_vectors(q, k=3)] == [3, 3]


def test_patch_counts_and_lengths_that_disagree_with_the_native_index_are_refused(bases,
                                                                                  tmp_path):
    for name, meta in _mismatches(bases):
        base = "pq" if meta.get("transform") else "flat"
        path = tmp_path / "mismatch.ptch"
        write_image_meta(bases[base][0], path, meta)
        try:
            _expect_refused(path)
        except BaseException:
            print("case:", name)
            raise
    # the same files pass when the native counts are the grid's: the check compares, it does
    # not merely refuse edited files
    for base in ("flat", "pq", "sliding"):
        path = tmp_path / "same.ptch"
        write_image_meta(bases[base][0], path, bases[base][1])
        assert len(ImageIndex.load(path)) == len(bases[base][1]["ids"])


def test_native_patch_counts_off_the_grid_are_refused(tmp_path):
    """The native side disagrees: an image holds one patch more than its L1 cells."""
    from pypatch import PatchIndex

    good = tmp_path / "good.ptch"
    fake_image_index("flat", "L1").save(good)
    src = PatchIndex.load(good, mmap=False)
    counts = np.diff(src.image_offsets)
    counts[3] += 1
    vectors = np.concatenate([src.reconstruct(i) for i in range(len(src))]
                             + [np.full((1, 24), 24 ** -0.5, np.float32)])
    order = np.concatenate([np.arange(src.image_offsets[4]), [len(vectors) - 1],
                            np.arange(src.image_offsets[4], len(vectors) - 1)])
    bad = PatchIndex(24)
    bad.add(vectors[order], patches_per_image=counts)
    bad.metadata = src.metadata
    bad.save(tmp_path / "bad.ptch")
    with pytest.raises(IndexFormatError, match=r"image 3 .* has 6 patches in the index but the "
                                               r"grid PatchGrid\(levels=1\) gives 5"):
        ImageIndex.load(tmp_path / "bad.ptch")


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ("3", "JSON object"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ('{"pypatch.image_index": [1]}', "without image metadata"),
    ('{"pypatch.image_index": {"format": 1, "dim": NaN}}', "lacks"),
    ('{"pypatch.image_index": {"format": 9}}', "newer than this pypatch"),
])
def test_metadata_that_is_not_a_json_object_is_refused(bases, tmp_path, text, match):
    path = tmp_path / "notjson.ptch"
    write_user_metadata(bases["flat"][0], path, text)
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match=match):
            ImageIndex.load(path, mmap=mmap)
    rc, err = _cli(["info", str(path)])
    assert rc == 2 and len(err) == 1, err


def test_a_newer_meta_format_is_a_version_error(bases, tmp_path):
    path = tmp_path / "newer.ptch"
    from pypatch.index.meta import META_FORMAT

    write_image_meta(bases["flat"][0], path, _edit(bases["flat"][1], "format", META_FORMAT + 1))
    with pytest.raises(IndexVersionError, match="upgrade pypatch"):
        ImageIndex.load(path)


def test_nan_in_a_number_is_refused(bases, tmp_path):
    """JSON has no NaN, but Python's parser reads the bare word: a damaged power must not pass."""
    meta = json.dumps(_edit(bases["pq"][1], "transform.power", 0.0)).replace(
        '"power": 0.0', '"power": NaN', 1)
    path = tmp_path / "nan.ptch"
    write_user_metadata(bases["pq"][0], path, '{"pypatch.image_index": ' + meta + "}")
    with pytest.raises(IndexFormatError, match="transform.power"):
        ImageIndex.load(path)


def test_verify_reaches_the_native_crc_check(tmp_path):
    """verify=True checks the big sections of a mapped file too, as PatchIndex.load does;
    the default (False) maps them unchecked, as before."""
    from _ptch_bytes import section_table

    good = tmp_path / "big.ptch"
    fake_image_index("flat", "L1", sizes=[(64, 48)] * 2400).save(good)  # VECS > 1 MiB
    data = bytearray(good.read_bytes())
    _, off, size = section_table(bytes(data))["VECS"]
    assert size > 1 << 20  # above the size the core always checks
    data[off + size // 2] ^= 0x01  # a stale CRC over the vectors only
    path = tmp_path / "flipped.ptch"
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum"):
        ImageIndex.load(path, mmap=True, verify=True)
    with pytest.raises(IndexFormatError, match="checksum"):
        ImageIndex.load(path, mmap=False)
    assert len(ImageIndex.load(path, mmap=True)) == 2400


def test_golden_files_still_load_with_the_schema_check():
    from pathlib import Path

    golden = Path(__file__).resolve().parent.parent / "data" / "format_v2" / "flat_pca8_l1.ptch"
    for mmap in (True, False):
        index = ImageIndex.load(golden, mmap=mmap, verify=True)
        assert len(index) == 5 and index.info()["patches"] == 25


# ---------------------------------------------------------------------- the CLI, as users run it
@pytest.fixture(scope="module")
def real_index(tmp_path_factory, embedder):
    """A flat L1 index of three small real images built with the default model (so that
    `pypatch search` reaches the search), and one of the images as a query."""
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("meta_cli")
    photos = root / "photos"
    photos.mkdir()
    for name, arr in (("astronaut.png", skimage_data.astronaut()[::4, ::4]),
                      ("rocket.png", skimage_data.rocket()[::4, ::4]),
                      ("coffee.png", skimage_data.coffee()[::4, ::4])):
        Image.fromarray(arr).save(photos / name)
    index = ImageIndex.build(photos, regions="L1", store="flat", embedder=embedder,
                             progress=False, pca_dim=None)
    path = root / "real.ptch"
    index.save(path)
    return path, read_image_meta(path), photos / "rocket.png"


def _real_cases(meta):
    return {
        "grid-mismatch": _edit(meta, "regions.grid.levels", 0),  # search: IndexError before
        "missing-sizes": _edit(meta, "sizes", MISSING),
        "missing-regions-spec": _edit(meta, "regions.spec", MISSING),  # info: KeyError before
        "mistyped-model": _edit(meta, "model", ["x"]),  # AttributeError before
        "mistyped-mode": _edit(meta, "mode", 3),
    }


@pytest.mark.parametrize("command", ["info", "search"])
def test_cli_prints_one_line_and_exits_2(real_index, tmp_path, command):
    path, meta, query = real_index
    files = {}
    for name, bad in _real_cases(meta).items():
        files[name] = tmp_path / f"{name}.ptch"
        write_image_meta(path, files[name], bad)
    for name, text in (("not-json", "{oops"), ("not-object", "[1]")):
        files[name] = tmp_path / f"{name}.ptch"
        write_user_metadata(path, files[name], text)
    extra = [str(query), "--refine", "none"] if command == "search" else []
    ok = run_python("-m", "pypatch", command, str(path), *extra)
    assert ok.returncode == 0, ok.stderr
    for name, f in files.items():
        res = run_python("-m", "pypatch", command, str(f), *extra)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, (name, res.returncode, res.stderr[-2000:])
        assert lines[0].startswith(f"pypatch {command}: error: "), (name, lines)

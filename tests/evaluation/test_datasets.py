"""Loaders against tiny fixtures written in each benchmark's published layout."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pypatch.evaluation.datasets import Benchmark, detect_format, load, load_generic
from pypatch.errors import DatasetFormatError

skdata = pytest.importorskip("skimage.data")


def _photo(path: Path, seed: int) -> Path:
    """A real photo crop (chelsea) so that loaders see genuine JPEG files."""
    im = skdata.chelsea()
    y, x = 10 * seed, 15 * seed
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(im[y:y + 120, x:x + 160]).save(path, quality=90)
    return path


# ---------------------------------------------------------------------------------- generic
def _generic(tmp_path: Path) -> Path:
    for i in range(3):
        _photo(tmp_path / "db" / f"d{i}.jpg", i)
    _photo(tmp_path / "q" / "q0.jpg", 4)
    data = {
        "queries": [{"id": "q0", "image": "q/q0.jpg", "box": [1, 2, 50, 60]}],
        "database": [{"id": f"d{i}", "image": f"db/d{i}.jpg"} for i in range(3)],
        "positives": {"q0": [{"id": "d1", "boxes": [[0, 0, 10, 10], [5, 5, 20, 20]], "area_frac": 0.1}]},
        "junk": {"q0": ["d2"]},
        "name": "tiny",
    }
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def test_generic_roundtrip(tmp_path):
    path = _generic(tmp_path)
    assert detect_format(tmp_path) == "generic"
    b = load(tmp_path)
    assert b.name == "tiny" and [d.id for d in b.database] == ["d0", "d1", "d2"]
    assert b.queries[0].box == (1, 2, 50, 60) and b.queries[0].image == tmp_path / "q/q0.jpg"
    (p,) = b.positives["q0"]
    assert p.boxes == ((0, 0, 10, 10), (5, 5, 20, 20)) and p.meta == {"area_frac": 0.1}
    assert b.junk_ids("q0") == ["d2"] and b.has_boxes("q0")
    # writing it back gives the same document
    out = tmp_path / "again.json"
    b.save(out)
    assert json.loads(out.read_text()) == json.loads(path.read_text())
    assert load_generic(out).positives == b.positives


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("database"), "missing key 'database'"),
    (lambda d: d["queries"][0].update(box=[5, 5, 1, 1]), r"queries\[0\]: box"),
    (lambda d: d["positives"]["q0"].append({"id": "nope", "boxes": []}), "not in the database"),
    (lambda d: d["database"][0].update(image="db/missing.jpg"), r"database\[0\]: image file"),
    (lambda d: d["positives"].update(q9=[]), "unknown query id"),
])
def test_generic_errors_name_file_and_entry(tmp_path, mutate, message):
    path = _generic(tmp_path)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=message) as err:
        load(path)
    assert "benchmark.json" in str(err.value)


def test_generic_bad_json_reports_line(tmp_path):
    path = tmp_path / "benchmark.json"
    path.write_text('{\n "queries": [\n  oops\n ]\n}\n')
    with pytest.raises(DatasetFormatError, match="line 3"):
        load(path)
    with pytest.raises(DatasetFormatError, match="no such file"):
        load(tmp_path / "missing_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no benchmark.json"):
        load(tmp_path / "empty")


# -------------------------------------------------------------------------------- revisitop
def _revisitop(tmp_path: Path) -> Path:
    names = [f"im{i}" for i in range(5)]
    for i, n in enumerate(names):
        _photo(tmp_path / "jpg" / f"{n}.jpg", i)
    _photo(tmp_path / "jpg" / "query0.jpg", 5)
    cfg = {
        "imlist": names,
        "qimlist": ["query0"],
        "gnd": [{"easy": np.array([1]), "hard": np.array([3]), "junk": np.array([4]),
                 "bbx": np.array([10.4, 20.6, 100.0, 90.2])}],
    }
    with open(tmp_path / "gnd_roxtiny.pkl", "wb") as f:
        pickle.dump(cfg, f)
    return tmp_path


@pytest.mark.parametrize("protocol, ok, junk", [
    ("easy", ["im1"], ["im4", "im3"]), ("medium", ["im1", "im3"], ["im4"]), ("hard", ["im3"], ["im4", "im1"]),
])
def test_revisitop_protocols(tmp_path, protocol, ok, junk):
    root = _revisitop(tmp_path)
    b = load(root, protocol=protocol)
    assert b.name == f"roxtiny-{protocol}"
    (q,) = b.queries
    assert q.box == (10, 21, 100, 90) and q.image.name == "query0.jpg"
    assert "query0" not in [d.id for d in b.database]  # queries are not database images
    assert b.positive_ids(q.id) == ok and b.junk_ids(q.id) == junk
    assert not b.has_boxes(q.id)  # revisitop boxes only the queries


def test_revisitop_errors(tmp_path):
    root = _revisitop(tmp_path)
    (root / "jpg" / "im2.jpg").unlink()
    with pytest.raises(DatasetFormatError, match="im2.jpg not found"):
        load(root)
    cfg = {"imlist": ["a"], "qimlist": ["b"], "gnd": [{"easy": [3], "hard": [], "junk": [], "bbx": [0, 0, 1, 1]}]}
    with open(root / "gnd_roxtiny.pkl", "wb") as f:
        pickle.dump(cfg, f)
    with pytest.raises(DatasetFormatError, match=r"gnd_roxtiny.pkl: gnd\[0\]\['easy'\] index 3"):
        load(root, check_images=False)
    (root / "gnd_roxtiny.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DatasetFormatError, match="cannot unpickle"):
        load(root)


# ------------------------------------------------------------------------------------ ILIAS
def _ilias(tmp_path: Path) -> Path:
    core = tmp_path / "ilias_core"
    qid, pids = "bold_bimp_000/query/Q000_00.jpg", ["bold_bimp_000/pos/P000_00.jpg", "bold_bimp_000/pos/P000_01.jpg"]
    other = "zippy_zoot_999/pos/P999_00.jpg"
    for i, rel in enumerate([qid, *pids, other, "zippy_zoot_999/query/Q999_00.jpg"]):
        _photo(core / rel, i)
    (core / "bold_bimp_000/query/Q000_00_bbox.txt").write_text("10 20 30 40\n50 5 10 10\n")
    (core / "bold_bimp_000/pos/P000_00_bbox.txt").write_text("1 2 3 4\n")
    (core / "bold_bimp_000/pos/P000_01_bbox.txt").write_text("0 0 10 10\n20 20 5 5\n")
    (core / "zippy_zoot_999/pos/P999_00_bbox.txt").write_text("0 0 8 8\n")
    (core / "zippy_zoot_999/query/Q999_00_bbox.txt").write_text("0 0 8 8\n")
    ids = tmp_path / "image_ids"
    ids.mkdir()
    (ids / "image_query_ids.txt").write_text(f"{qid},extra\nzippy_zoot_999/query/Q999_00.jpg,extra\n")
    (ids / "positive_ids.txt").write_text(f"{pids[0]},0.05,12\n{pids[1]},0.3,40\n{other},0.1,3\n")
    return tmp_path


def test_ilias_layout(tmp_path):
    root = _ilias(tmp_path)
    assert detect_format(root) == "ilias"
    b = load(root)
    q = b.queries[0]
    assert q.box == (10, 5, 60, 60)  # union of [10,20,40,60] and [50,5,60,15]
    plist = b.positives[q.id]
    assert [p.id for p in plist] == ["bold_bimp_000/pos/P000_00.jpg", "bold_bimp_000/pos/P000_01.jpg"]
    assert plist[0].boxes == ((1, 2, 4, 6),) and plist[1].boxes == ((0, 0, 10, 10), (20, 20, 25, 25))
    assert plist[1].meta == {"scale": 0.3, "clutter": 40}
    assert len(b.database) == 3 and b.positive_ids(b.queries[1].id) == ["zippy_zoot_999/pos/P999_00.jpg"]


def test_ilias_malformed_rows_name_file_and_line(tmp_path):
    root = _ilias(tmp_path)
    bbox = root / "ilias_core/bold_bimp_000/pos/P000_01_bbox.txt"
    bbox.write_text("0 0 10 10\n1 2 three 4\n")
    with pytest.raises(DatasetFormatError, match=r"P000_01_bbox.txt: line 2"):
        load(root)
    bbox.unlink()
    with pytest.raises(DatasetFormatError, match="P000_01_bbox.txt: bounding-box file not found"):
        load(root)
    (root / "image_ids/positive_ids.txt").write_text("a.jpg,0.1\n")
    with pytest.raises(DatasetFormatError, match="positive_ids.txt: line 1"):
        load(root)


# ----------------------------------------------------------------------------------- INSTRE
def _instre(tmp_path: Path) -> Path:
    scipy_io = pytest.importorskip("scipy.io")
    imlist = ["INSTRE-S1/01a_book/002.jpg", "INSTRE-M/01_book_cup/001.jpg", "INSTRE-S2/05_toy/002.jpg"]
    qimlist = ["INSTRE-S1/01a_book/001.jpg", "INSTRE-S2/05_toy/001.jpg"]
    for i, rel in enumerate(imlist + qimlist):
        _photo(tmp_path / rel, i)
    (tmp_path / "INSTRE-S1/01a_book/002.txt").write_text("5 6 20 30\n")
    (tmp_path / "INSTRE-M/01_book_cup/001.txt").write_text("1 1 10 10\n40 40 20 20\n")
    gnd = np.zeros((1, 2), dtype=[("ok", object), ("bbx", object)])
    gnd[0, 0] = (np.array([[1, 2]], dtype=np.float64), np.array([[3, 4, 50, 60]], dtype=np.float64))
    gnd[0, 1] = (np.array([[3]], dtype=np.float64), np.array([[0, 0, 9, 9]], dtype=np.float64))
    cell = lambda xs: np.array([np.array([x]) for x in xs] + [None], dtype=object)[:-1].reshape(1, -1)  # noqa: E731
    scipy_io.savemat(tmp_path / "gnd_instre.mat", {"imlist": cell(imlist), "qimlist": cell(qimlist), "gnd": gnd})
    return tmp_path


def test_instre_layout(tmp_path):
    root = _instre(tmp_path)
    assert detect_format(root) == "instre"
    b = load(root)
    q0, q1 = b.queries
    assert q0.id == "INSTRE-S1/01a_book/001.jpg" and q0.box == (3, 4, 50, 60)
    p = {x.id: x for x in b.positives[q0.id]}
    assert p["INSTRE-S1/01a_book/002.jpg"].boxes == ((5, 6, 25, 36),)
    # INSTRE-M image: object [a] is the first row
    assert p["INSTRE-M/01_book_cup/001.jpg"].boxes == ((1, 1, 11, 11),)
    # 1-based index 3 -> the INSTRE-S2 image, which has no .txt: boxes unknown
    assert b.positive_ids(q1.id) == ["INSTRE-S2/05_toy/002.jpg"] and not b.has_boxes(q1.id)
    assert len(b.database) == 3


def test_instre_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="gnd_instre.mat"):
        load(tmp_path, format="instre")
    (tmp_path / "gnd_instre.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="cannot read MATLAB"):
        load(tmp_path)


def test_benchmark_rejects_duplicate_ids(tmp_path):
    from pypatch.evaluation.datasets import DbImage
    with pytest.raises(DatasetFormatError, match="not unique"):
        Benchmark("x", tmp_path, [], [DbImage("a", tmp_path), DbImage("a", tmp_path)], {})

"""The offline benchmark generator: determinism, size limits and true boxes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("skimage")
from pypatch.evaluation.benchgen import SIZES, make_benchmark  # noqa: E402
from pypatch.evaluation.datasets import load_generic  # noqa: E402
from pypatch.errors import InvalidArgumentError, InvalidTypeError  # noqa: E402


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_benchmark(tmp_path_factory.mktemp("bench") / "s0", "small", seed=0)


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    (tmp_path / "again" / "db").mkdir(parents=True)
    (tmp_path / "again" / "db" / "d9999.jpg").write_bytes(b"stale")  # a previous run's leftover
    again = make_benchmark(tmp_path / "again", "small", seed=0)
    a, b = _files(small.parent), _files(again.parent)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    other = make_benchmark(tmp_path / "other", "small", seed=1)
    assert other.read_bytes() != small.read_bytes()


def test_small_layout_and_counts(small):
    bench = load_generic(small)
    files = [p for p in small.parent.rglob("*.jpg")]
    assert len(files) == len(bench.queries) + len(bench.database) <= 200
    assert len(bench.queries) == 12 and len(bench.database) == 100
    assert all(bench.positives[q.id] for q in bench.queries)  # every query has positives
    # distractor scenes exist: database images that are nobody's positive
    used = {p.id for v in bench.positives.values() for p in v}
    assert len(bench.database) - len(used) >= 30
    doc = json.loads(small.read_text())
    assert doc["generator"] == {"module": "pypatch.benchgen", "version": 1, "size": "small", "seed": 0}


def test_boxes_are_inside_images_and_area_fracs_are_true(small):
    bench = load_generic(small)
    fracs, several = [], 0
    for q in bench.queries:
        if q.box is not None:
            w, h = Image.open(q.image).size
            assert 0 <= q.box[0] < q.box[2] <= w and 0 <= q.box[1] < q.box[3] <= h
        for p in bench.positives[q.id]:
            w, h = Image.open(bench.database[bench.db_index(p.id)].image).size
            areas = []
            for x0, y0, x1, y1 in p.boxes:
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
                areas.append((x1 - x0) * (y1 - y0) / (w * h))
            assert p.meta["area_fracs"] == pytest.approx(areas, abs=1e-4)
            assert p.meta["area_frac"] == pytest.approx(max(areas), abs=1e-4)
            fracs += areas
            several += len(p.boxes) > 1
    # objects cover roughly 3 % to 40 % of the scene (second copies are at most 15 %)
    assert 0.02 <= min(fracs) and max(fracs) <= 0.45
    assert np.median(fracs) < 0.2
    assert any(q.box is None for q in bench.queries) and any(q.box is not None for q in bench.queries)


def _ncc(a: np.ndarray, t: np.ndarray) -> float:
    a, t = a - a.mean(), t - t.mean()
    return float((a * t).sum() / (np.linalg.norm(a) * np.linalg.norm(t) + 1e-9))


def test_box_holds_the_instance(small):
    """Independent check of the ground truth: the instance cut from its source photo
    correlates with the pixels inside the recorded box, not with a random window."""
    from pypatch.evaluation.benchgen import _load_photos

    bench = load_generic(small)
    instances = json.loads(small.read_text())["instances"]
    photos = _load_photos()
    rng = np.random.default_rng(0)
    true, rand = [], []
    for q in bench.queries:
        name, rect = instances[q.id].split("#")
        x0, y0, x1, y1 = map(int, rect.split(","))
        src = Image.fromarray(photos[name][y0:y1, x0:x1]).convert("L")
        for p in bench.positives[q.id][:3]:
            arr = np.asarray(Image.open(bench.database[bench.db_index(p.id)].image).convert("L"), np.float32)
            bx0, by0, bx1, by1 = p.boxes[0]
            w, h = bx1 - bx0, by1 - by0
            t = np.asarray(src.resize((w, h)), np.float32)
            true.append(_ncc(arr[by0:by1, bx0:bx1], t))
            x, y = int(rng.integers(0, arr.shape[1] - w + 1)), int(rng.integers(0, arr.shape[0] - h + 1))
            rand.append(_ncc(arr[y:y + h, x:x + w], t))
    assert np.median(true) > 0.5 and np.median(rand) < 0.2


def test_large_size_plan_has_at_least_1000_images():
    c = SIZES["large"]
    n = c.instances * c.scenes_per_instance + c.distractors + c.instances * c.queries_per_instance
    assert n >= 1000
    x = SIZES["xlarge"]  # large's plan, 5,000 database images
    assert (x.instances, x.scenes_per_instance, x.queries_per_instance) == \
        (c.instances, c.scenes_per_instance, c.queries_per_instance)
    assert x.instances * x.scenes_per_instance + x.distractors == 5000
    s = SIZES["small"]
    assert s.instances * s.scenes_per_instance + s.distractors + s.instances * s.queries_per_instance <= 200


@pytest.mark.parametrize("kwargs, error, match", [
    ({"size": "huge"}, InvalidArgumentError, "size"), ({"seed": -1}, InvalidArgumentError, "seed"),
    ({"seed": 1.5}, InvalidTypeError, "seed")])  # the policy of pypatch.errors: type vs value
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_benchmark(tmp_path / "x", **kwargs)


def test_out_dir_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        make_benchmark(f)

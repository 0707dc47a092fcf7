"""The evaluation harness end to end on the small offline benchmark, with real rankers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
from pypatch.evaluation.benchgen import make_benchmark  # noqa: E402
from pypatch.cli import main  # noqa: E402
from pypatch.evaluation.datasets import Benchmark, Positive, load_generic  # noqa: E402
from pypatch.errors import InvalidArgumentError, InvalidTypeError  # noqa: E402
from pypatch.evaluation.harness import available_rankers, evaluate, make_ranker, register_ranker  # noqa: E402
from pypatch.evaluation.report import write_report  # noqa: E402
from pypatch.evaluation.results import SIZE_BUCKETS  # noqa: E402
from pypatch.evaluation.metrics import compute_map, map_at_k, mean_locscore  # noqa: E402


@pytest.fixture(scope="module")
def bench_path(tmp_path_factory) -> Path:
    return make_benchmark(tmp_path_factory.mktemp("evalbench") / "small", "small", seed=0)


@pytest.fixture(scope="module")
def bench(bench_path) -> Benchmark:
    return load_generic(bench_path)


@pytest.fixture(scope="module")
def results(bench):
    rankers = {n: make_ranker(n, bench) for n in ("oracle", "hist-global", "hist-grid")}
    return evaluate(bench, rankers, k=len(bench.database))


def test_oracle_is_perfect_everywhere(results, bench):
    s = results.configs["oracle"].summary
    for key in ("map", "map_at_k", "locscore", "mp@1", "mp@5", "mp@10", "recall@1"):
        assert s[key] == pytest.approx(1.0), key
    assert s["n_queries_locscore"] == len(bench.queries)
    sb = results.configs["oracle"].size_breakdown
    assert sum(v["n_positives"] for v in sb.values()) == sum(len(v) for v in bench.positives.values())
    assert all(v["map"] == pytest.approx(1.0) for v in sb.values() if v["n_queries"])
    assert results.configs["oracle"].pr_curve["precision"] == pytest.approx([1.0] * 21)


def test_reversed_oracle_scores_low(bench):
    oracle = make_ranker("oracle", bench)
    reverse = lambda q, k: list(reversed(oracle(q, len(bench.database))))[:k]  # noqa: E731
    r = evaluate(bench, {"reverse": reverse}, k=len(bench.database))
    s = r.configs["reverse"].summary
    assert s["map"] < 0.15 and s["map_at_k"] < 0.15 and s["recall@1"] == 0.0 and s["locscore"] < 0.15


def test_harness_agrees_with_independent_metric_calls(results, bench):
    """Recompute the histogram baseline's numbers straight from pypatch.evaluation.metrics."""
    for name in ("hist-global", "hist-grid"):
        rows = results.configs[name].per_query
        ranks = np.array([[bench.db_index(h[0]) for h in r["hits"]] for r in rows]).T
        gnd = [{"ok": [bench.db_index(i) for i in bench.positive_ids(q.id)], "junk": []} for q in bench.queries]
        m, _, mpr, _ = compute_map(ranks, gnd, (1, 5, 10))
        s = results.configs[name].summary
        assert s["map"] == pytest.approx(m) and s["mp@5"] == pytest.approx(mpr[1])
        ids = [[h[0] for h in r["hits"]] for r in rows]
        scores = [[h[1] for h in r["hits"]] for r in rows]
        pos = [set(bench.positive_ids(q.id)) for q in bench.queries]
        assert s["map_at_k"] == pytest.approx(map_at_k(ids, pos, len(bench.database), scores))
        boxes = [[h[2] for h in r["hits"]] for r in rows]
        gt = [{p.id: p.boxes for p in bench.positives[q.id]} for q in bench.queries]
        assert s["locscore"] == pytest.approx(mean_locscore(ids, boxes, gt))
        assert 0.0 < s["map"] < 1.0


def test_grid_histogram_beats_global_histogram(results):
    """The patch-wise idea on colour alone: max over grid cells finds pasted objects better."""
    g, p = results.configs["hist-global"].summary, results.configs["hist-grid"].summary
    assert p["map"] > g["map"] and p["locscore"] > g["locscore"]
    assert results.configs["hist-grid"].bytes_per_image == 30 * results.configs["hist-global"].bytes_per_image


def test_write_report(results, bench, tmp_path):
    paths = write_report(results, tmp_path / "rep", examples=3, top=4)
    data = json.loads(paths["json"].read_text())
    assert data["configs"]["hist-grid"]["summary"]["map"] == pytest.approx(results.configs["hist-grid"].summary["map"])
    md = paths["markdown"].read_text()
    assert "| hist-grid |" in md and "LocScore is defined for 12 of 12" in md
    names = {p.name for p in paths["plots"]}
    assert names == {"metrics.png", "map_vs_bytes.png", "size_breakdown.png", "pr_curves.png"}
    for p in paths["plots"]:
        assert Image.open(p).size[0] > 100
    page = paths["html"].read_text()
    assert page.count("<h3>") == 3 and page.count("thumbs/q0_c") == 3 * 4
    # border colour encodes right/wrong: the oracle's first hit is a positive (green)
    row = results.configs["oracle"].per_query[0]
    assert row["labels"][0] == "pos"
    r, g, b = Image.open(tmp_path / "rep/thumbs/q0_c0_0.jpg").convert("RGB").getpixel((1, 1))
    assert g > 120 and r < 80 and b < 80
    wrong = results.configs["hist-global"].per_query[0]["labels"].index("neg")
    if wrong < 4:
        r, g, b = Image.open(tmp_path / f"rep/thumbs/q0_c1_{wrong}.jpg").convert("RGB").getpixel((1, 1))
        assert r > 150 and g < 80


def test_locscore_undefined_without_boxes(bench, tmp_path):
    stripped = Benchmark(bench.name, bench.root, bench.queries, bench.database,
                         {q: [Positive(p.id) for p in v] for q, v in bench.positives.items()}, bench.junk)
    r = evaluate(stripped, {"oracle": make_ranker("oracle", stripped)}, k=10)
    s = r.configs["oracle"].summary
    assert s["n_queries_locscore"] == 0 and math.isnan(s["locscore"]) and s["map"] == pytest.approx(1.0)
    md = write_report(r, tmp_path / "r2", examples=1)["markdown"].read_text()
    assert "LocScore is undefined" in md


def test_junk_is_skipped(bench):
    q = bench.queries[0]
    oracle = make_ranker("oracle", bench)
    neg = next(d.id for d in bench.database if d.id not in bench.positive_ids(q.id))
    first_neg = lambda qq, k: [(neg, 2.0, None)] + [h for h in oracle(qq, k) if h[0] != neg][:k - 1]  # noqa: E731
    plain = evaluate(bench, {"x": first_neg}, k=50).configs["x"].per_query[0]["ap"]
    junked = Benchmark(bench.name, bench.root, bench.queries, bench.database, bench.positives, {q.id: [neg]})
    assert evaluate(junked, {"x": first_neg}, k=50).configs["x"].per_query[0]["ap"] == pytest.approx(1.0)
    assert plain < 1.0


def test_ranker_mistakes_are_clear_errors(bench):
    with pytest.raises(InvalidArgumentError, match="unknown database id 'nope'"):
        evaluate(bench, {"bad": lambda q, k: [("nope", 1.0, None)]})
    dup = bench.database[0].id
    with pytest.raises(InvalidArgumentError, match="twice"):
        evaluate(bench, {"bad": lambda q, k: [(dup, 1.0, None), (dup, 0.5, None)]})
    with pytest.raises(InvalidTypeError, match="not callable"):
        evaluate(bench, {"bad": 3})
    with pytest.raises(InvalidArgumentError, match="k must"):
        evaluate(bench, {"o": make_ranker("oracle", bench)}, k=0)
    with pytest.raises(InvalidArgumentError, match="unknown configuration"):
        make_ranker("does-not-exist", bench)


@pytest.fixture
def isolated_registry(monkeypatch):
    """Rankers a test registers (and plugins it loads) vanish after it: the registry is global,
    and a test-only entry without a description broke `pypatch eval --list-configs` tests that
    ran later in the same process."""
    from pypatch.evaluation import harness

    available_rankers()  # the built-in plugins, loaded into the real registry first
    monkeypatch.setattr(harness, "_REGISTRY", dict(harness._REGISTRY))
    monkeypatch.setattr(harness, "_LOADED", set(harness._LOADED))


def test_hits_as_objects_and_registry_through_the_cli(bench_path, tmp_path, capsys, isolated_registry):
    class Hit:  # an object with image_id
        def __init__(self, image_id, score, box):
            self.image_id, self.score, self.box = image_id, score, box

    class SearchHitLike:  # pypatch.SearchHit names the id .image
        def __init__(self, image, score, box):
            self.image, self.score, self.box = image, score, box

    def factory(b):
        hist = make_ranker("hist-grid", b)
        return lambda q, k: [(Hit if j % 2 else SearchHitLike)(i, s, bx) for j, (i, s, bx) in enumerate(hist(q, k))]

    register_ranker("test-objects", factory, overwrite=True)
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_ranker("test-objects", factory)
    assert "test-objects" in available_rankers()
    out = tmp_path / "cli"
    assert main(["eval", str(bench_path), "--out", str(out), "--config", "test-objects", "--k", "20",
                 "--examples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "test-objects: mAP" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["k"] == 20 and len(data["configs"]["test-objects"]["per_query"]) == 12
    assert main(["eval", str(bench_path), "--out", str(out), "--config", "nope"]) == 2


def test_size_buckets_cover_the_unit_interval():
    edges = [(lo, hi) for _, lo, hi in SIZE_BUCKETS]
    assert edges[0][0] == 0 and math.isinf(edges[-1][1])
    assert all(a[1] == b[0] for a, b in zip(edges, edges[1:]))


def test_batch_form_is_used_and_checked(bench, results):
    class Batch:
        calls = 0

        def __init__(self):
            self.inner = make_ranker("hist-grid", bench)

        def rank_batch(self, queries, k):
            Batch.calls += 1
            return [self.inner(q, k) for q in queries]

    r = evaluate(bench, {"batch": Batch()}, k=len(bench.database))
    assert Batch.calls == 1
    assert r.configs["batch"].summary["map"] == pytest.approx(results.configs["hist-grid"].summary["map"])

    class Short:
        def rank_batch(self, queries, k):
            return []

    with pytest.raises(InvalidArgumentError, match="rank_batch returned 0"):
        evaluate(bench, {"short": Short()})


def test_plugin_modules_register_configurations(bench_path, tmp_path, monkeypatch, capsys, isolated_registry):
    (tmp_path / "my_ranker_plugin.py").write_text(
        "from pypatch.evaluation.harness import register_ranker, make_ranker\n"
        "register_ranker('plugin-hist', lambda b: make_ranker('hist-global', b), overwrite=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["eval", str(bench_path), "--list-configs", "--out", str(tmp_path / "o"),
                 "--plugin", "my_ranker_plugin"]) == 0
    assert "plugin-hist" in capsys.readouterr().out.split()
    assert main(["eval", str(bench_path), "--out", str(tmp_path / "o"), "--plugin", "no_such_plugin_mod"]) == 2


def test_ilias_similarities_export(results, bench):
    from pypatch.evaluation.report import ilias_similarities

    sims = ilias_similarities(results, "hist-grid")
    assert set(sims) == {q.id for q in bench.queries}
    row = results.configs["hist-grid"].per_query[0]
    assert list(sims[row["query"]].items())[:3] == [(h[0], h[1]) for h in row["hits"][:3]]
    with pytest.raises(InvalidArgumentError, match="no configuration"):
        ilias_similarities(results, "nope")


def test_report_on_an_ilias_benchmark_writes_its_json(bench, tmp_path):
    ilias_like = Benchmark("ilias-like", bench.root, bench.queries[:2], bench.database, bench.positives,
                           {}, {"source": "ilias"})
    r = evaluate(ilias_like, {"hist/global": make_ranker("hist-global", ilias_like)}, k=5)
    write_report(r, tmp_path, examples=1)
    data = json.loads((tmp_path / "ilias_hist_global.json").read_text())
    assert set(data) == {q.id for q in bench.queries[:2]} and all(len(v) == 5 for v in data.values())

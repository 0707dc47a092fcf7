"""The HTML report a reader opens (issue 15): the results table first, every query (or a
note on how many are hidden), returned and true boxes on each thumbnail with a link to a
larger copy, plots whose coincident curves stay visible, size buckets explained; and the page
rendered by a real headless browser (Debian's chromium), its screenshot checked pixel by pixel.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from pypatch.evaluation.benchgen import make_benchmark  # noqa: E402
from pypatch.evaluation.datasets import load_generic  # noqa: E402
from pypatch.evaluation.harness import evaluate, make_ranker  # noqa: E402
from pypatch.evaluation.report import (_BORDER, _BOX, THUMB_SIDE, same_results_groups,  # noqa: E402
                                        write_report)

HEADER_BLUE = (0x1F, 0x4E, 0x79)  # the results table's header background (report._STYLE)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    bench = load_generic(make_benchmark(tmp_path_factory.mktemp("reportbench") / "b", "small"))
    oracle = make_ranker("oracle", bench)
    rankers = {"oracle": oracle, "hist-global": make_ranker("hist-global", bench),
               "oracle-twin": oracle}  # identical results: its curve must not hide
    return evaluate(bench, rankers, k=20)


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_report(results, out)


def test_page_opens_with_the_results_table(report, results):
    out, paths = report
    page = paths["html"].read_text()
    table = page.index("<table class='results'>")
    assert table < page.index("<div class='plots'>") < page.index("src='thumbs/")
    first = page[table:page.index("</table>", table)]
    for name, c in results.configs.items():  # the same numbers as results.md
        assert f"<td>{name}</td><td>{100 * c.summary['map']:.2f}</td>" in first
    md = paths["markdown"].read_text()
    assert f"| hist-global | {100 * results.configs['hist-global'].summary['map']:.2f} |" in md


def test_every_query_is_shown_or_the_hidden_ones_are_counted(report, results, tmp_path):
    n = len(results.benchmark.queries)
    page = report[1]["html"].read_text()
    assert page.count("<h3>") == n and f"Showing all {n} queries" in page
    page = write_report(results, tmp_path / "five", examples=5)["html"].read_text()
    assert page.count("<h3>") == 5
    assert f"Showing the first 5 of the {n} queries ({n - 5} hidden, examples=5;" in page


def test_thumbnails_draw_the_true_box_beside_the_returned_one(report, results):
    out, paths = report
    page = paths["html"].read_text()
    links = re.findall(r"<a href='(full/[^']+)'><img src='(thumbs/[^']+)'>", page)
    assert len(links) == page.count("<img src='thumbs/") > 0
    assert all((out / full).exists() for full, _ in links)
    b = results.benchmark
    q = b.queries[0]
    hid, _, box = results.configs["oracle"].per_query[0]["hits"][0]  # a positive, its true box
    truth = next(p for p in b.positives[q.id] if p.id == hid).boxes[0]
    assert list(box) == list(truth)
    src = Image.open(b.database[b.db_index(hid)].image)
    full = np.asarray(Image.open(out / "full/q0_c0_0.jpg").convert("RGB"), dtype=int)
    assert full.shape[:2] == (src.height, src.width)  # full size (under 1024 px)
    w = max(2, round(max(src.size) / 120))
    x0, y0, x1, y1 = truth
    mid = (y0 + y1) // 2
    # returned box (yellow) on the outer w pixels, the true box (magenta) on the next w inside
    assert np.abs(full[mid, x0 + w // 2] - _BOX["returned"]).max() < 60
    assert np.abs(full[mid, x0 + w + w // 2] - _BOX["truth"]).max() < 60
    thumb = Image.open(out / "thumbs/q0_c0_0.jpg")
    assert max(thumb.size) == THUMB_SIDE + 10 and THUMB_SIDE >= 200  # was 160


def test_size_buckets_explain_their_counts(report, results):
    md = report[1]["markdown"].read_text()
    assert "n/a (n=0)" not in md and "(n=" not in md
    sb = results.configs["oracle"].size_breakdown
    counts = {label: v["n_queries"] for label, v in sb.items()}
    for label, n in counts.items():
        assert f"{label} mAP ({n} queries)" in md
    n = len(results.benchmark.queries)
    if sum(counts.values()) > n:
        assert f"add up to {sum(counts.values())}, more than the {n} queries" in md
    if 0 in counts.values():
        empty = next(lbl for lbl, c in counts.items() if c == 0)
        assert "'-': no query has a positive of that size" in md
        row = [line for line in md.splitlines() if line.startswith("| oracle |")][1]  # size table
        column = 1 + 2 * list(counts).index(empty)
        assert row.split("|")[column + 1].strip() == "-"


def test_coincident_curves_and_points_are_drawn_once_with_every_name(results):
    assert same_results_groups(results, "pr") == [["oracle", "oracle-twin"], ["hist-global"]]
    groups = same_results_groups(results, "map_vs_bytes")
    assert ["oracle", "oracle-twin"] in groups and ["hist-global"] in groups


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (CI installs Debian's "
                                                "chromium in .ci/run)")
def test_page_renders_in_a_headless_browser(report, tmp_path):
    out, paths = report
    shot = tmp_path / "shot.png"
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,3000",
                           paths["html"].resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    assert px.shape[:2] == (3000, 1280) and px.std() > 20  # not blank

    def rows_of(color, tol):
        return np.flatnonzero((np.abs(px - color).max(axis=2) <= tol).sum(axis=1) >= 40)

    header = rows_of(HEADER_BLUE, 4)  # the table's header cells: a wide band of that blue
    assert len(header) >= 10 and header[0] < 250, "the results table is not at the top"
    query = rows_of(_BORDER["query"], 30)  # thumbnails rendered: the query's blue frame ...
    positive = rows_of(_BORDER["pos"], 30)  # ... and the positives' green frames
    assert len(query) >= 2 and len(positive) >= 2, "no thumbnail was rendered"
    assert header[0] < query[0] and header[0] < positive[0]

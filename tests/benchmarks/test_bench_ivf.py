"""The IVF section of the search benchmark (benchmarks/search_ivf.py): a real, tiny run.

No timing assertions: the run must complete, print its table, write its plot and JSON lines,
and its quality bookkeeping must hold where it is known exactly (probing every list gives an
IVF engine its own all-lists answer; the smallest exact over-fetch is exact and smallest).
A second run must take the data from the cache and measure the same recalls.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
pytest.importorskip("faiss")
import peers  # noqa: E402
import search_ivf  # noqa: E402


def test_min_exact_kprime_is_exact_and_smallest():
    # rows of an over-fetched patch list (scores descending), P = 5 patches per image, k = 3:
    # the smallest exact k' is the rank of the first patch of the k-th distinct image
    P, k = 5, 3
    I = np.array([[0, 1, 2, 7, 3, 11, 12, 20, -1],     # images 0,0,0,1,0,2 -> k'=6
                  [5, 10, 15, 0, 1, 2, 3, 4, 6],       # images 1,2,3 -> k'=3
                  [0, 1, 2, 3, 4, 5, -1, -1, -1],      # only images 0,1: every valid hit (6)
                  [-1] * 9])                           # nothing probed: 1
    np.testing.assert_array_equal(search_ivf.min_exact_kprime(I, P, k), [6, 3, 6, 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_exact_kprime_groups_like_the_full_fetch(seed):
    rng = np.random.default_rng(seed)
    P, k, n_img = 6, 4, 40
    offsets = peers.constant_offsets(n_img, P)
    scores = rng.standard_normal((5, n_img * P)).astype(np.float32)
    I = np.argsort(-scores, axis=1, kind="stable")[:, :k * P]
    D = np.take_along_axis(scores, I, axis=1)
    full = peers.group_by_image(D, I, offsets, k)
    for r, kp in enumerate(search_ivf.min_exact_kprime(I, P, k)):
        got = peers.group_by_image(D[r:r + 1, :kp], I[r:r + 1, :kp], offsets, k)
        np.testing.assert_array_equal(got[1][0], full[1][r])
        short = peers.group_by_image(D[r:r + 1, :kp - 1], I[r:r + 1, :kp - 1], offsets, k)
        assert (short[1][0] == -1).any()  # one less and the k-th image is missing


def _run(tmp_path, capsys):
    import bench_search

    argv = ["--section", "ivf", "--quick", "--images", "2000", "--nlist", "16", "--nprobe", "1", "16",
            "--queries", "3", "--batch", "4", "--eval-queries", "8", "--train-size", "2048",
            "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "r.jsonl"),
            "--plot", str(tmp_path / "p.png")]
    assert bench_search.main(argv) == 0
    return capsys.readouterr().out


def test_quick_ivf_section_runs_and_reruns_from_cache(tmp_path, capsys):
    out = _run(tmp_path, capsys)
    assert "| engine | nprobe | k' |" in out and (tmp_path / "p.png").stat().st_size > 0
    have_ivf, _ = search_ivf.ours_ivf_status()
    assert ("ours: IVF not available in this build" in out) != have_ivf
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("kind") == "ivf"]
    engines = {r["engine"] for r in rows}
    want = {"ours-8", "ours-4", "faiss-pqfs", "faiss-ivfpq", "faiss-ivfpqfs", "faiss-ivfpqfs-hnsw"}
    assert want <= engines and (("ours-ivf8" in engines) == have_ivf)
    for r in rows:
        assert 0 <= r["recall_float"] <= 1 and 0 <= r["recall_adc8"] <= 1
        if r["kprime"] is not None:
            assert 10 <= r["kprime"] <= 10 * 30
        if r["nprobe"] == 16:  # every list probed: the engine's own all-lists answer
            assert r["recall_own"] == 1.0, r
    ours8 = next(r for r in rows if r["engine"] == "ours-8")
    assert ours8["recall_adc8"] == 1.0  # the reference ranking itself
    # second run: the data comes from the cache, and the same recalls come out
    out2 = _run(tmp_path, capsys)
    assert "data from cache" in out2
    rows2 = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    rows2 = [r for r in rows2 if r.get("kind") == "ivf"][len(rows):]
    assert [(r["config"], r["recall_float"], r["recall_adc8"]) for r in rows2] == \
        [(r["config"], r["recall_float"], r["recall_adc8"]) for r in rows]

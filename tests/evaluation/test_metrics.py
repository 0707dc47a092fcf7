"""Metrics against hand-computed values and against scikit-learn (independent reference)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pypatch.errors import InvalidArgumentError
from pypatch.evaluation.metrics import (
    ap_at_k,
    average_precision,
    compute_ap,
    compute_map,
    iou,
    locscore,
    map_at_k,
    mean_locscore,
    recall_at_k,
    revisitop_protocol,
)


# ------------------------------------------------------------------------------------- iou
def test_iou_hand_computed_and_exclusive_bounds():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    # exclusive x1: boxes that share the pixel boundary x=10 do not overlap
    assert iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    # containment: 4x4 inside 10x10
    assert iou([0, 0, 10, 10], [2, 2, 6, 6]) == pytest.approx(16 / 100)


@pytest.mark.parametrize("bad", [[0, 0, 10], [10, 0, 0, 10], [0, 0, float("nan"), 1]])
def test_iou_rejects_bad_boxes(bad):
    with pytest.raises(InvalidArgumentError, match="box a"):
        iou(bad, [0, 0, 1, 1])


# ------------------------------------------------------------------------------- revisitop
def test_compute_ap_trapezoid_hand_computed():
    # positives at 0-based positions 0 and 2 of 2 positives:
    # (1 + 1)/2 * 1/2 + (1/2 + 2/3)/2 * 1/2
    assert compute_ap([0, 2], 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)


def test_compute_map_junk_missing_and_empty_queries():
    ranks = np.array([[5, 3, 7, 1, 2]]).T.repeat(3, axis=1)
    gnd = [
        {"ok": [7, 2], "junk": [3]},      # junk at position 1 shifts positives to 1 and 3
        {"ok": [7, 2, 9], "junk": [3]},   # 9 is never ranked: it only lowers recall
        {"ok": [], "junk": [3]},          # no positive: NaN and excluded
    ]
    m, aps, mpr, prs = compute_map(ranks, gnd, kappas=(1, 5, 10))
    ap0 = (0 + 1 / 2) / 2 * (1 / 2) + (1 / 3 + 2 / 4) / 2 * (1 / 2)
    ap1 = (0 + 1 / 2) / 2 * (1 / 3) + (1 / 3 + 2 / 4) / 2 * (1 / 3)
    assert aps[0] == pytest.approx(ap0) and ap0 == pytest.approx(1 / 3)
    assert aps[1] == pytest.approx(ap1)
    assert math.isnan(aps[2]) and np.isnan(prs[2]).all()
    assert m == pytest.approx((ap0 + ap1) / 2)
    # 1-based positive ranks after junk removal are [2, 4]: P@1 = 0, P@5 -> kq = 4 -> 2/4
    np.testing.assert_allclose(prs[0], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(mpr, [0.0, 0.5, 0.5])


def test_compute_map_perfect_and_reversed():
    n = 6
    ranks = np.arange(n)[:, None]
    gnd = [{"ok": [0, 1], "junk": []}]
    assert compute_map(ranks, gnd)[0] == pytest.approx(1.0)
    rev = compute_map(ranks[::-1], gnd)[0]
    assert rev < 0.5


def test_compute_map_truncated_ranking_and_nothing_found():
    ranks = np.array([[4], [5]])
    m, aps, mpr, prs = compute_map(ranks, [{"ok": [0, 1]}])
    assert m == 0.0 and np.all(prs == 0)


def test_compute_map_shape_errors():
    with pytest.raises(InvalidArgumentError, match="columns"):
        compute_map(np.zeros((3, 2), dtype=int), [{"ok": [0]}])
    with pytest.raises(InvalidArgumentError, match="2-D"):
        compute_map(np.zeros(3, dtype=int), [{"ok": [0]}])


def test_revisitop_protocols_follow_the_published_table():
    gnd = [{"easy": [1, 2], "hard": [3], "junk": [4]}]
    e, m, h = (revisitop_protocol(gnd, p)[0] for p in ("E", "medium", "h"))
    assert sorted(e["ok"]) == [1, 2] and sorted(e["junk"]) == [3, 4]
    assert sorted(m["ok"]) == [1, 2, 3] and sorted(m["junk"]) == [4]
    assert sorted(h["ok"]) == [3] and sorted(h["junk"]) == [1, 2, 4]
    with pytest.raises(InvalidArgumentError, match="protocol"):
        revisitop_protocol(gnd, "x")


# ------------------------------------------------------------------------------------ ILIAS
def test_map_at_k_hand_computed():
    ranked = [["a", "x", "b"]]
    pos = [{"a", "b", "c"}]
    # AP over [1, 0, 1] = (1 + 2/3) / 2, rescaled by 2 hits / min(3, 3)
    assert map_at_k(ranked, pos, k=3) == pytest.approx((1 + 2 / 3) / 2 * 2 / 3)
    # k = 2: top [a, x] -> AP 1, rescaled by 1 / min(2, 3)
    assert map_at_k(ranked, pos, k=2) == pytest.approx(0.5)
    # a query with no hit in its top k counts as 0 in the mean
    assert map_at_k(ranked + [["x", "y"]], pos + [{"z"}], k=3) == pytest.approx((1 + 2 / 3) / 2 * 2 / 3 / 2)


def test_average_precision_matches_sklearn_with_ties():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        y = rng.random(n) < 0.3
        y[rng.integers(n)] = True
        s = np.round(rng.random(n), 1)  # coarse scores: many ties
        assert average_precision(y, s) == pytest.approx(sklearn.average_precision_score(y, s))
        strict = -np.arange(n, dtype=float)
        assert average_precision(y) == pytest.approx(sklearn.average_precision_score(y, strict))


def test_ap_at_k_ties_count_as_one_threshold():
    # x and b tie: sklearn puts both at the same threshold -> precision 2/3 at recall 1
    ranked, scores = ["a", "x", "b"], [0.9, 0.5, 0.5]
    assert ap_at_k(ranked, {"a", "b"}, k=3, scores=scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert ap_at_k(["a", "b", "x"], {"a", "b"}, k=3, scores=[0.9, 0.5, 0.5]) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_map_at_k_errors():
    with pytest.raises(InvalidArgumentError):
        map_at_k([["a"]], [], k=3)
    with pytest.raises(InvalidArgumentError, match="k must"):
        ap_at_k(["a"], {"a"}, k=0)
    assert math.isnan(map_at_k([], [], k=3))


# --------------------------------------------------------------------------------- LocScore
POS = {"a": [[0, 0, 10, 10]], "b": [[5, 0, 15, 10], [0, 0, 10, 20]]}


def test_locscore_hand_computed_several_boxes():
    ranked = ["a", "x", "b"]
    boxes = [[0, 0, 10, 10], [0, 0, 5, 5], [0, 0, 10, 10]]
    # a: P@1 = 1, IoU 1. b: P@3 = 2/3, best of IoU 1/3 and 1/2 -> 1/2
    assert locscore(ranked, boxes, POS) == pytest.approx((1 + 2 / 3 * 0.5) / 2)


def test_locscore_junk_missing_positive_and_none_box():
    ranked = ["a", "x", "b"]
    boxes = [[0, 0, 10, 10], None, [0, 0, 10, 10]]
    assert locscore(ranked, boxes, POS, junk={"x"}) == pytest.approx((1 + 0.5) / 2)
    pos3 = dict(POS, c=[[0, 0, 1, 1]])  # never retrieved: only the divisor grows
    assert locscore(ranked, boxes, pos3) == pytest.approx((1 + 2 / 3 * 0.5) / 3)
    assert locscore(ranked, [None, None, None], POS) == 0.0
    # with perfect boxes LocScore equals the non-interpolated AP
    perfect = [[0, 0, 10, 10], None, [0, 0, 10, 20]]
    assert locscore(ranked, perfect, POS) == pytest.approx(average_precision([1, 0, 1]))


def test_locscore_empty_and_errors():
    assert locscore([], [], POS) == 0.0
    assert math.isnan(locscore(["a"], [None], {}))
    with pytest.raises(InvalidArgumentError, match="no ground-truth box"):
        locscore(["a"], [None], {"a": []})
    with pytest.raises(InvalidArgumentError, match="pred_boxes"):
        locscore(["a"], [], POS)


def test_mean_locscore_skips_queries_without_positives():
    r = [["a", "x", "b"], ["q"]]
    b = [[[0, 0, 10, 10], None, [0, 0, 10, 10]], [None]]
    assert mean_locscore(r, b, [POS, {}]) == pytest.approx((1 + 2 / 3 * 0.5) / 2)


def test_recall_at_k():
    ranked = [["x", "a"], ["b", "y"], ["z"]]
    pos = [{"a"}, {"b"}, set()]
    assert recall_at_k(ranked, pos, k=1) == 0.5
    assert recall_at_k(ranked, pos, k=2) == 1.0
    assert recall_at_k(ranked, pos, k=1, junk=[{"x"}, set(), set()]) == 1.0


def _revisitop_reference(ranks, gnd, kappas):
    """A literal, loop-by-loop transcription of revisitop python/evaluate.py compute_map."""
    nq = len(gnd)
    aps, prs, mp, pr, nempty = np.zeros(nq), np.zeros((nq, len(kappas))), 0.0, np.zeros(len(kappas)), 0
    for i in range(nq):
        qgnd = np.array(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        qgndj = np.array(gnd[i]["junk"])
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = 0.0
        for j in range(len(pos)):
            rank = pos[j]
            p0 = 1.0 if rank == 0 else float(j) / rank
            ap += (p0 + float(j + 1) / (rank + 1)) * (1.0 / len(qgnd)) / 2.0
        mp += ap
        aps[i] = ap
        pos = pos + 1
        for j in range(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    return mp / (nq - nempty), aps, pr / (nq - nempty), prs


def test_compute_map_matches_literal_revisitop_on_random_cases():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n_db, nq = 40, 6
        ranks = np.stack([rng.permutation(n_db) for _ in range(nq)], axis=1)
        gnd = []
        for _ in range(nq):
            idx = rng.permutation(n_db)
            npos, nj = int(rng.integers(1, 8)), int(rng.integers(0, 6))
            gnd.append({"ok": idx[:npos], "junk": idx[npos:npos + nj]})
        ours = compute_map(ranks, gnd, (1, 5, 10))
        ref = _revisitop_reference(ranks, gnd, (1, 5, 10))
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b)


def test_ap_at_k_matches_ilias_formula_with_sklearn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    for _ in range(30):
        n, k = 30, int(rng.integers(1, 30))
        ids = [f"i{j}" for j in range(n)]
        gt = set(rng.choice(ids, size=int(rng.integers(1, 10)), replace=False).tolist())
        scores = np.sort(np.round(rng.random(n), 1))[::-1]
        y = np.isin(ids[:k], list(gt))
        expected = 0.0 if not y.any() else (
            sklearn.average_precision_score(y, scores[:k]) * y.sum() / min(k, len(gt)))
        assert ap_at_k(ids, gt, k, scores) == pytest.approx(expected)

"""Retrieval metrics: revisitop mAP/mP@k, ILIAS mAP@k, LocScore, recall@k and box IoU.

Conventions
-----------
* Boxes are ``[x0, y0, x1, y1]`` in original-image pixels with **exclusive** right/bottom
  bounds (the ``PIL.Image.crop`` convention, also used by the patch grid): the box covers
  columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``, so its area is ``(x1-x0) * (y1-y0)`` with no
  ``+1``. ILIAS ``x y w h`` rows convert as ``[x, y, x+w, y+h]``.
* ``compute_map`` is a faithful port of revisitop ``python/evaluate.py`` (trapezoid-rule AP,
  junk removed from the ranking, queries without positives get NaN and are excluded from
  the means). Values are fractions in [0, 1]; multiply by 100 for paper tables.
* ``map_at_k`` follows ILIAS ``evaluation/src/dataset.py``: scikit-learn style AP over the
  top ``k`` results, rescaled by ``hits / min(k, |positives|)``; a query with no positive
  in its top k scores 0 and still counts in the mean.
* LocScore (Choi et al., "Patch-wise Retrieval", WACV 2026; arXiv 2512.12610), as we read the
  published definition: walk the ranking (junk removed); at every true positive at rank r
  add ``precision@r * IoU(predicted box, best-matching ground-truth box)``; divide by the
  number of positives of the query. With IoU = 1 everywhere it equals the non-interpolated
  AP; a wrong box (IoU 0) or a missing box earns nothing for that positive.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError

Box = Sequence[float]

__all__ = [
    "iou",
    "compute_ap",
    "compute_map",
    "revisitop_protocol",
    "average_precision",
    "ap_at_k",
    "map_at_k",
    "locscore",
    "mean_locscore",
    "recall_at_k",
]


def _check_box(box: Any, name: str) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise InvalidArgumentError(f"{name} must be [x0, y0, x1, y1] (4 finite numbers), got {box!r}")
    if b[2] < b[0] or b[3] < b[1]:
        raise InvalidArgumentError(f"{name} must have x1 >= x0 and y1 >= y0, got {box!r}")
    return b


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes (exclusive x1/y1).

    Two empty boxes (zero area) give 0.0.
    """
    a = _check_box(a, "box a")
    b = _check_box(b, "box b")
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# revisitop (Radenovic et al. 2018): port of python/evaluate.py and the E/M/H protocols
# ---------------------------------------------------------------------------------------------
def compute_ap(ranks: Sequence[int], nres: int) -> float:
    """Trapezoid-rule AP from the sorted 0-based positions ``ranks`` of the retrieved positives
    (junk already removed) out of ``nres`` positives in total (revisitop ``compute_ap``)."""
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def compute_map(ranks: np.ndarray, gnd: Sequence[Mapping[str, Any]], kappas: Sequence[int] = (1, 5, 10)):
    """revisitop's mAP and mean precision at ``kappas``.

    Parameters
    ----------
    ranks : (n_db, n_q) int array
        Column ``i`` lists database indices for query ``i``, best first, 0-based. It may be
        truncated (fewer rows than the database): positives not listed earn nothing.
    gnd : sequence of n_q dicts
        ``gnd[i]['ok']`` positive indices, optional ``gnd[i]['junk']`` indices to ignore.

    Returns
    -------
    (map, aps, mpr, prs)
        ``map`` float; ``aps`` (n_q,) with NaN for queries without positives; ``mpr``
        (len(kappas),) mean precision at each kappa; ``prs`` (n_q, len(kappas)).
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise InvalidArgumentError(f"ranks must be 2-D (n_db, n_q), got shape {ranks.shape}")
    nq = len(gnd)
    if ranks.shape[1] != nq:
        raise InvalidArgumentError(f"ranks has {ranks.shape[1]} columns but gnd has {nq} queries")
    kappas = list(kappas)
    aps = np.zeros(nq)
    prs = np.zeros((nq, len(kappas)))
    mean_ap, pr, nempty = 0.0, np.zeros(len(kappas)), 0
    for i in range(nq):
        qgnd = np.asarray(gnd[i]["ok"], dtype=np.int64).reshape(-1)
        if qgnd.shape[0] == 0:  # no positives: excluded from the average, as revisitop does
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        qgndj = np.asarray(gnd[i].get("junk", ()), dtype=np.int64).reshape(-1)
        pos = np.flatnonzero(np.isin(ranks[:, i], qgnd))
        junk = np.flatnonzero(np.isin(ranks[:, i], qgndj))
        # shift each positive up by the number of junk images ranked before it
        pos = pos - np.searchsorted(junk, pos)
        ap = compute_ap(pos, len(qgnd))
        mean_ap += ap
        aps[i] = ap
        pos = pos + 1  # 1-based
        for j, kappa in enumerate(kappas):
            if len(pos) == 0:  # revisitop would fail on max([]); nothing retrieved -> 0
                prs[i, j] = 0.0
                continue
            kq = min(int(pos.max()), kappa)
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    denom = nq - nempty
    if denom == 0:
        return float("nan"), aps, np.full(len(kappas), float("nan")), prs
    return mean_ap / denom, aps, pr / denom, prs


_PROTOCOLS = {
    # protocol -> (sets that are positive, sets that are junk); revisitop example_evaluate.py
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def revisitop_protocol(gnd: Sequence[Mapping[str, Any]], protocol: str) -> list[dict]:
    """Build ``{'ok', 'junk'}`` ground truth for the Easy/Medium/Hard protocol.

    E: ok = easy, junk = junk + hard. M: ok = easy + hard, junk = junk.
    H: ok = hard, junk = junk + easy. Accepts "E"/"M"/"H" or the full names.
    """
    key = {"e": "easy", "m": "medium", "h": "hard"}.get(protocol.lower(), protocol.lower())
    if key not in _PROTOCOLS:
        raise InvalidArgumentError(f"protocol must be one of easy/medium/hard (E/M/H), got {protocol!r}")
    ok_sets, junk_sets = _PROTOCOLS[key]
    out = []
    for g in gnd:
        ok = np.concatenate([np.asarray(g[s], dtype=np.int64).reshape(-1) for s in ok_sets])
        junk = np.concatenate([np.asarray(g[s], dtype=np.int64).reshape(-1) for s in junk_sets])
        out.append({"ok": ok, "junk": junk})
    return out


# ---------------------------------------------------------------------------------------------
# ILIAS mAP@k
# ---------------------------------------------------------------------------------------------
def average_precision(y_true: Sequence[bool], y_score: Sequence[float] | None = None) -> float:
    """scikit-learn ``average_precision_score`` for one ranking, without the dependency.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds; tied scores form one
    threshold, exactly as scikit-learn does. Without scores the ranking order is strict.
    Returns 0.0 when there is no positive (scikit-learn warns and returns a meaningless value).
    """
    y = np.asarray(y_true, dtype=bool)
    npos = int(y.sum())
    if npos == 0:
        return 0.0
    if y_score is None:
        hits = np.cumsum(y)
        ranks = np.arange(1, len(y) + 1)
        return float(np.sum((hits / ranks)[y]) / npos)
    s = np.asarray(y_score, dtype=np.float64)
    if s.shape != y.shape:
        raise InvalidArgumentError(f"scores has shape {s.shape}, ranking has {y.shape}")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie block
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / npos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ap_at_k(ranked_ids: Sequence[Any], positives: Iterable[Any], k: int = 1000,
            scores: Sequence[float] | None = None) -> float:
    """ILIAS AP@k of one query: AP over the top ``k``, times ``hits / min(k, |positives|)``."""
    as_int(k, "k", 1)
    gt = set(positives)
    top = list(ranked_ids)[:k]
    y_true = np.array([r in gt for r in top], dtype=bool)
    if not y_true.any():
        return 0.0
    top_scores = None if scores is None else np.asarray(scores, dtype=np.float64)[:k]
    ap = average_precision(y_true, top_scores)
    return ap * y_true.sum() / min(k, len(gt))


def map_at_k(ranked_ids: Sequence[Sequence[Any]], positives: Sequence[Iterable[Any]], k: int = 1000,
             scores: Sequence[Sequence[float]] | None = None) -> float:
    """ILIAS mAP@k over queries (a fraction; ILIAS prints it x100).

    ``ranked_ids[i]`` is query i's ranked database ids, ``positives[i]`` its positive ids;
    optional ``scores[i]`` aligned with ``ranked_ids[i]`` makes tied scores count as one
    threshold like scikit-learn. Every query counts, also one with no positive retrieved.
    """
    if len(ranked_ids) != len(positives):
        raise InvalidArgumentError(
            f"ranked_ids has {len(ranked_ids)} queries but positives has {len(positives)}")
    if len(ranked_ids) == 0:
        return float("nan")
    aps = [ap_at_k(r, p, k, None if scores is None else scores[i])
           for i, (r, p) in enumerate(zip(ranked_ids, positives))]
    return float(np.mean(aps))


# ---------------------------------------------------------------------------------------------
# LocScore and recall
# ---------------------------------------------------------------------------------------------
def locscore(ranked_ids: Sequence[Any], pred_boxes: Sequence[Box | None],
             positives: Mapping[Any, Sequence[Box]], junk: Iterable[Any] = ()) -> float:
    """LocScore of one query (see the module docstring for the definition).

    Parameters
    ----------
    ranked_ids : database ids, best first.
    pred_boxes : the predicted (winning-patch) box of each ranked id, or None (IoU 0).
    positives : positive id -> its ground-truth boxes; a positive with several boxes is
        matched to the one with the highest IoU. Every positive needs at least one box.
    junk : ids removed from the ranking before precision is counted (as in revisitop).

    Returns NaN when the query has no positives.
    """
    if len(pred_boxes) != len(ranked_ids):
        raise InvalidArgumentError(
            f"pred_boxes has {len(pred_boxes)} entries but ranked_ids has {len(ranked_ids)}")
    for pid, boxes in positives.items():
        if len(boxes) == 0:
            raise InvalidArgumentError(f"positive {pid!r} has no ground-truth box; LocScore is undefined")
    if len(positives) == 0:
        return float("nan")
    junk = set(junk)
    total, rank, hits, seen = 0.0, 0, 0, set()
    for rid, box in zip(ranked_ids, pred_boxes):
        if rid in junk:
            continue
        rank += 1
        if rid in positives and rid not in seen:  # a duplicate id earns nothing twice
            seen.add(rid)
            hits += 1
            if box is not None:
                best = max(iou(box, g) for g in positives[rid])
                total += (hits / rank) * best
    return total / len(positives)


def mean_locscore(ranked_ids: Sequence[Sequence[Any]], pred_boxes: Sequence[Sequence[Box | None]],
                  positives: Sequence[Mapping[Any, Sequence[Box]]],
                  junk: Sequence[Iterable[Any]] | None = None) -> float:
    """Mean LocScore over queries; queries without positives are excluded (NaN if none left)."""
    if not (len(ranked_ids) == len(pred_boxes) == len(positives)):
        raise InvalidArgumentError("ranked_ids, pred_boxes and positives must have one entry per query")
    vals = [locscore(r, b, p, () if junk is None else junk[i])
            for i, (r, b, p) in enumerate(zip(ranked_ids, pred_boxes, positives))]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def recall_at_k(ranked_ids: Sequence[Sequence[Any]], positives: Sequence[Iterable[Any]], k: int = 1,
                junk: Sequence[Iterable[Any]] | None = None) -> float:
    """Fraction of queries with at least one positive among the top ``k`` (junk removed first).

    This is the "hit rate" reading of recall@k common in instance retrieval; queries without
    positives are excluded (NaN if none is left).
    """
    as_int(k, "k", 1)
    if len(ranked_ids) != len(positives):
        raise InvalidArgumentError(
            f"ranked_ids has {len(ranked_ids)} queries but positives has {len(positives)}")
    found = []
    for i, (ranked, pos) in enumerate(zip(ranked_ids, positives)):
        pos = set(pos)
        if not pos:
            continue
        bad = set() if junk is None else set(junk[i])
        top = [r for r in ranked if r not in bad][:k]
        found.append(any(r in pos for r in top))
    return float(np.mean(found)) if found else float("nan")

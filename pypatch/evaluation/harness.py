"""Evaluation harness: run ranking functions over a :class:`~pypatch.evaluation.datasets.Benchmark`
and compute every metric of :mod:`pypatch.evaluation.metrics`; the registry of named configurations.

The result records (:mod:`pypatch.evaluation.results`), the report writer
(:mod:`pypatch.evaluation.report`: ``write_report``, ``ilias_similarities``) and the built-in baselines
(:mod:`pypatch.evaluation.baselines`) live in their own modules beside this one.

The ranking-function protocol
-----------------------------
A *ranker* is any callable ``ranker(query, k) -> hits`` where ``query`` is a
:class:`pypatch.evaluation.datasets.Query` (``id``, ``image`` path, ``box`` or None: crop the query to it)
and ``hits`` lists at most ``k`` database results best first, each either a tuple
``(db_id, score, box_or_None)`` or an object with ``score``, ``box`` and the id as
``image_id`` or ``image`` (as ``pypatch.SearchHit`` does). A ranker may instead (or also) offer the batch form
``ranker.rank_batch(queries, k) -> [hits, ...]``, which the harness then prefers.
``box`` is the winning patch ``[x0, y0, x1, y1]``
in the database image's pixels (exclusive x1/y1). Optional attributes on the ranker:
``bytes_per_image`` (for the mAP-vs-memory plot) and ``description``.

Configurations are found by name through a registry of *factories*
``factory(benchmark) -> ranker`` (:func:`register_ranker`): the index (issue 5) registers its
configurations there (and lists its module in ``_PLUGINS`` so that it is imported on
lookup, or users pass ``pypatch eval --plugin MODULE``), and ``pypatch eval --config NAME``
builds them. Built in (:mod:`pypatch.evaluation.baselines`, registered when this module is imported):
``hist-global`` (global colour histogram, whole-image box), ``hist-grid`` (the same histogram
per cell of the 1/5/14/30 grid pyramid, image score = max over cells, box = winning cell) and
``oracle`` (ranks the ground truth first with its true box: an upper bound that checks the
pipeline, not a method).

Metric conventions
------------------
* ``map``: revisitop AP (trapezoid, junk skipped) over the returned top ``k``; positives not
  returned earn nothing. ``map_at_k``: ILIAS mAP@k in the ranker's order, its scores used to
  group ties into one threshold (ignored if they are not non-increasing).
  ``mp@n``: revisitop mean precision; ``recall@n``: share of queries with a
  positive in the top n.
* ``locscore``: defined only for queries whose positives all have ground-truth boxes; the
  report says over how many queries it was computed (revisitop has none, ILIAS and the
  generated benchmark have all).
* Size breakdown: a positive's size is ``meta['area_frac']`` when the dataset records it, else
  its largest box's share of the image area. Per bucket, positives of other buckets are
  treated as junk (ILIAS's per-scale protocol) and queries with no positive in the bucket are
  left out.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from pypatch.evaluation.baselines import BUILTIN_DESCRIPTIONS, BUILTIN_RANKERS
from pypatch.evaluation.datasets.benchmark import Benchmark, Query
from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError, InvalidTypeError
from pypatch.evaluation.results import SIZE_BUCKETS, ConfigResult, EvalResults
from pypatch.evaluation.metrics import ap_at_k, compute_map, locscore, recall_at_k

__all__ = ["evaluate", "register_ranker", "available_rankers", "describe_ranker", "make_ranker",
           "load_plugins"]

RECALL_LEVELS = np.linspace(0.0, 1.0, 21)

Hit = tuple  # (db_id, score, box or None)
RankerFactory = Callable[[Benchmark], Callable[[Query, int], Sequence[Any]]]
_REGISTRY: dict[str, RankerFactory] = {}
# modules imported before a configuration is looked up, so that they can call
# register_ranker(): the ImageIndex configurations (issue 5). ``pypatch eval --plugin M`` adds more.
_PLUGINS: tuple[str, ...] = ("pypatch.evaluation.rankers",)
_LOADED: set[str] = set()


# ---------------------------------------------------------------------------------- registry
def register_ranker(name: str, factory: RankerFactory, *, overwrite: bool = False) -> None:
    """Make ``factory(benchmark) -> ranker`` available as configuration ``name``."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"ranker name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise InvalidTypeError(f"factory for {name!r} must be callable")
    if name in _REGISTRY and not overwrite:
        raise InvalidArgumentError(f"ranker {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = factory


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Import modules that register configurations (``_PLUGINS`` plus ``modules``), once each.

    A built-in plugin that cannot be imported (e.g. the native core is not built) is skipped;
    a user-named module that fails raises ``InvalidArgumentError``.
    """
    import importlib

    for mod in (*_PLUGINS, *modules):
        if mod in _LOADED:
            continue
        _LOADED.add(mod)  # before importing: the plugin itself calls available_rankers()
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            if mod in _PLUGINS:
                continue
            _LOADED.discard(mod)
            raise InvalidArgumentError(f"cannot import ranker plugin {mod!r}: {exc}") from None


def available_rankers() -> list[str]:
    load_plugins()
    return sorted(_REGISTRY)


def describe_ranker(name: str) -> str:
    """A few words on configuration ``name``: the built-in baselines' and the ImageIndex
    configurations' own, else the factory's ``description`` attribute or docstring's first line."""
    load_plugins()
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"unknown configuration {name!r}")
    if name in BUILTIN_DESCRIPTIONS:
        return BUILTIN_DESCRIPTIONS[name]
    factory = _REGISTRY[name]
    text = getattr(factory, "description", None)
    if text:
        return str(text)
    doc = (getattr(factory, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def make_ranker(name: str, benchmark: Benchmark):
    load_plugins()
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"unknown configuration {name!r}; available: {', '.join(available_rankers())}")
    return _REGISTRY[name](benchmark)


# ---------------------------------------------------------------------------------- harness
def _normalise_hits(raw: Any, benchmark: Benchmark, name: str, qid: str, k: int) -> list[Hit]:
    if raw is None or isinstance(raw, (str, bytes)):
        raise InvalidTypeError(f"ranker {name!r} must return a sequence of hits for query {qid!r}")
    hits, seen = [], set()
    for h in list(raw)[:k]:
        if hasattr(h, "score") and (hasattr(h, "image_id") or hasattr(h, "image")):
            hid = h.image_id if hasattr(h, "image_id") else h.image  # SearchHit names it .image
            score, box = h.score, getattr(h, "box", None)
        elif isinstance(h, (tuple, list)) and len(h) in (2, 3):
            hid, score, box = h[0], h[1], (h[2] if len(h) == 3 else None)
        else:
            raise InvalidTypeError(f"ranker {name!r}: hit {h!r} for query {qid!r} is not (id, score, box)")
        hid = str(hid)
        try:
            benchmark.db_index(hid)
        except KeyError:
            raise InvalidArgumentError(
                f"ranker {name!r} returned unknown database id {hid!r} for query {qid!r}") from None
        if hid in seen:
            raise InvalidArgumentError(f"ranker {name!r} returned database id {hid!r} twice for query {qid!r}")
        seen.add(hid)
        if box is not None:
            box = tuple(float(v) for v in box)
            if len(box) != 4:
                raise InvalidArgumentError(f"ranker {name!r}: box of {hid!r} must have 4 numbers")
        hits.append((hid, float(score), box))
    return hits


def _positive_size(benchmark: Benchmark, p, cache: dict) -> float | None:
    if "area_frac" in p.meta:
        return float(p.meta["area_frac"])
    if not p.boxes:
        return None
    if p.id not in cache:
        from PIL import Image

        try:
            with Image.open(benchmark.database[benchmark.db_index(p.id)].image) as im:
                cache[p.id] = im.size  # header only
        except OSError:
            cache[p.id] = None
    size = cache[p.id]
    if not size:
        return None
    return max((b[2] - b[0]) * (b[3] - b[1]) for b in p.boxes) / float(size[0] * size[1])


def _pr_curve(ids: Sequence[str], pos: set, junk: set) -> np.ndarray:
    """Interpolated precision at RECALL_LEVELS for one query (junk removed)."""
    ranked = [i for i in ids if i not in junk]
    rel = np.array([i in pos for i in ranked], dtype=bool)
    if not len(rel):
        return np.zeros(len(RECALL_LEVELS))
    tp = np.cumsum(rel)
    precision = tp / np.arange(1, len(rel) + 1)
    recall = tp / len(pos)
    out = np.zeros(len(RECALL_LEVELS))
    for j, r in enumerate(RECALL_LEVELS):
        m = recall >= r - 1e-12
        out[j] = precision[m].max() if m.any() else 0.0
    return out


def _query_metrics(benchmark: Benchmark, hits: list[Hit], ok_ids: list[str], junk_ids: set,
                   gt_boxes: dict | None, k: int, kappas: Sequence[int]) -> dict:
    """AP (revisitop), mP@kappas, ILIAS AP@k and LocScore (None unless ``gt_boxes``) of one query."""
    ids = [h[0] for h in hits]
    ranks = np.array([benchmark.db_index(i) for i in ids], dtype=np.int64).reshape(-1, 1)
    gnd = [{"ok": [benchmark.db_index(i) for i in ok_ids], "junk": [benchmark.db_index(i) for i in junk_ids]}]
    _, aps, _, prs = compute_map(ranks, gnd, kappas)
    out = {"ap": float(aps[0]), "mp": [float(v) for v in prs[0]]}
    filtered = [(i, s) for i, s, _ in hits if i not in junk_ids]  # ILIAS has no junk: drop it first
    scores = [s for _, s in filtered]
    # scores only group ties; if they do not follow the ranking (e.g. distances), trust the order
    if np.any(np.diff(scores) > 0):
        scores = None
    out["ap_at_k"] = ap_at_k([i for i, _ in filtered], set(ok_ids), k, scores) if ok_ids else float("nan")
    out["locscore"] = None
    if gt_boxes is not None and ok_ids:
        out["locscore"] = locscore(ids, [h[2] for h in hits], {p: gt_boxes[p] for p in ok_ids}, junk_ids)
    return out


def evaluate(benchmark: Benchmark, rankers: Mapping[str, Callable], k: int = 100,
             kappas: Sequence[int] = (1, 5, 10), recall_ks: Sequence[int] = (1, 5, 10)) -> EvalResults:
    """Run every ranker on every query of ``benchmark`` and compute the metrics.

    ``rankers`` maps a configuration name to a ranker (see the module docstring).
    """
    if not isinstance(benchmark, Benchmark):
        raise InvalidTypeError(f"benchmark must be a pypatch.evaluation.datasets.Benchmark, got {type(benchmark).__name__}")
    as_int(k, "k", 1)
    if not rankers:
        raise InvalidArgumentError("rankers is empty: give at least one configuration")
    results = EvalResults(benchmark, int(k))
    size_cache: dict = {}
    for name, ranker in rankers.items():
        if not callable(ranker) and not hasattr(ranker, "rank_batch"):
            raise InvalidTypeError(f"ranker {name!r} is not callable and has no rank_batch method")
        per_query, curves = [], []
        t0 = time.perf_counter()
        if hasattr(ranker, "rank_batch"):  # optional batch form: rank_batch(queries, k) -> [hits, ...]
            raw = list(ranker.rank_batch(list(benchmark.queries), int(k)))
            if len(raw) != len(benchmark.queries):
                raise InvalidArgumentError(f"ranker {name!r}: rank_batch returned {len(raw)} results "
                                           f"for {len(benchmark.queries)} queries")
        else:
            raw = [ranker(q, int(k)) for q in benchmark.queries]
        all_hits = {q.id: _normalise_hits(r, benchmark, name, q.id, int(k)) for q, r in zip(benchmark.queries, raw)}
        seconds = time.perf_counter() - t0
        buckets: dict[str, dict[str, list]] = {b[0]: {"ap": [], "locscore": [], "positives": []} for b in SIZE_BUCKETS}
        for q in benchmark.queries:
            hits = all_hits[q.id]
            plist = benchmark.positives.get(q.id, [])
            ok_ids = [p.id for p in plist]
            junk = set(benchmark.junk_ids(q.id))
            boxes = {p.id: p.boxes for p in plist} if benchmark.has_boxes(q.id) else None
            m = _query_metrics(benchmark, hits, ok_ids, junk, boxes, int(k), kappas)
            pos_set = set(ok_ids)
            labels = ["pos" if h[0] in pos_set else "junk" if h[0] in junk else "neg" for h in hits]
            per_query.append({"query": q.id, **m, "hits": [[h[0], h[1], None if h[2] is None else list(h[2])]
                                                            for h in hits], "labels": labels})
            if ok_ids:
                curves.append(_pr_curve([h[0] for h in hits], pos_set, junk))
            # size breakdown: other-bucket positives become junk for this bucket
            sizes = {p.id: _positive_size(benchmark, p, size_cache) for p in plist}
            for label, lo, hi in SIZE_BUCKETS:
                inside = [p for p in ok_ids if sizes[p] is not None and lo <= sizes[p] < hi]
                if not inside:
                    continue
                outside = junk | (pos_set - set(inside))
                bm = _query_metrics(benchmark, hits, inside, outside,
                                    None if boxes is None else {p: boxes[p] for p in inside}, int(k), kappas)
                buckets[label]["ap"].append(bm["ap"])
                buckets[label]["positives"].append(len(inside))
                if bm["locscore"] is not None:
                    buckets[label]["locscore"].append(bm["locscore"])
        results.configs[name] = ConfigResult(
            name=name,
            summary=_summarise(per_query, all_hits, benchmark, kappas, recall_ks, seconds),
            per_query=per_query,
            size_breakdown={label: {"map": _nanmean(v["ap"]), "locscore": _nanmean(v["locscore"]),
                                    "n_queries": len(v["ap"]), "n_positives": int(sum(v["positives"]))}
                            for label, v in buckets.items()},
            pr_curve={"recall": RECALL_LEVELS.tolist(),
                      "precision": (np.mean(curves, axis=0) if curves else np.zeros(len(RECALL_LEVELS))).tolist()},
            bytes_per_image=getattr(ranker, "bytes_per_image", None),
            description=str(getattr(ranker, "description", "")),
        )
    return results


def _nanmean(values: Iterable[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def _summarise(per_query, all_hits, benchmark, kappas, recall_ks, seconds) -> dict:
    with_pos = [r for r in per_query if not math.isnan(r["ap"])]
    loc = [r["locscore"] for r in per_query if r["locscore"] is not None and not math.isnan(r["locscore"])]
    s: dict[str, Any] = {
        "map": _nanmean(r["ap"] for r in with_pos),
        "map_at_k": _nanmean(r["ap_at_k"] for r in with_pos),
        "locscore": _nanmean(loc),
        "n_queries": len(per_query),
        "n_queries_with_positives": len(with_pos),
        "n_queries_locscore": len(loc),
        "ms_per_query": 1000.0 * seconds / max(1, len(per_query)),
    }
    for j, kap in enumerate(kappas):
        s[f"mp@{kap}"] = _nanmean(r["mp"][j] for r in with_pos)
    ranked = [[h[0] for h in all_hits[q.id]] for q in benchmark.queries]
    pos = [benchmark.positive_ids(q.id) for q in benchmark.queries]
    junk = [benchmark.junk_ids(q.id) for q in benchmark.queries]
    for rk in recall_ks:
        s[f"recall@{rk}"] = recall_at_k(ranked, pos, rk, junk)
    return s


for _name, _factory in BUILTIN_RANKERS.items():
    register_ranker(_name, _factory)

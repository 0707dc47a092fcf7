"""Evaluation harness: run ranking functions over a :class:`~pypatch.datasets.Benchmark`,
compute every metric of :mod:`pypatch.metrics`, and write a report.

The ranking-function protocol
-----------------------------
A *ranker* is any callable ``ranker(query, k) -> hits`` where ``query`` is a
:class:`pypatch.datasets.Query` (``id``, ``image`` path, ``box`` or None: crop the query to it)
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
builds them. Built in:
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

import html
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from pypatch.datasets.benchmark import Benchmark, Query
from pypatch.errors import InvalidArgumentError, InvalidTypeError
from pypatch.metrics import ap_at_k, compute_map, locscore, recall_at_k

__all__ = [
    "evaluate", "write_report", "register_ranker", "available_rankers", "make_ranker", "load_plugins",
    "ilias_similarities",
    "EvalResults", "ConfigResult", "SIZE_BUCKETS",
]

SIZE_BUCKETS = (("<3%", 0.0, 0.03), ("3-10%", 0.03, 0.10), ("10-25%", 0.10, 0.25), (">25%", 0.25, math.inf))
RECALL_LEVELS = np.linspace(0.0, 1.0, 21)

Hit = tuple  # (db_id, score, box or None)
RankerFactory = Callable[[Benchmark], Callable[[Query, int], Sequence[Any]]]
_REGISTRY: dict[str, RankerFactory] = {}
# modules imported before a configuration is looked up, so that they can call
# register_ranker(): the ImageIndex configurations (issue 5). ``pypatch eval --plugin M`` adds more.
_PLUGINS: tuple[str, ...] = ("pypatch.eval_rankers",)
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


def make_ranker(name: str, benchmark: Benchmark):
    load_plugins()
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"unknown configuration {name!r}; available: {', '.join(available_rankers())}")
    return _REGISTRY[name](benchmark)


# ----------------------------------------------------------------------------------- results
@dataclass
class ConfigResult:
    name: str
    summary: dict[str, Any]
    per_query: list[dict[str, Any]]
    size_breakdown: dict[str, dict[str, Any]]
    pr_curve: dict[str, list[float]]
    bytes_per_image: float | None = None
    description: str = ""


@dataclass
class EvalResults:
    benchmark: Benchmark
    k: int
    configs: dict[str, ConfigResult] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _jsonable({
            "benchmark": self.benchmark.name,
            "n_queries": len(self.benchmark.queries),
            "n_database": len(self.benchmark.database),
            "k": self.k,
            "configs": {n: {"summary": c.summary, "size_breakdown": c.size_breakdown,
                            "pr_curve": c.pr_curve, "bytes_per_image": c.bytes_per_image,
                            "description": c.description, "per_query": c.per_query}
                        for n, c in self.configs.items()},
        })


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


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
        raise InvalidTypeError(f"benchmark must be a pypatch.datasets.Benchmark, got {type(benchmark).__name__}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
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


# -------------------------------------------------------------------------------- baselines
_HIST_BINS = 8  # per RGB channel -> 512-bin joint histogram
_MAX_SIDE = 256  # images are shrunk before histogramming (speed); boxes map back to full size


def _load_rgb(path: Path, box=None):
    from PIL import Image

    from pypatch.errors import ImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if box is not None:
                im = im.crop(tuple(int(v) for v in box))
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from None
    full = im.size
    if max(full) > _MAX_SIDE:
        f = _MAX_SIDE / max(full)
        im = im.resize((max(1, round(full[0] * f)), max(1, round(full[1] * f))), Image.BILINEAR)
    return np.asarray(im), full


def _bin_map(arr: np.ndarray) -> np.ndarray:
    q = (arr.astype(np.int32) * _HIST_BINS) // 256
    return (q[..., 0] * _HIST_BINS + q[..., 1]) * _HIST_BINS + q[..., 2]


def _hist(bins: np.ndarray) -> np.ndarray:
    h = np.sqrt(np.bincount(bins.ravel(), minlength=_HIST_BINS ** 3).astype(np.float32))  # Hellinger
    n = np.linalg.norm(h)
    return h / n if n > 0 else h


def _grid_cells(w: int, h: int, levels: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping n x n grids for n = 1..levels+1 (1/5/14/30 cells for L0..L3)."""
    cells = []
    for n in range(1, levels + 2):
        xs = [round(i * w / n) for i in range(n + 1)]
        ys = [round(i * h / n) for i in range(n + 1)]
        cells += [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(n) for i in range(n)]
    return cells


class HistogramRanker:
    """Colour-histogram retrieval over the grid pyramid (``levels=0``: one global histogram).

    Database image score = max over its cells of the cosine between Hellinger histograms;
    the returned box is the winning cell in original-image pixels. A weak but honest
    baseline that needs no model; ``levels=3`` shows the patch-wise idea on colour alone.
    """

    def __init__(self, benchmark: Benchmark, levels: int = 0):
        self.levels = int(levels)
        self.ids = [d.id for d in benchmark.database]
        descs, owner, boxes = [], [], []
        for i, d in enumerate(benchmark.database):
            arr, (fw, fh) = _load_rgb(d.image)
            bins = _bin_map(arr)
            h, w = bins.shape
            for (x0, y0, x1, y1) in _grid_cells(w, h, self.levels):
                if x1 <= x0 or y1 <= y0:
                    continue
                descs.append(_hist(bins[y0:y1, x0:x1]))
                owner.append(i)
                boxes.append((round(x0 * fw / w), round(y0 * fh / h), round(x1 * fw / w), round(y1 * fh / h)))
        self.descs = np.stack(descs) if descs else np.zeros((0, _HIST_BINS ** 3), np.float32)
        self.owner = np.asarray(owner, dtype=np.int64)
        self.boxes = boxes
        self.starts = np.r_[0, np.flatnonzero(np.diff(self.owner)) + 1] if len(owner) else np.zeros(0, np.int64)
        self.bytes_per_image = float(self.descs.nbytes) / max(1, len(self.ids))
        self.description = f"RGB {_HIST_BINS}^3 histogram, grid levels 0..{self.levels}, max over cells"

    def __call__(self, query: Query, k: int):
        arr, _ = _load_rgb(query.image, query.box)
        sims = self.descs @ _hist(_bin_map(arr))
        best = np.maximum.reduceat(sims, self.starts)
        # argmax per image: first cell reaching the max
        arg = np.array([s + int(np.argmax(sims[s:e])) for s, e in zip(self.starts, np.r_[self.starts[1:], len(sims)])])
        order = np.lexsort((np.arange(len(best)), -best))[:k]  # ties broken by database order
        return [(self.ids[self.owner[arg[i]]], float(best[i]), self.boxes[arg[i]]) for i in order]


def _oracle(benchmark: Benchmark):
    def rank(query: Query, k: int):
        first = benchmark.positives.get(query.id, [])
        head = [(p.id, 1.0, p.boxes[0] if p.boxes else None) for p in first]
        seen = {p.id for p in first}
        tail = [(d.id, 0.0, None) for d in benchmark.database if d.id not in seen]
        return (head + tail)[:k]

    rank.description = "ground truth first with its true box (upper bound, checks the pipeline)"
    return rank


register_ranker("hist-global", lambda b: HistogramRanker(b, levels=0))
register_ranker("hist-grid", lambda b: HistogramRanker(b, levels=3))
register_ranker("oracle", _oracle)


# ----------------------------------------------------------------------------------- report
def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _markdown(results: EvalResults) -> str:
    b = results.benchmark
    names = list(results.configs)
    first = results.configs[names[0]].summary
    kap = [key for key in first if key.startswith("mp@")]
    rec = [key for key in first if key.startswith("recall@")]
    lines = [f"# Retrieval results: {b.name}", "",
             f"{len(b.queries)} queries, {len(b.database)} database images, top k = {results.k}. "
             "Values x100. mAP: revisitop AP (junk skipped) over the top k; mAP@k: ILIAS; "
             "LocScore: precision-weighted IoU of the returned box over true positives.", "",
             "| config | mAP | mAP@k | LocScore | " + " | ".join(kap + rec) + " | bytes/image | ms/query |",
             "|---" * (6 + len(kap) + len(rec)) + "|"]
    for n in names:
        c = results.configs[n]
        s = c.summary
        bpi = "n/a" if c.bytes_per_image is None else f"{c.bytes_per_image:.0f}"
        lines.append(f"| {n} | {_pct(s['map'])} | {_pct(s['map_at_k'])} | {_pct(s['locscore'])} | "
                     + " | ".join(_pct(s[x]) for x in kap + rec) + f" | {bpi} | {s['ms_per_query']:.1f} |")
    nloc = first["n_queries_locscore"]
    lines += ["", f"LocScore is defined for {nloc} of {len(b.queries)} queries (those whose positives "
              "all carry ground-truth boxes)." if nloc else
              "LocScore is undefined here: the positives carry no ground-truth boxes.", "",
              "## By object size (share of the image area)", "",
              "| config | " + " | ".join(f"{lbl} mAP | {lbl} LocScore" for lbl, _, _ in SIZE_BUCKETS) + " |",
              "|---" * (1 + 2 * len(SIZE_BUCKETS)) + "|"]
    for n in names:
        sb = results.configs[n].size_breakdown
        lines.append(f"| {n} | " + " | ".join(
            f"{_pct(sb[lbl]['map'])} (n={sb[lbl]['n_queries']}) | {_pct(sb[lbl]['locscore'])}"
            for lbl, _, _ in SIZE_BUCKETS) + " |")
    desc = [f"- **{n}**: {c.description}" for n, c in results.configs.items() if c.description]
    if desc:
        lines += ["", "## Configurations", "", *desc]
    return "\n".join(lines) + "\n"


def _plots(results: EvalResults, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results.configs)
    files = []
    x = np.arange(len(names))

    def val(v):
        return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else 100 * v

    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names) + 2), 3.5))
    for j, (key, label) in enumerate((("map", "mAP"), ("map_at_k", "mAP@k"), ("locscore", "LocScore"))):
        ax.bar(x + (j - 1) * 0.27, [val(results.configs[n].summary[key]) for n in names], 0.27, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("x100")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title(f"{results.benchmark.name}: retrieval and localisation")
    fig.tight_layout()
    files.append(out / "metrics.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)

    with_bytes = [n for n in names if results.configs[n].bytes_per_image]
    if with_bytes:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for n in with_bytes:
            c = results.configs[n]
            ax.scatter(c.bytes_per_image, val(c.summary["map"]))
            ax.annotate(n, (c.bytes_per_image, val(c.summary["map"])), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("bytes per database image")
        ax.set_ylabel("mAP x100")
        ax.set_title("mAP against memory")
        fig.tight_layout()
        files.append(out / "map_vs_bytes.png")
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [b[0] for b in SIZE_BUCKETS]
    width = 0.8 / max(1, len(names))
    for j, n in enumerate(names):
        sb = results.configs[n].size_breakdown
        ax.bar(np.arange(len(labels)) + j * width, [val(sb[lbl]["map"]) for lbl in labels], width, label=n)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    ax.set_xlabel("object share of the image area")
    ax.set_ylabel("mAP x100")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(out / "size_breakdown.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    for n in names:
        pr = results.configs[n].pr_curve
        ax.plot(pr["recall"], pr["precision"], marker=".", label=n)
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Precision-recall (mean over queries)")
    fig.tight_layout()
    files.append(out / "pr_curves.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)
    return files


_BORDER = {"pos": (0, 170, 0), "neg": (220, 0, 0), "junk": (150, 150, 150), "query": (0, 90, 255)}


def _thumb(src: Path, box, label: str, dest: Path, side: int = 160) -> None:
    from PIL import Image, ImageDraw, ImageOps

    with Image.open(src) as im:
        im = im.convert("RGB")
    if box is not None:
        draw = ImageDraw.Draw(im)
        w = max(2, round(max(im.size) / 120))
        color = (255, 220, 0) if label != "query" else _BORDER["query"]
        draw.rectangle([box[0], box[1], max(box[0], box[2] - 1), max(box[1], box[3] - 1)], outline=color, width=w)
    im.thumbnail((side, side))
    im = ImageOps.expand(im, border=5, fill=_BORDER[label])
    im.save(dest, format="JPEG", quality=85)


def _html(results: EvalResults, out: Path, examples: int, top: int) -> Path:
    b = results.benchmark
    thumbs = out / "thumbs"
    thumbs.mkdir(exist_ok=True)
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>pypatch results: {esc(b.name)}</title>",
             "<style>body{font-family:sans-serif} td{vertical-align:top;font-size:11px;text-align:center}"
             " img{display:block}</style></head><body>",
             f"<h1>{esc(b.name)}</h1><p>Query (its box in blue), then the top {top} results of each "
             "configuration with the predicted box in yellow; border green = positive, red = wrong, "
             "grey = junk.</p>"]
    parts += [f"<img src='{p.name}' alt='{esc(p.stem)}'>" for p in sorted(out.glob("*.png"))]
    names = list(results.configs)
    for qi, q in enumerate(b.queries[:examples]):
        qname = f"q{qi}.jpg"
        _thumb(q.image, q.box, "query", thumbs / qname)
        parts.append(f"<h3>{esc(q.id)}</h3><table><tr><td><img src='thumbs/{qname}'>query</td></tr>")
        for ci, n in enumerate(names):
            row = results.configs[n].per_query[qi]
            cells = [f"<td><b>{esc(n)}</b><br>AP {_pct(row['ap'])}</td>"]
            for hi, ((hid, score, box), label) in enumerate(zip(row["hits"][:top], row["labels"][:top])):
                tname = f"q{qi}_c{ci}_{hi}.jpg"
                _thumb(b.database[b.db_index(hid)].image, box, label, thumbs / tname)
                cells.append(f"<td><img src='thumbs/{tname}'>{esc(hid)}<br>{score:.3f} {label}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def ilias_similarities(results: EvalResults, config: str) -> dict[str, dict[str, float]]:
    """One configuration's results as ILIAS's JSON input ``{query_id: {db_id: score}}``, for
    its official ``evaluation/evaluate.py --similarity_file``."""
    if config not in results.configs:
        raise InvalidArgumentError(f"no configuration {config!r} in these results")
    return {row["query"]: {h[0]: h[1] for h in row["hits"]} for row in results.configs[config].per_query}


def write_report(results: EvalResults, out_dir: str | os.PathLike, *, examples: int = 8, top: int = 5) -> dict:
    """Write ``results.md``, ``results.json``, PNG plots and ``index.html`` (with thumbnails)
    into ``out_dir``; returns ``{"markdown", "json", "html", "plots"}`` paths. For an ILIAS
    benchmark it also writes ``ilias_<config>.json`` (see :func:`ilias_similarities`)."""
    if not isinstance(results, EvalResults) or not results.configs:
        raise InvalidArgumentError("results must be a non-empty EvalResults from evaluate()")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"out_dir {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(_markdown(results), encoding="utf-8")
    js = out / "results.json"
    js.write_text(json.dumps(results.to_dict(), indent=1) + "\n", encoding="utf-8")
    plots = _plots(results, out)
    page = _html(results, out, examples, top)
    if results.benchmark.meta.get("source") == "ilias":
        for name in results.configs:
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
            (out / f"ilias_{safe}.json").write_text(json.dumps(ilias_similarities(results, name)), encoding="utf-8")
    return {"markdown": md, "json": js, "html": page, "plots": plots}

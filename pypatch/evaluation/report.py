"""Report writer for :func:`pypatch.evaluation.evaluate` results: ``results.md``,
``results.json``, matplotlib plots, ``index.html`` (the results table first, then plots and every query's boxed results), and the
ILIAS similarity JSON.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError
from pypatch.evaluation.results import SIZE_BUCKETS, EvalResults

__all__ = ["write_report", "ilias_similarities"]


def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _cell(bucket: dict, key: str) -> str:
    """A size-bucket value; an empty bucket (no query has a positive of that size) is '-'."""
    return "-" if not bucket["n_queries"] else _pct(bucket[key])


def _bucket_queries(results: EvalResults, label: str) -> int:
    # the same for every configuration: it depends on the benchmark only
    return next(iter(results.configs.values())).size_breakdown[label]["n_queries"]


def _bucket_note(results: EvalResults) -> str:
    counts = [_bucket_queries(results, lbl) for lbl, _, _ in SIZE_BUCKETS]
    n = len(results.benchmark.queries)
    note = ("(N queries): how many queries have a positive of that size; each is scored there on "
            "those positives only (its other positives count as junk).")
    if sum(counts) > n:
        note += (f" A query whose positives differ in size counts in each of their buckets, so "
                 f"the counts add up to {sum(counts)}, more than the {n} queries.")
    if 0 in counts:
        note += " '-': no query has a positive of that size."
    return note


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
              "| config | " + " | ".join(f"{lbl} mAP ({_bucket_queries(results, lbl)} queries) | {lbl} LocScore"
                                         for lbl, _, _ in SIZE_BUCKETS) + " |",
              "|---" * (1 + 2 * len(SIZE_BUCKETS)) + "|"]
    for n in names:
        sb = results.configs[n].size_breakdown
        lines.append(f"| {n} | " + " | ".join(
            f"{_cell(sb[lbl], 'map')} | {_cell(sb[lbl], 'locscore')}" for lbl, _, _ in SIZE_BUCKETS) + " |")
    lines += ["", _bucket_note(results)]
    desc = [f"- **{n}**: {c.description}" for n, c in results.configs.items() if c.description]
    if desc:
        lines += ["", "## Configurations", "", *desc]
    return "\n".join(lines) + "\n"


def same_results_groups(results: EvalResults, key: str) -> list[list[str]]:
    """Configurations whose plotted values coincide, in order: ``key="pr"`` groups identical
    precision-recall curves, ``key="map_vs_bytes"`` identical (bytes/image, mAP) points (e.g. a
    configuration and its ``-refine`` twin, which ranks the same). Plotted once, labelled
    with every name, so that no curve or label hides under another."""
    def value(n):
        c = results.configs[n]
        if key == "pr":
            return tuple(round(v, 9) for v in c.pr_curve["precision"])
        m = c.summary["map"]
        return (c.bytes_per_image, None if m is None or m != m else round(m, 9))

    groups: dict = {}
    for n in results.configs:
        groups.setdefault(value(n), []).append(n)
    return list(groups.values())


def _plots(results: EvalResults, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results.configs)
    files = []
    x = np.arange(len(names))
    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]

    def val(v):
        return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else 100 * v

    def save(fig, name: str) -> Path:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        return out / name

    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names) + 2), 3.5))
    for j, (key, label) in enumerate((("map", "mAP"), ("map_at_k", "mAP@k"), ("locscore", "LocScore"))):
        ax.bar(x + (j - 1) * 0.27, [val(results.configs[n].summary[key]) for n in names], 0.27, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("x100")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title(f"{results.benchmark.name}: retrieval and localisation")
    files.append(save(fig, "metrics.png"))

    with_bytes = [g for g in same_results_groups(results, "map_vs_bytes")
                  if results.configs[g[0]].bytes_per_image]
    if with_bytes:
        # one marker per point, named in the legend (coincident configurations share it)
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for j, group in enumerate(with_bytes):
            c = results.configs[group[0]]
            ax.scatter(c.bytes_per_image, val(c.summary["map"]), marker=markers[j % len(markers)],
                       s=45, label=" = ".join(group))
        ax.set_xscale("log")
        ax.set_xlabel("bytes per database image")
        ax.set_ylabel("mAP x100")
        ax.set_title("mAP against memory")
        ax.legend(fontsize=7, loc="best")
        files.append(save(fig, "map_vs_bytes.png"))

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    labels = [b[0] for b in SIZE_BUCKETS]
    counts = [_bucket_queries(results, lbl) for lbl in labels]
    width = 0.8 / max(1, len(names))
    for j, n in enumerate(names):
        sb = results.configs[n].size_breakdown
        ax.bar(np.arange(len(labels)) + j * width, [val(sb[lbl]["map"]) for lbl in labels], width, label=n)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2,
                  [f"{lbl}\n({c} queries)" if c else f"{lbl}\n(no query)" for lbl, c in zip(labels, counts)])
    ax.set_xlabel("object share of the image area")
    ax.set_ylabel("mAP x100")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    files.append(save(fig, "size_breakdown.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for j, group in enumerate(same_results_groups(results, "pr")):
        pr = results.configs[group[0]].pr_curve
        ax.plot(pr["recall"], pr["precision"], linestyle=styles[j % len(styles)],
                marker=markers[j % len(markers)], markersize=4, label=" = ".join(group))
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Precision-recall (mean over queries)")
    files.append(save(fig, "pr_curves.png"))
    return files


_BORDER = {"pos": (0, 170, 0), "neg": (220, 0, 0), "junk": (150, 150, 150), "query": (0, 90, 255)}
_BOX = {"query": _BORDER["query"], "returned": (255, 220, 0), "truth": (255, 0, 255)}
DEFAULT_EXAMPLES = 50  # queries shown with their results when examples=None (all of small benchmarks)
THUMB_SIDE = 200  # thumbnails (was 160): 5 per row still fit a 1280 px wide window
FULL_SIDE = 1024  # the clicked-through copy (full size up to this)


def _draw(src: Path, boxes: list, side: int):
    """The image with ``boxes`` [(box, colour)] drawn, shrunk to at most ``side`` pixels."""
    from PIL import Image, ImageDraw

    with Image.open(src) as im:
        im = im.convert("RGB")
    draw = ImageDraw.Draw(im)
    w = max(2, round(max(im.size) / 120))
    for box, color in boxes:
        # the true boxes come first and twice as wide (PIL draws inwards): a returned box
        # drawn on top of an identical true box leaves the true one visible inside it
        width = 2 * w if color == _BOX["truth"] else w
        draw.rectangle([box[0], box[1], max(box[0], box[2] - 1), max(box[1], box[3] - 1)],
                       outline=color, width=width)
    im.thumbnail((side, side))
    return im


def _thumb(src: Path, box, label: str, dest: Path, side: int = THUMB_SIDE, truth=(),
           full: Path | None = None) -> None:
    """Thumbnail of ``src`` with the returned ``box`` (yellow; blue for a query) and the true
    boxes ``truth`` (magenta) drawn, framed by the label's colour; ``full``: also a larger copy."""
    from PIL import ImageOps

    boxes = [(b, _BOX["truth"]) for b in truth]
    if box is not None:
        boxes.append((box, _BOX["query"] if label == "query" else _BOX["returned"]))
    if full is not None and not full.exists():
        _draw(src, boxes, FULL_SIDE).save(full, format="JPEG", quality=90)
    im = ImageOps.expand(_draw(src, boxes, side), border=5, fill=_BORDER[label])
    im.save(dest, format="JPEG", quality=88)


def _md_to_html(md: str) -> str:
    """results.md as HTML: its tables, headings, paragraphs and lists (no other markdown)."""
    esc = html.escape
    out, rows = [], []

    def flush():
        if rows:
            head, body = rows[0], rows[1:]
            out.append("<table class='results'><tr>" + "".join(f"<th>{esc(c)}</th>" for c in head)
                       + "</tr>" + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                                           for r in body) + "</table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.startswith("# "):
            continue  # the page has its own title
        if line.startswith("## "):
            out.append(f"<h2>{esc(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(f"<li>{esc(line[2:]).replace('**', '')}</li>")
        elif line.strip():
            out.append(f"<p>{esc(line)}</p>")
    flush()
    return "\n".join(out)


_STYLE = ("body{font-family:sans-serif;margin:16px} "
          "table.results{border-collapse:collapse;margin:8px 0 16px} "
          "table.results th{background:#1f4e79;color:#fff;padding:4px 8px;font-size:13px} "
          "table.results td{border:1px solid #bbb;padding:3px 8px;font-size:13px;text-align:right} "
          "table.results td:first-child{text-align:left;font-weight:bold} "
          "table.hits td{vertical-align:top;font-size:12px;text-align:center;padding:2px} "
          "table.hits img{display:block;margin:auto} .note{color:#444} "
          ".key{display:inline-block;width:14px;height:10px;border:2px solid;margin:0 4px} "
          ".plots img{max-width:32%;height:auto;margin:4px}")


def _html(results: EvalResults, out: Path, examples: int | None, top: int) -> Path:
    b = results.benchmark
    thumbs = out / "thumbs"
    thumbs.mkdir(exist_ok=True)
    full = out / "full"
    full.mkdir(exist_ok=True)
    esc = html.escape

    def key(color, text):
        return f"<span class='key' style='border-color:rgb{color}'></span>{text}"

    n_shown = min(DEFAULT_EXAMPLES if examples is None else int(examples), len(b.queries))
    why = ("to keep the page light" if examples is None else f"examples={examples}")
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>pypatch results: {esc(b.name)}</title>",
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{esc(b.name)}</h1>", _md_to_html(_markdown(results))]
    parts.append("<div class='plots'>" + "".join(f"<img src='{p.name}' alt='{esc(p.stem)}'>"
                                                 for p in sorted(out.glob("*.png"))) + "</div>")
    shown = (f"all {n_shown} queries" if n_shown == len(b.queries) else
             f"the first {n_shown} of the {len(b.queries)} queries ({len(b.queries) - n_shown} "
             f"hidden, {why}; pypatch eval --examples N shows more)")
    parts.append(
        f"<h2>Results per query</h2><p class='note'>Showing {shown}. Each row: a configuration's "
        f"top {top} results. Boxes: " + key(_BOX["query"], "query box") + ", "
        + key(_BOX["returned"], "returned box") + ", " + key(_BOX["truth"], "ground truth")
        + ". Frame: " + key(_BORDER["pos"], "positive") + ", " + key(_BORDER["neg"], "wrong")
        + ", " + key(_BORDER["junk"], "junk") + ". Click a thumbnail for the full image.</p>")
    names = list(results.configs)
    for qi, q in enumerate(b.queries[:n_shown]):
        qname = f"q{qi}.jpg"
        _thumb(q.image, q.box, "query", thumbs / qname, full=full / qname)
        truth = {p.id: list(p.boxes) for p in b.positives.get(q.id, [])}
        parts.append(f"<h3>{esc(q.id)}</h3><table class='hits'><tr><td><a href='full/{qname}'>"
                     f"<img src='thumbs/{qname}'></a>query</td></tr>")
        for ci, n in enumerate(names):
            row = results.configs[n].per_query[qi]
            cells = [f"<td><b>{esc(n)}</b><br>AP {_pct(row['ap'])}</td>"]
            for hi, ((hid, score, box), label) in enumerate(zip(row["hits"][:top], row["labels"][:top])):
                tname = f"q{qi}_c{ci}_{hi}.jpg"
                _thumb(b.database[b.db_index(hid)].image, box, label, thumbs / tname,
                       truth=truth.get(hid, ()), full=full / tname)
                cells.append(f"<td><a href='full/{tname}'><img src='thumbs/{tname}'></a>"
                             f"{esc(hid)}<br>{score:.3f} {label}</td>")
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


def write_report(results: EvalResults, out_dir: str | os.PathLike, *, examples: int | None = None,
                 top: int = 5) -> dict:
    """Write ``results.md``, ``results.json``, PNG plots and ``index.html`` into ``out_dir``;
    returns ``{"markdown", "json", "html", "plots"}`` paths. The page opens with the results
    table, then the plots, then the top ``top`` results of every configuration for the first
    ``examples`` queries (None: up to :data:`DEFAULT_EXAMPLES`; the page says how many are
    hidden), each thumbnail with
    its returned and true boxes and a link to a larger copy (``full/``). For an ILIAS
    benchmark it also writes ``ilias_<config>.json`` (see :func:`ilias_similarities`)."""
    if not isinstance(results, EvalResults) or not results.configs:
        raise InvalidArgumentError("results must be a non-empty EvalResults from evaluate()")
    if examples is not None:
        as_int(examples, "examples", 0)
    as_int(top, "top", 1)
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

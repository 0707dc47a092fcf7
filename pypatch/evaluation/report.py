"""Report writer for :func:`pypatch.evaluation.evaluate` results: ``results.md``,
``results.json``, matplotlib plots, ``index.html`` with thumbnails, and the ILIAS similarity JSON.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from pypatch.errors import InvalidArgumentError
from pypatch.evaluation.results import SIZE_BUCKETS, EvalResults

__all__ = ["write_report", "ilias_similarities"]


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
        files.append(save(fig, "map_vs_bytes.png"))

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
    files.append(save(fig, "size_breakdown.png"))

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
    files.append(save(fig, "pr_curves.png"))
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

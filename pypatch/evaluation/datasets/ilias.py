"""ILIAS core (Kordopatis-Zilos et al., CVPR 2025) in its published layout.

``<root>/image_ids/image_query_ids.txt`` (CSV, column 0 = id) and ``positive_ids.txt``
(``id, scale, clutter``) list image ids such as ``bold_bimp_000/query/Q000_00.jpg``; the
object instance is ``id.split('/')[0]``. Images live under ``<root>/ilias_core/<id>`` (as
``download_ilias.sh`` extracts them) or directly under ``<root>/<id>``. Each image has
``<id without .jpg>_bbox.txt`` with one or more rows ``x y w h``; the query box is the union
of its rows (ILIAS ``_crop_resize``), each positive keeps all its boxes.

The database here is ILIAS core's positives only: the YFCC100M distractors ship as
webdataset shards and are not loaded by this function.
"""
from __future__ import annotations

import os
from pathlib import Path

from pypatch.evaluation.datasets.benchmark import Benchmark, Box, DbImage, Positive, Query
from pypatch.errors import DatasetFormatError

__all__ = ["load_ilias", "read_xywh_boxes"]


def read_xywh_boxes(path: Path) -> list[Box]:
    """Rows ``x y w h`` (whitespace or comma separated) -> ``[x0, y0, x1, y1]`` boxes."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: bounding-box file not found")
    boxes = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        try:
            x, y, w, h = (int(round(float(p))) for p in parts)
        except ValueError:
            raise DatasetFormatError(f"{path}: line {lineno}: expected 'x y w h', got {line.strip()!r}") from None
        if w < 0 or h < 0:
            raise DatasetFormatError(f"{path}: line {lineno}: negative width or height")
        boxes.append((max(x, 0), max(y, 0), max(x, 0) + w, max(y, 0) + h))
    if not boxes:
        raise DatasetFormatError(f"{path}: no box rows")
    return boxes


def _read_ids(path: Path, ncols: int) -> list[list[str]]:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: id list not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < ncols or not cols[0]:
            raise DatasetFormatError(f"{path}: line {lineno}: expected {ncols} comma-separated columns")
        rows.append(cols)
    return rows


def load_ilias(root: str | os.PathLike, *, check_images: bool = True) -> Benchmark:
    root = Path(root)
    ids_dir = root / "image_ids"
    images = root / "ilias_core" if (root / "ilias_core").is_dir() else root

    def image(image_id: str, where: str) -> Path:
        p = images / image_id
        if check_images and not p.is_file():
            raise DatasetFormatError(f"{where}: image {p} not found")
        return p

    def bbox_file(p: Path) -> Path:
        return p.with_name(p.stem + "_bbox.txt")

    pos_path = ids_dir / "positive_ids.txt"
    by_instance: dict[str, list[Positive]] = {}
    database = []
    for lineno, cols in enumerate(_read_ids(pos_path, 3), 1):
        pid = cols[0]
        try:
            scale, clutter = float(cols[1]), int(float(cols[2]))
        except ValueError:
            raise DatasetFormatError(f"{pos_path}: line {lineno}: scale/clutter must be numbers") from None
        p = image(pid, f"{pos_path}: line {lineno}")
        database.append(DbImage(pid, p))
        boxes = tuple(read_xywh_boxes(bbox_file(p)))
        by_instance.setdefault(pid.split("/")[0], []).append(
            Positive(pid, boxes, {"scale": scale, "clutter": clutter}))

    q_path = ids_dir / "image_query_ids.txt"
    queries, positives = [], {}
    for lineno, cols in enumerate(_read_ids(q_path, 1), 1):
        qid = cols[0]
        p = image(qid, f"{q_path}: line {lineno}")
        rows = read_xywh_boxes(bbox_file(p))
        union = (min(b[0] for b in rows), min(b[1] for b in rows),
                 max(b[2] for b in rows), max(b[3] for b in rows))
        queries.append(Query(qid, p, union))
        positives[qid] = list(by_instance.get(qid.split("/")[0], []))
    return Benchmark("ilias-core", root, queries, database, positives, {},
                     {"name": "ilias-core", "source": "ilias"})

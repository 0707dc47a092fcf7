"""INSTRE (Wang & Jiang 2015) with the retrieval protocol of Iscen et al. (CVPR 2017).

Assumed layout (as distributed with ``gnd_instre.mat`` next to the extracted ``instre.tar.gz``
and as read by vissl, os2d and the diffusion code):

* ``<root>/gnd_instre.mat``: ``imlist`` (27,293 database paths) and ``qimlist`` (1,250 query
  paths), cell arrays of paths relative to ``<root>`` such as ``INSTRE-S1/01a_.../001.jpg``;
  ``gnd`` a struct array, one per query, with ``ok`` (**1-based** indices into ``imlist``)
  and ``bbx`` (the query box, ``[x1, y1, x2, y2]``: os2d notes that the .mat boxes are corner
  boxes while the .txt files are ``x y w h``; we use them as PIL crop boxes, as os2d does,
  which may differ by one pixel from MATLAB's 1-based inclusive ``crop_qim``). Queries are not
  in the database.
* Every image ``X.jpg`` has ``X.txt`` with rows ``x y w h``. INSTRE-S1/S2 images hold one object;
  INSTRE-M images hold two, the first row being object [a] and the second object [b] of the
  pair (the INSTRE documentation), so an INSTRE-S1 query of class ``NNa``/``NNb`` is matched to
  that row only. A missing ``.txt`` leaves the positive without boxes (LocScore undefined).

Needs scipy (installed with scikit-learn, the ``eval`` extra) to read the .mat file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pypatch.evaluation.datasets.benchmark import Benchmark, DbImage, Positive, Query
from pypatch.evaluation.datasets.ilias import read_xywh_boxes
from pypatch.errors import DatasetFormatError

__all__ = ["load_instre"]


def _strings(cell: np.ndarray, path: Path, key: str) -> list[str]:
    try:
        return [str(np.asarray(c).reshape(-1)[0]) for c in np.asarray(cell, dtype=object).reshape(-1)]
    except Exception:
        raise DatasetFormatError(f"{path}: {key!r} is not a cell array of paths") from None


def _gnd_field(entry, name: str, pos: int):
    names = entry.dtype.names if hasattr(entry, "dtype") else None
    return entry[name] if names and name in names else entry[pos]


def _object_row(query_path: str, image_path: str, nrows: int) -> int | None:
    """Row of an INSTRE-M annotation that belongs to an INSTRE-S1 query's object, else None."""
    q, im = query_path.split("/"), image_path.split("/")
    if len(q) > 1 and q[0].lower() == "instre-s1" and im[0].lower() == "instre-m" and nrows == 2:
        letter = q[1][2:3].lower()
        if letter in ("a", "b"):
            return 0 if letter == "a" else 1
    return None


def load_instre(root: str | os.PathLike, *, check_images: bool = True) -> Benchmark:
    root = Path(root)
    path = root / "gnd_instre.mat"
    if not path.is_file():
        raise DatasetFormatError(f"{path}: INSTRE ground-truth file not found")
    from scipy.io import loadmat  # scipy arrives with scikit-learn (eval extra)

    try:
        mat = loadmat(str(path))
    except Exception as exc:
        raise DatasetFormatError(f"{path}: cannot read MATLAB file ({type(exc).__name__}: {exc})") from None
    for key in ("imlist", "qimlist", "gnd"):
        if key not in mat:
            raise DatasetFormatError(f"{path}: missing variable {key!r}")
    imlist = _strings(mat["imlist"], path, "imlist")
    qimlist = _strings(mat["qimlist"], path, "qimlist")
    gnd = np.asarray(mat["gnd"]).reshape(-1)
    if len(gnd) != len(qimlist):
        raise DatasetFormatError(f"{path}: gnd has {len(gnd)} entries but qimlist has {len(qimlist)}")

    def image(rel: str) -> Path:
        p = root / rel
        if check_images and not p.is_file():
            raise DatasetFormatError(f"{path}: image {p} not found")
        return p

    database = [DbImage(rel, image(rel)) for rel in imlist]
    box_cache: dict[str, list] = {}

    def boxes_of(rel: str) -> list:
        if rel not in box_cache:
            txt = (root / rel).with_suffix(".txt")
            box_cache[rel] = read_xywh_boxes(txt) if txt.is_file() else []
        return box_cache[rel]

    queries, positives = [], {}
    for i, (qrel, g) in enumerate(zip(qimlist, gnd)):
        try:
            ok = np.asarray(_gnd_field(g, "ok", 0), dtype=np.int64).reshape(-1)
            bbx = np.asarray(_gnd_field(g, "bbx", 1), dtype=np.float64).reshape(-1)
        except (ValueError, TypeError, IndexError):
            raise DatasetFormatError(f"{path}: gnd[{i}] must have fields ok and bbx") from None
        if bbx.shape != (4,):
            raise DatasetFormatError(f"{path}: gnd[{i}].bbx must have 4 numbers")
        if ok.size and (ok.min() < 1 or ok.max() > len(imlist)):
            raise DatasetFormatError(f"{path}: gnd[{i}].ok has an index outside 1..{len(imlist)} (1-based)")
        qid = qrel
        x0, y0, x1, y1 = (int(round(v)) for v in bbx)
        queries.append(Query(qid, image(qrel), (x0, y0, x1, y1)))
        plist = []
        for j in ok:
            rel = imlist[j - 1]
            rows = boxes_of(rel)
            pick = _object_row(qrel, rel, len(rows))
            plist.append(Positive(rel, tuple(rows) if pick is None else (rows[pick],)))
        positives[qid] = plist
    return Benchmark("instre", root, queries, database, positives, {},
                     {"name": "instre", "source": "instre"})

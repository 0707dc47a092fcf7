"""Revisited Oxford5k / Paris6k (Radenovic et al. 2018) in their published layout.

``<root>/gnd_<dataset>.pkl`` unpickles to ``{'imlist', 'qimlist', 'gnd'}`` where ``gnd[i]`` has
``easy``/``hard``/``junk`` (0-based indices into ``imlist``) and ``bbx`` (the query box,
``[x1, y1, x2, y2]`` as used with ``PIL.Image.crop``). Images are ``<root>/jpg/<name>.jpg``.
Queries are cropped by ``bbx`` (our ``Query.box``); the database is ``imlist``. revisitop
boxes only the queries, so positives have no boxes and LocScore is undefined here.
"""
from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

from pypatch.evaluation.datasets.benchmark import Benchmark, DbImage, Positive, Query
from pypatch.errors import DatasetFormatError
from pypatch.evaluation.metrics import revisitop_protocol

__all__ = ["load_revisitop"]


def _find_gnd(root: Path, dataset: str | None) -> Path:
    if dataset:
        path = root / f"gnd_{dataset}.pkl"
        if not path.is_file():
            raise DatasetFormatError(f"{path}: revisitop ground-truth file not found")
        return path
    found = sorted(root.glob("gnd_*.pkl"))
    if len(found) != 1:
        raise DatasetFormatError(f"{root}: expected exactly one gnd_<dataset>.pkl, found {len(found)}")
    return found[0]


def load_revisitop(root: str | os.PathLike, dataset: str | None = None, protocol: str = "medium",
                   *, check_images: bool = True) -> Benchmark:
    """Load ``roxford5k``/``rparis6k`` (or any dataset in that layout) under one protocol.

    ``protocol`` is easy/medium/hard (E/M/H); the per-positive ``meta['difficulty']`` says
    whether it came from the easy or hard list.
    """
    root = Path(root)
    gnd_path = _find_gnd(root, dataset)
    name = gnd_path.stem[len("gnd_"):]
    try:
        with open(gnd_path, "rb") as f:
            cfg = pickle.load(f)
    except Exception as exc:  # pickle raises many types on garbage input
        raise DatasetFormatError(f"{gnd_path}: cannot unpickle ({type(exc).__name__}: {exc})") from None
    for key in ("imlist", "qimlist", "gnd"):
        if not isinstance(cfg, dict) or key not in cfg:
            raise DatasetFormatError(f"{gnd_path}: missing key {key!r}")
    imlist, qimlist, gnd = list(cfg["imlist"]), list(cfg["qimlist"]), list(cfg["gnd"])
    if len(gnd) != len(qimlist):
        raise DatasetFormatError(f"{gnd_path}: gnd has {len(gnd)} entries but qimlist has {len(qimlist)}")
    n = len(imlist)
    for i, g in enumerate(gnd):
        for key in ("easy", "hard", "junk", "bbx"):
            if not isinstance(g, dict) or key not in g:
                raise DatasetFormatError(f"{gnd_path}: gnd[{i}] missing key {key!r}")
        for key in ("easy", "hard", "junk"):
            bad = [int(j) for j in g[key] if not 0 <= int(j) < n]
            if bad:
                raise DatasetFormatError(f"{gnd_path}: gnd[{i}][{key!r}] index {bad[0]} outside imlist (size {n})")
        if len(g["bbx"]) != 4:
            raise DatasetFormatError(f"{gnd_path}: gnd[{i}]['bbx'] must have 4 numbers")

    def img(name_: str) -> Path:
        p = root / "jpg" / f"{name_}.jpg"
        if check_images and not p.is_file():
            raise DatasetFormatError(f"{gnd_path}: image {p} not found")
        return p

    prot = revisitop_protocol(gnd, protocol)
    counts = Counter(qimlist)
    queries, positives, junk = [], {}, {}
    for i, (qname, g, pg) in enumerate(zip(qimlist, gnd, prot)):
        qid = qname if counts[qname] == 1 else f"{qname}#{i}"  # ids must be unique
        x0, y0, x1, y1 = (int(round(float(v))) for v in g["bbx"])  # PIL crop rounds the same way
        queries.append(Query(qid, img(qname), (x0, y0, x1, y1)))
        easy = {int(j) for j in g["easy"]}
        positives[qid] = [Positive(imlist[int(j)], (), {"difficulty": "easy" if int(j) in easy else "hard"})
                          for j in pg["ok"]]
        junk[qid] = [imlist[int(j)] for j in pg["junk"]]
    database = [DbImage(im, img(im)) for im in imlist]
    prot_name = {"e": "easy", "m": "medium", "h": "hard"}.get(protocol.lower(), protocol.lower())
    return Benchmark(f"{name}-{prot_name}", root, queries, database, positives, junk,
                     {"name": f"{name}-{prot_name}", "protocol": prot_name, "source": "revisitop"})

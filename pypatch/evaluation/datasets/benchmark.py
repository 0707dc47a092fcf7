"""The common in-memory form of every retrieval benchmark, and the generic ``benchmark.json``.

``benchmark.json`` (a contract) sits beside the images; image paths are relative to it::

    {"queries":   [{"id": "q0", "image": "queries/q0.jpg", "box": [x0, y0, x1, y1] or null}],
     "database":  [{"id": "d0", "image": "db/d0.jpg"}],
     "positives": {"q0": [{"id": "d0", "boxes": [[x0, y0, x1, y1], ...]}]},
     "junk":      {"q0": ["d7"]}}

Boxes use exclusive x1/y1 (``PIL.Image.crop``). Extra keys are allowed and kept: a positive's
extra keys (e.g. ``"area_frac"``, the object's share of the image area) land in
``Positive.meta``; top-level extra keys land in ``Benchmark.meta``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pypatch.errors import DatasetFormatError

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Query:
    id: str
    image: Path
    box: Box | None = None


@dataclass(frozen=True)
class DbImage:
    id: str
    image: Path


@dataclass(frozen=True)
class Positive:
    """A database image that shows the query's object; ``boxes`` may be empty when unknown."""

    id: str
    boxes: tuple[Box, ...] = ()
    meta: dict = field(default_factory=dict, compare=False)


@dataclass
class Benchmark:
    """Queries, database and ground truth of one benchmark (one protocol)."""

    name: str
    root: Path
    queries: list[Query]
    database: list[DbImage]
    positives: dict[str, list[Positive]]
    junk: dict[str, list[str]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._db_index = {d.id: i for i, d in enumerate(self.database)}
        if len(self._db_index) != len(self.database):
            raise DatasetFormatError(f"{self.name}: database ids are not unique")
        qids = [q.id for q in self.queries]
        if len(set(qids)) != len(qids):
            raise DatasetFormatError(f"{self.name}: query ids are not unique")
        for qid, plist in self.positives.items():
            for p in plist:
                if p.id not in self._db_index:
                    raise DatasetFormatError(f"{self.name}: positive {p.id!r} of query {qid!r} is not in the database")
        for qid, jlist in self.junk.items():
            for j in jlist:
                if j not in self._db_index:
                    raise DatasetFormatError(f"{self.name}: junk {j!r} of query {qid!r} is not in the database")

    def db_index(self, image_id: str) -> int:
        """0-based position of a database id (KeyError if unknown)."""
        return self._db_index[image_id]

    def positive_ids(self, qid: str) -> list[str]:
        return [p.id for p in self.positives.get(qid, [])]

    def junk_ids(self, qid: str) -> list[str]:
        return list(self.junk.get(qid, []))

    def has_boxes(self, qid: str) -> bool:
        """True when every positive of ``qid`` has a ground-truth box (LocScore is defined)."""
        plist = self.positives.get(qid, [])
        return bool(plist) and all(p.boxes for p in plist)

    def __repr__(self) -> str:
        npos = sum(len(v) for v in self.positives.values())
        return (f"Benchmark({self.name!r}, queries={len(self.queries)}, database={len(self.database)}, "
                f"positives={npos})")

    # ------------------------------------------------------------------ generic JSON
    def to_json_dict(self, base: Path | None = None) -> dict:
        """The ``benchmark.json`` form, image paths relative to ``base`` (default ``root``)."""
        base = Path(base or self.root)

        def rel(p: Path) -> str:
            return Path(os.path.relpath(p, base)).as_posix()

        out: dict[str, Any] = dict(self.meta)
        out["queries"] = [{"id": q.id, "image": rel(q.image), "box": list(q.box) if q.box else None}
                          for q in self.queries]
        out["database"] = [{"id": d.id, "image": rel(d.image)} for d in self.database]
        out["positives"] = {qid: [dict(p.meta, id=p.id, boxes=[list(b) for b in p.boxes]) for p in plist]
                            for qid, plist in self.positives.items()}
        out["junk"] = {qid: list(j) for qid, j in self.junk.items()}
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``benchmark.json`` (deterministic: sorted keys, fixed indentation)."""
        path = Path(path)
        text = json.dumps(self.to_json_dict(path.parent), indent=1, sort_keys=True)
        path.write_text(text + "\n", encoding="utf-8")
        return path


def _box(value: Any, where: str) -> Box:
    if (not isinstance(value, (list, tuple)) or len(value) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise DatasetFormatError(f"{where}: box must be [x0, y0, x1, y1], got {value!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in value)
    if x1 < x0 or y1 < y0 or x0 < 0 or y0 < 0:
        raise DatasetFormatError(f"{where}: box must have 0 <= x0 <= x1 and 0 <= y0 <= y1, got {value!r}")
    return (x0, y0, x1, y1)


def _field(obj: Any, key: str, where: str, kind: type | tuple = str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DatasetFormatError(f"{where}: missing key {key!r}")
    if not isinstance(obj[key], kind):
        raise DatasetFormatError(f"{where}: {key!r} has the wrong type ({type(obj[key]).__name__})")
    return obj[key]


def load_generic(path: str | os.PathLike, *, check_images: bool = True) -> Benchmark:
    """Load a folder holding ``benchmark.json`` (or the JSON file itself).

    Raises ``DatasetFormatError`` naming the file and the offending entry (or the JSON line
    for syntax errors) when something is missing or malformed.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "benchmark.json"
    if not path.is_file():
        raise DatasetFormatError(f"{path}: benchmark file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise DatasetFormatError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: top level must be a JSON object")
    root = path.parent

    def image(entry: dict, where: str) -> Path:
        p = root / _field(entry, "image", where)
        if check_images and not p.is_file():
            raise DatasetFormatError(f"{where}: image file {p} not found")
        return p

    queries = []
    for i, e in enumerate(_field(data, "queries", str(path), list)):
        where = f"{path}: queries[{i}]"
        box = e.get("box") if isinstance(e, dict) else None
        queries.append(Query(str(_field(e, "id", where, (str, int))), image(e, where),
                             None if box is None else _box(box, where)))
    database = []
    for i, e in enumerate(_field(data, "database", str(path), list)):
        where = f"{path}: database[{i}]"
        database.append(DbImage(str(_field(e, "id", where, (str, int))), image(e, where)))
    qids = {q.id for q in queries}
    positives: dict[str, list[Positive]] = {}
    for qid, plist in _field(data, "positives", str(path), dict).items():
        if qid not in qids:
            raise DatasetFormatError(f"{path}: positives[{qid!r}]: unknown query id")
        if not isinstance(plist, list):
            raise DatasetFormatError(f"{path}: positives[{qid!r}] must be a list")
        out = []
        for j, p in enumerate(plist):
            where = f"{path}: positives[{qid!r}][{j}]"
            pid = str(_field(p, "id", where, (str, int)))
            boxes = tuple(_box(b, where) for b in p.get("boxes") or [])
            meta = {k: v for k, v in p.items() if k not in ("id", "boxes")}
            out.append(Positive(pid, boxes, meta))
        positives[qid] = out
    junk = {}
    for qid, jlist in (data.get("junk") or {}).items():
        if not isinstance(jlist, list):
            raise DatasetFormatError(f"{path}: junk[{qid!r}] must be a list of ids")
        junk[qid] = [str(j) for j in jlist]
    meta = {k: v for k, v in data.items() if k not in ("queries", "database", "positives", "junk")}
    try:
        return Benchmark(str(meta.get("name", root.name)), root, queries, database, positives, junk, meta)
    except DatasetFormatError as exc:
        raise DatasetFormatError(f"{path}: {exc}") from None

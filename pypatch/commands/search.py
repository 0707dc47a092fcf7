"""``pypatch search INDEX QUERY...``: ranked images with the winning patch's box.

``--json`` prints one JSON object per query per line::

    {"query": "q.jpg", "hits": [{"rank": 1, "image": "a.jpg", "score": 0.83,
                                 "box": [x0, y0, x1, y1], "cell": [x0, y0, x1, y1], "level": 2}]}

``box`` is the best box pypatch has for the hit (refined from the query's similarity map over
the hit image unless ``--refine none``), ``cell`` the winning grid cell and ``level`` that
cell's pyramid level (0 = whole image): refinement moves ``box`` only, so ``level`` always
describes ``cell``. Pixels of the database image, x1/y1 exclusive.
"""
from __future__ import annotations

import argparse

from pypatch.commands._args import require_positive
from pypatch.errors import InvalidArgumentError


def parse_box(text: str) -> list:
    parts = [p.strip() for p in text.split(",")]
    try:
        box = [int(p) for p in parts]
    except ValueError:
        box = []
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 as four integers, got {text!r}")
    return box


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="search an index with query images",
        description="Rank the indexed images for each query image (optionally cropped to --box).")
    p.add_argument("index", metavar="INDEX", help="index file or sharded index folder written by `pypatch index`")
    p.add_argument("queries", metavar="QUERY", nargs="*", help="query image file(s)")
    p.add_argument("--box", type=parse_box, action="append", default=None,
                   metavar="x0,y0,x1,y1",
                   help="query box in pixels (x1/y1 exclusive); once for all queries or once "
                        "per query")
    p.add_argument("--queries", dest="queries_file", default=None, metavar="FILE",
                   help='JSON list of {"image": path, "box": [x0, y0, x1, y1] or null}')
    p.add_argument("--k", "-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per query per line")
    p.add_argument("--model", default=None,
                   help="where to find the index's model if it moved (ONNX file or name)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="threads")
    p.add_argument("--nprobe", type=int, default=None, metavar="N",
                   help="lists an inverted-file index probes (default: the one it was built with)")
    p.add_argument("--rerank-k", type=int, default=None, metavar="N",
                   help="candidates the second stage re-scores: an index built with "
                        "--rerank-store re-scores its first stage's top N exactly (default "
                        "max(4k, 100); 0: off, the first stage's ranking); with --rerank "
                        "multipatch, its window (default 100)")
    p.add_argument("--rerank", choices=["none", "qe", "multipatch"], default="none",
                   help="second stage over the top results: query expansion over the winning "
                        "patches (qe) or a multi-patch query (default none)")
    p.add_argument("--refine", choices=["simmap", "cells", "none"], default="simmap",
                   help="sharpen the returned box of each hit beyond its grid cell (default "
                        "simmap: one backbone pass per hit; cells: no pass; none: box = cell)")
    p.set_defaults(func=run)


def read_queries_file(path: str) -> list:
    """[(image path, box or None)] from a --queries JSON file.

    Relative image paths are taken from the current folder when they exist there, else from
    the JSON file's folder."""
    import json
    import os

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"--queries {path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise InvalidArgumentError(f"--queries {path}: expected a JSON list of "
                                   '{"image": path, "box": [x0, y0, x1, y1] or null}')
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise InvalidArgumentError(f"--queries {path}: entry {i} needs an \"image\" path")
        box = entry.get("box")
        if box is not None and (not isinstance(box, list) or len(box) != 4
                                or not all(isinstance(v, (int, float)) for v in box)):
            raise InvalidArgumentError(
                f"--queries {path}: entry {i} box must be [x0, y0, x1, y1] or null, got {box!r}")
        image = entry["image"]
        if not os.path.isabs(image) and not os.path.exists(image):
            image = os.path.join(base, image)
        out.append((entry["image"], image, box))
    return out


def collect_queries(args) -> list:
    """[(label, image path, box or None)] from the positional queries, --box and --queries."""
    queries = list(args.queries)
    boxes = args.box or []
    if boxes and not queries:
        raise InvalidArgumentError("--box needs a QUERY image (for --queries put boxes in the file)")
    if len(boxes) > 1 and len(boxes) != len(queries):
        raise InvalidArgumentError(
            f"--box given {len(boxes)} times for {len(queries)} queries: give it once (for all) "
            f"or once per query")
    if len(boxes) <= 1:
        boxes = (boxes or [None]) * len(queries)
    out = [(q, q, b) for q, b in zip(queries, boxes)]
    if args.queries_file:
        out += read_queries_file(args.queries_file)
    if not out:
        raise InvalidArgumentError("no query: give QUERY image(s) or --queries FILE")
    return out


def run(args) -> int:
    import json

    from pypatch.index.searchable import open_index
    from pypatch.index.results import hit_json

    require_positive(args, "k", "threads", "nprobe")
    if args.rerank_k is not None and args.rerank_k < 0:
        raise InvalidArgumentError(f"--rerank-k: expected 0 or a positive integer, got {args.rerank_k}")
    queries = collect_queries(args)
    index = open_index(args.index, mmap=True, model=args.model, num_threads=args.threads)
    try:
        results = _search(index, queries, args)
    except InvalidArgumentError as exc:
        if "rerank_k" not in str(exc):
            raise
        # the library's message names its Python arguments: name this command's flags
        text = str(exc).replace("rerank_k", "--rerank-k").replace(
            "rerank_store='flat16', 'pq8' or 'pq8-d4'",
            "pypatch index --rerank-store flat16|pq8|pq8-d4")
        raise InvalidArgumentError(text) from None
    for (label, _, box), hits in zip(queries, results):
        if args.json:
            print(json.dumps({"query": label, "hits": [hit_json(h) for h in hits]}), flush=True)
        else:
            print_table(label, box, hits)
    return 0


def _search(index, queries, args) -> list:
    return index.search_many(
        [q[1] for q in queries], [q[2] for q in queries], k=args.k,
        rerank=None if args.rerank == "none" else args.rerank,
        refine=False if args.refine == "none" else args.refine,
        **({} if args.nprobe is None else {"nprobe": args.nprobe}),
        **({} if args.rerank_k is None else {"rerank_k": args.rerank_k}))


def _box(b) -> str:
    return f"[{b[0]:>5},{b[1]:>5},{b[2]:>5},{b[3]:>5}]"


def print_table(label, box, hits) -> None:
    suffix = f" box={box}" if box is not None else ""
    print(f"query {label}{suffix}")
    if not hits:
        print("  (no results)")
    for h in hits:
        # `level` belongs to the grid cell; a refined box is shown with the cell it came from
        cell = "" if tuple(h.box) == tuple(h.cell) else f"  (from L{h.level} cell {_box(h.cell)})"
        where = f"L{h.level}" if not cell else "  "
        print(f"  {h.rank:>3}  {h.score:8.4f}  {where}  {_box(h.box)}  {h.image}{cell}")
    print()

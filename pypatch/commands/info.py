"""``pypatch info INDEX``: what an index holds (counts, bytes per image, model, regions, store)."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe an index file",
                              description="Print a JSON summary of an index file.")
    p.add_argument("index", metavar="INDEX", help="index file or sharded index folder written by `pypatch index`")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from pypatch.index.searchable import open_index

    index = open_index(args.index, mmap=True)
    info = index.info()
    info["file"] = args.index
    print(json.dumps(info, indent=2, sort_keys=False))
    return 0

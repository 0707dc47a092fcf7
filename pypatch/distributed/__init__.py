"""Past one machine: sharded indexes, and (with the optional ``ray`` extra) distributed build
and fan-out search.

* :mod:`.manifest` -- the folder format: ``manifest.json`` (format version, shard files with
  sha256, counts, the model record, the shared codebooks file) written last and checked on open.
* :mod:`.sharded_index` -- :class:`ShardedIndex`: every shard searched (threads, mmap), the
  top-k merged exactly as one :class:`~pypatch.ImageIndex` over the same images would rank them.
* :mod:`.merge` -- that exact merge (score desc, then global image order: shard, then row).
* :mod:`.ray_build`, :mod:`.ray_search` -- the same on a Ray cluster (``pip install ".[ray]"``).

Nothing here imports Ray until a Ray entry point is called.
"""
from __future__ import annotations

__all__ = ["ShardedIndex"]


def __getattr__(name: str):
    if name == "ShardedIndex":
        from pypatch.distributed.sharded_index import ShardedIndex

        return ShardedIndex
    raise AttributeError(f"module 'pypatch.distributed' has no attribute {name!r}")

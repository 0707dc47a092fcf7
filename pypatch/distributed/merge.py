"""The exact top-k merge of per-shard rankings.

One :class:`~pypatch.PatchIndex` ranks images by score, ties broken by the lower image index.
Over shards that hold consecutive runs of one collection (shard 0 first), the global image
index orders like (shard, row), so sorting every shard's candidates by (score desc, shard asc,
row asc) and keeping k reproduces the one-index ranking exactly: a shard's own top-k holds
every one of its images that can reach the global top-k (each shard returns k candidates or
all its live images).
"""
from __future__ import annotations

import numpy as np


def merge_topk(parts, k: int) -> list:
    """``parts``: per shard ``(scores (k_s,), rows (k_s,), patches (k_s,))`` of one query, or
    None for a shard that was not searched (empty). Returns up to ``k`` tuples
    ``(shard, row, patch, score)`` best first; padding rows (< 0) are dropped."""
    scores, shards, rows, patches = [], [], [], []
    for s, part in enumerate(parts):
        if part is None:
            continue
        sc, rw, pt = (np.asarray(a) for a in part)
        live = rw >= 0
        scores.append(sc[live].astype(np.float32))
        rows.append(rw[live].astype(np.int64))
        patches.append(pt[live].astype(np.int64))
        shards.append(np.full(int(live.sum()), s, dtype=np.int64))
    if not scores:
        return []
    sc, sh, rw, pt = (np.concatenate(a) for a in (scores, shards, rows, patches))
    # lexsort: the last key is the primary one; -score keeps float32 exactness (sign flip)
    order = np.lexsort((rw, sh, -sc))[:k]
    return [(int(sh[i]), int(rw[i]), int(pt[i]), float(sc[i])) for i in order]

"""Inverted-file settings of an :class:`~pypatch.ImageIndex`: ``nlist`` / ``nprobe``.

``nlist=None`` keeps the exhaustive scan; an int builds an inverted file of that many lists
over the patches (:class:`~pypatch.PatchIndex`'s ``nlist``); ``"auto"`` decides from the
number of patches the source will give: exhaustive below :data:`AUTO_MIN_PATCHES`, where the
scan is already fast and an inverted file only loses recall, else :func:`auto_nlist` lists.
Both thresholds come from the measurements in ``benchmarks/README.md`` (section "Inverted files").
"""
from __future__ import annotations

import math
from typing import Optional

from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError

#: below this many patches "auto" keeps the exhaustive scan (about 100k images of 30 patches, 77k of 39)
AUTO_MIN_PATCHES = 3_000_000
#: coarse centroids get at least this many training vectors each under "auto"
AUTO_TRAIN_PER_LIST = 32
#: lists probed by default (IVF)
DEFAULT_NPROBE = 16
MAX_NLIST = 1 << 20


def check(nlist, nprobe, store: dict) -> tuple:
    """``(nlist, nprobe)`` checked: nlist None, "auto" or an int >= 1 (PQ stores only);
    nprobe None or an int >= 1."""
    if nlist is None:
        if nprobe is not None:
            raise InvalidArgumentError("nprobe: needs an inverted file (pass nlist=N or 'auto')")
        return None, None
    if store["kind"] != "pq":
        raise InvalidArgumentError(f"nlist: an inverted file needs store='pq'; got "
                                   f"store={store['kind']!r}")
    if not (isinstance(nlist, str) and nlist == "auto"):
        nlist = as_int(nlist, "nlist", 1, MAX_NLIST)
    if nprobe is not None:
        nprobe = as_int(nprobe, "nprobe", 1, MAX_NLIST)
    return nlist, nprobe


def auto_nlist(n_patches: Optional[int], train_vectors: int) -> int:
    """Lists for ``n_patches`` (0: exhaustive): none below :data:`AUTO_MIN_PATCHES` or when the
    size is unknown, else the power of two nearest 4 * sqrt(n_patches) (faiss's rule of thumb),
    at most what ``train_vectors`` can train (:data:`AUTO_TRAIN_PER_LIST` vectors a list)."""
    if n_patches is None or n_patches < AUTO_MIN_PATCHES:
        return 0
    want = 2 ** round(math.log2(4 * math.sqrt(n_patches)))
    cap = 2 ** int(math.log2(max(1, train_vectors // AUTO_TRAIN_PER_LIST)))
    return int(max(1, min(want, cap)))


def resolve(nlist, nprobe, *, n_patches: Optional[int], train_vectors: int) -> dict:
    """The ``meta["store"]`` entries of the inverted file ({} when exhaustive)."""
    auto = isinstance(nlist, str)
    n = auto_nlist(n_patches, train_vectors) if auto else (nlist or 0)
    if n == 0:
        return {"nlist_auto": True} if auto else {}
    return {"nlist": int(n), "nprobe": int(min(nprobe or DEFAULT_NPROBE, n)),
            **({"nlist_auto": True} if auto else {})}

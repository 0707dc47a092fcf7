"""The exact re-rank store of an :class:`~pypatch.ImageIndex` (issue 11 item 3, through the product).

``ImageIndex.build(..., store="pq", rerank_store="flat16")``: every image's stored patch vectors
(after the pre-transform: the same vectors the first stage quantises) also go to a second,
exhaustive :class:`~pypatch.PatchIndex`: float16 / float32 vectors (``"flat16"`` / ``"flat"``)
or 8-bit PQ codes (codebooks trained on the same sample) with the first stage's ``m``
(``"pq8"``: a 4-bit first stage's 8-bit ranking) or with 4 dimensions a sub-quantizer
(``"pq8-d4"``: ``dim / 4`` bytes a patch, 128 at 512 axes; near the float stores' quality at an
eighth of flat16's bytes: benchmarks/README.md, "Residual codebooks").
A search lets the fast first stage (e.g. IVF over 4-bit codes) pick ``rerank_k`` candidate
images, which this store re-scores over ALL their patches (``PatchIndex.search(rerank=)``).

Saved beside the index file as ``<file>.rerank.ptch`` (a plain PatchIndex file, so it can be
loaded with ``mmap=True``: a search reads only its candidates' rows). The index's META records
the store's kind and a token written into both files at every save, so a load refuses a missing,
foreign or stale second file (IndexFormatError naming it) instead of re-ranking with it.
"""
from __future__ import annotations

import os
import secrets

import numpy as np

from pypatch._checks import as_int
from pypatch.errors import IndexFormatError, InvalidArgumentError

__all__ = ["RERANK_STORES", "rerank_path", "rerank_spec", "new_rerank_index", "bytes_per_patch",
           "load_rerank_index", "rerank_window", "SIDE_KEY"]

RERANK_STORES = ("flat16", "flat", "pq8", "pq8-d4")  # flat ones named as ``store=``
PQ_KINDS = ("pq8", "pq8-d4")  # 8-bit PQ: the first stage's m / 4 dims a sub-quantizer
DIMS_PER_SUBQUANTIZER = 4  # pq8-d4
SIDE_KEY = "pypatch.rerank_store"  # the second file's metadata entry: {"token": ...}


def rerank_path(path) -> str:
    """Where :meth:`ImageIndex.save` writes the re-rank store of the index file ``path``."""
    return os.fspath(path) + ".rerank.ptch"


def rerank_spec(rerank_store, store: dict, stored_dim: int):
    """``meta["rerank"]`` for the ``rerank_store`` argument (None: no re-rank store);
    ``stored_dim``: the store's dimension as built (an automatic PCA may widen it later)."""
    if rerank_store is None:
        return None
    if rerank_store not in RERANK_STORES:
        raise InvalidArgumentError(f"rerank_store must be None or one of "
                                   f"{', '.join(RERANK_STORES)}; got {rerank_store!r}")
    if store["kind"] != "pq":
        raise InvalidArgumentError(
            f"rerank_store: a re-rank store re-scores the candidates of a quantised first stage; "
            f"store={store['kind']!r} is already exact (use store='pq')")
    spec = {"kind": rerank_store}
    if rerank_store == "pq8":
        spec.update(m=int(store["m"]), nbits=8)
    elif rerank_store == "pq8-d4":  # m follows the stored dimension, final once trained
        spec.update(m=fine_m(stored_dim), nbits=8)
    return spec


def rerank_window(has_store: bool, k: int, rerank_k, what: str = "this index") -> int:
    """How many first-stage images a search's re-rank store re-scores (0: none): ``rerank_k``
    checked (0, or at least k; refused without a store), default ``max(4 * k, 100)``."""
    if rerank_k is not None:
        as_int(rerank_k, "rerank_k", 0)
        if rerank_k and not has_store:
            raise InvalidArgumentError(f"rerank_k: {what} has no re-rank store (build it with "
                                       f"rerank_store='flat16', 'pq8' or 'pq8-d4')")
        if rerank_k and rerank_k < k:
            raise InvalidArgumentError(f"rerank_k must be 0 or >= k ({k}); got {rerank_k}")
        return int(rerank_k)
    return max(4 * k, 100) if has_store else 0


def fine_m(dim: int) -> int:
    """pq8-d4's sub-quantizers for ``dim`` stored axes (InvalidArgumentError if 4 does not
    divide it)."""
    if dim % DIMS_PER_SUBQUANTIZER:
        raise InvalidArgumentError(
            f"rerank_store='pq8-d4' needs a stored dimension divisible by "
            f"{DIMS_PER_SUBQUANTIZER}; this index stores {dim} (set pca_dim, or use "
            f"rerank_store='flat16')")
    return dim // DIMS_PER_SUBQUANTIZER


def new_rerank_index(dim: int, spec: dict, sample: np.ndarray, *, seed: int = 0,
                     num_threads=None):
    """An empty exhaustive PatchIndex for ``spec``; PQ codebooks are trained on ``sample``
    ((n, dim) float32 stored vectors, the first stage's training sample). Sets a pq8-d4
    ``spec["m"]`` from ``dim``."""
    from pypatch.index.patch_index import PatchIndex

    if spec["kind"] not in PQ_KINDS:
        return PatchIndex(dim, flat_dtype="float16" if spec["kind"] == "flat16" else "float32")
    from pypatch.errors import TooFewVectorsError
    from pypatch.index.pq import ProductQuantizer

    if spec["kind"] == "pq8-d4":
        spec["m"] = fine_m(dim)
    if len(sample) < 256:
        raise TooFewVectorsError(
            f"rerank_store={spec['kind']!r} needs at least 256 training vectors to learn its 256 centroids; "
            f"the sample holds {len(sample)}: add images or use rerank_store='flat16'",
            what="rerank", needed=256, got=len(sample))
    index = PatchIndex(dim, pq=ProductQuantizer(dim, spec["m"], nbits=8))
    index.train(np.ascontiguousarray(sample, dtype=np.float32), seed=seed, num_threads=num_threads)
    return index


def empty_like(index):
    """An empty PatchIndex with ``index``'s store (and trained codebooks)."""
    from pypatch.index.patch_index import PatchIndex

    pq = index.pq
    if pq is None:
        return PatchIndex(int(index.dim), flat_dtype=index.flat_dtype)
    return PatchIndex(int(index.dim), pq=pq.copy())


def bytes_per_patch(spec: dict, dim: int) -> float:
    if spec["kind"] in PQ_KINDS:
        return float(spec["m"])
    return float(dim * (2 if spec["kind"] == "flat16" else 4))


def new_token() -> str:
    return secrets.token_hex(8)


def save_rerank_index(index, path, token: str) -> None:
    index.metadata = {SIDE_KEY: {"token": token}}
    index.save(path)


def load_rerank_index(path, spec: dict, first, *, mmap: bool, verify: bool):
    """The re-rank store saved beside index file ``path``, checked against ``spec`` (META) and
    ``first`` (the loaded first-stage PatchIndex): IndexFormatError naming the file otherwise."""
    from pypatch.index.patch_index import PatchIndex

    side = rerank_path(path)
    if (not isinstance(spec, dict) or spec.get("kind") not in RERANK_STORES
            or not isinstance(spec.get("token"), str)):
        raise IndexFormatError(f"{path!r}: image metadata rerank: expected an object with a kind "
                               f"({', '.join(RERANK_STORES)}) and a token, got {spec!r:.60}")
    if not os.path.exists(side):
        raise IndexFormatError(f"{path!r} was saved with a {spec.get('kind')} re-rank store but "
                               f"its file {side!r} is missing (copy it beside the index)")
    try:
        index = PatchIndex.load(side, mmap=mmap, verify=verify)
    except IndexFormatError as exc:
        raise IndexFormatError(f"{side!r} (re-rank store of {path!r}): {exc}") from None

    def fail(what):
        raise IndexFormatError(f"{side!r} is not the re-rank store of {path!r}: {what}")

    token = (index.metadata.get(SIDE_KEY) or {}).get("token") if isinstance(index.metadata, dict) else None
    if token is None or token != spec.get("token"):
        fail("its token differs (a file of another index, or of an earlier save)")
    kind = {None: "pq8", "float16": "flat16", "float32": "flat"}[index.flat_dtype]
    if kind == "pq8" and spec.get("kind") in PQ_KINDS:  # the codes' m tells the two apart
        kind = spec["kind"]
    if index.is_ivf or kind != spec.get("kind") or (
            kind in PQ_KINDS and (index.pq.m, index.pq.nbits) != (spec.get("m"), 8)):
        fail(f"it stores {kind}{'' if index.pq is None else f' m={index.pq.m}, nbits={index.pq.nbits}'}"
             f"{' with an inverted file' if index.is_ivf else ''}; the index says {spec.get('kind')}")
    if int(index.dim) != int(first.dim):
        fail(f"dim {index.dim} but the index stores {first.dim}-dim vectors")
    if len(index) != len(first) or index.num_patches != first.num_patches:
        fail(f"{len(index)} images / {index.num_patches} patches but the index holds "
             f"{len(first)} / {first.num_patches}")
    if not np.array_equal(index.image_offsets, first.image_offsets):
        fail("per-image patch counts differ")
    if index.num_removed:
        fail(f"{index.num_removed} removed image(s) (a saved index holds none)")
    return index

"""Second-stage reranking over the first stage's top-K (issue 5, item 4).

The first stage scores an image by the MAX over its patches of one query descriptor. Two
reranks complement it, both working on the stored patch vectors of the candidates only
(``PatchIndex.reconstruct``: exact for flat stores, the PQ decoding otherwise, so the first
stage's score of a candidate is reproduced exactly by ``query @ reconstruct(image).T``):

* ``"qe"`` -- alpha query expansion over the winning patches: the query is averaged with
  the winning patch vectors of the top ``qe_n`` images, each weighted by ``max(score, 0) ** alpha``
  (the query itself with weight 1), re-normalised, and the whole index is searched again.
  Winning patches are object-sized regions, so the expansion adds views of the object, not of
  the clutter around it (what whole-image QE adds).
* ``"multipatch"`` -- the query's own grid (``query_regions``, default L1: the whole query plus
  its 2x2 cells) is embedded, and each candidate is re-scored by the Chamfer / MaxSim
  similarity: the MEAN over query patches of the best match among the candidate's patches
  (``sum_of_maxima / Q``). The whole-query patch is the first stage's descriptor, so its term
  is the first-stage score; the other terms reward candidates that also match the parts.

Hits keep the first stage's winning cell (``box``/``cell``/``patch``/``level``) unless the
rerank searched again (QE), in which case they are the new search's.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError

__all__ = ["RERANKERS", "sum_of_maxima", "maxsim_scores", "expand_query", "rerank_hits",
           "second_stage"]

RERANKERS = ("qe", "multipatch")


def sum_of_maxima(query_patches, candidate_patches) -> float:
    """``sum_q max_p <query_patches[q], candidate_patches[p]>`` (Chamfer / MaxSim)."""
    q = np.asarray(query_patches, dtype=np.float32)
    c = np.asarray(candidate_patches, dtype=np.float32)
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1] or not len(q) or not len(c):
        raise InvalidArgumentError(
            f"sum_of_maxima: expected (Q, D) and (P, D) arrays with Q, P >= 1, got {q.shape} "
            f"and {c.shape}")
    return float((q @ c.T).max(axis=1).sum(dtype=np.float64))


def maxsim_scores(query_patches, candidates: Sequence) -> tuple:
    """Mean-of-maxima score of each candidate ``(P_i, D)`` and, per candidate, the ordinal of
    its patch that best matches the FIRST query patch -> ``(scores (n,), best (n,))``."""
    q = np.asarray(query_patches, dtype=np.float32)
    scores = np.empty(len(candidates), dtype=np.float64)
    best = np.empty(len(candidates), dtype=np.int64)
    for i, c in enumerate(candidates):
        s = q @ np.asarray(c, dtype=np.float32).T  # (Q, P)
        scores[i] = s.max(axis=1).mean(dtype=np.float64)
        best[i] = int(np.argmax(s[0]))
    return scores, best


def expand_query(query, neighbours, scores, alpha: float = 3.0) -> np.ndarray:
    """alpha-QE: ``l2n(query + sum_i max(s_i, 0) ** alpha * neighbours[i])``."""
    q = np.asarray(query, dtype=np.float64)
    n = np.asarray(neighbours, dtype=np.float64).reshape(-1, q.shape[-1])
    w = np.power(np.clip(np.asarray(scores, dtype=np.float64), 0.0, None), float(alpha))
    if len(w) != len(n):
        raise InvalidArgumentError(f"expand_query: {len(n)} neighbours but {len(w)} scores")
    out = q + (w[:, None] * n).sum(axis=0)
    norm = np.linalg.norm(out)
    return (out / norm if norm > 0 else q).astype(np.float32)


def _check(method, rerank_k, qe_n) -> None:
    if method not in RERANKERS:
        raise InvalidArgumentError(
            f"rerank: expected None or one of {', '.join(RERANKERS)}; got {method!r}")
    as_int(rerank_k, "rerank_k", 1)
    as_int(qe_n, "qe_n", 1)


def rerank_hits(index, hits: list, query_vector, method: str, *, k: int,
                query_patches=None, rerank_k: int = 100, qe_n: int = 5, alpha: float = 3.0,
                num_threads: Optional[int] = None, **probe) -> list:
    """Rerank one query's first-stage ``hits`` (at least ``rerank_k`` of them when available)
    of ImageIndex ``index``; returns the best ``k`` :class:`SearchHit` s, ranks renumbered.

    ``query_vector``: the first stage's (D,) descriptor. ``query_patches``: (Q, D) descriptors
    of the query's grid, needed by ``"multipatch"``. ``probe``: ``nprobe=`` for the expanded
    query's search of an inverted-file index."""
    _check(method, rerank_k, qe_n)
    if not hits:
        return []
    if method == "qe":
        top = hits[:qe_n]
        vecs = [index.patch_vectors(h.image)[h.patch] for h in top]
        # expanded in the stored space (after the index's pre-transform, if any)
        q2 = expand_query(index.to_stored(query_vector), vecs, [h.score for h in top], alpha)
        return index.search_vectors(q2, k=k, num_threads=num_threads, stored=True, **probe)[0]
    if query_patches is None:
        raise InvalidArgumentError("rerank='multipatch' needs the query's patch descriptors")
    head, tail = hits[:rerank_k], hits[rerank_k:]
    cands = [index.patch_vectors(h.image) for h in head]
    scores, _ = maxsim_scores(index.to_stored(query_patches), cands)
    order = np.argsort(-scores, kind="stable")  # ties keep the first-stage order
    out = [replace(head[i], score=float(scores[i])) for i in order]
    if len(out) < k:  # beyond the reranked window the first-stage order stands, below it
        floor = min((h.score for h in out), default=0.0)
        out += [replace(h, score=min(h.score, floor)) for h in tail]
    return [replace(h, rank=r + 1) for r, h in enumerate(out[:k])]


def second_stage(index, queries: Sequence, boxes: Sequence, q, *, k: int, rerank=None,
                 refine=False, rerank_k: int = 100, refine_k: int = 10, qe_n: int = 5,
                 query_regions="L1", num_threads: Optional[int] = None,
                 nprobe: Optional[int] = None, rerank_k_exact: Optional[int] = None) -> list:
    """First stage, then the optional rerank, then the optional box refinement, per query.

    Called by :meth:`pypatch.ImageIndex.search_many` when ``rerank`` or ``refine`` is set;
    ``q`` holds the (nq, D) first-stage query descriptors of ``queries``/``boxes``;
    ``rerank_k_exact``: the first stage's ``rerank_k`` (an index's exact re-rank store)."""
    from pypatch.index.refine import refine_hits, check_refine

    method = check_refine(refine)
    if rerank is not None:
        _check(rerank, rerank_k, qe_n)
    first_k = k
    if rerank == "multipatch":
        first_k = max(k, rerank_k)
    elif rerank == "qe":
        first_k = max(k, qe_n)
    probe = {} if nprobe is None else {"nprobe": nprobe}  # only IVF indexes take it
    exact = {} if rerank_k_exact is None else {"rerank_k": rerank_k_exact}
    first = index.search_vectors(q, k=first_k, num_threads=num_threads, **probe, **exact)
    out = []
    for i, hits in enumerate(first):
        if rerank is not None:
            patches = None
            if rerank == "multipatch":
                patches, _ = index._get_embedder().embed_query_patches(
                    queries[i], box=boxes[i], regions=query_regions)
            hits = rerank_hits(index, hits, q[i], rerank, k=k, query_patches=patches,
                               rerank_k=rerank_k, qe_n=qe_n, num_threads=num_threads,
                               **probe)
        else:
            hits = hits[:k]
        if method is not None:
            hits = refine_hits(index, hits, q[i], method, refine_k=refine_k)
        out.append(hits)
    return out

"""Query expansion by default? (issue 14, item 1's rule): alpha-QE over the winning patches
against the first stage alone, on full benchmarks AND on one-positive "pairs".

    python benchmarks/bench_query_expansion.py --bench small:0 small:1 large:0 large:1 \
        --cache /tmp/q14/emb --root /tmp/q14/bench

QE averages the query with the winning patches of its top hits, which helps when a query has
several true matches and can hurt when it has one (a multi-view pair: the other top hits are
distractors). The offline benchmarks have ~5-20 positives per query, so besides their usual
mAP this measures the pair case: for every (query, positive) the database is that positive
plus every image that is neither a positive nor junk for the query, and AP = 1 / rank of the
positive (0 beyond rank 100). A numpy replica of ``ImageIndex`` scoring and of
``pypatch.index.rerank`` (``expand_query``, alpha 3, top 5) on the stores of
``bench_pq_small.fit_store`` (``flat``: whitened PCA-256 float32; ``pq``: + OPQ + PQ32x8, the
decoded vectors = ADC scores).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))

QE_N, ALPHA, K = 5, 3.0, 100


def image_scores(q, y, offsets):
    """(nq, n_images) max-over-patches scores and the winning patch row of each."""
    s = q @ y.T
    best = np.maximum.reduceat(s, offsets[:-1], axis=1)
    arg = np.empty(best.shape, dtype=np.int64)
    for i in range(len(offsets) - 1):
        arg[:, i] = offsets[i] + s[:, offsets[i]:offsets[i + 1]].argmax(1)
    return best, arg


def expanded(q, y, picks, scores):
    """pypatch.index.rerank.expand_query, vectorised over the picks of one query."""
    w = np.clip(scores, 0, None) ** ALPHA
    out = q + (w[:, None] * y[picks]).sum(0)
    return out / np.linalg.norm(out)


def pair_ap(rank: int) -> float:
    return 1.0 / rank if rank <= K else 0.0


def evaluate_pairs(bench, ids, q, y, offsets, qe: bool) -> float:
    """Mean over (query, positive) of 1 / rank of the positive among the query's negatives."""
    col = {i: c for c, i in enumerate(ids)}
    best, arg = image_scores(q, y, offsets)
    aps = []
    for qi, query in enumerate(bench.queries):
        pos = [col[p.id] for p in bench.positives[query.id] if p.id in col]
        skip = set(pos) | {col[j] for j in bench.junk.get(query.id, []) if j in col}
        neg = np.array([c for c in range(len(ids)) if c not in skip])
        order = neg[np.argsort(-best[qi, neg], kind="stable")]
        if qe:  # the negatives-only expansion, shared by every positive outside the top QE_N
            top = order[:QE_N]
            base = image_scores(expanded(q[qi], y, arg[qi, top], best[qi, top])[None], y,
                                offsets)[0][0]
        for p in pos:
            s = best[qi]
            if qe:
                head = order[:QE_N]
                if s[p] > s[head[-1]]:  # the positive is among the top QE_N: its own expansion
                    top = np.sort(np.concatenate([head, [p]]))
                    top = top[np.argsort(-s[top], kind="stable")][:QE_N]
                    s = image_scores(expanded(q[qi], y, arg[qi, top], s[top])[None], y,
                                     offsets)[0][0]
                else:
                    s = base
            rank = 1 + int((s[neg] > s[p]).sum())
            aps.append(pair_ap(rank))
    return float(np.mean(aps))


def main(argv=None) -> int:
    from bench_pq_small import NumpyRanker, fit_store, load_rows
    from bench_retrieval import small_object_map

    from pypatch.evaluation.harness import evaluate
    from pypatch.extract.embedder import Embedder

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", nargs="+", default=["small:0", "small:1", "large:0", "large:1"])
    ap.add_argument("--stores", nargs="+", default=["flat", "pq"])
    ap.add_argument("--regions", default="L3s")
    ap.add_argument("--root", default="/tmp/pypatch-quality")
    ap.add_argument("--cache", default=str(HERE / "results" / "embeddings"))
    ap.add_argument("--out", default=str(HERE / "results" / "query_expansion.jsonl"))
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    embedder = Embedder(None, num_threads=1)
    for spec in args.bench:
        _, b, x, offsets, q = load_rows(spec, Path(args.root), cache, embedder, args.regions)
        ids = [d.id for d in b.database]
        for store in args.stores:
            y, qs = fit_store({"flat": dict(store="flat"), "pq": {}}[store], x, x, q)
            row = dict(bench=b.name, images=len(ids), queries=len(qs), store=store)
            best, arg = image_scores(qs, y, offsets)
            for qe in (False, True):
                qq = qs
                if qe:
                    top = np.argsort(-best, axis=1, kind="stable")[:, :QE_N]
                    qq = np.stack([expanded(qs[i], y, arg[i, t], best[i, t])
                                   for i, t in enumerate(top)]).astype(np.float32)
                tag = "qe" if qe else "first"
                r = evaluate(b, {tag: NumpyRanker(ids, offsets, y, qq)}, k=K).configs[tag]
                row[f"map_{tag}"] = r.summary["map"]
                row[f"map_small_{tag}"] = small_object_map(b, r)
                row[f"pairs_{tag}"] = evaluate_pairs(b, ids, qs, y, offsets, qe)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{b.name} n={len(ids)} {store:4s} mAP {100 * row['map_first']:6.2f} -> "
                  f"{100 * row['map_qe']:6.2f}  <10% {100 * row['map_small_first']:6.2f} -> "
                  f"{100 * row['map_small_qe']:6.2f}  pairs {100 * row['pairs_first']:6.2f} -> "
                  f"{100 * row['pairs_qe']:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

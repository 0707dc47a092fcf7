"""What 32-byte residual codes lose at 5,000 images, and which second code wins it back (issue 14).

    python benchmarks/bench_rerank_codes.py --bench xlarge:0 --root /tmp/q16/bench \
        --cache /tmp/q16/emb --variants rq32 flat16 pq128 sq8 sq4 respq64 rq8+pq24

A numpy replica of ``ImageIndex``'s default PQ store (whitened PCA-512 learned on a 65,536-patch
sample, residual codebooks 32 x 8 bits trained on the same sample) scoring every image by the
max over its patches. Variants:

  rq32        the first stage alone (the default store)
  flat16 / sq8 / sq4 / pq<m> / respq<m>
              the first stage's top ``--rerank-k`` images re-scored over all their patches by a
              second code: float16 vectors, 8- / 4-bit scalar codes (per-axis range of the
              sample, as faiss's SQ8 / SQ4), 8-bit PQ with m sub-quantizers over the vectors
              (``pq128`` at 512 axes = ``rerank_store="pq8-d4"``), or over the first stage's
              residual (IVFPQR-style: the score adds both codes)
  rq<k>+pq<j> one 32-byte code: k residual stages, then PQ j over what they leave (j + k = 32)

Besides mAP each row prints the squared error of the final vectors, in and out of the sample.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TRAIN_SIZE = 65536  # ImageIndex.build's sample cap


class TwoStageRanker:
    """rank_batch: first-stage per-image max over ``first`` rows; the top ``rerank_k`` images
    re-scored by ``second`` rows (None: the first stage alone)."""

    def __init__(self, ids, offsets, first, second, q, rerank_k):
        self.ids, self.offsets, self.first, self.second = ids, offsets, first, second
        self.q, self.rerank_k = q, rerank_k

    def rank_batch(self, queries, k):
        per_image = np.maximum.reduceat(self.q @ self.first.T, self.offsets[:-1], axis=1)
        out = []
        for qi, row in enumerate(per_image):
            cand = np.argsort(-row, kind="stable")[:k if self.second is None else self.rerank_k]
            if self.second is None:
                scores = row[cand]
            else:
                scores = np.array([(self.second[self.offsets[i]:self.offsets[i + 1]]
                                    @ self.q[qi]).max() for i in cand])
            order = np.argsort(-scores, kind="stable")[:k]
            out.append([(self.ids[cand[j]], float(scores[j]), None) for j in order])
        return out


def pq_decoded(train, x, m, seed=0):
    """x through 8-bit PQ with m sub-quantizers trained on ``train`` (uneven splits allowed)."""
    from pypatch import ProductQuantizer

    if x.shape[1] % m == 0:
        pq = ProductQuantizer(x.shape[1], m).train(train, seed=seed, num_threads=2)
        return pq.decode(pq.encode(x))
    out = np.empty_like(x)
    for cols in np.array_split(np.arange(x.shape[1]), m):
        sub = lambda a: np.ascontiguousarray(a[:, cols])  # noqa: E731
        pq = ProductQuantizer(len(cols), 1).train(sub(train), seed=seed, num_threads=2)
        out[:, cols] = pq.decode(pq.encode(sub(x)))
    return out


def rq_decoded(train, x, m, seed=0):
    from pypatch import ResidualQuantizer

    rq = ResidualQuantizer(x.shape[1], m).train(train, seed=seed, num_threads=2)
    return rq.decode(rq.encode(train)), rq.decode(rq.encode(x))


def sq_decoded(train, x, bits):
    lo, hi = train.min(0), train.max(0)
    levels = 2 ** bits - 1
    codes = np.clip(np.round((x - lo) / (hi - lo) * levels), 0, levels)
    return (codes / levels * (hi - lo) + lo).astype(np.float32)


def main(argv=None) -> int:
    from bench_pq_small import load_rows
    from bench_retrieval import small_object_map

    from pypatch.evaluation.harness import evaluate
    from pypatch.extract.embedder import Embedder
    from pypatch.index.transform import PCATransform

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", nargs="+", default=["xlarge:0"])
    ap.add_argument("--variants", nargs="+", default=["rq32", "flat16", "pq128", "sq4"])
    ap.add_argument("--root", default="/tmp/pypatch-quality")
    ap.add_argument("--cache", default=str(HERE / "results" / "embeddings"))
    ap.add_argument("--regions", default="L3s")
    ap.add_argument("--pca-dim", type=int, default=512,
                    help="the default's axes from 8,192 sample vectors (~210 images at L3s)")
    ap.add_argument("--rerank-k", type=int, default=400, help="ImageIndex's max(4k, 100) at k=100")
    args = ap.parse_args(argv)
    embedder = Embedder(None, num_threads=1)
    for spec in args.bench:
        _, b, x, offsets, q = load_rows(spec, Path(args.root), Path(args.cache), embedder,
                                        args.regions)
        sample = np.sort(np.random.default_rng(0).choice(len(x), min(TRAIN_SIZE, len(x)),
                                                         replace=False))
        outside = np.setdiff1d(np.arange(len(x)), sample)
        t = PCATransform.fit(x[sample], args.pca_dim, -0.5)
        y, qs = t.apply(x).astype(np.float32), t.apply(q).astype(np.float32)
        yt = y[sample]
        ids = [d.id for d in b.database]
        _, first = rq_decoded(yt, y, 32)
        for v in args.variants:
            stage1, second = first, None  # second: the re-rank code's decoded vectors
            if v == "flat16":
                second = y.astype(np.float16).astype(np.float32)
            elif v in ("sq8", "sq4"):
                second = sq_decoded(yt, y, int(v[2:]))
            elif re.fullmatch(r"pq\d+", v):
                second = pq_decoded(yt, y, int(v[2:]))
            elif re.fullmatch(r"respq\d+", v):
                resid = y - first
                second = first + pq_decoded(resid[sample], resid, int(v[5:]))
            elif re.fullmatch(r"rq\d+\+pq\d+", v):
                k, j = map(int, re.findall(r"\d+", v))
                train_dec, dec = rq_decoded(yt, y, k)
                stage1 = dec + pq_decoded(yt - train_dec, y - dec, j)
            elif v != "rq32":
                raise SystemExit(f"unknown variant {v!r}")
            ranker = TwoStageRanker(ids, offsets, stage1, second, qs, args.rerank_k)
            r = evaluate(b, {v: ranker}, k=100).configs[v]
            err = ((y - (stage1 if second is None else second)) ** 2).sum(1)
            err_out = err[outside].mean() if len(outside) else float("nan")
            print(f"{spec:10s} {v:10s} mAP {100 * r.summary['map']:6.2f}  <10% "
                  f"{100 * small_object_map(b, r):6.2f}  squared error in the sample "
                  f"{err[sample].mean():.4f}, outside {err_out:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PQ 32 x 8 against the flat store across collection sizes (issue 14, item 2): what costs mAP.

    python benchmarks/bench_pq_small.py --bench small:0 small:1 large:0@300 large:1@300 large:0 large:1 \
        --variants flat pq pq-noopq pq-d192 pq64x4 aniso10

A numpy replica of ``ImageIndex``'s scoring (max over an image's patches of the query's inner
product with the stored vector; for PQ the ADC score = the inner product with the decoded
vector), so training variants that ``ImageIndex.build`` does not offer can be compared on the same
embeddings. ``flat`` and ``pq`` reproduce ``patchify-L3-flat`` / ``patchify-L3-pq32`` exactly
(same transform, same seeds; checked: small s0 68.43 / 67.85 both ways). Database embeddings
come from bench_retrieval's ``.npz`` cache, query descriptors from ``--cache`` too (embedded once).
``--regions L3s`` reads the default grid's embeddings. Besides mAP, each row has ``pairs``: the
one-positive AP of ``bench_query_expansion.evaluate_pairs`` (a multi-view pair per positive).

Variants (all 32 bytes per patch except ``flat``):
  flat        whitened PCA-256, float32 (the default flat store)
  flat-d512   whitened PCA-512, float32
  pq          whitened PCA-256 + OPQ + PQ32x8 (the default PQ store)
  pq-noopq    without the OPQ rotation
  pq-d128 / pq-d192 / pq-d512   whitened PCA-128 / 192 / 512 + OPQ + PQ32x8 (4 / 6 / 16 dims
              per sub-quantizer)
  pq-pw35     eigenvalue power -0.35 instead of -0.5 (both sides)
  asym25      database quantised at power -0.25 (scaled to unit whitened norm), query at -0.75:
              the same whitened cosine before quantisation, PQ error measured less whitened
  pq64x4      PQ 64 x 4 bits (the 4-bit fast-scan store, same 32 bytes) + OPQ
  pq64        PQ 64 x 8 bits + OPQ: 64 bytes per patch, twice the default's
  rq / lsq    additive quantizers at the same 32 x 8 bits over the whitened PCA-256 (faiss
              ResidualQuantizer, beam 8 / LocalSearchQuantizer): full-dimension codebooks, so
              q . x is still a sum of 32 table lookups (rq-d512: over whitened PCA-512)
  aniso10     score-aware (anisotropic) encoding, ScaNN-style (Guo et al., ICML 2020): codes
              minimise ||r||^2 + (eta-1) (r.x)^2 (eta = 10) by coordinate descent
  ref         pre-transform, OPQ and codebooks learned on another benchmark's patches
              (the other seed's large database: a stand-in for a reference sample)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))  # a checkout as fallback: an installed pypatch (with _core) wins

VARIANTS = {
    "flat": dict(store="flat"), "pq": dict(), "pq-noopq": dict(opq=0),
    "pq-d128": dict(d=128), "pq-d192": dict(d=192), "pq-pw35": dict(power=-0.35),
    "asym25": dict(asym=-0.25), "pq64x4": dict(m=64, nbits=4), "aniso10": dict(eta=10.0),
    "ref": dict(ref=True), "flat-d512": dict(store="flat", d=512), "pq-d512": dict(d=512),
    "pq64": dict(m=64), "rq": dict(aq="rq"), "lsq": dict(aq="lsq"),
    "rq-d512": dict(aq="rq", d=512),
}
TRAIN_SIZE = 65536  # ImageIndex.build's default sample cap


def fit_store(cfg: dict, xt, x, q, seed: int = 0):
    """(stored database vectors, as decoded; stored queries) of one variant, trained on ``xt``."""
    from pypatch.index.pq import ProductQuantizer
    from pypatch.index.transform import PCATransform, fit_opq_rotation

    if cfg.get("asym") is not None:
        return _asym(cfg["asym"], x, q, seed)
    m, nbits = cfg.get("m", 32), cfg.get("nbits", 8)
    t = PCATransform.fit(xt, cfg.get("d", 256), cfg.get("power", -0.5))
    if cfg.get("store") == "flat":
        return t.apply(x), t.apply(q)
    if cfg.get("aq"):
        return _additive(cfg["aq"], t.apply(xt), t.apply(x), seed), t.apply(q)
    if cfg.get("opq", 12):
        t = t.rotated(fit_opq_rotation(t.apply(xt), m, nbits=nbits, seed=seed))
    y, yt = t.apply(x), t.apply(xt)
    pq = ProductQuantizer(y.shape[1], m, nbits=nbits).train(yt, iters=25, seed=seed)
    codes = pq.encode(y)
    if cfg.get("eta"):
        codes = anisotropic_codes(y, pq.centroids, codes, cfg["eta"])
    return pq.decode(codes), t.apply(q)


def _additive(kind: str, yt, y, seed: int):
    """Decoded vectors of a faiss additive quantizer (32 codebooks of 256) trained on ``yt``."""
    import faiss

    d = yt.shape[1]
    if kind == "rq":
        aq = faiss.ResidualQuantizer(d, 32, 8)
        aq.max_beam_size = 8
    else:
        aq = faiss.LocalSearchQuantizer(d, 32, 8)
        aq.random_seed = seed
    aq.train(np.ascontiguousarray(yt[:TRAIN_SIZE], dtype=np.float32))
    codes = aq.compute_codes(np.ascontiguousarray(y, dtype=np.float32))
    return aq.decode(codes)


def _asym(p: float, x, q, seed: int):
    from pypatch.index.pq import ProductQuantizer
    from pypatch.index.transform import PCATransform, fit_opq_rotation

    t = PCATransform.fit(x, 256, 0.0)
    lam = np.maximum(t.eigenvalues, t.eigenvalues[0] * 1e-6).astype(np.float64)
    proj = lambda a: (a.astype(np.float64) - t.mean) @ t.matrix.T.astype(np.float64)  # noqa: E731
    yp, qp = proj(x), proj(q)
    z = (yp * lam ** p / np.linalg.norm(yp * lam ** -0.5, axis=1, keepdims=True)).astype(np.float32)
    zq = (qp * lam ** (-1 - p) / np.linalg.norm(qp * lam ** -0.5, axis=1, keepdims=True)).astype(np.float32)
    r = fit_opq_rotation(z, 32, seed=seed).astype(np.float32)
    z, zq = np.ascontiguousarray(z @ r), zq @ r
    pq = ProductQuantizer(256, 32).train(z, iters=25, seed=seed)
    return pq.decode(pq.encode(z)), zq


def anisotropic_codes(y, centroids, codes, eta: float, sweeps: int = 2):
    """Codes minimising ||r||^2 + (eta - 1) (r . y)^2 per row (r = y - decoded), by coordinate
    descent over the sub-spaces from the nearest-centroid ``codes``."""
    n, d = y.shape
    c = centroids.astype(np.float64)
    m = c.shape[0]
    x = y.astype(np.float64).reshape(n, m, d // m)
    codes = codes.astype(np.int64)
    rx = np.einsum("nmd,nmd->nm", x - c[np.arange(m)[None, :], codes], x)
    total = rx.sum(1)
    rows = np.arange(n)
    for _ in range(sweeps):
        for j in range(m):
            xj = x[:, j]
            sq = (xj * xj).sum(1)
            a = total - rx[:, j]
            cx = xj @ c[j].T
            par = a[:, None] + sq[:, None] - cx
            cost = sq[:, None] - 2 * cx + (c[j] * c[j]).sum(1)[None, :] + (eta - 1.0) * par * par
            best = cost.argmin(1)
            codes[:, j] = best
            rx[:, j] = sq - cx[rows, best]
            total = a + rx[:, j]
    return codes.astype(np.uint8)


class NumpyRanker:
    """rank_batch over decoded stored vectors: max over each image's patches."""

    def __init__(self, ids, offsets, y, q):
        self.ids, self.offsets, self.y, self.q = ids, offsets, y, q

    def rank_batch(self, queries, k):
        per_image = np.maximum.reduceat(self.q @ self.y.T, self.offsets[:-1], axis=1)
        top = np.argsort(-per_image, axis=1, kind="stable")[:, :k]
        return [[(self.ids[i], float(row[i]), None) for i in t] for row, t in zip(per_image, top)]


def load_bench(root: Path, size: str, seed: int):
    from pypatch.evaluation.benchgen import make_benchmark
    from pypatch.evaluation.datasets import load

    folder = root / f"{size}-s{seed}"
    if not (folder / "benchmark.json").exists():
        make_benchmark(folder, size=size, seed=seed)
    return load(folder.resolve() / "benchmark.json")  # cached paths are the resolved ones


def query_vectors(bench, cache: Path, embedder, regions: str = "L3") -> dict:
    from pypatch.extract.grid import parse_regions

    path = cache / f"{bench.name}-{regions}-crop-queries.npz"
    if not path.exists():
        q = embedder.embed_queries([str(x.image) for x in bench.queries],
                                   [x.box for x in bench.queries], regions=parse_regions(regions),
                                   mode="crop")
        np.savez(path, ids=np.array([x.id for x in bench.queries]), q=q)
    with np.load(path) as z:
        return dict(zip(z["ids"].tolist(), z["q"]))


def load_rows(spec: str, root: Path, cache: Path, embedder, regions: str) -> tuple:
    """``NAME:SEED[@N]`` -> (benchmark, the benchmark evaluated (its N-image subset if given),
    its database vectors (n, D) in image order, image offsets (images + 1,), query vectors)."""
    from bench_quality_defaults import subset
    from bench_retrieval import embed_database

    name, _, n = spec.partition("@")
    size, seed = name.split(":")
    bench = load_bench(root, size, int(seed))
    table = embed_database(bench, regions, "crop", cache, embedder)
    qmap = query_vectors(bench, cache, embedder, regions)
    b = subset(bench, int(n)) if n else bench
    vs = [table[str(d.image)][2] for d in b.database]
    x = np.concatenate(vs).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in vs])])
    q = np.stack([qmap[qq.id] for qq in b.queries]).astype(np.float32)
    return bench, b, x, offsets, q


def main(argv=None) -> int:
    from bench_query_expansion import evaluate_pairs
    from bench_retrieval import embed_database, small_object_map

    from pypatch.extract.embedder import Embedder
    from pypatch.evaluation.harness import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", nargs="+", default=["small:0", "small:1", "large:0@300",
                                                    "large:1@300", "large:0", "large:1"])
    ap.add_argument("--variants", nargs="+", default=["flat", "pq"], choices=list(VARIANTS))
    ap.add_argument("--root", default="/tmp/pypatch-quality")
    ap.add_argument("--regions", default="L3", help="the grid the database was embedded at")
    ap.add_argument("--cache", default=str(HERE / "results" / "embeddings"))
    ap.add_argument("--out", default=str(HERE / "results" / "pq_small.jsonl"))
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    embedder = Embedder(None, num_threads=1)
    for spec in args.bench:
        bench, b, x, offsets, q = load_rows(spec, Path(args.root), cache, embedder, args.regions)
        seed = int(spec.split("@")[0].split(":")[1])  # the "ref" variant reads the other one
        for v in args.variants:
            cfg = VARIANTS[v]
            xt = x
            if cfg.get("ref"):  # the other seed's large database, capped like ImageIndex's sample
                other = load_bench(Path(args.root), "large", 1 - seed)
                xt = np.concatenate([w for _, _, w in embed_database(other, "L3", "crop", cache,
                                                                       embedder).values()])
                if len(xt) > TRAIN_SIZE:
                    rng = np.random.default_rng(0)
                    xt = xt[np.sort(rng.choice(len(xt), TRAIN_SIZE, replace=False))]
            t0 = time.time()
            y, qs = fit_store(cfg, xt, x, q)
            r = evaluate(b, {v: NumpyRanker([d.id for d in b.database], offsets, y, qs)},
                         k=100).configs[v]
            row = dict(bench=bench.name, images=len(b.database), queries=len(b.queries),
                       variant=v, map=r.summary["map"], map_small=small_object_map(b, r),
                       pairs=evaluate_pairs(b, [d.id for d in b.database], qs, y, offsets, False),
                       seconds=time.time() - t0)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{bench.name} n={row['images']} {v:10s} mAP {100 * row['map']:6.2f}  "
                  f"<10% {100 * row['map_small']:6.2f}  pairs {100 * row['pairs']:6.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

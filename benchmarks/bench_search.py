"""Search benchmark (issue 2): pypatch's fused max-over-patches scan vs faiss and numba.

    python benchmarks/bench_search.py            # 100k images x 30 patches, dim 384, m 16 and 32
    python benchmarks/bench_search.py --quick    # 10k images, a smoke run in seconds
    python benchmarks/bench_search.py --section fastscan4   # 4-bit fast scan vs faiss (search_fastscan4.py)
    python benchmarks/bench_search.py --section ivf         # inverted files vs faiss IVF (search_ivf.py)

Engines, all answering "top-k images by max ADC score over their patches, and the winning patch":
  ours          pypatch.PatchIndex.search (fused SIMD scan), trained by pypatch's PQ
  faiss+gb      faiss IndexPQ trained by faiss on the same sample, over-fetching k' = k*P
                patches (the smallest exact k') + numpy group-by-image (peers.FaissGroupBy)
  faiss-scan    faiss IndexPQ's raw patch scan (k=10 patches, no grouping): its ns/code
  numba         numba-JIT fused scan over ours' codes and float tables (= exact ADC)
  ours-avx2     ours with the SIMD level forced to AVX2 (when the machine has more)

Data: seeded, clustered, L2-normalised float vectors generated block by block (never held
whole), PQ trained on a capped sample (--train-size). Recall@10 is image-level against the
exact float ranking (max over float patch dot products). A second pass uses uniformly random
codes, where ADC scores crowd together and quantised tables are stressed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import peers  # noqa: E402

BLOCK = 1000  # images per generated block; each block has its own seed, so data is chunk-free


# ------------------------------------------------------------------------------------ data
class World:
    """Clustered patch vectors: each image mixes 4 of n_centers themes, plus per-patch noise."""

    def __init__(self, dim, patches, seed, n_centers=4096, noise=0.6):
        rng = np.random.default_rng([seed, 0xC0FFEE])
        c = rng.standard_normal((n_centers, dim), dtype=np.float32)
        self.centers = c / np.linalg.norm(c, axis=1, keepdims=True)
        self.dim, self.P, self.seed, self.noise = dim, patches, seed, noise

    def block(self, b, n_images):
        """Float vectors (n*P, dim) of images [b*BLOCK, min(n_images, (b+1)*BLOCK))."""
        n = min(BLOCK, n_images - b * BLOCK)
        rng = np.random.default_rng([self.seed, b])
        themes = rng.integers(0, len(self.centers), (n, 4))
        pick = themes[np.arange(n)[:, None], rng.integers(0, 4, (n, self.P))]
        x = self.centers[pick.ravel()]
        x += rng.standard_normal(x.shape, dtype=np.float32) * (self.noise / np.sqrt(self.dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def blocks(self, n_images):
        for b in range((n_images + BLOCK - 1) // BLOCK):
            yield b, self.block(b, n_images)

    def queries(self, source, n, seed):
        """Noisy copies of random database patches (from ``source``), L2-normalised."""
        rng = np.random.default_rng([self.seed, seed])
        q = source[rng.integers(0, len(source), n)].copy()
        q += rng.standard_normal(q.shape, dtype=np.float32) * (0.5 / np.sqrt(self.dim))
        return q / np.linalg.norm(q, axis=1, keepdims=True)


def build_data(args, log):
    world = World(args.dim, args.patches, args.seed)
    n_train_img = min(args.images, -(-args.train_size // args.patches))
    sample = np.concatenate([x for _, x in world.blocks(n_train_img)])[:args.train_size]
    data = {"world": world, "sample": sample,
            "q_eval": world.queries(sample, args.eval_queries, 1),
            "q_lat": world.queries(sample, max(args.queries, 2 * args.batch), 2)}
    quant = {}
    for m in args.m:
        quant[m] = q = {}
        if OURS_OK:
            t0 = time.perf_counter()
            q["pq"] = train_ours(args.dim, m, sample, args.seed)
            q["t_train_ours"] = time.perf_counter() - t0
            log(f"  m={m}: ours trained on {len(sample)} vectors in {q['t_train_ours']:.1f}s")
        if args.faiss_train or not OURS_OK:
            t0 = time.perf_counter()
            q["faiss_own"] = peers.FaissGroupBy(args.dim, m)
            q["faiss_own"].train(sample, seed=args.seed)
            q["t_train_faiss"] = time.perf_counter() - t0
            log(f"  m={m}: faiss trained on {len(sample)} vectors in {q['t_train_faiss']:.1f}s")
        if not OURS_OK:  # peers-only run: faiss's codebook stands in for ours
            q["pq"] = q.pop("faiss_own")
    # one pass over the database: encode with every quantizer, accumulate exact float ranking
    best = np.empty((len(data["q_eval"]), args.images), dtype=np.float32)
    codes = {(m, who): [] for m in args.m for who in ("pq", "faiss_own") if who in quant[m]}
    t0 = time.perf_counter()
    for b, x in world.blocks(args.images):
        i0 = b * BLOCK
        s = (x @ data["q_eval"].T).reshape(-1, args.patches, len(data["q_eval"]))
        best[:, i0:i0 + s.shape[0]] = s.max(axis=1).T
        for (m, who), parts in codes.items():
            parts.append(quant[m][who].encode(x))
    log(f"  generated + encoded {args.images * args.patches} patches in "
        f"{time.perf_counter() - t0:.1f}s")
    data["exact_topk"] = np.argsort(-best, axis=1, kind="stable")[:, :args.k]
    for (m, who), parts in codes.items():
        quant[m]["codes_" + who] = np.concatenate(parts)
    for m in args.m:
        quant[m]["centroids"] = np.ascontiguousarray(quant[m]["pq"].centroids, dtype=np.float32)
    data["quant"] = quant
    return data


# --------------------------------------------------------------------------------- engines
OURS_OK, OURS_WHY = True, ""
try:
    import pypatch

    pypatch.PatchIndex, pypatch.ProductQuantizer  # noqa: B018 (resolve lazily, fail here)
except Exception as e:  # noqa: BLE001 (any failure means: benchmark the peers only)
    OURS_OK, OURS_WHY = False, f"{type(e).__name__}: {e}"


def train_ours(dim, m, sample, seed):
    pq = pypatch.ProductQuantizer(dim, m, 8)
    pq.train(sample, iters=25, seed=seed)
    return pq


class Ours:
    def __init__(self, dim, pq, codes, P):
        self.index = pypatch.PatchIndex(dim, pq=pq)
        self.index.add_codes(codes, patches_per_image=P)

    def search(self, q, k, threads):
        return self.index.search(q, k=k, num_threads=threads)

    def bytes_per_image(self):
        # per-image cost: everything but the fixed codebook and metadata
        mu = dict(self.index.memory_usage())
        total = mu.pop("total", None)
        fixed = mu.get("centroids", 0) + mu.get("metadata", 0)
        if total is None:
            total = sum(v for v in mu.values() if isinstance(v, int))
        return (total - fixed) / len(self.index)


def set_simd(level):
    """Force our SIMD level in-process; returns the level now selected (None if unsupported)."""
    if not OURS_OK or not hasattr(pypatch, "set_simd_level"):
        return None
    try:
        pypatch.set_simd_level(level)
        return pypatch.simd_info().get("selected")
    except Exception:  # noqa: BLE001 (level not compiled or not supported here)
        return None


def recall_at_k(found, exact):
    k = exact.shape[1]
    return float(np.mean([len(set(f[:k]) & set(e)) / k for f, e in zip(found, exact)]))


def set_faiss_threads(t):
    import faiss

    faiss.omp_set_num_threads(t)


# ------------------------------------------------------------------------------ measurement
def measure_round_robin(engines, q_lat, args, threads, batch):
    """Per-query latency samples (seconds) for every engine, interleaved call by call.

    On a shared machine load comes and goes; timing the engines in turn on the same query
    (rather than one engine after another) exposes them to the same load, so ratios hold up
    better than the absolute numbers. Batch rows: batch time / batch size.
    """
    if batch == 1:
        calls, repeat, warmup = [q_lat[i:i + 1] for i in range(args.queries)], 1, 2
    else:
        calls = [q_lat[i:i + batch] for i in range(0, len(q_lat) - batch + 1, batch)]
        repeat, warmup = args.batch_repeat, 1
    for fn in engines.values():
        for i in range(warmup):
            fn(calls[i % len(calls)], threads)
    samples = {name: [] for name in engines}
    for _ in range(repeat):
        for qs in calls:
            for name, fn in engines.items():
                t0 = time.perf_counter()
                fn(qs, threads)
                samples[name].append((time.perf_counter() - t0) / batch)
    return {name: common.Timing(np.asarray(v)) for name, v in samples.items()}


def run_config(m, args, data, bw, rows, log, random_codes=False):
    q = data["quant"][m]
    P, n_img, k = args.patches, args.images, args.k
    n_patches = n_img * P
    offsets = peers.constant_offsets(n_img, P)
    codes = q["codes_pq"]
    if random_codes:
        rng = np.random.default_rng([args.seed, m, 7])
        codes = rng.integers(0, 256, (n_patches, m), dtype=np.uint8)
    # faiss scans the same codes with the same codebook: only the scan differs
    faiss_peer = peers.FaissGroupBy(args.dim, m, centroids=q["centroids"])
    faiss_peer.add_codes(codes, offsets)
    engines = {}
    if "faiss_own" in q and not random_codes:  # faiss's own training and encoding (--faiss-train)
        q["faiss_own"].add_codes(q["codes_faiss_own"], offsets)
    numba_peer = peers.NumbaScan(q["centroids"], codes, offsets)
    if OURS_OK:
        pq = pypatch.ProductQuantizer.from_centroids(q["centroids"]) if random_codes else q["pq"]
        ours = Ours(args.dim, pq, codes, P)
        engines["ours"] = (lambda x, t: ours.search(x, k, t), ours.bytes_per_image())

    def faiss_gb(x, t):
        set_faiss_threads(t)
        return faiss_peer.search(x, k)

    def faiss_scan(x, t):
        set_faiss_threads(t)
        return faiss_peer.scan(x, k)

    engines["faiss+gb"] = (faiss_gb, faiss_peer.bytes_per_image())
    engines["faiss-scan"] = (faiss_scan, faiss_peer.index.code_size * P)
    if "faiss_own" in q and not random_codes:
        def faiss_own(x, t):
            set_faiss_threads(t)
            return q["faiss_own"].search(x, k)
        engines["faiss-own"] = (faiss_own, q["faiss_own"].bytes_per_image())
    if not args.no_numba:
        engines["numba"] = (lambda x, t: numba_peer.search(x, k, t), numba_peer.bytes_per_image())

    # quality: image recall@10 vs the exact float ranking; agreement with exact ADC (numba)
    q_eval = data["q_eval"]
    exact_adc = peers.numba_search(peers.luts_numpy(q["centroids"], q_eval), codes,
                                   offsets, k, threads=max(args.threads))[1]
    truth = exact_adc if random_codes else data["exact_topk"]
    quality = {"exact-adc": recall_at_k(exact_adc, truth)}
    for name, (fn, _) in engines.items():
        if name != "faiss-scan":
            quality[name] = recall_at_k(fn(q_eval, max(args.threads))[1], truth)
    if "ours" in engines:
        quality["ours_vs_adc"] = recall_at_k(engines["ours"][0](q_eval, 1)[1], exact_adc)
    tag = "random" if random_codes else "clustered"
    log(f"  [{tag} m={m}] recall@{k}: " + ", ".join(f"{n} {v:.3f}" for n, v in quality.items()))

    if "ours" in engines and not random_codes:
        default_level = pypatch.simd_info().get("selected")
        if default_level != "avx2" and set_simd("avx2") == "avx2":
            set_simd(default_level)
            ours_fn = engines["ours"][0]

            def ours_avx2(x, t):
                set_simd("avx2")
                try:
                    return ours_fn(x, t)
                finally:
                    set_simd(default_level)
            engines["ours-avx2"] = (ours_avx2, engines["ours"][1])
            quality["ours-avx2"] = recall_at_k(ours_avx2(data["q_eval"], 1)[1], data["exact_topk"])
    batches = [1] if random_codes else [1, args.batch]
    threads_list = [1] if random_codes else args.threads
    for batch in batches:
        for t in threads_list:
            # faiss-scan is a single-query reference; the AVX2 target is single-query 1-thread
            skip = {"faiss-scan", "ours-avx2"} if batch > 1 else ({"ours-avx2"} if t > 1 else set())
            run = {n: fn for n, (fn, _) in engines.items() if n not in skip}
            for name, tm in measure_round_robin(run, data["q_lat"], args, t, batch).items():
                rows.append(make_row(m, tag, name, t, batch, tm, quality.get(name),
                                     engines[name][1], n_patches, bw))
            log(f"  [{tag} m={m}] batch={batch} threads={t} done")
    return quality


def make_row(m, tag, engine, threads, batch, tm, recall, bpi, n_patches, bw):
    bound = n_patches * m / bw[threads]
    return {"data": tag, "m": m, "engine": engine, "threads": threads, "batch": batch,
            "p50_ms": tm.p50 * 1e3, "p95_ms": tm.p95 * 1e3, "ns_per_code": tm.p50 / n_patches * 1e9,
            "mcodes_per_s": n_patches / tm.p50 / 1e6, "recall": recall, "bytes_per_image": bpi,
            "bound_ms": bound * 1e3, "x_bound": tm.p50 / bound}


# --------------------------------------------------------------------------------- reporting
def print_table(rows, out):
    head = (f"{'data':9} {'m':>3} {'engine':11} {'thr':>3} {'batch':>5} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'ns/code':>8} {'Mcode/s':>8} {'rec@10':>6} {'B/img':>6} {'bound ms':>8} "
            f"{'x bound':>7} {'ours x':>6}")
    out(head)
    out("-" * len(head))
    ours = {(r["data"], r["m"], r["threads"], r["batch"]): r["p50_ms"]
            for r in rows if r["engine"] == "ours"}
    for r in rows:
        o = ours.get((r["data"], r["m"], r["threads"], r["batch"]))
        sp = f"{r['p50_ms'] / o:6.2f}" if o else "     -"
        rec = f"{r['recall']:6.3f}" if r["recall"] is not None else "     -"
        out(f"{r['data']:9} {r['m']:>3} {r['engine']:11} {r['threads']:>3} {r['batch']:>5} "
            f"{r['p50_ms']:8.3f} {r['p95_ms']:8.3f} {r['ns_per_code']:8.3f} "
            f"{r['mcodes_per_s']:8.0f} {rec} {r['bytes_per_image']:6.0f} {r['bound_ms']:8.3f} "
            f"{r['x_bound']:7.2f} {sp}")


def print_markdown(rows, out):
    """The same table as markdown, for pasting into benchmarks/README.md."""
    out("| data | m | engine | threads | batch | p50 ms | p95 ms | ns/code | recall@10 | "
        "bytes/image | bound ms | x bound | vs ours |")
    out("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    ours = {(r["data"], r["m"], r["threads"], r["batch"]): r["p50_ms"]
            for r in rows if r["engine"] == "ours"}
    for r in rows:
        o = ours.get((r["data"], r["m"], r["threads"], r["batch"]))
        rec = f"{r['recall']:.3f}" if r["recall"] is not None else "-"
        vs = f"{r['p50_ms'] / o:.2f}x" if o else "-"
        out(f"| {r['data']} | {r['m']} | {r['engine']} | {r['threads']} | {r['batch']} | "
            f"{r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['ns_per_code']:.3f} | {rec} | "
            f"{r['bytes_per_image']:.0f} | {r['bound_ms']:.3f} | {r['x_bound']:.2f} | {vs} |")


def find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def check_targets(rows, quality, args, out):
    """PASS/FAIL lines for the issue's targets (m=32, 8-bit, clustered unless stated)."""
    m, P = (32 if 32 in args.m else max(args.m)), args.patches
    base = dict(data="clustered", m=m, batch=1)
    ours1 = find(rows, engine="ours", threads=1, **base)
    if ours1 is None:
        out(f"SKIP  all targets: pypatch native core unavailable ({OURS_WHY})")
        return []
    results = []

    def target(ok, text):
        if ok is None:
            out(f"SKIP  {text}")
            return
        results.append((bool(ok), text))
        out(f"{'PASS' if ok else 'FAIL'}  {text}")

    fz = find(rows, engine="faiss+gb", threads=1, **base)
    qm = quality[("clustered", m)]
    sp = fz["p50_ms"] / ours1["p50_ms"]
    drop = qm["exact-adc"] - qm["ours"]
    target(sp >= 3 and drop <= 0.01,
           f"m={m} 1q 1t: ours {sp:.2f}x faster than faiss IndexPQ+group-by (>= 3x), recall@10 "
           f"{qm['ours']:.3f} vs exact ADC {qm['exact-adc']:.3f} (drop {drop:+.3f}, <= 0.01)")
    target(ours1["x_bound"] <= 1.5,
           f"m={m} 1q 1t: ours {ours1['p50_ms']:.3f} ms = {ours1['x_bound']:.2f}x the bandwidth "
           f"bound {ours1['bound_ms']:.3f} ms (<= 1.5x)")
    ours2 = find(rows, engine="ours", threads=2, **base)
    target(None if ours2 is None else ours1["p50_ms"] / ours2["p50_ms"] >= 1.7,
           f"m={m} 1q: 2 threads {ours1['p50_ms'] / ours2['p50_ms']:.2f}x faster than 1 (>= 1.7x)"
           if ours2 else "2 threads vs 1: not measured (--threads lacks 2)")
    ob = find(rows, engine="ours", threads=1, data="clustered", m=m, batch=args.batch)
    target(None if ob is None else ob["p50_ms"] <= 0.5 * ours1["p50_ms"],
           f"m={m} 1t: batch of {args.batch} {ob['p50_ms']:.3f} ms/query = "
           f"{ob['p50_ms'] / ours1['p50_ms']:.2f} of single-query time (<= 0.5)"
           if ob else "batch: not measured")
    nb = find(rows, engine="numba", threads=1, **base)
    target(None if nb is None else nb["p50_ms"] / ours1["p50_ms"] >= 2,
           f"m={m} 1q 1t: ours {nb['p50_ms'] / ours1['p50_ms']:.2f}x faster than numba (>= 2x)"
           if nb else "numba: not measured (--no-numba)")
    for mm in args.m:
        r = find(rows, engine="ours", threads=1, data="clustered", m=mm, batch=1)
        target(r["bytes_per_image"] <= P * mm + 16,
               f"m={mm}: ours {r['bytes_per_image']:.1f} bytes/image (<= P*m+16 = {P * mm + 16})")
    av = find(rows, engine="ours-avx2", threads=1, **base)
    target(None if av is None else av["p50_ms"] <= fz["p50_ms"],
           f"m={m} 1q 1t: AVX2 path {av['p50_ms']:.3f} ms vs faiss+group-by {fz['p50_ms']:.3f} ms "
           f"({fz['p50_ms'] / av['p50_ms']:.2f}x; no slower)" if av
           else "AVX2 path: not separately measurable (AVX2 is already the default, or unsupported)")
    rq = quality.get(("random", m))
    rr = find(rows, engine="ours", data="random", m=m, batch=1, threads=1)
    rf = find(rows, engine="faiss+gb", data="random", m=m, batch=1, threads=1)
    if rq and rr and rf:
        target(rq["ours_vs_adc"] >= 0.99 and rf["p50_ms"] / rr["p50_ms"] >= 3,
               f"m={m} random codes: ours top-{args.k} agrees {rq['ours_vs_adc']:.3f} with exact ADC "
               f"(>= 0.99), {rf['p50_ms'] / rr['p50_ms']:.2f}x faster than faiss+group-by (>= 3x)")
    return results


# ------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="10k images: a smoke run in seconds")
    p.add_argument("--images", type=int, help="number of images (default 100000; quick 10000)")
    p.add_argument("--patches", type=int, default=30, help="patches per image (L3 pyramid: 30)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--m", type=int, nargs="+", default=[16, 32], help="PQ sub-quantizers")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--queries", type=int, help="single queries timed (default 50; quick 20)")
    p.add_argument("--batch-repeat", type=int, default=3)
    p.add_argument("--eval-queries", type=int, default=100, help="queries for recall@k")
    p.add_argument("--train-size", type=int, default=65536, help="PQ training sample cap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-numba", action="store_true")
    p.add_argument("--faiss-train", action="store_true",
                   help="also train and encode with faiss's own PQ (slow: faiss encodes every patch)")
    p.add_argument("--no-random", action="store_true", help="skip the uniformly-random-codes pass")
    p.add_argument("--bandwidth-mib", type=int, default=1024, help="buffer for the bandwidth probe")
    p.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    p.add_argument("--json", metavar="PATH", help="JSON-lines output (default benchmarks/results/)")
    p.add_argument("--section", choices=["scan8", "fastscan4", "ivf"], default="scan8",
                   help="scan8: the 8-bit comparison above; fastscan4: 4-bit fast scan vs faiss "
                        "IndexPQFastScan (benchmarks/search_fastscan4.py; defaults 300k images, dim 256); "
                        "ivf: inverted files, ours vs faiss IVF (benchmarks/search_ivf.py; defaults 1M "
                        "images, dim 256, m 32; --quick 20k)")
    p.add_argument("--fs4-m", type=int, default=32, help="fastscan4: sub-quantizers")
    p.add_argument("--rounds", type=int, default=5, help="fastscan4: interleaved timing rounds")
    p.add_argument("--cache-dir", default="/tmp/pypatch-bench-cache",
                   help="fastscan4, ivf: where generated codes are cached ('' to disable for fastscan4)")
    p.add_argument("--ivf-m", type=int, default=32, help="ivf: PQ sub-quantizers")
    p.add_argument("--nlist", type=int, help="ivf: inverted lists (default: ~7.3k patches a list, "
                                             "4096 at 1M x 30)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64],
                   help="ivf: lists probed, swept")
    p.add_argument("--pq-iters", type=int, help="ivf: k-means iterations of the PQs (default 25; quick 10)")
    p.add_argument("--ours-ivf-pq", choices=["shared", "own"], default="shared",
                   help="ivf: our IVF reuses the exhaustive engines' trained PQ (shared) or trains its own")
    p.add_argument("--plot", help="ivf: recall-vs-latency PNG (default benchmarks/ivf_recall_latency.png)")
    argv_list = argv if argv is not None else sys.argv[1:]
    a = p.parse_args(argv)
    if a.section == "ivf":
        if a.images is None:
            a.images = 20_000 if a.quick else 1_000_000
        if "--dim" not in argv_list:
            a.dim = 256
        if a.dim % a.ivf_m:
            p.error(f"--dim {a.dim} must be divisible by --ivf-m {a.ivf_m}")
        if a.pq_iters is None:
            a.pq_iters = 10 if a.quick else 25
        if a.quick:  # a smoke run: fewer settings, one timing round
            a.rounds = 1
            if "--nprobe" not in argv_list:
                a.nprobe = [1, 4, 16, 64]
        if a.nlist is None:
            import search_ivf
            a.nlist = search_ivf.default_nlist(a.images * a.patches)
        if a.nlist < 1 or any(x < 1 for x in a.nprobe):
            p.error("--nlist and --nprobe must be >= 1")
    if a.section == "fastscan4" and a.images is None:
        a.images = 10_000 if a.quick else 300_000
    if a.section == "fastscan4" and "--dim" not in (argv if argv is not None else sys.argv):
        a.dim = 256
    if a.section == "fastscan4" and a.dim % a.fs4_m:
        p.error(f"--dim {a.dim} must be divisible by --fs4-m {a.fs4_m}")
    if a.images is None:
        a.images = 10_000 if a.quick else 100_000
    if a.queries is None:
        a.queries = 20 if a.quick else 50
    if a.quick:
        a.eval_queries = min(a.eval_queries, 50)
        a.train_size = min(a.train_size, 12_800)  # 50 points per centroid: enough for a smoke run
        a.batch_repeat = 1
        a.bandwidth_mib = min(a.bandwidth_mib, 256)
    for name in ("images", "patches", "dim", "k", "batch", "queries", "eval_queries", "train_size"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    a.n_lat = max(a.queries, 2 * a.batch)  # ivf: latency queries (two batches)
    if any(a.dim % m for m in a.m):
        p.error(f"--dim {a.dim} must be divisible by every --m {a.m}")
    if any(t < 1 for t in a.threads):
        p.error("--threads must be >= 1")
    return a


def main(argv=None):
    args = parse_args(argv)
    writer = common.JsonlWriter(args.json, "bench_search")
    out = print
    if args.section == "fastscan4":
        import search_fastscan4

        info = common.machine_info()
        out(f"# pypatch 4-bit fast-scan benchmark  {info['time_utc']}  git {info['git']}")
        out(f"# CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs; pypatch SIMD: "
            f"{pypatch.simd_info() if OURS_OK else OURS_WHY}")
        out(f"# {args.images} images x {args.patches} patches, dim {args.dim}, m {args.fs4_m}, 4-bit, "
            f"k={args.k}, 1 thread, load avg {os.getloadavg()[0]:.2f}")
        return search_fastscan4.run(args, out, writer)
    if args.section == "ivf":
        import search_ivf

        info = common.machine_info()
        out(f"# pypatch IVF benchmark  {info['time_utc']}  git {info['git']}; pypatch from "
            f"{Path(pypatch.__file__).parent if OURS_OK else '-'}")
        out(f"# CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs; pypatch SIMD: "
            f"{pypatch.simd_info() if OURS_OK else OURS_WHY}")
        out(f"# {args.images} images x {args.patches} patches, dim {args.dim}, m {args.ivf_m}, "
            f"nlist {args.nlist}, nprobe {args.nprobe}, k={args.k}, threads {args.threads}, "
            f"batch {args.batch}, load avg {os.getloadavg()[0]:.2f}")
        return search_ivf.run(args, out, writer)
    info = common.machine_info()
    simd = pypatch.simd_info() if OURS_OK else {"unavailable": OURS_WHY}
    out(f"# pypatch search benchmark  {info['time_utc']}  git {info['git']}")
    out(f"# CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs; pypatch SIMD: {simd}")
    out(f"# {args.images} images x {args.patches} patches, dim {args.dim}, m {args.m}, 8-bit, "
        f"k={args.k}, threads {args.threads}, batch {args.batch}, load avg {os.getloadavg()[0]:.2f}")
    bw = {}
    for t in sorted(set(args.threads)):
        r = common.measure_read_bandwidth(args.bandwidth_mib << 20, threads=t)
        bw[t] = r["bytes_per_s"]
        out(f"# memory read bandwidth, {t} thread(s): {bw[t] / 1e9:.1f} GB/s")
        writer.write({"kind": "bandwidth", **r})
    t0 = time.perf_counter()
    data = build_data(args, lambda s: out(s, flush=True))
    rows, quality = [], {}
    passes = [False] if args.no_random else [False, True]
    for random_codes in passes:
        for m in args.m:
            tag = "random" if random_codes else "clustered"
            quality[(tag, m)] = run_config(m, args, data, bw, rows, lambda s: out(s, flush=True),
                                           random_codes)
    out("")
    print_table(rows, out)
    out("")
    results = check_targets(rows, quality, args, out)
    if args.markdown:
        out("")
        print_markdown(rows, out)
    for r in rows:
        writer.write({"kind": "search", **r, "images": args.images, "patches": args.patches,
                      "dim": args.dim, "k": args.k, "simd": simd})
    writer.write({"kind": "targets", "results": results,
                  "quality": {f"{k[0]}-m{k[1]}": v for k, v in quality.items()}})
    out(f"# total {time.perf_counter() - t0:.0f}s, peak RSS "
        f"{common.fmt_bytes(common.peak_rss_bytes())}; results in {writer.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

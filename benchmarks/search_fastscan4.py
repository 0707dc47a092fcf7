"""``bench_search.py --section fastscan4``: the 4-bit PQ fast scan against faiss's.

    python benchmarks/bench_search.py --section fastscan4            # 300k images x 30, D 256, m 32
    python benchmarks/bench_search.py --section fastscan4 --quick    # 10k images

Engines, one thread, single queries, timed call by call in turn (round robin) for --rounds
rounds; each row reports the median over rounds of the per-round median latency:
  ours          PatchIndex.search with ProductQuantizer(nbits=4): fast scan with the per-image max
                in the kernel, then the exact re-score (top-k = exact 4-bit ADC)
  ours-avx2     the same with the SIMD level forced to AVX2 (when the machine has more)
  faiss-fs+gb   faiss IndexPQFastScan (same centroids and codes, bbs 32) over-fetching
                k' = k * P patches + numpy group-by-image (peers.FaissFastScanGroupBy)
  faiss-fs-scan faiss IndexPQFastScan's raw patch search for k patches (no grouping)
  read-bound    numpy sum over a uint64 array of the codes' size (numpy advises huge pages, as
                pypatch does for its storage): the read-bandwidth bound for the same bytes,
                timed in the same round robin, so it sees the same load as the engines
Also printed once: the probe of common.measure_read_bandwidth over the codes' size and over
1 GiB. Recall: top-k images against exact 4-bit ADC (numba fused scan over the float tables,
an independent oracle).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

import common
import peers


def _data(args, log):
    """Clustered vectors (bench_search.World) -> 4-bit codes of a PQ trained on a sample.
    Cached in --cache-dir (codes are the expensive part: args decide them completely)."""
    import pypatch
    from bench_search import World

    key = hashlib.sha1(repr((args.images, args.patches, args.dim, args.fs4_m, args.seed,
                             args.train_size, 3)).encode()).hexdigest()[:12]
    cache = Path(args.cache_dir) / f"fs4_{key}.npz" if args.cache_dir else None
    world = World(args.dim, args.patches, args.seed)
    if cache is not None and cache.exists():
        z = np.load(cache)
        log(f"  codes from cache {cache}")
        return z["centroids"], z["codes"], z["q"]
    n_train_img = min(args.images, -(-args.train_size // args.patches))
    sample = np.concatenate([x for _, x in world.blocks(n_train_img)])[:args.train_size]
    t0 = time.perf_counter()
    pq = pypatch.ProductQuantizer(args.dim, args.fs4_m, nbits=4).train(sample, iters=25, seed=args.seed)
    log(f"  trained 4-bit PQ m={args.fs4_m} on {len(sample)} vectors in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    codes = np.concatenate([pq.encode(x) for _, x in world.blocks(args.images)])
    log(f"  generated + encoded {len(codes)} patches in {time.perf_counter() - t0:.1f}s")
    q = world.queries(sample, max(args.queries, args.eval_queries), 2)
    centroids = np.ascontiguousarray(pq.centroids)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, centroids=centroids, codes=codes, q=q)
    return centroids, codes, q


def run(args, out, writer):
    import faiss
    import pypatch
    from bench_search import set_simd

    log = lambda s: out(s, flush=True)  # noqa: E731
    m, P, k = args.fs4_m, args.patches, args.k
    centroids, codes, q = _data(args, log)
    n_patches = len(codes)
    offsets = peers.constant_offsets(len(codes) // P, P)
    code_bytes = n_patches * ((m + 1) // 2)
    bw_same = common.measure_read_bandwidth(code_bytes, threads=1)["bytes_per_s"]
    bw_dram = common.measure_read_bandwidth(1 << 30, threads=1)["bytes_per_s"]
    log(f"# read bandwidth, 1 thread: {bw_same / 1e9:.1f} GB/s over {code_bytes / 2**20:.0f} MiB "
        f"(the codes' size), {bw_dram / 1e9:.1f} GB/s over 1 GiB")

    ix = pypatch.PatchIndex(args.dim, pypatch.ProductQuantizer.from_centroids(centroids))
    ix.add_codes(codes, patches_per_image=P)
    fz = peers.FaissFastScanGroupBy(args.dim, m, centroids)
    fz.add_codes(codes, offsets)
    faiss.omp_set_num_threads(1)
    default_level = pypatch.simd_info()["selected"]

    def ours_at(level):
        def fn(x, t):
            set_simd(level)
            try:
                return ix.search(x, k=k, num_threads=t)
            finally:
                set_simd(default_level)
        return fn

    read_buf = np.ones(code_bytes // 8, dtype=np.uint64)
    engines = {"read-bound": lambda x, t: read_buf.sum(),
               "ours": lambda x, t: ix.search(x, k=k, num_threads=t),
               "faiss-fs+gb": lambda x, t: fz.search(x, k),
               "faiss-fs-scan": lambda x, t: fz.scan(x, k)}
    if default_level != "avx2" and set_simd("avx2") == "avx2":
        set_simd(default_level)
        engines["ours-avx2"] = ours_at("avx2")

    # quality: top-k images against exact 4-bit ADC (numba over the float tables)
    q_eval = q[:args.eval_queries]
    exact = peers.numba_search(peers.luts_numpy(centroids, q_eval), codes, offsets, k, threads=2)
    quality = {}
    for name, fn in engines.items():
        if name in ("faiss-fs-scan", "read-bound"):
            continue
        s, i, _ = fn(q_eval, 1)
        quality[name] = {"recall": float(np.mean([len(set(a) & set(b)) / k for a, b in zip(i, exact[1])])),
                         "identical": bool(np.array_equal(i, exact[1]))}
        if name.startswith("ours"):
            quality[name]["max_score_diff"] = float(np.abs(s - exact[0]).max())
    log(f"  top-{k} vs exact 4-bit ADC ({len(q_eval)} queries): " + ", ".join(
        f"{n} recall {v['recall']:.3f}{' identical' if v['identical'] else ''}" for n, v in quality.items()))

    class A:  # measure_round_robin's view of the arguments
        queries = args.queries
        batch_repeat = 1
    from bench_search import measure_round_robin
    per_round = {n: [] for n in engines}
    for r in range(args.rounds):
        for name, tm in measure_round_robin(engines, q[:args.queries], A, 1, 1).items():
            per_round[name].append(tm.p50)
        log(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1] * 1e3:.2f} ms" for n, v in per_round.items()))
    bound = float(np.median(per_round["read-bound"]))
    rows = []
    ours = float(np.median(per_round["ours"]))
    out("")
    out(f"| engine | p50 ms (median of {args.rounds} rounds) | rounds min-max ms | ns/patch | "
        f"x read-bound | faiss-fs+gb / engine | top-{k} recall vs exact ADC |")
    out("|---|--:|--:|--:|--:|--:|--:|")
    fzt = float(np.median(per_round["faiss-fs+gb"]))
    for name, v in per_round.items():
        med = float(np.median(v))
        rec = quality.get(name, {}).get("recall")
        row = {"engine": name, "p50_ms": med * 1e3, "min_ms": min(v) * 1e3, "max_ms": max(v) * 1e3,
               "ns_per_patch": med / n_patches * 1e9, "x_bound": med / bound, "faiss_over": fzt / med,
               "recall": rec, "bound_ms": bound * 1e3}
        rows.append(row)
        out(f"| {name} | {row['p50_ms']:.2f} | {row['min_ms']:.2f}-{row['max_ms']:.2f} | "
            f"{row['ns_per_patch']:.3f} | {row['x_bound']:.2f} | {row['faiss_over']:.2f}x | "
            f"{'-' if rec is None else f'{rec:.3f}'} |")
    out("")
    sp = fzt / ours
    xb = ours / bound
    ok_id = quality["ours"]["identical"]
    out(f"{'PASS' if ok_id else 'FAIL'}  top-{k} identical to exact 4-bit ADC on {len(q_eval)} queries")
    out(f"{'PASS' if sp >= 1.5 else 'FAIL'}  ours {sp:.2f}x faster than faiss IndexPQFastScan + group-by (>= 1.5x)")
    out(f"{'PASS' if sp >= 1.1 and xb <= 1.15 else 'FAIL'}  near the memory bound: {sp:.2f}x faiss (>= 1.1x) "
        f"and {xb:.2f}x the read-bandwidth bound (<= 1.15x)")
    for r in rows:
        writer.write({"kind": "fastscan4", **r, "images": len(offsets) - 1, "patches": P, "dim": args.dim,
                      "m": m, "k": k, "rounds": args.rounds, "load": os.getloadavg()[0],
                      "bw_same_Bps": bw_same, "bw_dram_Bps": bw_dram, "simd": pypatch.simd_info()})
    writer.write({"kind": "fastscan4_quality", **{n: v for n, v in quality.items()}})
    return 0

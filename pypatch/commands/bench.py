"""``pypatch bench``: quick search-speed numbers of the native core on this machine.

Synthetic random unit vectors grouped in images (no model involved), a PQ store and a flat store,
one query at a time and a batch. For the full comparison against faiss and numba (latency
percentiles, recall, bandwidth bound) run ``python benchmarks/bench_search.py`` from a source
checkout; extraction speed is ``python benchmarks/bench_extract.py``.
"""
from __future__ import annotations

from pypatch.commands._args import require_positive


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="quick search-speed numbers of the native core",
        description="Time the native per-image max scan on synthetic vectors "
                    "(see benchmarks/ for the full comparison against faiss).")
    p.add_argument("--images", type=int, default=20000, help="images (default 20000)")
    p.add_argument("--patches", type=int, default=30, help="patches per image (default 30)")
    p.add_argument("--dim", type=int, default=384, help="descriptor dimension (default 384)")
    p.add_argument("--m", type=int, default=32, help="PQ sub-quantizers (default 32)")
    p.add_argument("--nbits", type=int, choices=(4, 8), default=8,
                   help="bits per PQ code (4: the fast scan; default 8)")
    p.add_argument("--nlist", type=int, default=None, metavar="N",
                   help="also time an inverted file of N lists over the same codes, and its "
                        "recall@k against the exhaustive PQ scan (random vectors do not cluster: "
                        "the worst case for an inverted file)")
    p.add_argument("--nprobe", type=int, default=16, help="lists probed with --nlist (default 16)")
    p.add_argument("--queries", type=int, default=64, help="queries in the batch (default 64)")
    p.add_argument("--k", type=int, default=10, help="results per query")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _check(args) -> None:
    from pypatch.errors import InvalidArgumentError

    require_positive(args, "images", "patches", "dim", "m", "queries", "k", "threads", "nlist",
                     "nprobe")
    if args.dim % args.m:
        raise InvalidArgumentError(f"--m {args.m} must divide --dim {args.dim}")


def _unit(rng, n, d):
    import numpy as np

    # uniform in [-1, 1)^d, normalised: 5x faster to draw than Gaussians, and the scan's speed
    # does not depend on the directions' distribution
    x = rng.random((n, d), dtype=np.float32)
    x -= 0.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _time(fn, repeat: int, budget_s: float = 1.0, warm_up: bool = True) -> float:
    """Median seconds of up to ``repeat`` calls after one warm-up, stopping early once
    ``budget_s`` is spent (a slow store is timed fewer times, never less than once)."""
    import statistics
    import time

    if warm_up:
        fn()
    samples = []
    spent = time.perf_counter()
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
        if time.perf_counter() - spent > budget_s:
            break
    return statistics.median(samples)


def _say(text: str, t0: float) -> None:
    import sys
    import time

    print(f"[bench {time.perf_counter() - t0:5.1f} s] {text}", file=sys.stderr, flush=True)


# images generated and added per step: bounds memory (no full float32 copy of the database)
_CHUNK_IMAGES = 2000
# training vectors per PQ centroid: enough for codes to time, not for recall (a few seconds)
_TRAIN_PER_CENTROID = 16


def run(args) -> int:
    import time

    import numpy as np

    from pypatch import PatchIndex, ProductQuantizer, simd_info

    _check(args)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n_patches = args.images * args.patches
    print(f"{args.images} images x {args.patches} patches, dim {args.dim}, k {args.k}, "
          f"threads {args.threads or 'all'}, SIMD {simd_info().get('selected')}", flush=True)
    queries = _unit(rng, args.queries, args.dim)
    pq = PatchIndex(args.dim, pq=ProductQuantizer(args.dim, args.m, nbits=args.nbits))
    n_train = min(n_patches, _TRAIN_PER_CENTROID * max(256, args.nlist or 0))
    _say(f"training PQ m={args.m} nbits={args.nbits} on {n_train} vectors", t0)
    sample = _unit(rng, n_train, args.dim)
    pq.train(sample, num_threads=args.threads)
    code_bytes = args.patches * args.m * args.nbits // 8
    stores = [(f"pq {args.m}x{args.nbits}", pq, code_bytes + 8),
              ("flat float16", PatchIndex(args.dim, pq=None, flat_dtype="float16"),
               args.patches * args.dim * 2 + 8)]
    if args.nlist:  # the same codebooks, so its codes are the exhaustive store's codes
        ivf = PatchIndex(args.dim, pq=ProductQuantizer.from_centroids(pq.pq.centroids),
                         nlist=args.nlist)
        _say(f"training {args.nlist} coarse centroids", t0)
        ivf.train(sample, num_threads=args.threads)
        ivf.nprobe = args.nprobe
        # per patch: its code + a 4-byte id (image << bits | ordinal); per image: offset + removed flag
        stores.append((f"ivf{args.nlist} p{ivf.nprobe}", ivf, code_bytes + 4 * args.patches + 9))
    for start in range(0, args.images, _CHUNK_IMAGES):
        n = min(_CHUNK_IMAGES, args.images - start)
        _say(f"adding images {start + 1}-{start + n} of {args.images}", t0)
        x = _unit(rng, n * args.patches, args.dim)
        for _, index, _ in stores:
            index.add(x, patches_per_image=args.patches, num_threads=args.threads)
    print(f"{'store':<14} {'bytes/image':>11} {'1 query ms':>11} {'batch ms/query':>15} "
          f"{'patches/s (1 query)':>20}", flush=True)
    for name, index, bpi in stores:
        _say(f"timing {name}", t0)
        one = _time(lambda: index.search(queries[0], k=args.k, num_threads=args.threads), 7)
        # the single-query calls warmed the store up
        batch = _time(lambda: index.search(queries, k=args.k, num_threads=args.threads), 3,
                      warm_up=False)
        print(f"{name:<14} {bpi:>11} {1e3 * one:>11.3f} {1e3 * batch / len(queries):>15.3f} "
              f"{n_patches / one:>20.3g}", flush=True)
    if args.nlist:
        exact = pq.search(queries, k=args.k, num_threads=args.threads)[1]
        found = stores[-1][1].search(queries, k=args.k, num_threads=args.threads)[1]
        recall = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact, found)])
        print(f"ivf{args.nlist} p{args.nprobe}: recall@{args.k} of images vs the exhaustive "
              f"PQ scan {recall:.3f} (random vectors)", flush=True)
    _say("done", t0)
    print("full comparison vs faiss/numba: python benchmarks/bench_search.py (source checkout)")
    return 0

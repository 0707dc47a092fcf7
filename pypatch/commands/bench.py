"""``pypatch bench``: quick search-speed numbers of the native core on this machine.

Synthetic unit vectors grouped in images (no model involved), a PQ store and a flat store,
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
    p.add_argument("--queries", type=int, default=64, help="queries in the batch (default 64)")
    p.add_argument("--k", type=int, default=10, help="results per query")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _check(args) -> None:
    from pypatch.errors import InvalidArgumentError

    require_positive(args, "images", "patches", "dim", "m", "queries", "k", "threads")
    if args.dim % args.m:
        raise InvalidArgumentError(f"--m {args.m} must divide --dim {args.dim}")


def _unit(rng, n, d):
    import numpy as np

    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _time(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up."""
    import statistics
    import time

    fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def run(args) -> int:
    import numpy as np

    from pypatch import PatchIndex, ProductQuantizer, simd_info

    _check(args)
    rng = np.random.default_rng(args.seed)
    n_patches = args.images * args.patches
    print(f"{args.images} images x {args.patches} patches, dim {args.dim}, k {args.k}, "
          f"threads {args.threads or 'all'}, SIMD {simd_info().get('selected')}")
    x = _unit(rng, n_patches, args.dim)
    queries = _unit(rng, args.queries, args.dim)
    stores = []
    pq = PatchIndex(args.dim, pq=ProductQuantizer(args.dim, args.m, nbits=8))
    # a 64-points-per-centroid sample keeps training a few seconds (enough for timing)
    pq.train(x[rng.choice(n_patches, min(n_patches, 64 * 256), replace=False)])
    pq.add(x, patches_per_image=args.patches)
    stores.append((f"pq m={args.m}", pq, args.patches * args.m + 8))
    flat = PatchIndex(args.dim, pq=None, flat_dtype="float16")
    flat.add(x, patches_per_image=args.patches)
    stores.append(("flat float16", flat, args.patches * args.dim * 2 + 8))
    print(f"{'store':<14} {'bytes/image':>11} {'1 query ms':>11} {'batch ms/query':>15} "
          f"{'patches/s (1 query)':>20}")
    for name, index, bpi in stores:
        one = _time(lambda: index.search(queries[0], k=args.k, num_threads=args.threads), 7)
        batch = _time(lambda: index.search(queries, k=args.k, num_threads=args.threads), 3)
        print(f"{name:<14} {bpi:>11} {1e3 * one:>11.3f} {1e3 * batch / len(queries):>15.3f} "
              f"{n_patches / one:>20.3g}")
    print("full comparison vs faiss/numba: python benchmarks/bench_search.py (source checkout)")
    return 0

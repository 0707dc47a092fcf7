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
    pq = PatchIndex(args.dim, pq=ProductQuantizer(args.dim, args.m, nbits=8))
    n_train = min(n_patches, _TRAIN_PER_CENTROID * 256)
    _say(f"training PQ m={args.m} on {n_train} vectors", t0)
    pq.train(_unit(rng, n_train, args.dim), num_threads=args.threads)
    flat = PatchIndex(args.dim, pq=None, flat_dtype="float16")
    for start in range(0, args.images, _CHUNK_IMAGES):
        n = min(_CHUNK_IMAGES, args.images - start)
        _say(f"adding images {start + 1}-{start + n} of {args.images}", t0)
        x = _unit(rng, n * args.patches, args.dim)
        pq.add(x, patches_per_image=args.patches)
        flat.add(x, patches_per_image=args.patches)
    stores = [(f"pq m={args.m}", pq, args.patches * args.m + 8),
              ("flat float16", flat, args.patches * args.dim * 2 + 8)]
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
    _say("done", t0)
    print("full comparison vs faiss/numba: python benchmarks/bench_search.py (source checkout)")
    return 0

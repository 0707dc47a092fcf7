"""``pypatch make-benchmark OUT``: generate the offline benchmark with true boxes."""
from __future__ import annotations

from pypatch.commands.demo import SIZE_WORDS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "make-benchmark", help="generate the offline benchmark (real photos, pasted objects, true boxes)",
        description="Write a deterministic instance-retrieval benchmark (images + benchmark.json) built "
        "from photos bundled with scikit-image, scikit-learn and matplotlib. No network needed.")
    p.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    p.add_argument("--size", choices=tuple(SIZE_WORDS), default="small",
                   help=f"small: {SIZE_WORDS['small']} (tests, the demo); large: "
                        f"{SIZE_WORDS['large']} (benchmarks); xlarge: {SIZE_WORDS['xlarge']} "
                        f"(large's plan among more distractors). Default small")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pypatch.evaluation.benchgen import make_benchmark
    from pypatch.evaluation.datasets import load_generic

    path = make_benchmark(args.out, size=args.size, seed=args.seed)
    b = load_generic(path)
    npos = sum(len(v) for v in b.positives.values())
    print(f"wrote {path}: {len(b.queries)} queries, {len(b.database)} database images, {npos} positives")
    return 0

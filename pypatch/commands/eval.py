"""``pypatch eval DATASET --out DIR``: evaluate ranking configurations and write a report."""
from __future__ import annotations

from pypatch.commands._args import require_positive


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate configurations on a benchmark and write a report",
        description="Run each configuration (a registered ranking function) on every query of DATASET and "
        "write results.md, results.json, plots and index.html into --out. DATASET is a benchmark.json "
        "(or its folder), a revisitop folder (gnd_*.pkl + jpg/), an ILIAS folder (image_ids/) or an "
        "INSTRE folder (gnd_instre.mat).")
    p.add_argument("dataset", metavar="DATASET_DIR_OR_JSON")
    p.add_argument("--out", required=True, help="report folder (created if missing)")
    p.add_argument("--config", action="append", metavar="NAME",
                   help="configuration to run (repeatable; default: hist-global and hist-grid). "
                   "--list-configs shows the registered names")
    p.add_argument("--k", type=int, default=100, help="results per query (default 100; ILIAS uses 1000)")
    p.add_argument("--format", default="auto", choices=("auto", "generic", "revisitop", "ilias", "instre"))
    p.add_argument("--protocol", default="medium", help="revisitop protocol: easy, medium or hard (default medium)")
    p.add_argument("--examples", type=int, default=8, help="queries shown in index.html (default 8)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first; it may call pypatch.evaluation.register_ranker (repeatable)")
    p.add_argument("--list-configs", action="store_true", help="print the registered configurations and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from pypatch.evaluation.datasets import load
    from pypatch.errors import InvalidArgumentError
    from pypatch.evaluation.harness import available_rankers, evaluate, load_plugins, make_ranker
    from pypatch.evaluation.report import write_report

    # imports pypatch.evaluation.rankers (the ImageIndex configurations "global", "patchify-L3-pq32",
    # ...; skipped if the native core is not built) and any --plugin modules
    load_plugins(args.plugin)

    if args.list_configs:
        print("\n".join(available_rankers()))
        return 0
    require_positive(args, "k")
    names = args.config or ["hist-global", "hist-grid"]
    for name in names:  # fail before any work on a typo
        if name not in available_rankers():
            raise InvalidArgumentError(f"unknown configuration {name!r}; available: {', '.join(available_rankers())}")
    bench = load(args.dataset, format=args.format, protocol=args.protocol)
    rankers = {name: make_ranker(name, bench) for name in names}
    results = evaluate(bench, rankers, k=args.k)
    paths = write_report(results, args.out, examples=args.examples)
    for name, c in results.configs.items():
        s = c.summary
        loc = "n/a" if s["n_queries_locscore"] == 0 else f"{100 * s['locscore']:.2f}"
        print(f"{name}: mAP {100 * s['map']:.2f}  mAP@{args.k} {100 * s['map_at_k']:.2f}  LocScore {loc}")
    print(f"report: {paths['markdown']}, {paths['html']}")
    return 0

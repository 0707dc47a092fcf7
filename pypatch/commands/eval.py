"""``pypatch eval DATASET --out DIR``: evaluate ranking configurations and write a report."""
from __future__ import annotations

from pypatch.commands._args import require_positive

# pypatch.evaluation.rankers.DEFAULT_CONFIGS, repeated here so that --help stays fast
DEFAULT_CONFIGS = ("global", "patchify-L3s-pq32", "patchify-L3s-flat", "patchify-L3-pq32",
                   "patchify-L3-flat")
BASELINES = ("hist-global", "hist-grid", "oracle")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate configurations on a benchmark and write a report",
        description="Run each configuration (a registered ranking function) on every query of DATASET and "
        "write results.md, results.json, plots and index.html into --out. DATASET is a benchmark.json "
        "(or its folder), a revisitop folder (gnd_*.pkl + jpg/), an ILIAS folder (image_ids/) or an "
        "INSTRE folder (gnd_instre.mat).")
    p.add_argument("dataset", metavar="DATASET_DIR_OR_JSON", nargs="?",
                   help="the benchmark (not needed with --list-configs)")
    p.add_argument("--out", help="report folder (created if missing; required unless --list-configs)")
    p.add_argument("--config", action="extend", nargs="+", metavar="NAME",
                   help=f"configuration(s) to run: one or more names, and --config may be repeated "
                   f"(default: {' '.join(DEFAULT_CONFIGS)}). Baselines that need no model: "
                   f"{', '.join(BASELINES)}. --list-configs describes every name")
    p.add_argument("--k", type=int, default=100, help="results per query (default 100; ILIAS uses 1000)")
    p.add_argument("--format", default="auto", choices=("auto", "generic", "revisitop", "ilias", "instre"))
    p.add_argument("--protocol", default="medium", help="revisitop protocol: easy, medium or hard (default medium)")
    p.add_argument("--examples", type=int, default=None, metavar="N",
                   help="queries shown with their results in index.html (default: all, up to 50)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first; it may call pypatch.evaluation.register_ranker (repeatable)")
    p.add_argument("--list-configs", action="store_true",
                   help="print every registered configuration with a short description and exit")
    p.set_defaults(func=run)


def selected_configs(args) -> list:
    """The configuration names to run: --config's, else :data:`DEFAULT_CONFIGS`."""
    return list(dict.fromkeys(args.config)) if args.config else list(DEFAULT_CONFIGS)


def list_configs() -> str:
    from pypatch.evaluation.harness import available_rankers, describe_ranker

    names = available_rankers()
    width = max(len(n) for n in names)
    lines = [f"{name:<{width}}  {describe_ranker(name)}"
             + ("  [default]" if name in DEFAULT_CONFIGS else "") for name in names]
    return "\n".join(lines)


def run(args) -> int:
    import os

    from pypatch.evaluation.datasets import load
    from pypatch.errors import InvalidArgumentError
    from pypatch.evaluation.harness import available_rankers, evaluate, load_plugins, make_ranker
    from pypatch.evaluation.report import write_report

    # imports pypatch.evaluation.rankers (the ImageIndex configurations "global", "patchify-L3-pq32",
    # ...; skipped if the native core is not built) and any --plugin modules
    load_plugins(args.plugin)

    if args.list_configs:
        print(list_configs())
        return 0
    names = selected_configs(args)
    if args.dataset is None:
        hint = (f" ('{args.config[-1]}' was read as a --config name: put DATASET before --config)"
                if args.config and os.path.exists(args.config[-1]) else "")
        raise InvalidArgumentError(f"DATASET_DIR_OR_JSON is required{hint}")
    if args.out is None:
        raise InvalidArgumentError("--out DIR is required (the report folder)")
    require_positive(args, "k")
    if args.examples is not None and args.examples < 0:
        raise InvalidArgumentError(f"--examples: expected 0 or more, got {args.examples}")
    for name in names:  # fail before any work on a typo
        if name not in available_rankers():
            raise InvalidArgumentError(f"unknown configuration {name!r} (see pypatch eval --list-configs)")
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

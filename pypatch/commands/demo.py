"""``pypatch demo [--out DIR]``: the whole method on a fresh machine, offline, in a few minutes.

Makes the default model if missing, generates the small offline benchmark (real photos with
pasted objects and their true boxes), indexes its database as a global baseline (one
whole-image descriptor per image) and with Patchify (the paper's L3 grid pyramid and the
default L3s grid, which adds 9 half-shifted cells; PQ and flat each),
runs its queries, prints mAP and LocScore side by side (for the PQ index also with its boxes
refined beyond the grid cell), saves the Patchify index for ``pypatch search`` and writes the
HTML report with the winning boxes drawn.
"""
from __future__ import annotations

from pypatch.commands._args import require_positive
from pypatch.extract.modes import MODES

# the defaults before the paper's L3: L3's cells are the first 30 of L3s's, so they are embedded once
CONFIGS = ("global", "patchify-L3s-pq32", "patchify-L3s-flat", "patchify-L3-pq32", "patchify-L3-flat")
# pypatch.evaluation.benchgen.SIZES in words (one text for demo and make-benchmark; a test
# checks it against the generator; not imported here so that --help stays fast)
SIZE_WORDS = {"small": "12 queries + 100 database images",
              "large": "80 queries + 1,000 database images",
              "xlarge": "80 queries + 5,000 database images"}
# evaluated again on the same index with each hit's box refined (same ranking, sharper boxes)
REFINED = "patchify-L3s-pq32"  # ImageIndex.build's defaults; saved for `pypatch search`


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="index the offline benchmark and compare global vs Patchify",
        description="Generate the small offline benchmark, index it, evaluate global vs "
                    "Patchify retrieval (mAP, LocScore) and write an HTML report.")
    p.add_argument("--out", default="pypatch-demo", metavar="DIR",
                   help="output folder (default: ./pypatch-demo)")
    p.add_argument("--size", choices=tuple(SIZE_WORDS), default="small",
                   help=f"benchmark size (small: {SIZE_WORDS['small']}, about a minute; "
                        f"large: {SIZE_WORDS['large']}; xlarge: {SIZE_WORDS['xlarge']})")
    p.add_argument("--seed", type=int, default=0, help="benchmark seed")
    p.add_argument("--mode", choices=MODES, default="crop",
                   help="patch extraction (crop: the paper's per-cell crops)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="threads")
    p.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from pypatch.evaluation import harness, rankers as configs, report
    from pypatch.evaluation.benchgen import make_benchmark
    from pypatch.evaluation.datasets.benchmark import load_generic
    from pypatch.errors import InvalidArgumentError
    from pypatch.models import resolve_model

    require_positive(args, "threads")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {out} exists and is not a folder")
    t0 = time.perf_counter()
    _say("model", "resolving the default model (exported on first use)")
    model = resolve_model(None)
    _say("model", str(model))

    bench_json = out / f"benchmark-{args.size}-s{args.seed}" / "benchmark.json"
    if not bench_json.exists():
        _say("benchmark", f"generating the {args.size} offline benchmark in {bench_json.parent}")
        bench_json = make_benchmark(bench_json.parent, size=args.size, seed=args.seed)
    benchmark = load_generic(bench_json)
    _say("benchmark", f"{len(benchmark.queries)} queries, {len(benchmark.database)} "
                      f"database images")

    suffix = {"crop": "", "single_pass": "-sp", "multi_scale": "-ms"}[args.mode]
    rankers = {}
    for config in CONFIGS:
        name = config + suffix if config.startswith("patchify") else config
        start = time.perf_counter()
        index = configs.build_for_benchmark(benchmark, name, model=str(model),
                                                 num_threads=args.threads, progress=True)
        rankers[name] = configs.IndexRanker(index, description=name)
        if config == REFINED:
            refined = configs.split_second_stage(name + "-refine")[1]
            rankers[name + "-refine"] = configs.IndexRanker(
                index, description=f"{name}, boxes refined", search_kwargs=refined)
        _say("index", f"{name}: {len(index)} images, {index.info()['bytes_per_image']:.0f} "
                      f"bytes/image, {time.perf_counter() - start:.1f} s")
        if config == REFINED:
            index.save(out / "patchify.ptch")

    results = harness.evaluate(benchmark, rankers, k=100)
    paths = report.write_report(results, out / "report")
    print()
    print(_table(results))
    print()
    print(f"report:  {Path(paths['html']).resolve()}")
    print(f"tables:  {Path(paths['markdown']).resolve()}")
    print(f"index:   {(out / 'patchify.ptch').resolve()}  (try: pypatch search "
          f"{out / 'patchify.ptch'} {benchmark.queries[0].image} --k 5)")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def _say(stage: str, text: str) -> None:
    print(f"[{stage}] {text}", flush=True)


def _pct(value) -> str:
    return "   n/a" if value is None or value != value else f"{100 * value:6.2f}"


def _table(results) -> str:
    small = "3-10%"
    w = max([24] + [len(name) for name in results.configs])  # e.g. patchify-L3-pq32-ms-refine
    lines = [f"{'configuration':<{w}} {'mAP':>6} {'LocScore':>8} {'mAP obj ' + small:>14} "
             f"{'recall@1':>8} {'bytes/img':>10}",
             "-" * (w + 52)]
    for name, c in results.configs.items():
        s = c.summary
        obj = c.size_breakdown.get(small, {}).get("map")
        bpi = "" if c.bytes_per_image is None else f"{c.bytes_per_image:10.0f}"
        lines.append(f"{name:<{w}} {_pct(s.get('map'))} {_pct(s.get('locscore')):>8} "
                     f"{_pct(obj):>14} {_pct(s.get('recall@1')):>8} {bpi}")
    lines.append("(mAP, LocScore and recall in %; 'obj 3-10%': queries whose objects cover "
                 "3-10 % of the image)")
    return "\n".join(lines)

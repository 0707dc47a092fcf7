"""``pypatch index SOURCE --out INDEX``: embed a folder (or list) of images into one index file."""
from __future__ import annotations

import argparse
import re

from pypatch.commands._args import require_positive
from pypatch.extract.modes import MODES

# pypatch.extract.grid.DEFAULT_REGIONS, repeated so that --help does not import numpy (a test
# checks that they agree)
DEFAULT_REGIONS = "L3s"


CODEBOOKS = ("auto", "residual", "product")


def parse_pq(text: str) -> dict:
    """``"m=32,nbits=8,codebooks=auto"`` (every key optional) -> {"m": 32, "nbits": 8,
    "codebooks": "auto"}."""
    out = {"m": 32, "nbits": 8, "codebooks": "auto"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep and key.isdigit():  # "--pq 16" means m=16
            key, value = "m", key
        value = value.strip()
        if key == "codebooks" and value in CODEBOOKS:
            out[key] = value
            continue
        if key not in ("m", "nbits") or not value.isdigit():
            raise argparse.ArgumentTypeError(
                f"expected m=M,nbits=B with integers and codebooks=auto|residual|product "
                f"(e.g. m=32,nbits=8), got {text!r}")
        out[key] = int(value)
    return out


def parse_ivf(text: str) -> dict:
    """``"nlist=auto,nprobe=16"`` (either key optional) -> {"nlist": "auto", "nprobe": 16}."""
    out = {"nlist": "auto", "nprobe": None}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        value = value.strip()
        ok = key in out and (value.isdigit() and int(value) > 0 or (key == "nlist" and value == "auto"))
        if not sep or not ok:
            raise argparse.ArgumentTypeError(
                f"expected nlist=N|auto,nprobe=P with positive integers (e.g. nlist=auto,nprobe=16), "
                f"got {text!r}")
        out[key] = value if value == "auto" else int(value)
    return out


def parse_pca_dim(text: str):
    """``"auto"`` -> "auto", ``"none"`` -> None, ``"256"`` -> 256 (ImageIndex.build's pca_dim)."""
    low = text.strip().lower()
    if low in ("auto", "none"):
        return None if low == "none" else "auto"
    if low.isdigit() and int(low) > 0:
        return int(low)
    raise argparse.ArgumentTypeError(f"expected a positive integer, 'auto' or 'none', got {text!r}")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "index", help="build an index from a folder of images",
        description="Embed every image of SOURCE patch by patch and write one index file.")
    p.add_argument("source", metavar="SOURCE",
                   help="folder of images (walked recursively), a single image, or a text "
                        "file with one image path per line (.txt)")
    p.add_argument("--out", "-o", required=True, metavar="INDEX", help="index file to write")
    p.add_argument("--model", default=None,
                   help="ONNX file or registered model name (default: efficientnet_lite0)")
    p.add_argument("--regions", default=DEFAULT_REGIONS,
                   help="region strategy: L0 (global), L1, L2, L3 (the paper's pyramid, 30 cells), "
                        "L3s (default: L3 + 9 half-shifted cells, 39), L4 (55 cells, finer: small "
                        "objects), rmac, rmacN, sliding")
    store = p.add_mutually_exclusive_group()
    store.add_argument("--pq", type=parse_pq, default=None, metavar="m=32,nbits=8,codebooks=auto",
                       help="quantised store (the default: m=32 bytes a patch, nbits=8); "
                            "codebooks: residual, product, or auto (residual wherever the "
                            "automatic whitened PCA of a per-crop store applies, product "
                            "otherwise)")
    store.add_argument("--flat", action="store_true", help="exact float32 store (no compression)")
    store.add_argument("--flat16", action="store_true", help="exact float16 store")
    p.add_argument("--ivf", type=parse_ivf, nargs="?", default=None,
                   const={"nlist": "auto", "nprobe": None},
                   metavar="nlist=auto,nprobe=16",
                   help="PQ stores: an inverted file over the patches; a search probes nprobe "
                        "(default 16) of nlist lists; nlist=auto (default): exhaustive below "
                        "3M patches (~77k images at L3s), about 4*sqrt(patches) lists above")
    p.add_argument("--rerank-store", choices=("flat16", "flat", "pq8", "pq8-d4"), default=None,
                   help="PQ stores: also keep each patch's vector in a second, exhaustive store "
                        "(<INDEX>.rerank.ptch) that re-scores a search's top candidates exactly "
                        "over all their patches: flat16 (float16, 512 B a patch at 256 dims), "
                        "flat (float32), pq8 (8-bit PQ codes, m B a patch) or pq8-d4 (8-bit "
                        "PQ over 4-dim sub-vectors, dim/4 B a patch); for --pq nbits=4 --ivf "
                        "speed at 8-bit or float quality, and for large collections")
    p.add_argument("--box-maps", type=int, nargs="?", const=True, default=None, metavar="DIM",
                   help="keep a small similarity map of every image (<INDEX>.boxmaps.npz, about "
                        "196 x (DIM + 2) bytes an image; DIM default 128) so that refined boxes "
                        "(pypatch search/serve) need no backbone pass per hit: ~1 ms instead of "
                        "~100 ms. Per-crop pyramids only (L1..L4, L3s)")
    p.add_argument("--mode", choices=MODES, default="crop",
                   help="crop: embed each cell (the paper); single_pass: pool cells from one "
                        "feature map per image (8x faster, less accurate); multi_scale: from "
                        "three (2.2-2.4x faster, closer to crop)")
    p.add_argument("--train-on", choices=("patches", "global"), default="patches",
                   help="PQ codebooks trained on patch descriptors (default) or whole-image ones")
    p.add_argument("--train-size", type=int, default=65536, metavar="N",
                   help="at most N training vectors for the PQ codebooks (and the PCA)")
    p.add_argument("--pca-dim", type=parse_pca_dim, default="auto", metavar="N|auto|none",
                   help="project patches and queries onto N principal axes learned on the "
                        "training sample before storing them; auto (default): every store gets "
                        "256 whitened axes when the model's dimension is larger, (PQ) m divides "
                        "256 and the sample holds >= 2048 vectors, and per-crop flat stores 512 "
                        "from 8192 vectors; none: store the model's descriptors (an exact flat "
                        "store)")
    p.add_argument("--pca-power", type=float, default=None, metavar="P",
                   help="eigenvalue power of the PCA, in [-1, 0]: 0 = rotation only, "
                        "-0.5 = full whitening (default per-crop; -0.25 for the single-pass modes)")
    p.add_argument("--opq", choices=("auto", "none"), default="auto",
                   help="auto (default): PQ stores with a PCA also learn an OPQ rotation "
                        "(better recall, longer training); none: PCA only")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for the model and the search core (default: all cores; with "
                        "--ray: threads per embedding worker, default 1)")
    p.add_argument("--shards", type=int, default=None, metavar="N",
                   help="write a sharded index: --out is a folder of N shard files and a "
                        "manifest.json, searched as one index (same results)")
    p.add_argument("--ray", action="store_true",
                   help="build on a Ray cluster (pip install 'pypatch[ray]'): embedding by a "
                        "pool of workers, shards written in parallel; a rerun resumes")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join (default: start a local one)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --ray: embedding workers (default: the cluster's CPUs / threads)")
    p.set_defaults(func=run)


def read_path_list(path: str) -> list:
    from pathlib import Path

    base = Path(path).parent
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [str(base / line.strip()) for line in lines if line.strip() and not line.startswith("#")]


def check_out_file(out: str) -> None:
    """Fail before any embedding when the index file cannot be written there."""
    import os

    from pypatch.errors import InvalidArgumentError

    if os.path.isdir(out):
        raise InvalidArgumentError(f"--out {out}: is a folder; give the index file to write "
                                   f"(e.g. {os.path.join(out, 'index.ptch')})")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise InvalidArgumentError(f"--out {out}: folder {os.path.dirname(out) or parent} does not "
                                   f"exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise InvalidArgumentError(f"--out {out}: folder {parent} is not writable")


# Embeddings of a first attempt are kept (for a retry with the flat store) up to this many
# bytes: a collection too small for PQ is far below it (under 256 vectors x 5 KB).
_RETRY_CACHE_BYTES = 256 << 20


def _bounded_cache(embedder):
    """The embedder behind a cache of patch descriptors that gives up past _RETRY_CACHE_BYTES,
    so that the flat-store retry of a too-small collection does not embed it again."""
    from pypatch.evaluation.rankers import CachingEmbedder

    class BoundedCache(CachingEmbedder):
        def __init__(self, inner):
            super().__init__(inner)
            self.bytes, self.full = 0, False

        def store(self, image, grid, mode, emb) -> None:
            if self.full:
                return
            self.bytes += emb.vectors.nbytes
            if self.bytes > _RETRY_CACHE_BYTES:
                self.full = True
                self._patches.clear()
                return
            super().store(image, grid, mode, emb)

    return BoundedCache(embedder)


def flag_message(exc, args) -> str:
    """A TooFewVectorsError's advice in the CLI's flags instead of build()'s argument names."""
    if exc.what == "ivf":
        return (f"--ivf nlist={exc.needed} needs at least {exc.needed} training vectors; "
                f"{args.source} gave {exc.got}: add images, raise --train-size or lower nlist")
    if exc.what == "rerank":
        return (f"--rerank-store {args.rerank_store} needs at least {exc.needed} training "
                f"vectors to learn its {exc.needed} centroids; {args.source} gave {exc.got}: add "
                f"images or use --rerank-store flat16")
    if exc.what == "pq":
        return (f"the PQ store needs at least {exc.needed} training vectors to learn its "
                f"{exc.needed} centroids; {args.source} gave {exc.got} (--train-on "
                f"{args.train_on}, --regions {args.regions}): add images, use --regions with more "
                f"cells, --pq m=M,nbits=4, or --flat")
    return (f"--pca-dim needs at least {exc.needed} training vectors; {args.source} gave "
            f"{exc.got}: add images or use --pca-dim none")


# ImageIndex.build's argument names -> this command's flags, for messages that reach the user
_FLAGS = {"pq_m": "--pq m", "pq_nbits": "--pq nbits", "pq_codebooks": "--pq codebooks",
          "pca_dim": "--pca-dim",
          "pca_power": "--pca-power", "train_size": "--train-size", "train_on": "--train-on",
          "num_threads": "--threads", "opq": "--opq", "nlist": "--ivf nlist",
          "nprobe": "--ivf nprobe", "rerank_store": "--rerank-store", "rerank_k": "--rerank-k",
          "box_maps": "--box-maps"}
_PYTHON_NAME = re.compile(r"\b(" + "|".join(_FLAGS) + r")\b(?!\()")


def flag_names(message: str) -> str:
    """``"pq_m must divide ..."`` -> ``"--pq m must divide ..."`` (also ``regions:`` at the start)."""
    message = _PYTHON_NAME.sub(lambda m: _FLAGS[m.group(1)], message)
    return "--regions" + message[len("regions"):] if message.startswith("regions:") else message


def run(args) -> int:
    import os
    import time

    from pypatch.errors import InvalidArgumentError, TooFewVectorsError
    from pypatch.index.model_record import new_embedder

    require_positive(args, "threads", "shards", "workers", "box_maps")
    if (args.ray_address or args.workers) and not args.ray:
        raise InvalidArgumentError("--ray-address and --workers need --ray")
    sharded = bool(args.shards or args.ray)  # --out is then a folder
    if args.ray and args.box_maps is not None:
        raise InvalidArgumentError("--box-maps is not supported with --ray yet (it is with "
                                   "--shards)")
    if not sharded:
        check_out_file(args.out)
    source = args.source
    if os.path.isfile(source) and source.lower().endswith(".txt"):
        source = read_path_list(source)
    if args.flat or args.flat16:
        store, pq = ("flat16" if args.flat16 else "flat"), parse_pq("")
    else:
        store, pq = "pq", args.pq or parse_pq("")
    start = time.perf_counter()
    settings = dict(model=args.model, regions=args.regions, mode=args.mode,
                    train_on=args.train_on, train_size=args.train_size,
                    pca_power="auto" if args.pca_power is None else args.pca_power,
                    opq=False if args.opq == "none" else "auto",
                    rerank_store=args.rerank_store,
                    **(args.ivf or {"nlist": None, "nprobe": None}))
    try:
        if sharded:
            index = _build_sharded(args, source, store, pq, settings)
            return _report(args, index, start)
        embedder = _bounded_cache(new_embedder(args.model, args.threads))
        return _build_and_save(args, source, store, pq, settings, embedder, start)
    except TooFewVectorsError:
        raise
    except InvalidArgumentError as exc:  # build()'s checks name its Python arguments
        raise InvalidArgumentError(flag_names(str(exc))) from None


def _build_sharded(args, source, store, pq, settings):
    """--shards N (one process) or --ray (a Ray cluster): a sharded index folder at --out."""
    settings = dict(settings, store=store, pq_m=pq["m"], pq_nbits=pq["nbits"],
                    pq_codebooks=pq["codebooks"], pca_dim=args.pca_dim)
    if args.ray:
        from pypatch.distributed.ray_build import build_sharded_ray

        return build_sharded_ray(source, args.out, shards=args.shards or 1,
                                 ray_address=args.ray_address, workers=args.workers,
                                 threads_per_worker=args.threads or 1, **settings)
    from pypatch.distributed.sharded_index import ShardedIndex

    return ShardedIndex.build(source, args.out, shards=args.shards, num_threads=args.threads,
                              progress=True, box_maps=args.box_maps, **settings)


def _build_and_save(args, source, store, pq, settings, embedder, start) -> int:
    import sys

    from pypatch.errors import TooFewVectorsError
    from pypatch.index.image_index import ImageIndex

    settings = dict(settings, num_threads=args.threads, progress=True, box_maps=args.box_maps)
    try:
        index = ImageIndex.build(source, store=store, pq_m=pq["m"], pq_nbits=pq["nbits"],
                                 pq_codebooks=pq["codebooks"],
                                 pca_dim=args.pca_dim, embedder=embedder, **settings)
    except TooFewVectorsError as exc:
        explicit = args.flat or args.flat16 or args.pq is not None
        if explicit or store != "pq" or exc.what == "rerank":
            raise TooFewVectorsError(flag_message(exc, args), what=exc.what,
                                     needed=exc.needed, got=exc.got) from None
        # The default store on a tiny collection: the exact flat store needs no training.
        # An explicit PCA is kept when the sample holds more vectors than its axes; the
        # automatic one (whitened PCA-256 from 2048 vectors) never is, here.
        pca_dim = args.pca_dim if isinstance(args.pca_dim, int) and exc.got > args.pca_dim else None
        pca_note = f", PCA to {pca_dim} dims" if pca_dim else ""
        print(f"pypatch index: {exc.got} training vectors are too few for the default PQ store "
              f"(its {exc.needed} centroids need {exc.needed}): using --flat (exact float32"
              f"{pca_note}) instead", file=sys.stderr)
        settings.update(nlist=None, nprobe=None, rerank_store=None)  # both are for PQ stores
        index = ImageIndex.build(source, store="flat", pca_dim=pca_dim, embedder=embedder,
                                 **settings)
    index.save(args.out)
    return _report(args, index, start)


def _report(args, index, start) -> int:
    import sys
    import time

    seconds = time.perf_counter() - start
    info = index.info()
    print(f"indexed {info['images']} images ({info['patches']} patches, "
          f"{info['bytes_per_image']:.0f} bytes/image) in {seconds:.1f} s -> {args.out}")
    for where, reason in index.skipped:
        print(f"skipped {where}: {reason}", file=sys.stderr)
    return 0

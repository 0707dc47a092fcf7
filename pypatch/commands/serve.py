"""``pypatch serve INDEX``: the search service over HTTP (needs ``pip install "pypatch[serve]"``).

Endpoints (README, "Serving"): ``POST /search`` (an image: multipart or JSON), ``POST
/search/vectors``, ``GET /info``, ``GET /healthz``, ``GET /metrics``, ``POST /admin/reload``
(or SIGHUP). Concurrent queries are gathered into batched calls (``--max-batch``,
``--max-wait-ms``); a full queue answers 503 at once. A sharded index folder is searched in
this process, or with ``--ray`` by one Ray actor per shard (``pip install "pypatch[ray]"``;
Ray is imported only then).
"""
from __future__ import annotations

from pypatch.commands._args import require_positive


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve an index over HTTP (micro-batched search)",
        description="Serve an index over HTTP: /search (images), /search/vectors, /info, "
                    "/healthz, /metrics, /admin/reload. Needs the serve extra.")
    p.add_argument("index", metavar="INDEX",
                   help="index file (`pypatch index`), sharded index folder (`--shards`), or a "
                        "bare PatchIndex file (vectors only)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads of the native scan and of the model (default: the cores)")
    p.add_argument("--max-batch", type=int, default=64, metavar="N",
                   help="queries gathered into one batched call (default 64; 1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, metavar="MS",
                   help="how long a batch waits for more queries after its first (default 2)")
    p.add_argument("--onnx-batch", type=int, default=1, metavar="N",
                   help="query images per model run inside a batch (default 1: measured faster "
                        "per image on small CPUs; the scan is batched whatever this is)")
    p.add_argument("--max-queue", type=int, default=1024, metavar="N",
                   help="queries allowed to wait; beyond, 503 at once (default 1024)")
    p.add_argument("--allow-paths", default=None, metavar="DIR",
                   help="let JSON requests name an image file (image_path) under DIR")
    p.add_argument("--api-key-file", default=None, metavar="F",
                   help="require the key in F (X-API-Key or Authorization: Bearer); /healthz "
                        "stays open")
    p.add_argument("--max-body-mb", type=float, default=20.0, metavar="MB",
                   help="largest request body (default 20)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="largest decoded query image in pixels (default 25000000)")
    p.add_argument("--timeout-s", type=float, default=30.0, metavar="S",
                   help="answer 504 to a request not done in S seconds (default 30)")
    p.add_argument("--ray", action="store_true",
                   help="INDEX is a sharded folder: search it with one Ray actor per shard "
                        "(needs the ray extra); same endpoints and answers")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --ray: the Ray cluster to join (default: start a local one)")
    p.add_argument("--ray-timeout-s", type=float, default=20.0, metavar="S",
                   help="with --ray: how long a query waits for a shard actor (e.g. one "
                        "restarting) before it fails whole with 503 (default 20)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from pypatch.errors import InvalidArgumentError, PypatchError

    require_positive(args, "threads", "max_batch", "max_queue", "onnx_batch")
    try:
        import starlette  # noqa: F401
        import uvicorn
        from pypatch.serve.app import create_app
    except ModuleNotFoundError as exc:
        raise PypatchError(f"needs {exc.name}: install the serve extra "
                           f"(pip install \"pypatch[serve]\")") from None
    from pypatch.serve.settings import DEFAULT_MAX_PIXELS, Settings, allowed_root, read_api_key

    if not args.max_body_mb > 0:
        raise InvalidArgumentError(f"--max-body-mb: expected a positive number, got {args.max_body_mb}")
    settings = Settings(
        index=args.index, host=args.host, port=args.port, threads=args.threads,
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        onnx_batch=args.onnx_batch,
        allow_paths=None if args.allow_paths is None else allowed_root(args.allow_paths),
        api_key=None if args.api_key_file is None else read_api_key(args.api_key_file),
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
        timeout_s=args.timeout_s, ray=bool(args.ray), ray_address=args.ray_address,
        ray_timeout_s=args.ray_timeout_s)
    app = create_app(settings)
    engine = app.server.engine
    kind = "images" if engine.has_model else "images (bare PatchIndex: /search/vectors only)"
    if settings.ray:
        kind += f" ({len(engine.index.actors)} Ray shard actors)"
    print(f"pypatch serve: {settings.index}: {engine.images} {kind}; "
          f"http://{settings.host}:{settings.port} (max batch {settings.max_batch}, "
          f"max wait {settings.max_wait_ms:g} ms)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on",
                            access_log=bool(args.access_log), log_level="warning",
                            timeout_graceful_shutdown=10)
    uvicorn.Server(config).run()
    return 0

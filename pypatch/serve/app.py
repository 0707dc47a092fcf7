"""The Starlette application of ``pypatch serve``: routes, the two micro-batchers, reload.

Why Starlette on uvicorn: both are small, maintained and widely deployed; Starlette alone gives
routing, form parsing and responses without FastAPI's validation layer, which would cost
per-request time for schemas we check ourselves anyway (:mod:`pypatch.serve.parsing`).

Where the work runs: the event loop only parses, queues and answers. Decoding a query image,
the batched backbone run and the native scan run in each batcher's own thread, and box
refinement in one refine thread (its feature-map cache is not shared between threads), so a
refining request never holds up a batch.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from pypatch.serve.batcher import MicroBatcher, Overloaded
from pypatch.serve.engine import Engine, ImageQuery
from pypatch.serve.guard import ApiError, Guard, error_status, json_error
from pypatch.serve.metrics import ServerMetrics
from pypatch.serve.settings import Settings

log = logging.getLogger("pypatch.serve")

ENDPOINTS = ("/search", "/search/vectors", "/info", "/healthz", "/metrics", "/admin/reload")


class Server:
    """The state behind the routes: the current engine, the batchers, the metrics."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = self._open()
        self.metrics = ServerMetrics(self._depths, lambda: {(): self.engine.images})
        wait = settings.max_wait_ms / 1000.0
        common = dict(max_batch=settings.max_batch, max_wait_s=wait, max_queue=settings.max_queue)
        self.images = MicroBatcher("image", self._run_images, on_batch=self._batch_seen("image"),
                                   **common)
        self.vectors = MicroBatcher("vector", self._run_vectors,
                                    on_batch=self._batch_seen("vector"), **common)
        self._refiner = ThreadPoolExecutor(1, thread_name_prefix="pypatch-refine")
        self._reload_lock: Optional[asyncio.Lock] = None
        self.started = time.time()

    def _open(self, previous: Optional[Engine] = None) -> Engine:
        s = self.settings
        return Engine(s.index, threads=s.threads, max_pixels=s.max_pixels,
                      onnx_batch=s.onnx_batch, previous=previous, ray=s.ray,
                      ray_address=s.ray_address, ray_timeout_s=s.ray_timeout_s)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._reload_lock = asyncio.Lock()
        self.images.start()
        self.vectors.start()
        loop = asyncio.get_running_loop()
        try:  # SIGHUP reloads, as daemons do; the main thread only (not in tests' threads)
            loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass

    async def stop(self) -> None:
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass
        await self.images.stop()
        await self.vectors.stop()
        self._refiner.shutdown(wait=True)
        self.engine.close()

    def _depths(self) -> dict:
        return {("image",): self.images.depth, ("vector",): self.vectors.depth}

    def _batch_seen(self, kind: str):
        def seen(size: int, seconds: float) -> None:
            self.metrics.batch_size.observe(size, kind)
            self.metrics.batch_seconds.observe(seconds, kind)
        return seen

    # ------------------------------------------------------------------ batched work
    @staticmethod
    def _run_images(engine: Engine, queries: list) -> list:
        return engine.search_images(queries)

    @staticmethod
    def _run_vectors(engine: Engine, requests: list) -> list:
        return engine.search_vectors(requests)

    def _submit(self, batcher: MicroBatcher, item, engine: Engine, rows: int = 1):
        try:
            return batcher.submit(item, group=engine, rows=rows)
        except Overloaded as exc:
            self.metrics.rejected.inc(batcher.name)
            raise ApiError(503, f"server busy: {exc}; retry later", {"Retry-After": "1"}) from None

    async def search(self, request):
        from functools import partial

        from starlette.responses import JSONResponse

        from pypatch.index.results import hit_json
        from pypatch.serve.parsing import parse_search, read_allowed

        engine = self.engine
        if not engine.has_model:
            raise ApiError(400, "this index has no model (a bare PatchIndex): use /search/vectors")
        req = await parse_search(request, self.settings)
        image = req.image if isinstance(req.image, bytes) else \
            partial(read_allowed, req.image, self.settings)  # read in the batch's thread
        descriptor, hits = await self._submit(
            self.images, ImageQuery(image, req.box, req.k, req.refine), engine)
        if req.refine is not None and hits:
            t0 = time.perf_counter()
            hits = await asyncio.get_running_loop().run_in_executor(
                self._refiner, engine.refine, hits, descriptor, req.refine)
            self.metrics.refine_seconds.observe(time.perf_counter() - t0, req.refine)
        return JSONResponse({"query": req.label, "hits": [hit_json(h) for h in hits]})

    async def search_vectors(self, request):
        from starlette.responses import JSONResponse

        from pypatch.serve.parsing import parse_vectors

        vectors, k = await parse_vectors(request, self.settings)
        engine = self.engine
        v = engine.check_vectors(vectors)
        rows = await self._submit(self.vectors, (v, k), engine, rows=len(v))
        return JSONResponse({"results": [{"hits": hits} for hits in rows]})

    # ------------------------------------------------------------------ the rest
    async def info(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse(self.engine.info())

    async def healthz(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "images": self.engine.images,
                             "model": self.engine.has_model})

    async def metrics_text(self, request):
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(self.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def reload(self) -> dict:
        """Open the index file again and swap it in. Queries already queued keep the engine
        they were checked against, so none fails; a file that does not load leaves the current
        index in service (409)."""
        async with self._reload_lock:
            old = self.engine
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(None, lambda: self._open(previous=old))
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old index serving
                self.metrics.reloads.inc("failed")
                status, message = error_status(exc)
                if status >= 500:
                    log.error("reload failed", exc_info=exc)
                    message = f"{type(exc).__name__}: {exc}"
                raise ApiError(409, f"reload failed, still serving the previous index: {message}")
            self.engine = new
            # the old engine's Ray actors (if any) stop once the queries it may still run are
            # done: none outlives the request timeout
            loop.call_later(self.settings.timeout_s + 1, old.close)
            self.metrics.reloads.inc("ok")
            log.warning("reloaded %s: %d images (was %d)", new.path, new.images, old.images)
            return {"reloaded": True, "images": new.images, "previous_images": old.images}

    async def reload_route(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse(await self.reload())

    def _reload_on_signal(self) -> None:
        async def run():
            try:
                await self.reload()
            except ApiError as exc:
                log.error("SIGHUP: %s", exc.message)
        asyncio.get_running_loop().create_task(run())


def _error_handler(request, exc):
    status, message = error_status(exc)
    return json_error(status, message, exc.headers if isinstance(exc, ApiError) else None)


def create_app(settings: Settings):
    """The ASGI application (the index is opened now: a bad file fails here, not later)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    from pypatch.errors import PypatchError

    server = Server(settings)

    @asynccontextmanager
    async def lifespan(app):
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    routes = [
        Route("/search", server.search, methods=["POST"]),
        Route("/search/vectors", server.search_vectors, methods=["POST"]),
        Route("/info", server.info, methods=["GET"]),
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
        Route("/admin/reload", server.reload_route, methods=["POST"]),
    ]
    handlers = {ApiError: _error_handler, HTTPException: _error_handler,
                PypatchError: _error_handler, Exception: _error_handler}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.server = server
    guarded = Guard(app, metrics=server.metrics, api_key=settings.api_key,
                    max_body_bytes=settings.max_body_bytes, timeout_s=settings.timeout_s,
                    endpoints=ENDPOINTS)
    guarded.server = server
    return guarded

"""The ASGI layer around every request: API key, body size limit, timeout, timing, and errors
as JSON.

Pure ASGI (no Starlette middleware class): it costs one function call per request, and it sees
every answer, even one Starlette gave itself (404, 405), to count it. Every error a request can
cause answers ``{"error": "..."}`` with a 4xx status; a bug answers 500 ``{"error": "internal
error"}`` (the traceback goes to the server's log, never to the client); the server stays up.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Optional

log = logging.getLogger("pypatch.serve")


class ApiError(Exception):
    """An answer other than 200, with its status and a one-line message."""

    def __init__(self, status: int, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.headers = int(status), message, headers or {}


def error_status(exc: BaseException) -> tuple:
    """(status, message) of an exception a request raised."""
    from starlette.exceptions import HTTPException

    from pypatch.errors import (ImageError, IndexFormatError, InvalidArgumentError,
                                InvalidTypeError, UnavailableError)

    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, ImageError):
        return 400, str(exc)
    if isinstance(exc, (InvalidArgumentError, InvalidTypeError, IndexFormatError)):
        return 400, str(exc)
    if isinstance(exc, UnavailableError):  # e.g. a shard actor restarting: retry later
        return 503, str(exc)
    return 500, "internal error"


def json_error(status: int, message: str, headers: Optional[dict] = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _send_json(send, status: int, message: str, headers: Optional[dict] = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _within(coro, seconds: float):
    """``coro`` cancelled after ``seconds`` (asyncio.TimeoutError); asyncio.timeout where it
    exists (Python 3.11+) costs no extra task per request, unlike wait_for."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:
        return await asyncio.wait_for(coro, seconds)
    async with timeout(seconds):
        return await coro


class Guard:
    """``Guard(app, ...)``: wraps the Starlette app. ``endpoints``: the paths counted under
    their own name in the metrics (anything else counts as "other")."""

    def __init__(self, app, *, metrics, api_key: Optional[str], max_body_bytes: int,
                 timeout_s: float, endpoints, open_paths=("/healthz",)):
        self.app = app
        self.metrics = metrics
        self._key = None if api_key is None else api_key.encode()
        self.max_body = int(max_body_bytes)
        self.timeout_s = float(timeout_s)
        self.endpoints = set(endpoints)
        self.open_paths = set(open_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints else "other"
        state = {"status": None}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            self._check(scope, path)
            await _within(self.app(scope, self._limited(receive), send_counted), self.timeout_s)
        except asyncio.TimeoutError:
            if state["status"] is None:
                await _send_json(send_counted, 504,
                                 f"the request took longer than {self.timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - every failure answers JSON, none kills the server
            status, message = error_status(exc)
            if status >= 500:
                log.error("request %s failed", path, exc_info=exc)
            if state["status"] is None:
                headers = exc.headers if isinstance(exc, ApiError) else None
                await _send_json(send_counted, status, message, headers)
        finally:
            status = state["status"] or 500
            self.metrics.requests.inc(endpoint, str(status))
            if status >= 400:
                self.metrics.errors.inc(endpoint, str(status))
            self.metrics.latency.observe(time.perf_counter() - t0, endpoint)

    def _check(self, scope, path: str) -> None:
        headers = dict(scope.get("headers") or [])
        if self._key is not None and path not in self.open_paths:
            given = headers.get(b"x-api-key")
            auth = headers.get(b"authorization", b"")
            if given is None and auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
            if given is None or not hmac.compare_digest(given, self._key):
                raise ApiError(401, "missing or wrong API key (send X-API-Key: KEY or "
                                    "Authorization: Bearer KEY)",
                               {"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise ApiError(400, "Content-Length is not a number") from None
            if n > self.max_body:
                raise ApiError(413, f"request body too large ({n} bytes > {self.max_body})")

    def _limited(self, receive):
        """``receive`` that refuses more than the body limit (chunked bodies have no length)."""
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise ApiError(413, f"request body too large (> {self.max_body} bytes)")
            return message

        return limited

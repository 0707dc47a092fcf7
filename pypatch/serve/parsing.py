"""Request bodies -> checked queries; every wrong input is an :class:`ApiError` with a 4xx status.

``POST /search`` takes multipart form data (a file field ``image``, optional text fields
``box`` = ``"x0,y0,x1,y1"``, ``k``, ``refine``) or JSON ``{"image_b64": ..., "box": [...] | null,
"k": 10, "refine": true}`` or, only when the server was started with ``--allow-paths DIR``,
JSON ``{"image_path": ...}`` naming a file under DIR. ``POST /search/vectors`` takes JSON
``{"vectors": [[...], ...], "k": 10}``.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any, Optional

from pypatch.serve.guard import ApiError

_SEARCH_JSON_KEYS = {"image_b64", "image_path", "box", "k", "refine", "query"}
_SEARCH_FORM_KEYS = {"image", "box", "k", "refine"}
_REFINE_WORDS = {"true": "simmap", "1": "simmap", "simmap": "simmap", "cells": "cells",
                 "false": None, "0": None, "none": None}


@dataclass
class SearchRequest:
    image: Any  # encoded bytes, or the real path of a file under --allow-paths
    label: str  # the "query" of the answer
    box: Optional[list]
    k: int
    refine: Optional[str]


def _k(value, max_k: int, default: int = 10) -> int:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ApiError(400, f"k: expected an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"k: expected an integer, got {value!r}")
    if not 1 <= value <= max_k:
        raise ApiError(400, f"k: expected 1..{max_k}, got {value}")
    return value


def _refine(value) -> Optional[str]:
    """CLI's default (simmap) when absent; true/false or a method name."""
    if value is None:
        return "simmap"
    if isinstance(value, bool):
        return "simmap" if value else None
    if isinstance(value, str) and value.strip().lower() in _REFINE_WORDS:
        return _REFINE_WORDS[value.strip().lower()]
    raise ApiError(400, f"refine: expected true, false, \"simmap\", \"cells\" or \"none\", "
                        f"got {value!r}")


def _box(value) -> Optional[list]:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text or text.lower() == "null":
            return None
        try:
            value = [float(p) for p in text.split(",")]
        except ValueError:
            raise ApiError(400, f"box: expected \"x0,y0,x1,y1\", got {text!r}") from None
        value = [int(v) if v.is_integer() else v for v in value]
    ok = isinstance(value, list) and len(value) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ApiError(400, f"box: expected [x0, y0, x1, y1] (four numbers) or null, got {value!r}")
    return value


async def read_json(request) -> dict:
    body = await request.body()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: expected a JSON object")
    return data


def _content_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def parse_search(request, settings) -> SearchRequest:
    kind = _content_type(request)
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _search_form(request, settings)
    if kind in ("application/json", ""):
        return _search_json(await read_json(request), settings)
    raise ApiError(415, f"content type {kind!r}: send multipart/form-data or application/json")


async def _search_form(request, settings) -> SearchRequest:
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=1, max_fields=len(_SEARCH_FORM_KEYS),
                              max_part_size=settings.max_body_bytes)
    try:
        unknown = set(form.keys()) - _SEARCH_FORM_KEYS
        if unknown:
            raise ApiError(400, f"unknown form field(s): {', '.join(sorted(unknown))}")
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "form: expected a file field named \"image\"")
        fields = {}
        for name in ("box", "k", "refine"):
            value = form.get(name)
            if value is not None and not isinstance(value, str):
                raise ApiError(400, f"form field {name!r} must be text, not a file")
            fields[name] = value
        data = await upload.read()
        if not data:
            raise ApiError(400, "image: the uploaded file is empty")
        return SearchRequest(data, upload.filename or "image", _box(fields["box"]),
                             _k(fields["k"], settings.max_k), _refine(fields["refine"]))
    finally:
        await form.close()


def _search_json(data: dict, settings) -> SearchRequest:
    unknown = set(data) - _SEARCH_JSON_KEYS
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    label = data.get("query")
    if label is not None and not isinstance(label, str):
        raise ApiError(400, "query: expected a string (the name echoed in the answer)")
    has_b64, has_path = data.get("image_b64") is not None, data.get("image_path") is not None
    if has_b64 == has_path:
        raise ApiError(400, "give exactly one of image_b64 or image_path")
    if has_b64:
        if not isinstance(data["image_b64"], str):
            raise ApiError(400, "image_b64: expected a base64 string")
        try:
            image = base64.b64decode(data["image_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "image_b64: not valid base64") from None
        if not image:
            raise ApiError(400, "image_b64: empty image")
        label = label or "image_b64"
    else:
        path = data["image_path"]
        if not isinstance(path, str):
            raise ApiError(400, "image_path: expected a string")
        image = allowed_file(path, settings)
        label = label or path
    return SearchRequest(image, label, _box(data.get("box")), _k(data.get("k"), settings.max_k),
                         _refine(data.get("refine")))


def allowed_file(path: str, settings) -> str:
    """The real path of ``path`` (relative to ``--allow-paths DIR``, or absolute) if it is a
    regular file inside DIR once every symlink and ``..`` is resolved; else 403 or 404."""
    root = settings.allow_paths
    if root is None:
        raise ApiError(403, "image_path is disabled: start the server with --allow-paths DIR")
    if not path or "\x00" in path:
        raise ApiError(400, "image_path: expected a file name")
    real = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([real, root]) != root:
        raise ApiError(403, f"image_path {path!r} is outside the allowed folder")
    if not os.path.isfile(real):
        raise ApiError(404, f"image_path {path!r}: no such file")
    if os.path.getsize(real) > settings.max_body_bytes:
        raise ApiError(413, f"image_path {path!r}: file larger than {settings.max_body_bytes} bytes")
    return real


def read_allowed(real: str, settings) -> bytes:
    """The bytes of a file checked by :func:`allowed_file`, opened without following a symlink
    swapped in since (O_NOFOLLOW on the last part; the folders were resolved already)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise ApiError(404, f"image_path: cannot open the file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(settings.max_body_bytes + 1)
    if len(data) > settings.max_body_bytes:
        raise ApiError(413, f"image_path: file larger than {settings.max_body_bytes} bytes")
    return data


async def parse_vectors(request, settings) -> tuple:
    """-> (vectors as given, k); the engine checks their shape."""
    if _content_type(request) not in ("application/json", ""):
        raise ApiError(415, "send application/json: {\"vectors\": [[...], ...], \"k\": 10}")
    data = await read_json(request)
    unknown = set(data) - {"vectors", "k"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    vectors = data.get("vectors")
    if not isinstance(vectors, list) or not vectors:
        raise ApiError(400, "vectors: expected a non-empty list of vectors")
    if len(vectors) > settings.max_vectors:
        raise ApiError(413, f"vectors: at most {settings.max_vectors} per request, "
                            f"got {len(vectors)}")
    if not all(isinstance(v, list) for v in vectors):
        raise ApiError(400, "vectors: expected a list of lists of numbers")
    return vectors, _k(data.get("k"), settings.max_k)

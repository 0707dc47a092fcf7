"""Which model an :class:`~pypatch.ImageIndex` was built with: recorded, found again, checked.

An index stores descriptors of one model; querying it with another gives silently wrong
rankings. The index records the model's card (its identity), file path, sha256 and the name it
was given, and every embedder it is later paired with is checked against that record.
"""
from __future__ import annotations

import os
import warnings

from pypatch.errors import ModelMismatchError

# Identity of a model: two cards equal on these keys produce the same descriptors.
_CARD_IDENTITY = ("name", "source", "weights_sha256", "dim", "input_size", "pooling", "gem_p",
                  "mean", "std", "interpolation", "l2_normalized")


def check_model(recorded: dict, embedder) -> None:
    """Raise ModelMismatchError unless ``embedder`` runs the model the index was built with.

    Cards must agree on the identity keys (name, weights sha256, input size, pooling, ...).
    When the file's own sha256 differs but the card matches (the same weights re-exported),
    a warning is issued: features may differ at float precision."""
    card = dict(embedder.model_card)
    ref = recorded.get("card", {})
    for key in _CARD_IDENTITY:
        if _norm(card.get(key)) != _norm(ref.get(key)):
            raise ModelMismatchError(
                f"the index was built with model {ref.get('name')!r} "
                f"({key}={ref.get(key)!r}) but the embedder runs {card.get('name')!r} "
                f"({key}={card.get(key)!r}); search with the index's model")
    path = embedder_model_path(embedder)
    if path is not None and recorded.get("sha256"):
        sha = cached_file_sha256(path)
        if sha != recorded["sha256"]:
            warnings.warn(
                f"model file {path} (sha256 {sha[:12]}) is not the file the index was built "
                f"with (sha256 {recorded['sha256'][:12]}), although the model cards match",
                stacklevel=3)


def same_model(a: dict, b: dict) -> bool:
    """Do two model records (``meta["model"]``) name the same model (identity keys of the
    cards)? Sharded indexes refuse shards built with different models."""
    ca, cb = a.get("card", {}), b.get("card", {})
    return all(_norm(ca.get(k)) == _norm(cb.get(k)) for k in _CARD_IDENTITY)


def _norm(value):
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def model_info(embedder, model) -> dict:
    """The record of the model an index is built with (``meta["model"]``)."""
    card = dict(embedder.model_card)
    path = embedder_model_path(embedder)
    if path is None and model is not None and os.path.isfile(os.fspath(model)):
        path = os.path.abspath(os.fspath(model))
    spec = None if model is None else os.fspath(model)
    return {"name": card.get("name"), "spec": spec,
            "path": None if path is None else str(path),
            "sha256": None if path is None else cached_file_sha256(path), "card": card}


def recorded_model_location(recorded: dict):
    """Where to find the index's model again: the recorded file if it still exists,
    else the name it was given (resolved through the model registry/cache)."""
    path = recorded.get("path")
    if path and os.path.isfile(path):
        return path
    spec = recorded.get("spec")
    if spec and not spec.endswith(".onnx"):
        return spec
    if spec is None:
        return None  # the offline default
    return recorded.get("name") or spec


def embedder_model_path(embedder):
    """The absolute path of the model file ``embedder`` runs (None if it has none)."""
    for attr in ("model_path", "path"):
        value = getattr(embedder, attr, None)
        if isinstance(value, (str, os.PathLike)) and os.path.isfile(os.fspath(value)):
            return os.path.abspath(os.fspath(value))
    return None


_SHA_CACHE: dict = {}


def cached_file_sha256(path) -> str:
    """sha256 of a model file, memoised per (path, size, mtime): models are ~10-300 MB."""
    from pypatch.models import file_sha256

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]


def new_embedder(model, num_threads):
    from pypatch.extract.embedder import Embedder

    return Embedder(model=model, num_threads=num_threads)

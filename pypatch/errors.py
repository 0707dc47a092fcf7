"""The exception hierarchy of pypatch.

Every error a user can cause is a subclass of both ``PypatchError`` and the builtin that
best describes it, so ``except ValueError`` keeps working. The native module ``_core``
translates its C++ exceptions into these classes (see csrc/bindings).

Argument policy (one home: :mod:`pypatch._checks`): an argument of the wrong type raises
``InvalidTypeError`` (a ``TypeError``), one of the right type but a wrong value, shape or range
raises ``InvalidArgumentError`` (a ``ValueError``); both name the argument. A name outside a
fixed set of choices (``store="flta"``) is a wrong value.
"""
from __future__ import annotations


class PypatchError(Exception):
    """Base class of every error raised on purpose by pypatch."""


class InvalidArgumentError(PypatchError, ValueError):
    """An argument has the wrong value, shape or dimension."""


class TooFewVectorsError(InvalidArgumentError):
    """Too few training vectors for what the store must learn (PQ codebooks, a PCA).

    ``needed`` and ``got`` are the counts; ``what`` is ``"pq"``, ``"pca"``, ``"ivf"`` or
    ``"rerank"`` (a PQ re-rank store). The message names the Python arguments of
    ``ImageIndex.build``; the CLI names its own flags."""

    def __init__(self, message: str, *, what: str, needed: int, got: int):
        super().__init__(message)
        self.what, self.needed, self.got = what, int(needed), int(got)


class InvalidTypeError(PypatchError, TypeError):
    """An argument has the wrong type or dtype."""


class IndexFormatError(PypatchError, ValueError):
    """An index file is truncated, corrupted, or not a pypatch index."""


class IndexVersionError(IndexFormatError):
    """An index file was written by an incompatible (newer major) format version."""


class NotTrainedError(PypatchError, ValueError):
    """A product quantizer or index was used before being trained."""


class ModelMismatchError(PypatchError, ValueError):
    """A query was embedded with a different model than the one that built the index."""


class ModelNotFoundError(PypatchError, FileNotFoundError):
    """A model name or path could not be resolved to an ONNX file."""


class ImageError(PypatchError, ValueError):
    """An image could not be read or is unusable (truncated, empty, too large, ...)."""


class DatasetFormatError(PypatchError, ValueError):
    """A benchmark/dataset file is missing or malformed; the message names file and line."""


class UnavailableError(PypatchError, RuntimeError):
    """Part of the index cannot answer now (e.g. a shard's Ray actor is restarting past its
    timeout, or is gone): the query failed whole, never answered from the other parts."""


__all__ = [
    "PypatchError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "TooFewVectorsError",
    "IndexFormatError",
    "IndexVersionError",
    "NotTrainedError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "ImageError",
    "DatasetFormatError",
    "UnavailableError",
]

"""Argument checks shared by the sub-commands (one message format everywhere)."""
from __future__ import annotations

from pypatch.errors import InvalidArgumentError


def require_positive(args, *names: str) -> None:
    """Raise InvalidArgumentError for the first integer option in ``names`` that is < 1
    (options left at None are unset and skipped)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            option = "--" + name.replace("_", "-")
            raise InvalidArgumentError(f"{option}: expected a positive integer, got {value}")

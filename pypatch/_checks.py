"""The one home of argument checks (policy in :mod:`pypatch.errors`): a wrong type raises
InvalidTypeError, a wrong value InvalidArgumentError, each naming the argument; arrays are never
silently cast or copied (a float64 or strided array is refused with the fix in the message)."""
from __future__ import annotations

import numbers

import numpy as np

from pypatch.errors import InvalidArgumentError, InvalidTypeError


def as_array(x, name: str, dtype, ndim: int, cols: int | None = None, *, finite: bool = False,
             allow_1d: bool = False) -> np.ndarray:
    """Return x (an ndarray of exactly `dtype`, C-contiguous) reshaped to `ndim` dims."""
    if not isinstance(x, np.ndarray):
        raise InvalidTypeError(f"{name} must be a numpy.ndarray of {np.dtype(dtype).name}; "
                               f"got {type(x).__name__}")
    if x.dtype != dtype:
        raise InvalidTypeError(f"{name} must have dtype {np.dtype(dtype).name}; got {x.dtype} "
                               f"(convert with x.astype(np.{np.dtype(dtype).name}))")
    if allow_1d and x.ndim == 1 and ndim == 2:
        x = x.reshape(1, -1)
    if x.ndim != ndim:
        shape = "(n, d)" if ndim == 2 else f"{ndim}-d"
        raise InvalidArgumentError(f"{name} must be {shape}; got shape {x.shape}")
    if cols is not None and x.shape[-1] != cols:
        raise InvalidArgumentError(f"{name} must have {cols} columns (the dimension); "
                                   f"got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise InvalidArgumentError(f"{name} must be C-contiguous; use np.ascontiguousarray({name})")
    if finite and x.size and not np.isfinite(x).all():
        raise InvalidArgumentError(f"{name} contains NaN or infinite values")
    return x


# Bounds of the C types the core takes, so an out-of-range Python int is an
# InvalidArgumentError naming the argument, not pybind11's TypeError about overloads.
INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
UINT64_MAX = 2**64 - 1


def as_int(v, name: str, minimum: int | None = None, maximum: int | None = INT64_MAX) -> int:
    """v as a Python int in [minimum (default: int64's), maximum (default: int64's; None:
    unbounded, for a caller that clamps)]."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an int; got {type(v).__name__}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}; got {v}")
    if minimum is None and v < INT64_MIN:
        raise InvalidArgumentError(f"{name} must be >= {INT64_MIN}; got {v}")
    if maximum is not None and v > maximum:
        raise InvalidArgumentError(f"{name} must be <= {maximum}; got {v}")
    return v


def as_number(v, name: str, minimum: float, maximum: float) -> float:
    """v (an int or float, bools refused) as a float within [minimum, maximum]."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InvalidTypeError(f"{name} must be a number; got {type(v).__name__}")
    if not minimum <= v <= maximum:  # also refuses NaN
        raise InvalidArgumentError(f"{name} must be in [{minimum}, {maximum}]; got {v!r}")
    return float(v)


def choice(v, name: str, choices) -> None:
    """v must be one of ``choices`` (a wrong type is just another wrong value here)."""
    if v not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(map(str, choices))}; "
                                   f"got {v!r}")


def threads(num_threads) -> int:
    """None -> 0 (the global default), else an int >= 1."""
    if num_threads is None:
        return 0
    return as_int(num_threads, "num_threads", 1, INT32_MAX)

"""Measurement: retrieval metrics, dataset loaders, the offline benchmark generator, the eval
harness with its registry of named configurations, and the report writer.

The harness API (``evaluate``, ``register_ranker``, ...) is reachable from here, as plugins for
``pypatch eval --plugin`` call it; it is resolved lazily so that ``pypatch.evaluation.metrics``
stays a light import.
"""
from __future__ import annotations

import importlib

# public name -> module beside this one that defines it
_LAZY = {
    **dict.fromkeys(("evaluate", "register_ranker", "available_rankers", "make_ranker",
                     "load_plugins"), "harness"),
    "write_report": "report",
    "EvalResults": "results",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"pypatch.evaluation.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pypatch.evaluation' has no attribute {name!r}")

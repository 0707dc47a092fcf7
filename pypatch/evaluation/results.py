"""The records :func:`pypatch.evaluation.evaluate` returns (:class:`EvalResults`, one
:class:`ConfigResult` per configuration) and the size buckets they are broken down by.

Kept apart from the harness so that the report writer (:mod:`pypatch.evaluation.report`) can read results
without importing the harness, and the harness can re-export the writer without an import cycle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pypatch.evaluation.datasets.benchmark import Benchmark

__all__ = ["EvalResults", "ConfigResult", "SIZE_BUCKETS"]

SIZE_BUCKETS = (("<3%", 0.0, 0.03), ("3-10%", 0.03, 0.10), ("10-25%", 0.10, 0.25), (">25%", 0.25, math.inf))


@dataclass
class ConfigResult:
    name: str
    summary: dict[str, Any]
    per_query: list[dict[str, Any]]
    size_breakdown: dict[str, dict[str, Any]]
    pr_curve: dict[str, list[float]]
    bytes_per_image: float | None = None
    description: str = ""


@dataclass
class EvalResults:
    benchmark: Benchmark
    k: int
    configs: dict[str, ConfigResult] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _jsonable({
            "benchmark": self.benchmark.name,
            "n_queries": len(self.benchmark.queries),
            "n_database": len(self.benchmark.database),
            "k": self.k,
            "configs": {n: {"summary": c.summary, "size_breakdown": c.size_breakdown,
                            "pr_curve": c.pr_curve, "bytes_per_image": c.bytes_per_image,
                            "description": c.description, "per_query": c.per_query}
                        for n, c in self.configs.items()},
        })


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


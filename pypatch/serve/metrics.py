"""Counters, gauges and histograms rendered in the Prometheus text format (version 0.0.4).

Written here rather than taken from prometheus_client: a few dozen lines, one less dependency,
and no process-global registry (tests start many servers in one process). Updates take a lock:
batch metrics are recorded from the batchers' threads too.
"""
from __future__ import annotations

import math
import threading
from typing import Callable

#: seconds; the service's latencies span from sub-millisecond (vectors) to seconds (refine)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(names: tuple, values: tuple) -> str:
    if not names:
        return ""
    parts = []
    for n, v in zip(names, values):
        v = str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{n}="{v}"')
    return "{" + ",".join(parts) + "}"


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return repr(float(v)) if isinstance(v, float) and not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, registry: "Registry", name: str, help_: str, labels: tuple = ()):
        self.name, self.help, self.label_names = name, help_, tuple(labels)
        self._lock = registry.lock
        registry.metrics.append(self)

    def header(self) -> list:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._values: dict = {}

    def inc(self, *labels, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list:
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}"
                                for k, v in sorted(self._values.items())]


class Gauge(_Metric):
    """A value read when scraped (``read() -> {labels tuple: value}``)."""
    kind = "gauge"

    def __init__(self, registry, name, help_, labels=(), read: Callable = dict):
        super().__init__(registry, name, help_, labels)
        self._read = read

    def render(self) -> list:
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}"
                                for k, v in sorted(self._read().items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, registry, name, help_, labels=(), buckets=LATENCY_BUCKETS):
        super().__init__(registry, name, help_, labels)
        self.buckets = tuple(buckets) + (math.inf,)
        self._series: dict = {}  # labels -> [counts per bucket..., sum, count]

    def observe(self, value: float, *labels) -> None:
        with self._lock:
            s = self._series.get(labels)
            if s is None:
                s = self._series[labels] = [0] * len(self.buckets) + [0.0, 0]
            for i, b in enumerate(self.buckets):
                if value <= b:
                    s[i] += 1
                    break
            s[-2] += value
            s[-1] += 1

    def count(self, *labels) -> int:
        s = self._series.get(labels)
        return s[-1] if s else 0

    def render(self) -> list:
        out = self.header()
        names = self.label_names + ("le",)
        for labels, s in sorted(self._series.items()):
            cumulative = 0
            for b, c in zip(self.buckets, s):
                cumulative += c
                out.append(f"{self.name}_bucket{_labels(names, labels + (_num(b),))} {cumulative}")
            out.append(f"{self.name}_sum{_labels(self.label_names, labels)} {repr(float(s[-2]))}")
            out.append(f"{self.name}_count{_labels(self.label_names, labels)} {s[-1]}")
        return out


class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.metrics: list = []

    def render(self) -> str:
        with self.lock:
            lines = [line for m in self.metrics for line in m.render()]
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """The metrics of one server (names are the ``/metrics`` contract)."""

    def __init__(self, queue_depths: Callable, images: Callable):
        r = self.registry = Registry()
        self.requests = Counter(r, "pypatch_requests_total", "HTTP requests answered",
                                ("endpoint", "status"))
        self.errors = Counter(r, "pypatch_request_errors_total",
                              "HTTP requests answered with a 4xx or 5xx status",
                              ("endpoint", "status"))
        self.latency = Histogram(r, "pypatch_request_duration_seconds",
                                 "time from the request's start to its answer", ("endpoint",))
        self.batch_size = Histogram(r, "pypatch_batch_size", "queries per batched call",
                                    ("kind",), buckets=BATCH_BUCKETS)
        self.batch_seconds = Histogram(r, "pypatch_batch_duration_seconds",
                                       "time of one batched call (embed and scan)", ("kind",))
        self.refine_seconds = Histogram(r, "pypatch_refine_duration_seconds",
                                        "box refinement time of one query", ("method",))
        self.rejected = Counter(r, "pypatch_rejected_total",
                                "queries refused because the queue was full (503)", ("kind",))
        self.reloads = Counter(r, "pypatch_reloads_total", "index reloads", ("result",))
        Gauge(r, "pypatch_queue_depth", "queries waiting for a batch", ("kind",),
              read=queue_depths)
        Gauge(r, "pypatch_index_images", "images in the served index", (), read=images)

    def render(self) -> str:
        return self.registry.render()

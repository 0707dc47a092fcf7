"""Shared benchmark plumbing: timers, memory sampling, machine facts, JSON-lines results.

Benchmarks are code (faiss ``benchs/``, usearch ``BENCHMARKS.md``): every number printed by a
benchmark is also written, with the machine it came from, to ``benchmarks/results/*.jsonl``
(git-ignored) so tables in ``benchmarks/README.md`` can be traced back to a run.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Wall-clock samples (seconds) of repeated calls, with the usual percentiles."""

    samples: np.ndarray = field(repr=False)

    @property
    def p50(self) -> float:
        return float(np.percentile(self.samples, 50))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.samples, 95))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.samples, 99))

    @property
    def best(self) -> float:
        return float(self.samples.min())

    @property
    def mean(self) -> float:
        return float(self.samples.mean())

    def as_dict(self, scale: float = 1e3, unit: str = "ms") -> dict:
        return {f"p50_{unit}": self.p50 * scale, f"p95_{unit}": self.p95 * scale,
                f"p99_{unit}": self.p99 * scale, f"best_{unit}": self.best * scale,
                "n": int(self.samples.size)}


def time_calls(fn, args_list, warmup: int = 2, repeat: int = 1) -> Timing:
    """Time ``fn(*args)`` once per entry of ``args_list`` (``repeat`` rounds), after warmup.

    Distinct arguments per call (e.g. one query each) keep a result cache from flattering
    the latency; the warmup calls pay for JIT compilation, page faults and lazy init.
    """
    args_list = list(args_list)
    for i in range(warmup):
        fn(*args_list[i % len(args_list)])
    samples = []
    for _ in range(repeat):
        for args in args_list:
            t0 = time.perf_counter()
            fn(*args)
            samples.append(time.perf_counter() - t0)
    return Timing(np.asarray(samples, dtype=np.float64))


# ----------------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    """Peak RSS of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Samples RSS in a background thread; ``peak`` is the highest value seen inside the block.

    ru_maxrss is process-lifetime, so it cannot isolate one phase; sampling can.
    """

    def __init__(self, interval_s: float = 0.01):
        self.interval_s = interval_s
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return False

    @property
    def delta(self) -> int:
        return self.peak - self.start


# ----------------------------------------------------------------------------- machine facts
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def git_sha(short: bool = True) -> str:
    repo = Path(__file__).resolve().parent.parent
    try:
        cmd = ["git", "rev-parse"] + (["--short"] if short else []) + ["HEAD"]
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict:
    return {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__, "git": git_sha(),
            "time_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


# ------------------------------------------------------------------------------ JSON results
class JsonlWriter:
    """Appends one JSON object per line; every record carries the run id and machine facts."""

    def __init__(self, path: str | os.PathLike | None, bench: str):
        if path is None:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            path = RESULTS_DIR / f"{bench}-{stamp}.jsonl"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.base = {"bench": bench, **machine_info()}

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({**self.base, **record}, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ------------------------------------------------------------------------- memory bandwidth
_BW_KERNELS = None


def _bw_kernels():
    """numba kernels summing a uint64 buffer: serial, and prange over contiguous chunks."""
    global _BW_KERNELS
    if _BW_KERNELS is None:
        import numba

        @numba.njit(cache=False, nogil=True)
        def _sum_serial(a):
            s = np.uint64(0)
            for i in range(a.size):
                s += a[i]
            return s

        @numba.njit(parallel=True, cache=False, nogil=True)
        def _sum_parallel(a, nchunks):
            step = (a.size + nchunks - 1) // nchunks
            parts = np.zeros(nchunks, dtype=np.uint64)
            for c in numba.prange(nchunks):
                # the serial kernel on a slice keeps LLVM's vectorised loop inside each thread
                parts[c] = _sum_serial(a[c * step:min(a.size, (c + 1) * step)])
            return parts.sum()

        _BW_KERNELS = (_sum_serial, _sum_parallel)
    return _BW_KERNELS


def measure_read_bandwidth(nbytes: int = 1 << 30, threads: int = 1, repeat: int = 5) -> dict:
    """Sustained memory read bandwidth (bytes/s): best of ``repeat`` full passes over a buffer.

    The buffer (1 GiB by default) is far larger than the last-level cache, so the pass streams
    from DRAM. One thread: the best of numpy's sum and a numba scalar loop (LLVM vectorises it).
    More threads: a numba prange over ``threads`` contiguous chunks. This is the bound a
    code scan cannot beat: code bytes / bandwidth.
    """
    import numba

    buf = np.ones(nbytes // 8, dtype=np.uint64)  # touched once, so pages are resident
    serial, parallel = _bw_kernels()
    old = numba.get_num_threads()
    best = float("inf")
    try:
        if threads == 1:
            serial(buf[:1024])
            for _ in range(repeat):
                t0 = time.perf_counter()
                serial(buf)
                best = min(best, time.perf_counter() - t0)
                t0 = time.perf_counter()
                buf.sum()
                best = min(best, time.perf_counter() - t0)
        else:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            parallel(buf[:4096], threads)
            for _ in range(repeat):
                t0 = time.perf_counter()
                parallel(buf, threads)
                best = min(best, time.perf_counter() - t0)
    finally:
        numba.set_num_threads(old)
    del buf
    return {"threads": threads, "bytes": nbytes, "best_s": best, "bytes_per_s": nbytes / best}


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"

"""The micro-batcher: concurrent requests -> one batched call -> each caller its own answer.

One queue and one worker task per kind of work. The worker takes the first waiting query,
then gathers more for at most ``max_wait_s`` (or until ``max_batch`` rows; no wait while recent
batches held about one query each: under light load it would only add latency), and runs the
batch in its own thread: the native scan and onnxruntime release the GIL, so the event loop
stays free to read, parse and answer other requests meanwhile (and queries arriving during a
batch form the next one: under load batches fill without waiting). Each queued entry carries
its own asyncio future; a caller that gave up (timeout, client gone) has a done future and is
skipped. The queue is bounded: :meth:`submit` raises :class:`Overloaded` at once when it is
full, so latency cannot grow without bound (the server answers 503).

A batch whose call fails is run again one entry at a time, so that one bad entry fails alone.
Entries are grouped by their ``group`` (the engine they were checked against): a reload never
mixes two indexes in one call.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pypatch.errors import UnavailableError


class Overloaded(Exception):
    """The queue is full: the caller should answer 503 now."""


@dataclass
class _Entry:
    item: Any
    rows: int
    group: Any
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """``run(group, items) -> results`` (one result or exception per item, in order) runs in
    this batcher's thread; ``on_batch(size, seconds)`` (optional) sees every batch run."""

    def __init__(self, name: str, run: Callable, *, max_batch: int, max_wait_s: float,
                 max_queue: int, on_batch: Optional[Callable] = None):
        self.name = name
        self._run = run
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.max_queue = int(max_queue)
        # a deque and an event rather than asyncio.Queue: an entry that does not fit a batch
        # goes back to the front, and a timed-out wait can never lose an entry
        self._waiting: deque = deque()
        self._wake: Optional[asyncio.Event] = None
        self._on_batch = on_batch
        self._recent_rows = 1.0  # moving average of batch sizes (rows)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"pypatch-{name}")
        self._task: Optional[asyncio.Task] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Entries waiting (not yet in a running batch)."""
        return len(self._waiting)

    # ------------------------------------------------------------------ callers
    def submit(self, item, *, group=None, rows: int = 1) -> asyncio.Future:
        """Queue ``item`` (``rows`` of the batch's budget); await the returned future."""
        if len(self._waiting) >= self.max_queue:
            raise Overloaded(f"the {self.name} queue is full ({self.max_queue} waiting)")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Entry(item, int(rows), group, future))
        self._wake.set()
        return future

    # ------------------------------------------------------------------ worker
    async def _next(self, timeout: Optional[float]) -> Optional[_Entry]:
        """The next waiting entry, waiting for one at most ``timeout`` s (None: forever)."""
        while not self._waiting:
            if timeout is not None and timeout <= 0:
                return None
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                return None
            if timeout is not None:  # one wait only: the caller re-checks its deadline
                break
        return self._waiting.popleft() if self._waiting else None

    async def _gather(self) -> list:
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        batch, rows = [first], first.rows
        # Under light load (recent batches of about one query) waiting only adds latency:
        # take what is already queued and go. Under load the wait fills batches.
        wait = self.max_wait_s if self._recent_rows >= 1.5 else 0.0
        deadline = loop.time() + wait
        while rows < self.max_batch:
            entry = await self._next(deadline - loop.time())
            if entry is None:
                if loop.time() >= deadline:
                    break
                continue
            if rows + entry.rows > self.max_batch or entry.group is not first.group:
                self._waiting.appendleft(entry)  # first of the next batch
                break
            batch.append(entry)
            rows += entry.rows
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [e for e in await self._gather() if not e.future.done()]
            if not batch:
                continue
            t0 = time.perf_counter()
            size = sum(e.rows for e in batch)
            self._recent_rows = 0.8 * self._recent_rows + 0.2 * size
            results = await loop.run_in_executor(self._executor, self._run_isolated, batch)
            if self._on_batch is not None:
                self._on_batch(size, time.perf_counter() - t0)
            for entry, result in zip(batch, results):
                if entry.future.done():  # the caller gave up meanwhile
                    continue
                if isinstance(result, BaseException):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)

    def _run_isolated(self, batch: list) -> list:
        group = batch[0].group
        try:
            results = self._run(group, [e.item for e in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} entries")
            return results
        except Exception as exc:
            # one entry, or an index that cannot answer at all now: the batch fails whole
            # (re-running it entry by entry would only wait for the same shard again)
            if len(batch) == 1 or isinstance(exc, UnavailableError):
                return [exc] * len(batch)
        out = []
        for e in batch:  # one at a time: the failing entry fails alone
            try:
                out.append(self._run(group, [e.item])[0])
            except Exception as exc:
                out.append(exc)
        return out

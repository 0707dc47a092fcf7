"""Threads: results independent of the thread count and of concurrent callers; Ctrl-C stops a
long native call."""
from __future__ import annotations

import threading
import time
import _thread

import numpy as np
import pytest

import pypatch
from pypatch.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def pq_index():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400 * 20, 32)).astype(np.float32)
    pq = pypatch.ProductQuantizer(32, 8).train(x[:3000], iters=3)
    ix = pypatch.PatchIndex(32, pq)
    ix.add(x, patches_per_image=20)
    return ix, rng.standard_normal((16, 32)).astype(np.float32)


def test_one_and_two_threads_give_identical_results(pq_index):
    ix, q = pq_index
    a = ix.search(q, k=15, num_threads=1)
    b = ix.search(q, k=15, num_threads=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_concurrent_searches_from_python_threads_equal_serial(pq_index):
    ix, q = pq_index
    serial = [ix.search(q[i:i + 1], k=10) for i in range(len(q))]
    results = [None] * len(q)

    def worker(i):
        for _ in range(5):
            results[i] = ix.search(q[i:i + 1], k=10, num_threads=2)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(q))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        for x, y in zip(got, want):
            np.testing.assert_array_equal(x, y)


def test_encode_is_thread_count_independent():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 16)).astype(np.float32)
    pq = pypatch.ProductQuantizer(16, 4).train(x, iters=2)
    np.testing.assert_array_equal(pq.encode(x, num_threads=1), pq.encode(x, num_threads=2))


def test_global_default_thread_count():
    before = pypatch.get_num_threads()
    try:
        pypatch.set_num_threads(1)
        assert pypatch.get_num_threads() == 1
        pypatch.set_num_threads(None)
        assert pypatch.get_num_threads() >= 1
    finally:
        pypatch.set_num_threads(before)
    with pytest.raises(InvalidArgumentError):
        pypatch.set_num_threads(-1)


def test_ctrl_c_interrupts_a_long_search():
    rng = np.random.default_rng(2)
    ix = pypatch.PatchIndex(64)
    ix.add(rng.standard_normal((40_000, 64)).astype(np.float32), patches_per_image=10)
    q = rng.standard_normal((100_000, 64)).astype(np.float32)  # ~2.5 TFLOP: minutes of work
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            ix.search(q, k=5, num_threads=2)
    finally:
        timer.cancel()
    # Finishing would take minutes; a generous bound shows the call stopped early, i.e. the
    # interrupt came from inside the native loop, not after it returned.
    assert time.monotonic() - start < 60

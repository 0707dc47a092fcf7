"""Issue 13: sharded search fan-out overhead, and extraction throughput in-process vs Ray.

    python benchmarks/bench_distributed.py --images 24 --search-images 20000

1. Fan-out: one PQ index of ``--search-images`` random images (30 patches, m=32, dim 256 after
   no transform: vectors stored as given) split into 1, 4, 16 shards; median latency of one
   query (k=10) against the monolithic index. Target: 4 shards within 10 % + 1 ms.
2. Extraction: ``--images`` real photos (skimage, L3 per-crop, the default model) embedded
   in-process (Embedder.embed_many, 2 threads) and by the Ray pipeline of the distributed
   build (1 worker x 2 threads, 2 workers x 1 thread); images/s end to end (actor start
   included) and in steady state (second pass, actors warm). Target: within 20 %.
Medians over repeats: the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def fan_out(n_images: int, repeat: int) -> list:
    from pypatch import ImageIndex, ShardedIndex
    from pypatch.extract.embedder import Embedder

    emb = Embedder(num_threads=2)
    rng = np.random.default_rng(0)
    index = ImageIndex.create(regions="L3", store="pq", pq_m=32, train_size=20000,
                              embedder=emb, pca_dim=None)
    dim, sizes = emb.dim, (640, 480)
    p = len(index._cells(sizes)[0])

    def images(a, b):
        for i in range(a, b):
            v = rng.standard_normal((p, dim)).astype(np.float32)
            yield f"img{i}", None, v / np.linalg.norm(v, axis=1, keepdims=True), sizes

    index.train_embedded((v, s) for _, _, v, s in images(0, 1000))
    for a in range(0, n_images, 1000):
        index.add_embedded(images(a, min(n_images, a + 1000)))
    q = rng.standard_normal((50, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    tmp = tempfile.mkdtemp()
    variants = [("monolithic", index)] + [
        (f"{n} shards", ShardedIndex.from_index(index, f"{tmp}/s{n}", shards=n)) for n in (1, 4, 16)]
    times: dict = {name: [] for name, _ in variants}
    # interleaved (every variant on the same query back to back): on a shared machine the
    # load drifts by 5x within a minute; interleaving gives every variant the same noise
    for _ in range(repeat):
        for qi in q:
            for name, ix in variants:
                t = time.perf_counter()
                ix.search_vectors(qi, k=10, num_threads=2)
                times[name].append(time.perf_counter() - t)
    rows = [(name, statistics.median(times[name]) * 1e3) for name, _ in variants]
    return rows


def extraction(n_images: int) -> list:
    from PIL import Image
    import skimage.data as d

    from pypatch.extract.embedder import Embedder
    from pypatch.distributed.ray_build import _Embedding
    from pypatch.distributed.ray_search import require_ray

    folder = tempfile.mkdtemp()
    arrays = [d.astronaut(), d.rocket(), d.coffee(), d.chelsea(), d.stereo_motorcycle()[0],
              d.camera(), d.immunohistochemistry(), d.hubble_deep_field()[::2, ::2]]
    paths = []
    for i in range(n_images):
        paths.append(f"{folder}/{i}.png")
        Image.fromarray(arrays[i % len(arrays)]).save(paths[-1])
    rows = []
    emb = Embedder(num_threads=2)
    t = time.perf_counter()
    res = emb.embed_many(paths, regions="L3", show_progress=False)
    n = sum(1 for _ in res)
    rows.append(("in-process, 2 threads", n / (time.perf_counter() - t), None))
    ray = require_ray(num_cpus=2)
    for workers, threads in ((1, 2), (2, 1)):
        e = _Embedding(ray, {"regions": "L3"}, workers, threads, 4, None)
        items = list(enumerate(paths))
        t = time.perf_counter()
        n = sum(1 for _ in e.stream(items))
        cold = n / (time.perf_counter() - t)
        t = time.perf_counter()
        n = sum(1 for _ in e.stream(items))
        rows.append((f"Ray {workers} worker(s) x {threads} thread(s)", cold,
                     n / (time.perf_counter() - t)))
    ray.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--search-images", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-extraction", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()}")
    rows = fan_out(args.search_images, args.repeat)
    base = rows[0][1]
    print(f"\nsharded search, {args.search_images} images x 30 patches, pq32, k=10, 2 threads")
    for name, ms in rows:
        print(f"  {name:<12} {ms:8.3f} ms  ({ms / base:5.2f}x)")
    four = dict(rows)["4 shards"]
    print(f"{'PASS' if four <= base * 1.1 + 1.0 else 'FAIL'}: 4 shards {four:.3f} ms <= "
          f"1.1 x {base:.3f} + 1 ms")
    if not args.skip_extraction:
        rows = extraction(args.images)
        print(f"\nextraction, {args.images} photos, L3 per-crop (30 crops/image), images/s")
        for name, cold, warm in rows:
            print(f"  {name:<32} {cold:6.2f} end-to-end" +
                  ("" if warm is None else f"   {warm:6.2f} second pass"))


if __name__ == "__main__":
    main()

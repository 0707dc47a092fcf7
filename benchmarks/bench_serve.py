"""Load benchmark of `pypatch serve` (issue 12): micro-batching on and off, under load.

    python benchmarks/bench_serve.py                    # vector + image endpoints, ~8 minutes
    python benchmarks/bench_serve.py --quick            # smoke run, ~1 minute
    python benchmarks/bench_serve.py --only vectors --soak-seconds 600   # + the soak

Starts `pypatch serve` on 127.0.0.1 (a child process, as a user would) and drives it from this
process with a small asyncio HTTP/1.1 client (keep-alive connections, one request in flight per
connection): closed loop at each --concurrency (every virtual user sends its next request when
its answer arrives) and open loop at fixed rates (requests start on a schedule whatever the
answers; a latency counts from the scheduled start, so queueing is not hidden). The client is
hand-written on asyncio streams rather than httpx: on a 2-core machine the load generator
shares the CPU with the server, and httpx's per-request cost would be what is measured.

Endpoints and data:
  vectors  a bare PatchIndex of --images images x --patches patches, dim --dim, PQ m=--pq-m
           (seeded clustered vectors, built once into --work-dir); queries are noisy copies of
           database patches, one vector per request, k=10
  image    an ImageIndex of skimage's photos (the default model, L2 flat); queries are the same
           photos as JPEG, multipart uploads, k=10, refine off (and one run with refine on);
           compared with an in-process loop that embeds and searches the same JPEG bytes in
           batches (ImageIndex.search_many)

"on" is --max-batch 64 --max-wait-ms 2 (the defaults), "off" is --max-batch 1 (one query per
call, the server otherwise identical). Targets (issue 12) are printed as PASS/FAIL lines; every
number goes to benchmarks/results/serve-*.jsonl; --plot writes latency vs throughput.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "pypatch-bench-serve"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "colorwheel", "immunohistochemistry",
          "hubble_deep_field", "coins", "page", "text", "moon")


# ---------------------------------------------------------------------------------- data
def build_vector_index(path: Path, images: int, patches: int, dim: int, m: int, seed: int = 0):
    """Clustered unit vectors (each image mixes 4 of 4096 themes), PQ trained on 65,536."""
    import pypatch

    rng = np.random.default_rng([seed, 1])
    centres = rng.standard_normal((4096, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def block(b, n):
        r = np.random.default_rng([seed, 2, b])
        themes = r.integers(0, len(centres), (n, 4))
        x = centres[themes[np.arange(n)[:, None], r.integers(0, 4, (n, patches))].ravel()]
        x = x + r.standard_normal(x.shape, dtype=np.float32) * (0.6 / np.sqrt(dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    pq = pypatch.ProductQuantizer(dim, m, 8)
    sample = block(10**6, -(-65536 // patches))[:65536]
    pq.train(sample, iters=15, seed=seed)
    index = pypatch.PatchIndex(dim, pq)
    index.train(sample)
    for b in range(0, images, 5000):
        n = min(5000, images - b)
        index.add(block(b, n), patches_per_image=patches)
    index.save(path)
    queries = block(10**6 + 1, 512)[::patches]
    queries = queries + np.random.default_rng(3).standard_normal(queries.shape).astype(
        np.float32) * (0.3 / np.sqrt(dim))
    np.save(path.with_suffix(".queries.npy"), queries / np.linalg.norm(queries, axis=1,
                                                                        keepdims=True))


def photo_jpegs() -> list:
    from PIL import Image
    from skimage import data

    out = []
    for name in PHOTOS:
        a = getattr(data, name)()
        buf = io.BytesIO()
        Image.fromarray(a).convert("RGB").save(buf, format="JPEG", quality=90)
        out.append((f"{name}.jpg", buf.getvalue()))
    return out


def build_image_index(path: Path, threads: int):
    from pypatch import ImageIndex

    folder = path.parent / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name, jpeg in photo_jpegs():
        (folder / name).write_bytes(jpeg)
    ImageIndex.build(folder, regions="L2", store="flat", progress=False,
                     num_threads=threads).save(path)


# ---------------------------------------------------------------------------------- client
class Conn:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, host, port):
        self.host, self.port, self.reader, self.writer = host, port, None, None

    async def request(self, path: str, body: bytes, ctype: str) -> tuple:
        reused = self.writer is not None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            self.writer.write(head + body)
            status_line = await self.reader.readline()
            if not status_line and reused:  # the server closed an idle keep-alive connection
                self.close()  # as it did: send again on a new one (as HTTP clients do)
                return await self.request(path, body, ctype)
            status = int(status_line.split()[1])
            length, close = 0, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.decode().partition(":")
                if k.lower() == "content-length":
                    length = int(v)
                elif k.lower() == "connection" and "close" in v.lower():
                    close = True
            payload = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            self.close()
            return 0, b""  # a lost request (connection failed)
        if close:
            self.close()
        return status, payload

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def stats(lat: list, statuses: list, seconds: float) -> dict:
    lat = np.asarray(lat) * 1e3
    ok = sum(1 for s in statuses if s == 200)
    codes = {}
    for st in statuses:
        codes[str(st)] = codes.get(str(st), 0) + 1
    return {"requests": len(statuses), "ok": ok, "errors": len(statuses) - ok, "statuses": codes,
            "rps": ok / seconds,
            **{f"p{q}_ms": float(np.percentile(lat, q)) if len(lat) else float("nan")
               for q in (50, 95, 99)}}


async def closed_loop(port, bodies, path, ctype, concurrency, seconds, warmup=1.0) -> dict:
    lat, statuses = [], []
    start = time.perf_counter()
    t_end = start + warmup + seconds

    async def user(u):
        conn, i = Conn("127.0.0.1", port), u
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            status, _ = await conn.request(path, bodies[i % len(bodies)], ctype)
            t1 = time.perf_counter()
            i += concurrency
            if start + warmup <= t1 <= t_end:  # completions in the window, whenever started
                lat.append(t1 - t0)
                statuses.append(status)
        conn.close()

    await asyncio.gather(*(user(u) for u in range(concurrency)))
    return stats(lat, statuses, seconds)


async def open_loop(port, bodies, path, ctype, rate, seconds) -> dict:
    """Requests start at rate/s on a fixed schedule; each takes an idle connection or opens one."""
    idle: list = []
    lat, statuses, tasks = [], [], []
    n = int(rate * seconds)
    start = time.perf_counter() + 0.05

    async def one(i):
        conn = idle.pop() if idle else Conn("127.0.0.1", port)
        status, _ = await conn.request(path, bodies[i % len(bodies)], ctype)
        lat.append(time.perf_counter() - (start + i / rate))
        statuses.append(status)
        idle.append(conn)

    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    for c in idle:
        c.close()
    out = stats(lat, statuses, seconds)
    out["offered_rps"] = rate
    out["lost"] = n - len(statuses)
    return out


def get(port, path) -> tuple:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# ---------------------------------------------------------------------------------- server
class Server:
    def __init__(self, index, threads, *args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pypatch", "serve", str(index), "--port", str(self.port),
             "--threads", str(threads), *map(str, args)], stdout=self.log, stderr=self.log)
        deadline = time.time() + 180
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"server exited: {self.log.read()}")
            try:
                if get(self.port, "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("server not up in 180 s")
            time.sleep(0.2)

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def batches(self) -> tuple:
        """(queries batched, batched calls) so far, from /metrics."""
        text = get(self.port, "/metrics")[1].decode()
        tot = cnt = 0.0
        for line in text.splitlines():
            if line.startswith("pypatch_batch_size_sum"):
                tot += float(line.rsplit(" ", 1)[1])
            elif line.startswith("pypatch_batch_size_count"):
                cnt += float(line.rsplit(" ", 1)[1])
        return tot, cnt

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


MODES = {"on": ("--max-batch", 64, "--max-wait-ms", 2), "off": ("--max-batch", 1)}


def median_round(rounds: list) -> dict:
    """The round with the median throughput, listing every round's (a shared machine's load
    drifts: the rounds of both modes alternate, so drift hits both alike)."""
    r = dict(sorted(rounds, key=lambda x: x["rps"])[len(rounds) // 2])
    r["rounds_rps"] = [round(x["rps"], 1) for x in rounds]
    return r


def run_endpoint(name, index, bodies, path, ctype, concurrency, args, writer, log) -> dict:
    """Closed loop at each concurrency, then open loop at fractions of each mode's peak; the
    "on" and "off" servers run side by side (idle when not driven) and their rounds alternate."""
    servers = {}
    try:
        for mode, flags in MODES.items():
            servers[mode] = Server(index, args.threads, *flags)
            asyncio.run(closed_loop(servers[mode].port, bodies, path, ctype, 4, 1.0, warmup=0.5))
        out = {mode: [] for mode in servers}
        for c in concurrency:
            rounds = {mode: [] for mode in servers}
            for _ in range(args.rounds):
                for mode, server in servers.items():
                    b0 = server.batches()
                    r = asyncio.run(closed_loop(server.port, bodies, path, ctype, c, args.seconds))
                    b1 = server.batches()
                    r["batch_mean"] = (b1[0] - b0[0]) / max(1.0, b1[1] - b0[1])
                    rounds[mode].append(r)
            for mode, server in servers.items():
                r = median_round(rounds[mode])
                r.update(endpoint=name, mode=mode, loop="closed", concurrency=c, rss=server.rss())
                out[mode].append(r)
                writer.write(r)
                log(f"  {name:7s} {mode:3s} closed c={c:<3d} {r['rps']:8.1f} req/s  p50 "
                    f"{r['p50_ms']:8.2f}  p95 {r['p95_ms']:8.2f}  p99 {r['p99_ms']:8.2f} ms  "
                    f"errors {r['errors']}  batch {r['batch_mean']:5.1f}  rounds {r['rounds_rps']}")
        for frac in args.open_fractions:
            for mode, server in servers.items():
                peak = max(r["rps"] for r in out[mode])
                rate = max(1.0, round(frac * peak, 1))
                r = asyncio.run(open_loop(server.port, bodies, path, ctype, rate, args.seconds))
                r.update(endpoint=name, mode=mode, loop="open", fraction=frac, rss=server.rss())
                out[mode].append(r)
                writer.write(r)
                log(f"  {name:7s} {mode:3s} open {rate:7.1f}/s  {r['rps']:8.1f} req/s  p50 "
                    f"{r['p50_ms']:8.2f}  p95 {r['p95_ms']:8.2f}  p99 {r['p99_ms']:8.2f} ms  "
                    f"errors {r['errors']} lost {r['lost']}")
        return out
    finally:
        for server in servers.values():
            server.stop()


def multipart(name: str, jpeg: bytes, fields: dict) -> tuple:
    boundary = "pypatchbenchboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                 f'filename="{name}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode() + jpeg + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def in_process_images(index_path, jpegs, threads, seconds, batch, onnx_batch=1) -> dict:
    """The same JPEG bytes embedded and searched in batches (search_many: one scan per batch,
    the model run as the server runs it), no HTTP: img/s."""
    from pypatch import ImageIndex

    index = ImageIndex.load(index_path, mmap=True, num_threads=threads)
    index._get_embedder().batch_size = onnx_batch  # as the server runs the model
    data = [j for _, j in jpegs]
    index.search_many(data[:2], k=10)  # load the model
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        qs = [data[(done + i) % len(data)] for i in range(batch)]
        index.search_many(qs, k=10)
        done += batch
    return {"rps": done / (time.perf_counter() - t0), "batch": batch, "onnx_batch": onnx_batch}


def soak(index, bodies, rate, seconds, args, writer, log) -> dict:
    server = Server(index, args.threads, *MODES["on"])
    try:
        asyncio.run(closed_loop(server.port, bodies, "/search/vectors", "application/json", 4, 1))
        rss, totals = [server.rss()], {"requests": 0, "ok": 0, "errors": 0, "lost": 0}
        codes: dict = {}
        p99s, step = [], 30.0
        t_end = time.time() + seconds
        while time.time() < t_end:
            part = min(step, t_end - time.time())
            r = asyncio.run(open_loop(server.port, bodies, "/search/vectors",
                                      "application/json", rate, part))
            for key in totals:
                totals[key] += r[key]
            for code, n in r["statuses"].items():
                codes[code] = codes.get(code, 0) + n
            p99s.append(r["p99_ms"])
            rss.append(server.rss())
        out = {"endpoint": "vectors", "loop": "soak", "offered_rps": rate, "seconds": seconds,
               **totals, "statuses": codes, "rss_start": rss[0], "rss_after_first_step": rss[1],
               "rss_end": rss[-1], "rss_max": max(rss), "p99_ms_max_step": max(p99s),
               "p99_ms_median_step": float(np.median(p99s))}
        writer.write(out)
        log(f"  soak {rate:.0f}/s for {seconds:.0f}s: {totals['ok']} ok, {totals['errors']} errors "
            f"{codes},"
            f" {totals['lost']} lost; RSS {common.fmt_bytes(rss[0])} -> "
            f"{common.fmt_bytes(rss[1])} (after {step:.0f}s) -> {common.fmt_bytes(rss[-1])} "
            f"(max {common.fmt_bytes(max(rss))}); p99 per 30 s step: median "
            f"{out['p99_ms_median_step']:.1f} ms, max {out['p99_ms_max_step']:.1f} ms")
        return out
    finally:
        server.stop()


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2))
    axes = np.atleast_1d(axes)
    for ax, (name, modes) in zip(axes, results.items()):
        for mode, style in (("on", "o-"), ("off", "s--")):
            rows = [r for r in modes.get(mode, []) if r["loop"] == "closed"]
            if not rows:
                continue
            x = [r["rps"] for r in rows]
            ax.plot(x, [r["p50_ms"] for r in rows], style, label=f"batching {mode}: p50")
            ax.plot(x, [r["p99_ms"] for r in rows], style, alpha=0.45,
                    label=f"batching {mode}: p99")
            for r in rows:
                ax.annotate(f"c={r['concurrency']}", (r["rps"], r["p99_ms"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"/search{'/vectors' if name == 'vectors' else ''} (closed loop)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"pypatch serve, {common.cpu_name()}, {os.cpu_count()} vCPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small index, short runs")
    p.add_argument("--only", choices=["vectors", "image"], default=None)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--patches", type=int, default=14, help="patches per image (L2: 14)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--pq-m", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    p.add_argument("--image-concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--open-fractions", type=float, nargs="+", default=[0.25, 0.5, 0.8])
    p.add_argument("--seconds", type=float, default=5.0, help="per measured round")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds per point (the median is kept)")
    p.add_argument("--soak-seconds", type=float, default=0.0,
                   help="also hold 80%% of the batched vector peak for this long")
    p.add_argument("--soak-rate", type=float, default=None,
                   help="the soak's rate (default 80%% of the batched vector peak)")
    p.add_argument("--work-dir", default=str(WORK))
    p.add_argument("--plot", default=None, metavar="PNG")
    p.add_argument("--out", default=None, help="JSON-lines file (default benchmarks/results/)")
    args = p.parse_args()
    if args.quick:
        args.images, args.seconds = min(args.images, 10_000), min(args.seconds, 3.0)
        args.concurrency, args.image_concurrency = [1, 32], [1, 16]
        args.open_fractions, args.rounds = [0.5], 1
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    writer = common.JsonlWriter(args.out, "serve")

    def log(msg):
        print(msg, flush=True)

    log(f"machine: {common.cpu_name()}, {os.cpu_count()} logical CPUs; server --threads "
        f"{args.threads}; {args.seconds:g} s per point")
    results, checks = {}, []
    if args.only in (None, "vectors"):
        vpath = work / f"vectors-{args.images}x{args.patches}-d{args.dim}-m{args.pq_m}.ptch"
        if not vpath.exists():
            log(f"building {vpath.name} ...")
            t0 = time.perf_counter()
            build_vector_index(vpath, args.images, args.patches, args.dim, args.pq_m)
            log(f"  built in {time.perf_counter() - t0:.0f} s")
        queries = np.load(vpath.with_suffix(".queries.npy"))
        bodies = [json.dumps({"vectors": [q.tolist()], "k": 10}).encode() for q in queries]
        log(f"vector endpoint: {args.images} images x {args.patches} patches, PQ m={args.pq_m}, "
            f"dim {args.dim}, k=10, one vector per request")
        res = run_endpoint("vectors", vpath, bodies, "/search/vectors", "application/json",
                           args.concurrency, args, writer, log)
        results["vectors"] = res
        at = {m: next((r for r in res[m] if r.get("concurrency") == 32), None) for m in res}
        if at["on"] and at["off"]:
            gain = at["on"]["rps"] / at["off"]["rps"]
            tail = at["on"]["p99_ms"] / at["on"]["p50_ms"]
            checks.append((gain >= 2.0, f"vectors c=32: batching {gain:.2f}x the throughput of "
                                        f"one query per call (target >= 2x)"))
            checks.append((tail <= 4.0, f"vectors c=32 batching on: p99/p50 = {tail:.2f} "
                                        f"(target <= 4)"))
        if args.soak_seconds > 0:
            peak = max(r["rps"] for r in res["on"] if r["loop"] == "closed")
            rate = args.soak_rate or 0.8 * peak
            s = soak(vpath, bodies, rate, args.soak_seconds, args, writer, log)
            flat = s["rss_end"] <= s["rss_after_first_step"] * 1.05 + (8 << 20)
            checks.append((s["errors"] == 0 and s["lost"] == 0 and flat,
                           f"soak {args.soak_seconds:.0f} s at {rate:.0f}/s: {s['errors']} errors, "
                           f"{s['lost']} lost, RSS {common.fmt_bytes(s['rss_after_first_step'])} "
                           f"-> {common.fmt_bytes(s['rss_end'])}"))
    if args.only in (None, "image"):
        ipath = work / "photos-L2-flat.ptch"
        if not ipath.exists():
            log("building the photo index ...")
            build_image_index(ipath, args.threads)
        jpegs = photo_jpegs()
        log(f"image endpoint: {len(jpegs)} skimage photos as JPEG uploads, default model, "
            f"L2 flat, k=10")
        bodies = [multipart(n, j, {"k": "10", "refine": "false"})[0] for n, j in jpegs]
        ctype = multipart("x", b"", {})[1]
        res = run_endpoint("image", ipath, bodies, "/search", ctype, args.image_concurrency, args,
                           writer, log)
        results["image"] = res
        # the HTTP layer's cost: the server's best concurrency against the in-process loop,
        # their rounds alternating
        best_c = max((r for r in res["on"] if r["loop"] == "closed"), key=lambda r: r["rps"])
        best_c = best_c["concurrency"]
        server = Server(ipath, args.threads, *MODES["on"])
        try:
            asyncio.run(closed_loop(server.port, bodies, "/search", ctype, 4, 1.0, warmup=0.5))
            refs, served = [], []
            for _ in range(args.rounds):
                refs.append(in_process_images(ipath, jpegs, args.threads, args.seconds, 64))
                served.append(asyncio.run(closed_loop(server.port, bodies, "/search", ctype,
                                                      best_c, args.seconds)))
        finally:
            server.stop()
        ref, srv = median_round(refs), median_round(served)
        writer.write({"endpoint": "image", "loop": "in-process", **ref})
        writer.write({"endpoint": "image", "loop": "closed-vs-in-process", "mode": "on",
                      "concurrency": best_c, **srv})
        log(f"  in-process search_many (batches of 64, model run per image as the server): "
            f"{ref['rps']:.1f} img/s "
            f"(rounds {ref['rounds_rps']}); server c={best_c}: {srv['rps']:.1f} req/s "
            f"(rounds {srv['rounds_rps']})")
        checks.append((srv["rps"] >= 0.85 * ref["rps"],
                       f"image endpoint: {srv['rps']:.1f} req/s at c={best_c} = "
                       f"{srv['rps'] / ref['rps']:.0%} of the in-process loop's {ref['rps']:.1f} "
                       f"img/s, rounds alternating (target >= 85%)"))
        refine_bodies = [multipart(n, j, {"k": "10", "refine": "true"})[0] for n, j in jpegs]
        server = Server(ipath, args.threads, *MODES["on"])
        try:  # one query at a time: its latency is the cost of refining its top 10 hits
            r = asyncio.run(closed_loop(server.port, refine_bodies, "/search", ctype, 1,
                                        max(args.seconds, 20.0), warmup=3.0))
        finally:
            server.stop()
        r.update(endpoint="image", mode="on", loop="closed", concurrency=1, refine=True)
        writer.write(r)
        if r["ok"]:
            log(f"  image   on  closed c=1 refine=simmap (feature maps cached) {r['rps']:8.1f} "
                f"req/s  p50 {r['p50_ms']:7.2f}  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}")
        # uncached, each refined hit costs one backbone pass of its image (the top 10 are refined)
        from pypatch import ImageIndex
        from pypatch.index.refine import SimMapRefiner

        index = ImageIndex.load(ipath, num_threads=args.threads)
        refiner = SimMapRefiner(index._get_embedder(), cache_size=0)
        photos = sorted((ipath.parent / "photos").glob("*.jpg"))
        refiner.cells(str(photos[0]))
        t0 = time.perf_counter()
        for ph in photos:
            refiner.cells(str(ph))
        per_pass = (time.perf_counter() - t0) / len(photos)
        writer.write({"endpoint": "image", "loop": "refine-pass", "ms_per_hit": per_pass * 1e3})
        log(f"  refine=simmap uncached: {per_pass * 1e3:.0f} ms per refined hit (one backbone "
            f"pass at 512 px), so ~{10 * per_pass:.1f} s per query for its top 10")
    for ok, msg in checks:
        log(f"{'PASS' if ok else 'FAIL'}: {msg}")
    if args.plot and results:
        plot(results, args.plot)
        log(f"plot: {args.plot}")
    log(f"results: {writer.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

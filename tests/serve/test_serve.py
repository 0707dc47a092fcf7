"""``pypatch serve`` as a user runs it: a real server process on 127.0.0.1, real HTTP.

Answers are checked against ``ImageIndex.search`` / ``PatchIndex.search`` in this process (the
independent reference); bad requests must get a JSON 4xx and leave the server up.
"""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from _served import Served  # noqa: E402
from pypatch import PatchIndex  # noqa: E402
from pypatch.index.results import hit_json  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")
KEY = "test-key-123"


# ------------------------------------------------------------------------------- servers
def metric(text: str, name: str) -> float:
    """Sum of a metric's samples (all label sets) in Prometheus text."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    from skimage import data

    # root/secret.jpg, root/allowed/ (--allow-paths: odd files) and root/allowed/photos/ (indexed)
    root = tmp_path_factory.mktemp("serve")
    allowed = root / "allowed"
    d = allowed / "photos"
    d.mkdir(parents=True)
    for name in PHOTOS:
        Image.fromarray(getattr(data, name)()).convert("RGB").save(d / f"{name}.jpg", quality=92)
    (root / "secret.jpg").write_bytes((d / "coffee.jpg").read_bytes())  # outside the folder
    os.symlink(root / "secret.jpg", allowed / "link.jpg")  # a link inside pointing out
    (allowed / "notes.txt").write_text("not an image")
    Image.new("RGB", (3000, 3000), (9, 9, 9)).save(allowed / "bomb.png")  # 9 Mpx, a few kB
    return d


@pytest.fixture(scope="module")
def index_file(flat_index, photo_dir):
    path = photo_dir.parent.parent / "photos.ptch"
    flat_index.save(path)
    return path


@pytest.fixture(scope="module")
def server(index_file, photo_dir):
    key_file = photo_dir.parent.parent / "key"
    key_file.write_text(KEY + "\n")
    s = Served(index_file, "--allow-paths", photo_dir.parent, "--api-key-file", key_file,
               "--max-body-mb", 1, "--max-pixels", 4_000_000)
    yield s
    s.stop()
    assert "Traceback" not in s.output()  # no request made the server fail


def bare_index(n_images: int, seed: int, dim: int = 16, patches: int = 3) -> PatchIndex:
    rng = np.random.default_rng(seed)
    index = PatchIndex(dim)
    index.add(rng.standard_normal((n_images * patches, dim)).astype(np.float32),
              patches_per_image=patches)
    return index


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A bare PatchIndex server; its file is rebuilt and reloaded by the reload test. Large
    waits so that concurrent requests surely share batches."""
    path = tmp_path_factory.mktemp("bare") / "bare.ptch"
    bare_index(300, seed=1).save(path)
    s = Served(path, "--max-wait-ms", 100, "--max-batch", 16)
    s.path = path
    yield s
    s.stop()


def expected_json(index, query, **kwargs) -> list:
    return [hit_json(h) for h in index.search(query, **kwargs)]


def assert_same_hits(got: list, want: list) -> None:
    assert [{k: v for k, v in h.items() if k != "score"} for h in got] == \
           [{k: v for k, v in h.items() if k != "score"} for h in want]
    np.testing.assert_allclose([h["score"] for h in got], [h["score"] for h in want], atol=2e-6)


# ------------------------------------------------------------------------------- endpoints
def test_search_answers_as_image_index_search(server, flat_index, photo_dir):
    with server.client(KEY) as c:
        coffee = photo_dir / "coffee.jpg"
        # multipart, refined (the CLI's default)
        with open(coffee, "rb") as f:
            r = c.post("/search", files={"image": ("coffee.jpg", f, "image/jpeg")},
                       data={"box": "10,10,200,200", "k": "3"})
        assert r.status_code == 200, r.text
        assert r.json()["query"] == "coffee.jpg"
        assert_same_hits(r.json()["hits"], expected_json(flat_index, str(coffee),
                                                         box=[10, 10, 200, 200], k=3, refine=True))
        # JSON base64, not refined
        b64 = base64.b64encode((photo_dir / "rocket.jpg").read_bytes()).decode()
        r = c.post("/search", json={"image_b64": b64, "k": 4, "refine": False, "box": None})
        assert r.status_code == 200, r.text
        assert_same_hits(r.json()["hits"], expected_json(flat_index, str(photo_dir / "rocket.jpg"),
                                                         k=4))
        # a server-side path under --allow-paths, cells refinement
        r = c.post("/search", json={"image_path": "photos/chelsea.jpg", "k": 2, "refine": "cells",
                                    "box": [50, 20, 300, 250]})
        assert r.status_code == 200, r.text
        assert r.json()["query"] == "photos/chelsea.jpg"
        assert_same_hits(r.json()["hits"], expected_json(
            flat_index, str(photo_dir / "chelsea.jpg"), box=[50, 20, 300, 250], k=2,
            refine="cells"))


def test_search_vectors_info_health_metrics(server, flat_index, embedder, photo_dir):
    q = np.stack([embedder.embed_query(str(photo_dir / f"{n}.jpg"), regions="L2")
                  for n in PHOTOS[:3]])
    with server.client(KEY) as c:
        r = c.post("/search/vectors", json={"vectors": q.tolist(), "k": 2})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        want = flat_index.search_vectors(q, k=2)
        assert len(results) == 3
        for got, hits in zip(results, want):
            assert_same_hits(got["hits"], [hit_json(h) for h in hits])
        info = c.get("/info").json()
        assert info["images"] == len(PHOTOS) and info["regions"] == "L2"
        assert info["store"] == {"kind": "flat"} and info["file"].endswith("photos.ptch")
        assert c.get("/healthz").json() == {"status": "ok", "images": len(PHOTOS), "model": True}
        text = c.get("/metrics").text
    for name in ("pypatch_requests_total", "pypatch_request_errors_total",
                 "pypatch_request_duration_seconds_bucket", "pypatch_batch_size_count",
                 "pypatch_queue_depth", "pypatch_refine_duration_seconds_count"):
        assert name in text, name
    assert metric(text, "pypatch_request_errors_total") == 0


def test_sharded_folder_serves_as_the_single_file(flat_index, photo_dir, embedder, tmp_path):
    """pypatch serve accepts a sharded index folder (issue 13) and answers as the one file."""
    from pypatch import ShardedIndex

    folder = tmp_path / "sharded"
    ShardedIndex.from_index(flat_index, folder, shards=2)
    q = np.stack([embedder.embed_query(str(photo_dir / f"{n}.jpg"), regions="L2")
                  for n in PHOTOS[:2]])
    s = Served(folder)
    try:
        with s.client() as c:
            r = c.post("/search/vectors", json={"vectors": q.tolist(), "k": 3})
            assert r.status_code == 200, r.text
            for got, hits in zip(r.json()["results"], flat_index.search_vectors(q, k=3)):
                assert_same_hits(got["hits"], [hit_json(h) for h in hits])
            with open(photo_dir / "coffee.jpg", "rb") as f:
                r = c.post("/search", files={"image": ("coffee.jpg", f, "image/jpeg")},
                           data={"k": "3", "refine": "false"})
            assert r.status_code == 200, r.text
            assert_same_hits(r.json()["hits"],
                             expected_json(flat_index, str(photo_dir / "coffee.jpg"), k=3))
            assert c.get("/info").json()["images"] == len(PHOTOS)
    finally:
        s.stop()
    assert "Traceback" not in s.output()


def test_bare_patch_index_serves_vectors_only(bare):
    index = PatchIndex.load(bare.path)
    q = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)
    with bare.client() as c:
        r = c.post("/search/vectors", json={"vectors": q.tolist(), "k": 3})
        assert r.status_code == 200, r.text
        scores, images, patches = index.search(q, k=3)
        for row, got in enumerate(r.json()["results"]):
            assert [(h["rank"], h["image"], h["patch"]) for h in got["hits"]] == \
                   [(i + 1, int(images[row, i]), int(patches[row, i])) for i in range(3)]
            np.testing.assert_allclose([h["score"] for h in got["hits"]], scores[row], atol=2e-6)
        r = c.post("/search", json={"image_b64": "aGVsbG8="})
        assert r.status_code == 400 and "no model" in r.json()["error"]
        assert c.get("/info").json()["kind"] == "PatchIndex"


def test_concurrent_callers_each_get_their_own_answer(bare, server, flat_index, photo_dir):
    index = PatchIndex.load(bare.path)
    rng = np.random.default_rng(7)
    queries = [(rng.standard_normal((int(rng.integers(1, 4)), 16)).astype(np.float32),
                int(rng.integers(1, 6))) for _ in range(48)]

    def ask(client, q, k):
        return client.post("/search/vectors", json={"vectors": q.tolist(), "k": k})

    with bare.client() as c:
        before = metric(c.get("/metrics").text, "pypatch_batch_size_count")
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda a: ask(c, *a), queries))
        after = metric(c.get("/metrics").text, "pypatch_batch_size_count")
    for (q, k), r in zip(queries, answers):
        assert r.status_code == 200, r.text
        _, images, patches = index.search(q, k=k)
        assert [[(h["image"], h["patch"]) for h in res["hits"]] for res in r.json()["results"]] \
            == [list(zip(im.tolist(), p.tolist())) for im, p in zip(images, patches)]
    assert after - before < len(queries)  # some requests shared a batched call

    names = PHOTOS * 2
    with server.client(KEY) as c, ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(lambda n: c.post(
            "/search", json={"image_path": f"photos/{n}.jpg", "k": 2, "refine": False}), names))
    for n, r in zip(names, answers):
        assert r.status_code == 200, r.text
        assert_same_hits(r.json()["hits"], expected_json(flat_index, str(photo_dir / f"{n}.jpg"),
                                                         k=2))


def test_reload_under_load_loses_no_request(bare):
    stop, statuses = False, []

    def hammer():
        with bare.client() as c:
            while not stop:
                r = c.post("/search/vectors", json={"vectors": [[0.5] * 16], "k": 1})
                statuses.append(r.status_code)

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(hammer) for _ in range(4)]
        try:
            with bare.client() as c:
                tmp = bare.path.with_suffix(".new")
                bare_index(400, seed=2).save(tmp)
                os.replace(tmp, bare.path)  # a rebuilt file swapped in, as `pypatch index` does
                r = c.post("/admin/reload")
                assert r.status_code == 200 and r.json()["images"] == 400, r.text
                tmp.write_bytes(b"not an index")  # a broken rebuild: the old one serves on
                os.replace(tmp, bare.path)  # (replaced, never truncated: the old one is mapped)
                r = c.post("/admin/reload")
                assert r.status_code == 409 and "previous index" in r.json()["error"]
                bare_index(500, seed=3).save(tmp)
                os.replace(tmp, bare.path)
                bare.proc.send_signal(signal.SIGHUP)  # the daemon way
                deadline = time.monotonic() + 30
                while c.get("/healthz").json()["images"] != 500:
                    assert time.monotonic() < deadline, "SIGHUP did not reload"
                    time.sleep(0.05)
        finally:
            stop = True
            for w in workers:
                w.result()
    assert len(statuses) > 0 and set(statuses) == {200}
    q = np.full((1, 16), 0.5, np.float32)
    _, images, _ = PatchIndex.load(bare.path).search(q, k=1)
    with bare.client() as c:
        assert c.post("/search/vectors", json={"vectors": q.tolist(), "k": 1}).json()[
            "results"][0]["hits"][0]["image"] == int(images[0, 0])


# ------------------------------------------------------------------------------- bad requests
def _png(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("body, status, words", [
    ({"image_path": "../secret.jpg"}, 403, "outside"),
    ({"image_path": "link.jpg"}, 403, "outside"),  # a symlink out of the folder
    ({"image_path": "/etc/passwd"}, 403, "outside"),
    ({"image_path": "photos/../../secret.jpg"}, 403, "outside"),
    ({"image_path": "photos"}, 404, "no such file"),
    ({"image_path": "missing.jpg"}, 404, "no such file"),
    ({"image_path": "notes.txt"}, 400, "not a recognised image"),
    ({"image_path": "bomb.png"}, 400, "too large"),
    ({"image_b64": "%%%"}, 400, "base64"),
    ({"image_b64": base64.b64encode(b"GIF89a" + b"\0" * 20).decode()}, 400, "image"),
    ({"image_path": "photos/coffee.jpg", "box": [0, 0, 0, 0]}, 400, "box"),
    ({"image_path": "photos/coffee.jpg", "box": [0, 0, 5000, 10]}, 400, "box"),
    ({"image_path": "photos/coffee.jpg", "box": [1, 2, 3]}, 400, "box"),
    ({"image_path": "photos/coffee.jpg", "box": "a,b,c,d"}, 400, "box"),
    ({"image_path": "photos/coffee.jpg", "k": 0}, 400, "k"),
    ({"image_path": "photos/coffee.jpg", "k": "ten"}, 400, "k"),
    ({"image_path": "photos/coffee.jpg", "k": 10 ** 9}, 400, "k"),
    ({"image_path": "photos/coffee.jpg", "refine": "sharp"}, 400, "refine"),
    ({"image_path": "photos/coffee.jpg", "image_b64": "aGk="}, 400, "exactly one"),
    ({"image": "coffee.jpg"}, 400, "unknown field"),
])
def test_bad_search_requests_get_a_json_4xx(server, body, status, words):
    with server.client(KEY) as c:
        r = c.post("/search", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_bad_bodies_and_keys(server, photo_dir):
    with server.client(KEY) as c:
        big = b"\xff" * (1 << 20) + b"x" * 100
        r = c.post("/search", files={"image": ("big.jpg", big)})
        assert r.status_code == 413 and "too large" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is counted while reading
            for _ in range(40):
                yield b"{" * 50_000

        r = c.post("/search", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        r = c.post("/search", files={"image": ("x.jpg", b"not an image at all")})
        assert r.status_code == 400 and "not a recognised image" in r.json()["error"]
        r = c.post("/search", files={"image": ("x.png", _png())}, data={"box": "1,2,3"})
        assert r.status_code == 400 and "box" in r.json()["error"]
        r = c.post("/search", files={"image": ("x.png", _png())}, data={"k": "-1"})
        assert r.status_code == 400 and "k" in r.json()["error"]
        r = c.post("/search", data={"k": "2"})
        assert r.status_code == 400 and "image" in r.json()["error"]
        r = c.post("/search", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = c.post("/search", json=[1, 2])
        assert r.status_code == 400
        r = c.post("/search", content=b"x", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        for vectors in ([[1.0, 2.0]], [], [["a"] * 1280], "nope", [[float("nan")] * 1280]):
            r = c.post("/search/vectors", content=json.dumps({"vectors": vectors}),
                       headers={"content-type": "application/json"})
            assert r.status_code == 400, (vectors, r.text)
        assert c.get("/search").status_code == 405
        assert c.get("/nowhere").json() == {"error": "Not Found"}
        text = c.get("/metrics").text
    assert metric(text, "pypatch_request_errors_total") > 10
    assert 'status="500"' not in text  # every failure above was the client's, none a crash
    with server.client() as c:  # no key
        r = c.post("/search", json={"image_path": "photos/coffee.jpg"})
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert c.get("/healthz").status_code == 200  # open, for load balancers
    with server.client("wrong-key") as c:
        assert c.get("/info").status_code == 401
        assert c.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
    with server.client(None, headers={"Authorization": f"Bearer {KEY}"}) as c:
        assert c.get("/info").status_code == 200
    assert server.proc.poll() is None


def test_full_queue_answers_503_at_once(tmp_path):
    """--max-queue 1, one query per call, big requests: the overflow is refused with 503
    (JSON, Retry-After), the rest answered; nothing else."""
    path = tmp_path / "big.ptch"
    bare_index(20_000, seed=4, dim=64).save(path)
    s = Served(path, "--max-queue", 1, "--max-batch", 1, "--max-wait-ms", 0)
    try:
        q = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32).tolist()
        with s.client() as c, ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(
                lambda _: c.post("/search/vectors", json={"vectors": q, "k": 5}), range(48)))
        statuses = [r.status_code for r in answers]
        assert set(statuses) == {200, 503}, statuses
        busy = next(r for r in answers if r.status_code == 503)
        assert "busy" in busy.json()["error"] and busy.headers["retry-after"] == "1"
    finally:
        s.stop()

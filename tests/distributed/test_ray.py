"""Ray: distributed build and fan-out search on a real local Ray cluster (2 CPUs).

The reference is the in-process sharded build of the same photos: the Ray build must write
the same codebooks and byte-identical shard codes although an embedding actor is killed
mid-batch and the build is interrupted after its first shard and resumed (the finished shard
is kept, not rewritten). Ray search must answer exactly as the local ShardedIndex (first stage, re-ranking, box
refinement), also right after a shard actor's process is killed; a shard that cannot come back
is a typed error. ``pypatch serve DIR --ray`` (a real server process joining this cluster)
answers as the local index, waits through an actor restart, and answers 503 (JSON, never a
partial list) when a shard is gone.
"""
from __future__ import annotations

import functools
import os
import signal

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
skimage_data = pytest.importorskip("skimage.data")

from pypatch import ShardedIndex  # noqa: E402
from pypatch.distributed import manifest as mf  # noqa: E402

SETTINGS = dict(regions="L1", store="pq", pq_m=8, pq_nbits=4, train_size=256, pca_dim=16,
                pca_power=-0.5, opq=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Ray workers start in the driver's working directory and import from it: outside the
    # checkout they import the installed pypatch (CI installs it non-editable, without a
    # compiled core in the source tree).
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray_cwd"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    import test_ray as this  # the fault hooks below travel to the actors by value

    ray.cloudpickle.register_pickle_by_value(this)
    yield
    ray.shutdown()
    os.chdir(cwd)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_photos")
    d = skimage_data
    for name, arr in {"astronaut.jpg": d.astronaut(), "rocket.jpg": d.rocket(),
                      "coffee.png": d.coffee(), "camera.png": d.camera(),
                      "chelsea.png": d.chelsea(), "moto.png": d.stereo_motorcycle()[0]}.items():
        Image.fromarray(arr).save(root / name)
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def local(photos, embedder, tmp_path_factory):
    return ShardedIndex.build(photos, tmp_path_factory.mktemp("local") / "idx", shards=2,
                              embedder=embedder, progress=False, **SETTINGS)


class Interrupted(Exception):
    pass


def _kill_once(marker, batch):
    """Kill this embedding actor's process on the first batch any actor sees."""
    try:
        os.rename(marker, marker + ".done")  # atomic: exactly one actor wins
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _stop_after(first, s):
    if s >= first:
        raise Interrupted(f"stopped after shard {s}")


def _codes(index):
    return [s.patch_index._ix.codes().tobytes() for s in index.shards]


def test_build_with_killed_worker_and_resume_equals_local(cluster, photos, local, tmp_path):
    from pypatch.distributed.ray_build import STATE, build_sharded_ray

    out, marker = tmp_path / "ray", str(tmp_path / "kill-once")
    open(marker, "w").close()
    with pytest.raises(Interrupted):
        build_sharded_ray(photos, out, shards=2, workers=2, batch_size=2,
                          _on_batch=functools.partial(_kill_once, marker),
                          _after_shard=functools.partial(_stop_after, 0), **SETTINGS)
    assert os.path.exists(marker + ".done")  # an actor really was killed mid-embedding
    assert sorted(os.listdir(out)) == sorted([STATE, mf.CODEBOOKS, mf.shard_name(0)])
    before = os.stat(out / mf.shard_name(0))

    index = build_sharded_ray(photos, out, shards=2, workers=2, batch_size=2, **SETTINGS)
    after = os.stat(out / mf.shard_name(0))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # kept
    assert not os.path.exists(out / STATE)
    assert [(os.path.basename(p), r) for p, r in index.skipped] == \
           [("broken.jpg", "not a recognised image format (corrupt or not an image)")]
    assert index.ids == local.ids
    assert np.array_equal(index.shards[0].patch_index.pq.centroids,
                          local.shards[0].patch_index.pq.centroids)
    assert _codes(index) == _codes(local)  # byte-identical shards
    assert np.array_equal(index.transform.matrix, local.transform.matrix)


def _same(got, want):
    assert [[(h.rank, h.image, h.patch, h.box, h.level, np.float32(h.score)) for h in g]
            for g in got] == \
           [[(h.rank, h.image, h.patch, h.box, h.level, np.float32(h.score)) for h in w]
            for w in want]


def test_fan_out_search_survives_a_killed_actor(cluster, photos, local, embedder):
    from pypatch.distributed.ray_search import RayShardedIndex, ShardUnavailableError

    served = RayShardedIndex(local.folder, timeout_s=60)
    try:
        served.set_embedder(embedder)
        local.set_embedder(embedder)
        rng = np.random.default_rng(0)
        q = rng.standard_normal((5, embedder.dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        queries = [str(photos / "chelsea.png"), str(photos / "rocket.jpg")]
        for k in (1, 3, 10):
            _same(served.search_vectors(q, k=k), local.search_vectors(q, k=k))
        _same(served.search_many(queries, k=4), local.search_many(queries, k=4))
        assert len(served) == len(local) and served.info()["images"] == 6
        # the second stage (re-ranking reads patch vectors, refinement image info, from the
        # shard actors) answers as the local index too
        for stage in (dict(rerank="qe", qe_n=2), dict(rerank="multipatch", rerank_k=4),
                      dict(refine=True, refine_k=2), dict(rerank="qe", refine="cells")):
            _same(served.search_many(queries, k=3, **stage),
                  local.search_many(queries, k=3, **stage))

        os.kill(ray.get(served.actors[0].pid.remote()), signal.SIGKILL)
        _same(served.search_vectors(q, k=6), local.search_vectors(q, k=6))  # waited, complete

        ray.kill(served.actors[1], no_restart=True)
        with pytest.raises(ShardUnavailableError, match="no partial answer"):
            served.search_vectors(q, k=6)
    finally:
        served.close()


def test_serve_with_ray_actors(cluster, photos, local, embedder):
    pytest.importorskip("httpx")
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    import base64

    from _served import Served
    from pypatch.index.results import hit_json

    local.set_embedder(embedder)
    rng = np.random.default_rng(3)
    q = rng.standard_normal((3, embedder.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    want = {"results": [{"hits": [hit_json(h) for h in hits]}
                        for hits in local.search_vectors(q, k=4)]}
    body = {"vectors": q.tolist(), "k": 4}
    server = Served(local.folder, "--ray", "--ray-address", ray.get_runtime_context().gcs_address,
                    "--ray-timeout-s", 30)
    try:
        with server.client() as c:
            info = c.get("/info").json()
            assert info["served_by"] == "ray" and info["images"] == len(local) == 6
            r = c.post("/search/vectors", json=body)
            assert r.status_code == 200 and r.json() == want, r.text
            b64 = base64.b64encode((photos / "chelsea.png").read_bytes()).decode()
            r = c.post("/search", json={"image_b64": b64, "k": 3, "refine": False})
            assert r.status_code == 200, r.text
            assert r.json()["hits"] == [hit_json(h) for h in
                                        local.search(str(photos / "chelsea.png"), k=3)]

            # a shard actor's process dies: the next query waits for the restart, complete
            actor = ray.get_actor(info["ray_actors"][0], namespace=info["ray_namespace"])
            pid = ray.get(actor.pid.remote())
            os.kill(pid, signal.SIGKILL)
            r = c.post("/search/vectors", json=body)
            assert r.status_code == 200 and r.json() == want, r.text
            assert ray.get(actor.pid.remote()) != pid  # it really restarted

            # a shard that cannot come back: 503 with a JSON message, never a partial answer
            ray.kill(ray.get_actor(info["ray_actors"][1], namespace=info["ray_namespace"]),
                     no_restart=True)
            r = c.post("/search/vectors", json=body)
            assert r.status_code == 503 and "no partial answer" in r.json()["error"], r.text
            assert c.get("/healthz").status_code == 200  # the server stays up
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


def test_ray_search_re_ranks_as_the_local_index(cluster, photos, embedder, tmp_path):
    """With re-rank stores the actors re-score their images among the global top rerank_k:
    the answers equal the local ShardedIndex's (itself the one-file index's); Ray builds say
    they do not write re-rank stores."""
    from pypatch.distributed.ray_build import build_sharded_ray
    from pypatch.distributed.ray_search import RayShardedIndex
    from pypatch.errors import InvalidArgumentError

    local = ShardedIndex.build(photos, tmp_path / "rr", shards=3, embedder=embedder,
                               progress=False, rerank_store="flat16", **SETTINGS)
    served = RayShardedIndex(local.folder, timeout_s=60)
    try:
        rng = np.random.default_rng(1)
        q = rng.standard_normal((4, embedder.dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        for k, rerank_k in ((1, None), (3, 4), (6, None), (2, 0)):
            _same(served.search_vectors(q, k=k, rerank_k=rerank_k),
                  local.search_vectors(q, k=k, rerank_k=rerank_k))
        # the second round ran: re-ranked scores are not the first stage's
        assert [h.score for h in served.search_vectors(q, k=6)[0]] != \
            [h.score for h in served.search_vectors(q, k=6, rerank_k=0)[0]]
    finally:
        served.close()
    with pytest.raises(InvalidArgumentError, match="Ray builds do not write re-rank stores"):
        build_sharded_ray(photos, tmp_path / "ray_rr", shards=2, workers=1,
                          rerank_store="flat16", **SETTINGS)

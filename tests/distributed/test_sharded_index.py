"""ShardedIndex: a folder of shards answers exactly as one ImageIndex over the same images.

The reference is the monolithic ImageIndex built with the same codebooks: every query's ids,
scores (bit-equal), patches and boxes must match, ties included (equal vectors planted in
different shards), on random vectors (any k, removals) and on real photos with the default
model (first stage, rerank, refined boxes). Shard files hold the monolithic index's codes
byte for byte. Tampered folders are refused with typed errors.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from pypatch import ImageIndex, ShardedIndex, open_index
from pypatch.distributed import manifest as mf
from pypatch.errors import (IndexFormatError, IndexVersionError, InvalidArgumentError,
                            ModelMismatchError)

skimage_data = pytest.importorskip("skimage.data")

N_IMAGES = 60
TWIN = (7, 52)  # images with identical vectors: a tie that must break by global order


def _random_index(embedder, store, pca_dim=None):
    """An ImageIndex of random unit vectors (5 L1 cells per image), trained like build."""
    rng = np.random.default_rng(1)
    dim = embedder.dim
    vecs = rng.standard_normal((N_IMAGES, 5, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=2, keepdims=True)
    vecs[TWIN[1]] = vecs[TWIN[0]]
    sizes = [(200 + 7 * i, 150 + 3 * i) for i in range(N_IMAGES)]
    index = ImageIndex.create(regions="L1", store=store, pq_m=16, train_size=256,
                              embedder=embedder, pca_dim=pca_dim, pca_power=-0.5, opq=False)
    if not index.is_trained:
        index.train_embedded(zip(vecs, sizes))
    index.add_embedded((f"img{i:03d}", None, vecs[i], sizes[i]) for i in range(N_IMAGES))
    return index, vecs


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert [(h.rank, h.image, h.patch, h.box, h.cell, h.level) for h in g] == \
               [(h.rank, h.image, h.patch, h.box, h.cell, h.level) for h in w]
        # bit-equal scores
        assert np.array_equal(np.float32([h.score for h in g]), np.float32([h.score for h in w]))


@pytest.mark.parametrize("store,pca_dim", [("pq", None), ("flat", None), ("pq", 64)])
def test_random_vectors_identical_to_monolithic(embedder, tmp_path, store, pca_dim):
    index, vecs = _random_index(embedder, store, pca_dim)
    index.remove(["img010", "img033"])  # tombstones must not shift the global order
    sharded = ShardedIndex.from_index(index, tmp_path / "sh", shards=4)
    assert len(sharded.shards) == 4 and len(sharded) == len(index) == N_IMAGES - 2
    assert sharded.ids == index.ids
    rng = np.random.default_rng(2)
    queries = np.concatenate([vecs[TWIN[0], :1] * 0.9 + 0.1 * vecs[3, :1],
                              vecs[[0, 20, 59], 2],
                              rng.standard_normal((6, embedder.dim)).astype(np.float32)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for k in (1, 3, 10, N_IMAGES, 100):
        _assert_same(sharded.search_vectors(queries, k=k), index.search_vectors(queries, k=k))
    # the twins tie exactly and rank in global order, from different shards
    hits = sharded.search_vectors(vecs[TWIN[0], 1], k=2)[0]
    assert [h.image for h in hits] == ["img007", "img052"] and hits[0].score == hits[1].score
    # codes (or stored vectors) are the monolithic index's, byte for byte
    if store == "pq":
        index.compact()
        whole = index.patch_index._ix.codes()
        parts = np.concatenate([s.patch_index._ix.codes() for s in sharded.shards])
        assert whole.tobytes() == parts.tobytes()


def _photos(root):
    d = skimage_data
    arrays = {"astronaut.png": d.astronaut(), "rocket.png": d.rocket(),
              "coffee.png": d.coffee(), "chelsea.png": d.chelsea(),
              "motorcycle.png": d.stereo_motorcycle()[0], "camera.png": d.camera(),
              "hubble.png": d.hubble_deep_field()[::2, ::2]}
    for name, arr in arrays.items():
        Image.fromarray(arr).save(root / name)
    return root


@pytest.fixture(scope="module")
def photo_index(embedder, tmp_path_factory):
    photos = _photos(tmp_path_factory.mktemp("photos"))
    index = ImageIndex.build(photos, regions="L2", store="pq", pq_m=16, pq_nbits=4, train_size=256,
                             embedder=embedder, progress=False)
    return photos, index


def test_real_photos_identical_to_monolithic(photo_index, tmp_path):
    photos, index = photo_index
    sharded = ShardedIndex.from_index(index, tmp_path / "sh", shards=3)
    reopened = open_index(tmp_path / "sh")
    assert isinstance(reopened, ShardedIndex)
    queries = [str(photos / "chelsea.png"), str(photos / "rocket.png"), str(photos / "coffee.png")]
    boxes = [None, [100, 50, 400, 400], [0, 0, 300, 200]]
    for s in (sharded, reopened):
        s.set_embedder(index._get_embedder())
        _assert_same(s.search_many(queries, boxes, k=5), index.search_many(queries, boxes, k=5))
        for second in ({"rerank": "qe"}, {"rerank": "multipatch", "refine": "cells"}):
            _assert_same(s.search_many(queries, boxes, k=4, **second),
                         index.search_many(queries, boxes, k=4, **second))
    assert reopened.info()["images"] == index.info()["images"] == 7
    assert reopened.info()["patches"] == index.info()["patches"]
    assert [e["images"] for e in reopened.info()["shards"]] == [2, 3, 2]


def test_add_remove_save_reopen(photo_index, tmp_path):
    photos, index = photo_index
    first = index.subset(index.ids[:5])
    sharded = ShardedIndex.from_index(first, tmp_path / "sh", shards=2)
    sharded.set_embedder(index._get_embedder())
    rest = [(i, str(photos / i)) for i in index.ids[5:]]
    q = [str(photos / "astronaut.png")]

    def answers_as_one_index():  # the native search over the shards follows every edit
        _assert_same(sharded.search_many(q, k=10), index.subset(sharded.ids).search_many(q, k=10))

    answers_as_one_index()
    assert sharded.add(rest[:1], progress=False) == [rest[0][0]]
    answers_as_one_index()  # a shard grew
    assert sharded.add(rest[1:] + [(index.ids[0], str(photos / index.ids[0]))], progress=False,
                       new_shard=True) == [rest[1][0]]
    answers_as_one_index()  # a shard more
    assert sharded.skipped and "duplicate" in sharded.skipped[0][1]
    assert sharded.remove([index.ids[1], index.ids[6]]) == 2
    answers_as_one_index()
    with pytest.raises(InvalidArgumentError, match="unknown"):
        sharded.remove("nope.png")
    sharded.save()
    again = ShardedIndex.open(tmp_path / "sh")
    assert len(again.shards) == 3 and again.ids == [i for i in index.ids if i not in
                                                    (index.ids[1], index.ids[6])]
    # still the monolithic answer of the same images (re-embedded images: same model, same codes)
    mono = index.subset(again.ids)
    again.set_embedder(index._get_embedder())
    _assert_same(again.search_many(q, k=10), mono.search_many(q, k=10))


def _tamper_copy(index, tmp_path, name):
    folder = tmp_path / name
    ShardedIndex.from_index(index, folder, shards=2)
    return folder


def test_tampered_folders_are_refused(photo_index, tmp_path):
    _, index = photo_index
    folder = _tamper_copy(index, tmp_path, "missing")
    os.remove(folder / mf.shard_name(1))
    with pytest.raises(IndexFormatError, match="missing shard"):
        ShardedIndex.open(folder)

    folder = _tamper_copy(index, tmp_path, "hash")
    path = folder / mf.shard_name(0)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="sha256"):
        ShardedIndex.open(folder)

    folder = _tamper_copy(index, tmp_path, "version")
    man = json.loads((folder / mf.MANIFEST).read_text())
    man["version"] = mf.VERSION + 1
    (folder / mf.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(IndexVersionError, match="newer"):
        ShardedIndex.open(folder)

    # a shard re-saved by another model (its card differs), with an honest manifest entry
    folder = _tamper_copy(index, tmp_path, "model")
    shard = ImageIndex.load(folder / mf.shard_name(1), mmap=False)
    shard._meta["model"] = dict(shard._meta["model"],
                                card=dict(shard._meta["model"]["card"], name="other_net"))
    shard.save(folder / mf.shard_name(1))
    man = json.loads((folder / mf.MANIFEST).read_text())
    man["shards"][1] = mf.file_entry(folder, mf.shard_name(1), images=man["shards"][1]["images"],
                                     patches=man["shards"][1]["patches"])
    (folder / mf.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(ModelMismatchError, match="other_net"):
        ShardedIndex.open(folder)

    # a shard of another index (other codebooks) swapped in
    folder = _tamper_copy(index, tmp_path, "codebooks")
    other = ShardedIndex.from_index(_retrained(index), tmp_path / "other", shards=2)
    shutil.copy(os.path.join(other.folder, mf.shard_name(0)), folder / mf.shard_name(0))
    man = json.loads((folder / mf.MANIFEST).read_text())
    man["shards"][0] = mf.file_entry(folder, mf.shard_name(0), images=man["shards"][0]["images"],
                                     patches=man["shards"][0]["patches"])
    (folder / mf.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(IndexFormatError, match="codebooks"):
        ShardedIndex.open(folder)
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        open_index(tmp_path)  # a plain folder


def _retrained(index):
    """The same images under codebooks trained with another seed (no PCA: the photo index
    stores the model's dimension, so its decoded patches are valid model descriptors)."""
    embedded = [(i, index.patch_vectors(i), tuple(index.image_info(i)["size"]))
                for i in index.ids]
    other = ImageIndex.create(regions="L2", store="pq", pq_m=16, pq_nbits=4, train_size=256, seed=5,
                              embedder=index._get_embedder(), pca_dim=None)
    other.train_embedded((v, size) for _, v, size in embedded)
    other.add_embedded((i, None, v, size) for i, v, size in embedded)
    return other

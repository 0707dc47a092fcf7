"""ImageIndex with an exact re-rank store (``build(rerank_store=...)``) on real photos.

First stage: IVF over 4-bit PQ codes; second: float16 vectors (or 8-bit codes) of the same
stored patch vectors, saved beside the index file. References: numpy over the re-rank store's
own rows (float16 values, exact in float64) restricted to the first stage's candidates, which
come from the native first-stage search without re-rank.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("skimage.data")

from pypatch import ImageIndex, PatchIndex  # noqa: E402
from pypatch.errors import IndexFormatError, InvalidArgumentError  # noqa: E402
from pypatch.evaluation.rankers import CachingEmbedder  # noqa: E402
from _photo_folder import SIX_PHOTOS, write_photos_and_crops  # noqa: E402

NLIST = 8
SETTINGS = dict(regions="L3", store="pq", pq_m=8, pq_nbits=4, nlist=NLIST, nprobe=2,
                progress=False, seed=3)
NAMES = SIX_PHOTOS


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """12 images: six photos and a crop of each (30 cells each: 360 patch vectors)."""
    return write_photos_and_crops(tmp_path_factory.mktemp("rerank_photos"), NAMES)


@pytest.fixture(scope="module")
def cached(embedder):
    return CachingEmbedder(embedder)


@pytest.fixture(scope="module")
def index(photos, cached):
    return ImageIndex.build(str(photos), embedder=cached, rerank_store="flat16", **SETTINGS)


def _stored_query(index, photos, name):
    return index.to_stored(index._get_embedder().embed_query(str(photos / name)))


def _reference(index, q, k, rerank_k, nprobe=None):
    """Top k of the first stage's top rerank_k images (native search, no re-rank) re-scored by
    numpy over ALL their patches in the re-rank store: [(image id, patch, score)]."""
    _, cand, _ = index.patch_index.search(q, k=rerank_k, nprobe=nprobe)
    store = index.rerank_store
    rows = []
    for row in cand[0]:
        if row < 0 or index.patch_index.is_removed(int(row)):
            continue
        scores = store.reconstruct(int(row)).astype(np.float64) @ q[0].astype(np.float64)
        best = int(np.argmax(scores))
        rows.append((-scores[best], int(row), best))
    rows.sort()
    ids = index._ids
    return [(ids[row], patch, -neg) for neg, row, patch in rows[:k]]


def _check_hits(hits, expected):
    assert [(h.image, h.patch) for h in hits] == [(i, p) for i, p, _ in expected]
    for h, (_, _, score) in zip(hits, expected):
        assert h.score == pytest.approx(score, abs=1e-5)


def test_stores_the_same_vectors_in_float16(index, photos, cached):
    store = index.rerank_store
    assert store is not None and store.flat_dtype == "float16" and not store.is_ivf
    np.testing.assert_array_equal(store.image_offsets, index.patch_index.image_offsets)
    from pypatch.extract.grid import parse_regions

    emb = cached.lookup(str(photos / "coffee_crop.png"), parse_regions("L3"), "crop")
    row = index._row["coffee_crop.png"]
    want = index.to_stored(emb.vectors).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(store.reconstruct(row), want)


@pytest.mark.parametrize("name,k,rerank_k", [("chelsea.png", 5, 6), ("rocket_crop.png", 3, 4),
                                             ("coins.png", 4, None)])
def test_search_equals_numpy_rescore_of_the_first_stage_candidates(index, photos, name, k,
                                                                   rerank_k):
    q = _stored_query(index, photos, name)
    hits = index.search_vectors(q, k=k, stored=True, rerank_k=rerank_k)[0]
    # default rerank_k: max(4k, 100), i.e. every image of this 12-image index
    _check_hits(hits, _reference(index, q[None, :], k, rerank_k or 100))
    # the same through search() on the query image
    assert [(h.image, h.patch) for h in index.search(str(photos / name), k=k, rerank_k=rerank_k)] \
        == [(h.image, h.patch) for h in hits]


def test_rerank_k_zero_is_the_first_stage_alone(index, photos):
    q = _stored_query(index, photos, "astronaut_crop.png")
    hits = index.search_vectors(q, k=6, stored=True, rerank_k=0)[0]
    scores, images, patches = index.patch_index.search(q[None, :], k=6)
    assert [(h.image, h.patch, h.score) for h in hits] == [
        (index._ids[r], int(p), float(s)) for s, r, p in zip(scores[0], images[0], patches[0])]
    with pytest.raises(InvalidArgumentError, match="rerank_k must be 0 or >= k"):
        index.search_vectors(q, k=6, stored=True, rerank_k=3)


def test_save_load_mmap_round_trip(index, photos, tmp_path):
    path = tmp_path / "ix.ptch"
    index.save(path)
    assert os.path.exists(str(path) + ".rerank.ptch")
    loaded = ImageIndex.load(path, mmap=True)
    store = loaded.rerank_store
    assert store is not None and store.memory_usage()["mapped"] > 0
    info = loaded.info()["rerank_store"]
    assert info["kind"] == "flat16" and info["bytes_per_patch"] == 2 * loaded.patch_index.dim
    for name in ("camera_crop.png", "coffee.png"):
        a = index.search(str(photos / name), k=5)
        b = loaded.search(str(photos / name), k=5)
        assert [(h.image, h.patch, h.score) for h in a] == [(h.image, h.patch, h.score) for h in b]
    q = _stored_query(loaded, photos, "rocket.png")
    _check_hits(loaded.search_vectors(q, k=4, stored=True, rerank_k=5)[0],
                _reference(loaded, q[None, :], 4, 5))
    # a mapped index takes edits in both stores, and saves them to a new pair of files
    loaded.remove("rocket.png")
    loaded.add([("rocket-again", str(photos / "rocket.png"))])
    np.testing.assert_array_equal(loaded.rerank_store.removed, loaded.patch_index.removed)
    _check_hits(loaded.search_vectors(q, k=4, stored=True)[0], _reference(loaded, q[None, :], 4, 100))
    assert loaded.search_vectors(q, k=1, stored=True)[0][0].image == "rocket-again"
    loaded.save(tmp_path / "edited.ptch")
    again = ImageIndex.load(tmp_path / "edited.ptch")
    assert len(again.rerank_store) == len(again) == 12
    _check_hits(again.search_vectors(q, k=4, stored=True)[0], _reference(again, q[None, :], 4, 100))


def test_older_readers_refuse_the_file(index, tmp_path, monkeypatch):
    from pypatch.errors import IndexVersionError
    from pypatch.index import meta as index_meta

    index.save(tmp_path / "f.ptch")
    assert ImageIndex.load(tmp_path / "f.ptch")._meta["format"] == 4
    monkeypatch.setattr(index_meta, "META_FORMAT", 3)  # what pypatch before the re-rank store reads
    with pytest.raises(IndexVersionError, match="format 4 is newer"):
        ImageIndex.load(tmp_path / "f.ptch")


def test_missing_foreign_or_mismatched_rerank_file_raises(index, photos, cached, tmp_path):
    path, other = tmp_path / "a.ptch", tmp_path / "b.ptch"
    index.save(path)
    side = str(path) + ".rerank.ptch"
    os.rename(side, side + ".away")
    with pytest.raises(IndexFormatError, match="rerank.ptch' is missing"):
        ImageIndex.load(path)
    os.rename(side + ".away", side)
    # another index's file (same settings, fewer images): its token differs
    small = ImageIndex.build([str(photos / f"{n}.png") for n in NAMES], embedder=cached,
                             rerank_store="flat16", **dict(SETTINGS, nlist=4))
    small.save(other)
    os.replace(str(other) + ".rerank.ptch", side)
    with pytest.raises(IndexFormatError, match="a.ptch.rerank.ptch' is not the re-rank store.*token"):
        ImageIndex.load(path)
    # the right token on a file of another image count: refused on the counts
    index.save(path)
    token = PatchIndex.load(side).metadata["pypatch.rerank_store"]["token"]
    small.save(other)
    fake = PatchIndex.load(str(other) + ".rerank.ptch", mmap=False)
    fake.metadata = {"pypatch.rerank_store": {"token": token}}
    fake.save(side)
    with pytest.raises(IndexFormatError, match="6 images / 180 patches but the index holds 12"):
        ImageIndex.load(path)
    # a damaged file is an IndexFormatError naming it
    with open(side, "r+b") as f:
        f.seek(0)
        f.write(b"garbage!")
    with pytest.raises(IndexFormatError, match="rerank.ptch"):
        ImageIndex.load(path)


def test_remove_add_compact_subset_keep_both_stores_in_step(photos, cached, tmp_path):
    ix = ImageIndex.build([(f"{n}.png", str(photos / f"{n}.png")) for n in NAMES],
                          embedder=cached, rerank_store="flat16", **dict(SETTINGS, nlist=4))
    ix.remove(["coffee.png", "rocket.png"])
    np.testing.assert_array_equal(ix.rerank_store.removed, ix.patch_index.removed)
    q = _stored_query(ix, photos, "coffee_crop.png")
    hits = ix.search_vectors(q, k=4, stored=True)[0]
    assert {"coffee.png", "rocket.png"}.isdisjoint(h.image for h in hits)
    _check_hits(hits, _reference(ix, q[None, :], 4, 100))
    # replace=True removes the old row in both stores
    ix.add([("camera.png", str(photos / "camera_crop.png")),
            ("coins_crop.png", str(photos / "coins_crop.png"))], replace=True)
    np.testing.assert_array_equal(ix.rerank_store.removed, ix.patch_index.removed)
    np.testing.assert_array_equal(ix.rerank_store.image_offsets, ix.patch_index.image_offsets)
    _check_hits(ix.search_vectors(q, k=5, stored=True)[0], _reference(ix, q[None, :], 5, 100))
    part = ix.subset(["chelsea.png", "camera.png", "coins_crop.png"])
    assert len(part.rerank_store) == len(part) == 3 and part.patch_index.num_patches == 90
    for image_id in ("chelsea.png", "camera.png", "coins_crop.png"):
        np.testing.assert_array_equal(part.rerank_store.reconstruct(part._row[image_id]),
                                      ix.rerank_store.reconstruct(ix._row[image_id]))
    _check_hits(part.search_vectors(q, k=3, stored=True)[0], _reference(part, q[None, :], 3, 100))
    ix.compact()
    assert ix.rerank_store.num_removed == 0 and len(ix.rerank_store) == len(ix) == 5
    np.testing.assert_array_equal(ix.rerank_store.image_offsets, ix.patch_index.image_offsets)
    path = tmp_path / "edited.ptch"
    ix.save(path)
    loaded = ImageIndex.load(path)
    _check_hits(loaded.search_vectors(q, k=5, stored=True)[0],
                _reference(loaded, q[None, :], 5, 100))


def _reloaded_answers_alike(index, q, path):
    """``index`` saved to ``path`` and loaded mapped: the same hits, bit for bit. Returns it."""
    index.save(path)
    loaded = ImageIndex.load(path, mmap=True)
    a = index.search_vectors(q, k=5, stored=True)[0]
    b = loaded.search_vectors(q, k=5, stored=True)[0]
    assert [(h.image, h.patch, h.score) for h in a] == [(h.image, h.patch, h.score) for h in b]
    return loaded


def test_pq8_rerank_store_rescores_with_8bit_adc(photos, cached, tmp_path):
    ix = ImageIndex.build(str(photos), embedder=cached, rerank_store="pq8", **SETTINGS)
    store = ix.rerank_store
    assert store.pq.nbits == 8 and store.pq.m == 8 and not store.is_ivf
    assert ix.info()["rerank_store"]["bytes_per_patch"] == 8
    q = _stored_query(ix, photos, "chelsea_crop.png")
    # reconstruct decodes the 8-bit codes: its inner product is the ADC score
    _check_hits(ix.search_vectors(q, k=5, stored=True, rerank_k=8)[0],
                _reference(ix, q[None, :], 5, 8))
    loaded = _reloaded_answers_alike(ix, q, tmp_path / "pq8.ptch")
    assert loaded.rerank_store.pq.nbits == 8


def test_pq8_d4_rerank_store_codes_four_dims_a_byte(photos, cached, tmp_path):
    fine = ImageIndex.build(str(photos), embedder=cached, rerank_store="pq8-d4", **SETTINGS)
    coarse = ImageIndex.build(str(photos), embedder=cached, rerank_store="pq8", **SETTINGS)
    store, dim = fine.rerank_store, int(fine.patch_index.dim)
    assert store.pq.nbits == 8 and store.pq.m == dim // 4 and not store.is_ivf
    assert fine.info()["rerank_store"]["bytes_per_patch"] == dim // 4
    assert fine.info()["rerank_store"]["m"] == dim // 4
    # 4 dims a byte reconstruct the stored vectors far closer than the first stage's m = 8
    from pypatch.extract.grid import parse_regions

    exact = fine.to_stored(cached.lookup(str(photos / "coffee.png"), parse_regions("L3"),
                                         "crop").vectors)
    err = {kind: np.linalg.norm(ix.rerank_store.reconstruct(ix._row["coffee.png"]) - exact, axis=1)
           for kind, ix in (("pq8-d4", fine), ("pq8", coarse))}
    assert err["pq8-d4"].mean() < 0.5 * err["pq8"].mean()
    q = _stored_query(fine, photos, "chelsea_crop.png")
    _check_hits(fine.search_vectors(q, k=5, stored=True, rerank_k=8)[0],
                _reference(fine, q[None, :], 5, 8))
    path = tmp_path / "d4.ptch"
    loaded = _reloaded_answers_alike(fine, q, path)
    assert loaded.rerank_store.pq.m == dim // 4
    # a pq8 file (m = 8) beside an index that says pq8-d4 is refused, not read as its codes
    coarse.save(tmp_path / "coarse.ptch")
    token = PatchIndex.load(str(path) + ".rerank.ptch").metadata["pypatch.rerank_store"]["token"]
    fake = PatchIndex.load(str(tmp_path / "coarse.ptch") + ".rerank.ptch", mmap=False)
    fake.metadata = {"pypatch.rerank_store": {"token": token}}
    fake.save(str(path) + ".rerank.ptch")
    with pytest.raises(IndexFormatError, match="it stores pq8-d4 m=8, nbits=8"):
        ImageIndex.load(path)
    with pytest.raises(InvalidArgumentError, match="'pq8-d4' needs a stored dimension divisible by 4"):
        ImageIndex.create(embedder=cached, regions="L3", store="pq", pq_m=10, pca_dim=250,
                          rerank_store="pq8-d4")


def test_pq8_d4_follows_the_automatic_pca_when_it_widens(cached, tmp_path):
    """Built as PCA-256 (64 sub-quantizers); a sample of 8,192+ vectors widens the residual
    store to 512 axes, and the re-rank codes follow (128), in memory and in the saved META."""
    from pypatch.index.image_index import AUTO_FLAT_PCA_DIM, AUTO_FLAT_PCA_MIN_TRAIN, AUTO_PCA_DIM

    index = ImageIndex.create(embedder=cached, regions="L1", store="pq", pq_m=4,
                              rerank_store="pq8-d4", train_size=AUTO_FLAT_PCA_MIN_TRAIN)
    assert index._meta["rerank"]["m"] == AUTO_PCA_DIM // 4
    rng = np.random.default_rng(0)
    n_images, dim = AUTO_FLAT_PCA_MIN_TRAIN // 5 + 1, cached.dim  # 5 L1 cells an image
    vecs = rng.standard_normal((n_images, 5, dim)) / np.sqrt(1 + np.arange(dim))  # a spectrum
    vecs = (vecs / np.linalg.norm(vecs, axis=2, keepdims=True)).astype(np.float32)
    sizes = [(320, 240)] * n_images
    index.train_embedded(zip(vecs, sizes))
    assert int(index.patch_index.dim) == AUTO_FLAT_PCA_DIM
    assert index.rerank_store.pq.m == AUTO_FLAT_PCA_DIM // 4 == index._meta["rerank"]["m"]
    index.add_embedded((f"img{i}", None, vecs[i], sizes[i]) for i in range(20))
    index.save(tmp_path / "wide.ptch")
    loaded = ImageIndex.load(tmp_path / "wide.ptch")
    assert loaded.info()["rerank_store"]["m"] == loaded.rerank_store.pq.m == AUTO_FLAT_PCA_DIM // 4


def test_bad_settings_raise_typed_errors(photos, cached, index, tmp_path):
    with pytest.raises(InvalidArgumentError, match="rerank_store: a re-rank store re-scores"):
        ImageIndex.build(str(photos), embedder=cached, regions="L1", store="flat16",
                         rerank_store="flat16", progress=False)
    with pytest.raises(InvalidArgumentError, match="rerank_store must be None or one of"):
        ImageIndex.build(str(photos), embedder=cached, rerank_store="f16", **SETTINGS)
    from pypatch import ShardedIndex

    exhaustive = ImageIndex.build(str(photos), embedder=cached, regions="L3", store="pq",
                                  pq_m=8, pq_nbits=4, progress=False)
    with pytest.raises(InvalidArgumentError, match="rerank_k: this index has no re-rank store"):
        exhaustive.search(str(photos / "coins.png"), k=3, rerank_k=10)
    assert len(exhaustive.search(str(photos / "coins.png"), k=3, rerank_k=0)) == 3
    sharded = ShardedIndex.from_index(exhaustive, tmp_path / "plain_shards", shards=2)
    with pytest.raises(InvalidArgumentError, match="this sharded index has no re-rank store"):
        sharded.search(str(photos / "coins.png"), k=3, rerank_k=10)
    assert len(sharded.search(str(photos / "coins.png"), k=3, rerank_k=0)) == 3


def _same_hits(got, want):
    assert [[(h.image, h.patch, h.score, h.box) for h in hits] for hits in got] == \
        [[(h.image, h.patch, h.score, h.box) for h in hits] for hits in want]


@pytest.mark.parametrize("kind,ivf", [("flat16", True), ("pq8-d4", False)])
def test_sharded_index_re_ranks_as_the_one_file_index(photos, cached, tmp_path, kind, ivf):
    """Each shard keeps its own re-rank store; the first stage's global top rerank_k images,
    re-scored by their shards' stores, give the one-file index's hits (ties included), through
    from_index, open, edits, save and reopen."""
    from pypatch import ShardedIndex

    settings = SETTINGS if ivf else dict(SETTINGS, nlist=None, nprobe=None)
    one = ImageIndex.build(str(photos), embedder=cached, rerank_store=kind, **settings)
    one.save(tmp_path / "one.ptch")
    sharded = ShardedIndex.from_index(one, tmp_path / "shards", shards=3)
    assert all(os.path.exists(tmp_path / "shards" / f"{f}.rerank.ptch")
               for f in ["codebooks.ptch", *(e["file"] for e in sharded._manifest["shards"])])
    sharded = ShardedIndex.open(tmp_path / "shards")
    sharded.set_embedder(cached)
    names = ["chelsea_crop.png", "coffee.png", "rocket_crop.png"]
    q = np.stack([_stored_query(one, photos, n) for n in names])
    for k, rerank_k in ((1, None), (3, 4), (5, 5), (12, None), (4, 0)):
        _same_hits(sharded.search_vectors(q, k=k, stored=True, rerank_k=rerank_k),
                   one.search_vectors(q, k=k, stored=True, rerank_k=rerank_k))
    # the re-rank really re-orders: its scores are the store's, not the first stage's
    first = one.search_vectors(q, k=12, stored=True, rerank_k=0)
    again = sharded.search_vectors(q, k=12, stored=True)
    assert [[h.score for h in hits] for hits in first] != [[h.score for h in hits] for hits in again]
    info = sharded.info()["rerank_store"]
    assert info["kind"] == kind and info["bytes_per_image"] == one.info()["rerank_store"]["bytes_per_image"]
    # edits: remove in both, save, reopen; the answers stay equal
    gone = ["coffee.png", "rocket.png"]
    one.remove(gone)
    sharded.remove(gone)
    sharded.save()
    reopened = ShardedIndex.open(tmp_path / "shards")
    _same_hits(reopened.search_vectors(q, k=6, stored=True), one.search_vectors(q, k=6, stored=True))
    # images added as a new shard get its re-rank store from the codebooks file
    back = [(n, str(photos / n)) for n in gone]
    one.add(back, progress=False)
    reopened.set_embedder(cached)
    reopened.add(back, progress=False, new_shard=True)
    reopened.save()
    reopened = ShardedIndex.open(tmp_path / "shards")
    assert len(reopened.shards) == 4 and len(reopened.shards[3].rerank_store) == 2
    _same_hits(reopened.search_vectors(q, k=12, stored=True), one.search_vectors(q, k=12, stored=True))
    # a shard whose re-rank store is of another kind is refused on open
    other = ImageIndex.build(str(photos), embedder=cached, rerank_store="pq8", **settings)
    other_shards = ShardedIndex.from_index(other, tmp_path / "other", shards=3)
    first_file = sharded._manifest["shards"][0]["file"]
    for suffix in ("", ".rerank.ptch"):
        os.replace(os.path.join(other_shards.folder, first_file + suffix),
                   tmp_path / "shards" / (first_file + suffix))
    with pytest.raises(IndexFormatError, match=f"shard-00000.ptch has re-rank store pq8 m=8, "
                                               f"the codebooks {kind}"):
        ShardedIndex.open(tmp_path / "shards", verify=False)


def test_cli_index_search_info_with_a_rerank_store(photos, tmp_path, default_model_path, capsys):
    from pypatch.cli import main

    out = tmp_path / "cli.ptch"
    model = ["--model", str(default_model_path)]
    assert main(["index", str(photos), "--out", str(out), "--regions", "L3", "--pq",
                 "m=8,nbits=4", "--ivf", "nlist=4,nprobe=1", "--rerank-store", "flat16",
                 *model]) == 0
    assert os.path.exists(str(out) + ".rerank.ptch")
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rerank_store"]["kind"] == "flat16"
    assert info["rerank_store"]["bytes_per_patch"] == 2 * info["stored_dim"]
    loaded = ImageIndex.load(out)
    query = str(photos / "chelsea_crop.png")

    def cli_hits(*extra):
        assert main(["search", str(out), query, "--json", "--refine", "none", "-k", "4",
                     *extra]) == 0
        return [(h["image"], h["score"]) for h in json.loads(capsys.readouterr().out)["hits"]]

    q = _stored_query(loaded, photos, "chelsea_crop.png")
    want = _reference(loaded, q[None, :], 4, 5)
    got = cli_hits("--rerank-k", "5")
    assert [i for i, _ in got] == [i for i, _, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, _, s in want], abs=1e-5)
    first = loaded.search_vectors(q, k=4, stored=True, rerank_k=0)[0]
    assert cli_hits("--rerank-k", "0") == [(h.image, pytest.approx(h.score, abs=1e-6)) for h in first]
    # errors: one line naming the flag, exit 2
    assert main(["search", str(out), query, "--rerank-k", "2", "-k", "4"]) == 2
    assert "--rerank-k must be 0 or >= k" in capsys.readouterr().err
    assert main(["search", str(out), query, "--rerank-k", "-1"]) == 2
    assert "--rerank-k: expected 0 or a positive integer" in capsys.readouterr().err
    plain = tmp_path / "plain.ptch"
    assert main(["index", str(photos), "--out", str(plain), "--regions", "L1", "--flat",
                 "--rerank-store", "flat16", *model]) == 2
    err = capsys.readouterr().err
    assert "--rerank-store: a re-rank store" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["index", "x", "--out", "y", "--rerank-store", "f16"])
    assert exc.value.code == 2


@pytest.mark.parametrize("kind", ["pq8", "pq8-d4"])
def test_pq_rerank_store_on_too_few_vectors_names_it(photos, cached, tmp_path, capsys,
                                                     default_model_path, kind):
    from pypatch.cli import main
    from pypatch.errors import TooFewVectorsError

    few = [(f"{n}.png", str(photos / f"{n}.png")) for n in NAMES[:2]]  # 2 x 30 = 60 vectors
    with pytest.raises(TooFewVectorsError, match=f"rerank_store='{kind}' needs at least 256") as err:
        ImageIndex.build(few, embedder=cached, regions="L3", store="pq", pq_m=8, pq_nbits=4,
                         rerank_store=kind, progress=False)
    assert err.value.what == "rerank"
    listing = tmp_path / "few.txt"
    listing.write_text("\n".join(p for _, p in few))
    assert main(["index", str(listing), "--out", str(tmp_path / "few.ptch"), "--pq",
                 "m=8,nbits=4", "--rerank-store", kind, "--model", str(default_model_path)]) == 2
    err = capsys.readouterr().err
    assert f"--rerank-store {kind} needs at least 256" in err and "flat16" in err

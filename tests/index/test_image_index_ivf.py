"""ImageIndex with an inverted file (``nlist``/``nprobe``) on real photos and the default model.

References: the exhaustive PQ index built from the same photos with the same seed (probing every
list must give its exact hits), and numpy over the stored patches (``reconstruct``) restricted
to the lists a query probes (``PatchIndex.probe`` / ``patch_lists``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("skimage.data")

from pypatch import ImageIndex  # noqa: E402
from pypatch.errors import IndexFormatError, InvalidArgumentError, TooFewVectorsError  # noqa: E402
from pypatch.evaluation.rankers import CachingEmbedder  # noqa: E402
from pypatch.index import ivf_settings  # noqa: E402
from _photo_folder import write_photos_and_crops  # noqa: E402

NLIST = 8
SETTINGS = dict(regions="L3", store="pq", pq_m=8, progress=False, seed=3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """12 images: six photos and a crop of each (30 cells each: 360 patch vectors)."""
    return write_photos_and_crops(tmp_path_factory.mktemp("ivf_photos"))


@pytest.fixture(scope="module")
def cached(embedder):
    return CachingEmbedder(embedder)


@pytest.fixture(scope="module")
def exhaustive(photos, cached):
    return ImageIndex.build(str(photos), embedder=cached, **SETTINGS)


@pytest.fixture(scope="module")
def ivf(photos, cached):
    return ImageIndex.build(str(photos), embedder=cached, nlist=NLIST, nprobe=2, **SETTINGS)


def _key(hits):
    return [(h.image, h.score, h.patch, h.box) for h in hits]


def test_probing_every_list_gives_the_exhaustive_hits(ivf, exhaustive, photos):
    assert ivf.patch_index.nlist == NLIST and ivf.nprobe == 2
    assert exhaustive.patch_index.nlist == 0 and exhaustive.nprobe == 0
    # same sample, same seed: the same PQ codebooks, hence the same codes
    np.testing.assert_array_equal(ivf.patch_index.pq.centroids, exhaustive.patch_index.pq.centroids)
    for name in ("chelsea.png", "rocket_crop.png"):
        query = str(photos / name)
        assert _key(ivf.search(query, k=12, nprobe=NLIST)) == _key(exhaustive.search(query, k=12))


def test_hits_are_the_best_probed_patch_of_each_image(ivf, photos):
    native = ivf.patch_index
    lists = native.patch_lists()
    offsets = native.image_offsets
    for name, nprobe in (("coffee.png", 1), ("astronaut_crop.png", 3)):
        q = ivf.to_stored(ivf._get_embedder().embed_query(str(photos / name)))[None, :]
        probed = set(native.probe(q, nprobe)[0].tolist())
        expected = []
        for row, image_id in enumerate(ivf.ids):
            mask = np.isin(lists[offsets[row]:offsets[row + 1]], list(probed))
            if mask.any():
                scores = native.reconstruct(row) @ q[0]
                best = np.flatnonzero(mask)[np.argmax(scores[mask])]
                expected.append((image_id, int(best), float(scores[best])))
        hits = ivf.search_vectors(q, k=12, stored=True, nprobe=nprobe)[0]
        got = {h.image: (h.patch, h.score) for h in hits}
        assert len(hits) == len(got) == len(expected)
        for image_id, patch, score in expected:
            assert got[image_id] == (patch, pytest.approx(score, abs=1e-4))


def test_save_load_keeps_the_inverted_file_and_nprobe(ivf, photos, tmp_path):
    path = tmp_path / "ivf.ptch"
    ivf.nprobe = 5
    try:
        ivf.save(path)
        loaded = ImageIndex.load(path)
        info = loaded.info()
        assert info["store"]["nlist"] == NLIST and info["store"]["nprobe"] == 5
        assert loaded.nprobe == 5
        # 8 bytes of codes + 5 of ids per patch
        assert info["bytes_per_patch"] == 8 + 4  # code + packed id
        query = str(photos / "camera_crop.png")
        assert _key(loaded.search(query, k=5)) == _key(ivf.search(query, k=5))
    finally:
        ivf.nprobe = 2


def test_meta_that_contradicts_the_native_lists_is_refused(ivf, tmp_path):
    from pypatch import PatchIndex
    from pypatch.index.meta import META_KEY

    path = tmp_path / "ivf.ptch"
    ivf.save(path)
    native = PatchIndex.load(path, mmap=False)
    native.metadata[META_KEY]["store"]["nlist"] = NLIST * 2
    native.save(path)
    with pytest.raises(IndexFormatError, match="store.nlist"):
        ImageIndex.load(path)


def test_subset_and_codebooks_keep_the_lists(ivf, photos):
    part = ivf.subset(["chelsea.png", "coffee.png", "rocket_crop.png"])
    assert part.patch_index.nlist == NLIST and part.nprobe == ivf.nprobe
    np.testing.assert_array_equal(part.patch_index.coarse_centroids,
                                  ivf.patch_index.coarse_centroids)
    query = str(photos / "coffee.png")
    full = {h.image: h.score for h in ivf.search(query, k=12, nprobe=3)}
    for h in part.search(query, k=3, nprobe=3):
        assert h.score == full[h.image]


def test_sharded_index_with_lists_equals_the_monolithic_one(ivf, photos, tmp_path):
    from pypatch import ShardedIndex

    sharded = ShardedIndex.from_index(ivf, tmp_path / "shards", shards=3)
    for name in ("astronaut.png", "coins_crop.png"):
        query = str(photos / name)
        assert _key(sharded.search(query, k=8)) == _key(ivf.search(query, k=8))
        assert _key(sharded.search(query, k=8, nprobe=5)) == _key(ivf.search(query, k=8, nprobe=5))


def test_auto_is_exhaustive_for_a_small_collection_and_ivf_past_the_threshold(
        photos, cached, monkeypatch):
    small = ImageIndex.build(str(photos), embedder=cached, nlist="auto", **SETTINGS)
    assert small.patch_index.nlist == 0 and small.info()["store"]["nlist_auto"] is True
    assert ivf_settings.auto_nlist(None, 65536) == 0  # size unknown: exhaustive
    assert ivf_settings.auto_nlist(30_000_000, 65536) == 2048  # capped by the training sample
    assert ivf_settings.auto_nlist(30_000_000, 10**7) == 16384  # ~4 sqrt(30M) = 21909
    monkeypatch.setattr(ivf_settings, "AUTO_MIN_PATCHES", 300)
    big = ImageIndex.build(str(photos), embedder=cached, nlist="auto", train_size=320, **SETTINGS)
    # 12 images x 30 cells = 360 patches >= 300; 320 training vectors / 32 a list -> 8 lists
    assert big.patch_index.nlist == 8 and big.nprobe == 8


def test_bad_settings_raise_typed_errors(photos, cached):
    with pytest.raises(InvalidArgumentError, match="nlist: an inverted file needs store='pq'"):
        ImageIndex.build(str(photos), embedder=cached, regions="L1", store="flat", nlist=4,
                         progress=False)
    with pytest.raises(InvalidArgumentError, match="nprobe: needs an inverted file"):
        ImageIndex.build(str(photos), embedder=cached, nprobe=4, **SETTINGS)
    with pytest.raises(InvalidArgumentError, match="nlist must be >= 1"):
        ImageIndex.build(str(photos), embedder=cached, nlist=0, **SETTINGS)
    with pytest.raises(TooFewVectorsError, match="nlist=1000 needs at least 1000") as err:
        ImageIndex.build(str(photos), embedder=cached, nlist=1000, **SETTINGS)
    assert err.value.what == "ivf"


def test_cli_builds_searches_and_describes_an_inverted_file(photos, tmp_path, default_model_path,
                                                           capsys):
    from pypatch.cli import main

    out = tmp_path / "cli.ptch"
    model = ["--model", str(default_model_path)]
    assert main(["index", str(photos), "--out", str(out), "--regions", "L3", "--pq", "m=8",
                 "--ivf", "nlist=4,nprobe=2", *model]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["store"]["nlist"], info["store"]["nprobe"]) == (4, 2)
    assert main(["search", str(out), str(photos / "chelsea.png"), "--json", "--refine", "none",
                 "--nprobe", "4", "-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["image"] == "chelsea.png" and len(hits) == 3
    # the flat store has no lists: a one-line error naming the flag, exit 2
    assert main(["index", str(photos), "--out", str(out), "--flat", "--ivf", *model]) == 2
    err = capsys.readouterr().err
    assert "--ivf nlist" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["index", "x", "--out", "y", "--ivf", "nlist=0"])
    assert exc.value.code == 2 and "nlist=N|auto" in capsys.readouterr().err

"""Box maps in a sharded index: every shard keeps the maps of its images beside its file, with
the projection of the index they were split from, so refined boxes are the one-file index's
and cost no backbone pass; `pypatch index --shards N --box-maps` writes them."""
from __future__ import annotations

import json

import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from _photo_folder import write_cat_scene  # noqa: E402

from pypatch.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_cat_scene(tmp_path_factory.mktemp("sharded_maps"),
                           names=("astronaut", "rocket", "camera", "immunohistochemistry"))


def _boxes(index, query, k=5):
    return [(h.image, round(h.score, 5), h.cell, h.box) for h in
            index.search(query, k=k, refine=True)]


def test_sharded_refinement_reads_the_shards_maps(photos, embedder, tmp_path):
    from pypatch import ImageIndex
    from pypatch.distributed.sharded_index import ShardedIndex

    common = dict(regions="L2", store="flat", embedder=embedder, progress=False, box_maps=16)
    one = ImageIndex.build(photos, **common)
    sharded = ShardedIndex.build(photos, tmp_path / "sh", shards=2, **common)
    cat = skimage_data.chelsea()
    expect = _boxes(one, cat)
    assert expect[0][0] == "scene.png" and expect[0][3] != expect[0][2]  # a refined box
    assert _boxes(sharded, cat) == expect
    # from the stored maps: no live refiner (no backbone pass) on the sharded index
    assert getattr(sharded, "_pypatch_refiner", None) is None
    assert all(shard._box_maps is not None and len(shard._box_maps) == len(shard)
               for shard in sharded.shards)
    assert sharded.info()["box_maps"] == one.info()["box_maps"]
    opened = ShardedIndex.open(tmp_path / "sh")
    opened.set_embedder(embedder)
    assert _boxes(opened, cat) == expect
    # a new shard gets maps with the same projection as the others
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.fromarray(skimage_data.chelsea()).save(extra / "cat.png")
    assert opened.add(extra, progress=False, new_shard=True) == ["cat.png"]
    assert "cat.png" in opened._box_maps and "missing.png" not in opened._box_maps
    top = opened.search(cat, k=1, refine=True)[0]
    assert top.image == "cat.png" and getattr(opened, "_pypatch_refiner", None) is None
    opened.save()
    again = ShardedIndex.open(tmp_path / "sh")
    again.set_embedder(embedder)
    assert again.search(cat, k=1, refine=True)[0].box == top.box


def test_cli_shards_with_box_maps(photos, default_model_path, tmp_path, capsys):
    common = ["--regions", "L2", "--flat", "--box-maps", "16", "--model",
              str(default_model_path), "--threads", "2"]
    assert main(["index", str(photos), "--out", str(tmp_path / "one.ptch"), *common]) == 0
    assert main(["index", str(photos), "--out", str(tmp_path / "sh"), "--shards", "2",
                 *common]) == 0
    capsys.readouterr()
    query = [str(photos / "scene.png"), "--box", "60,220,200,330", "--k", "3", "--json"]
    outs = []
    for where in (tmp_path / "one.ptch", tmp_path / "sh"):
        assert main(["search", str(where), *query]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1] and outs[0]["hits"][0]["image"] == "scene.png"
    assert main(["info", str(tmp_path / "sh")]) == 0
    assert json.loads(capsys.readouterr().out)["box_maps"]["dim"] == 16
    # Ray builds do not keep maps yet: refused before anything runs
    assert main(["index", str(photos), "--out", str(tmp_path / "ray"), "--ray",
                 *common]) == 2
    err = capsys.readouterr().err
    assert "--box-maps" in err and "--ray" in err and len(err.strip().splitlines()) == 1

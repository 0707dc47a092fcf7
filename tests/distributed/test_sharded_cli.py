"""`pypatch index --shards N`, then `search` / `info` on the folder: the same --json answers as
the one-file index; a tampered folder is one error line with exit 2; Ray is never imported."""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from _subprocess import run_python  # noqa: E402

from pypatch.cli import main  # noqa: E402
from pypatch.distributed import manifest as mf  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory, default_model_path):
    root = tmp_path_factory.mktemp("shard_cli")
    photos = root / "photos"
    photos.mkdir()
    d = skimage_data
    for name, arr in {"astronaut.jpg": d.astronaut(), "rocket.jpg": d.rocket(),
                      "coffee.png": d.coffee(), "camera.png": d.camera(),
                      "chelsea.png": d.chelsea()}.items():
        Image.fromarray(arr).save(photos / name)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    common = ["--regions", "L1", "--flat", "--model", str(default_model_path), "--threads", "2"]
    assert main(["index", str(photos), "--out", str(root / "one.ptch"), *common]) == 0
    assert main(["index", str(photos), "--out", str(root / "sharded"), "--shards", "3",
                 *common]) == 0
    return photos, root / "one.ptch", root / "sharded"


def _out(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_search_and_info_accept_the_folder(built, capsys):
    photos, one, sharded = built
    assert sorted(os.listdir(sharded)) == sorted([mf.MANIFEST, mf.CODEBOOKS, *map(mf.shard_name,
                                                                                 range(3))])
    queries = [str(photos / "rocket.jpg"), "--box", "10,10,200,200", "--k", "4", "--json",
               "--refine", "cells"]
    status_one, out_one, _ = _out(capsys, ["search", str(one), *queries])
    status_sh, out_sh, _ = _out(capsys, ["search", str(sharded), *queries])
    assert status_one == status_sh == 0 and out_sh == out_one and json.loads(out_sh)["hits"]
    _, info_one, _ = _out(capsys, ["info", str(one)])
    status, info_sh, _ = _out(capsys, ["info", str(sharded / mf.MANIFEST)])
    info_one, info_sh = json.loads(info_one), json.loads(info_sh)
    assert status == 0 and info_sh["num_shards"] == 3
    assert {k: info_sh[k] for k in ("images", "patches", "regions", "model")} == \
           {k: info_one[k] for k in ("images", "patches", "regions", "model")}


def test_tampered_folder_is_one_error_line(built, capsys, tmp_path):
    _, _, sharded = built
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sharded, broken)
    os.remove(broken / mf.shard_name(2))
    for cmd in (["info", str(broken)], ["search", str(broken), str(broken / "x.jpg")]):
        status, out, err = _out(capsys, cmd)
        assert status == 2 and out == "" and "missing shard file 'shard-00002.ptch'" in err
        assert len(err.strip().splitlines()) == 1


def test_sharded_search_never_imports_ray(built):
    photos, _, sharded = built
    code = ("import sys, pypatch; from pypatch.cli import main; "
            f"status = main(['search', {str(sharded)!r}, {str(photos / 'chelsea.png')!r}, "
            "'--json', '--k', '1']); "
            "assert status == 0; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'ray'], 'ray was imported'")
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"][0]["image"] == "chelsea.png"


def test_serving_the_folder_without_ray_never_imports_ray(built):
    """`pypatch serve DIR` (no --ray) searches in-process: the app and a first query, the
    --ray settings refused where they cannot apply, and Ray never imported."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    photos, one, sharded = built
    code = (
        "import sys, numpy as np\n"
        "from pypatch.serve.app import create_app\n"
        "from pypatch.serve.engine import Engine\n"
        "from pypatch.serve.settings import Settings\n"
        "from pypatch.errors import InvalidArgumentError\n"
        f"app = create_app(Settings(index={str(sharded)!r}, threads=2))\n"
        "engine = app.server.engine\n"
        "v = np.zeros((1, engine.vector_dim), np.float32); v[0, 0] = 1\n"
        "assert engine.search_vectors([(v, 2)])[0][0], 'no hits'\n"
        "try:\n"
        f"    Settings(index={str(sharded)!r}, ray_address='127.0.0.1:6379')\n"
        "    raise SystemExit('--ray-address without --ray was accepted')\n"
        "except InvalidArgumentError:\n"
        "    pass\n"
        "try:\n"
        f"    Engine({str(one)!r}, ray=True)\n"
        "    raise SystemExit('--ray over one index file was accepted')\n"
        "except InvalidArgumentError as e:\n"
        "    assert 'not a sharded index folder' in str(e), e\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'ray'], 'ray was imported'\n")
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr

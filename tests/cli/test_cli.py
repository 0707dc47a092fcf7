"""The `pypatch index | search | info` commands on real photos and real index files.

The JSON shape of `search --json` is a contract; errors must be one line with exit status 2.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from _subprocess import run_python  # noqa: E402

from pypatch.cli import main  # noqa: E402

HIT_KEYS = {"rank", "image", "score", "box", "cell", "level"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_photos")
    d = skimage_data
    images = {"astronaut.jpg": d.astronaut(), "rocket.jpg": d.rocket(),
              "sub/coffee.png": d.coffee(), "camera.png": d.camera()}
    for name, arr in images.items():
        (root / name).parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(root / name)
    (root / "notes.txt").write_text("not an image, not indexed")
    return root


@pytest.fixture(scope="module")
def index_file(photos, tmp_path_factory, default_model_path):
    out = tmp_path_factory.mktemp("cli_index") / "photos.ptch"
    assert main(["index", str(photos), "--out", str(out), "--regions", "L1", "--flat",
                 "--model", str(default_model_path), "--threads", "2"]) == 0
    return out


def _run(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_index_then_info(index_file, capsys):
    status, out, _ = _run(capsys, ["info", str(index_file)])
    assert status == 0
    info = json.loads(out)
    assert info["images"] == 4 and info["patches"] == 4 * 5
    assert info["regions"] == "L1" and info["store"]["kind"] == "flat"
    assert info["model"]["name"] == "efficientnet_lite0"


def test_search_json_shape_and_ranking(index_file, photos, capsys):
    status, out, _ = _run(capsys, ["search", str(index_file), str(photos / "rocket.jpg"),
                                   str(photos / "sub/coffee.png"), "--k", "3", "--json"])
    assert status == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"query", "hits"} and first["query"] == str(photos / "rocket.jpg")
    assert [h["rank"] for h in first["hits"]] == [1, 2, 3]
    for hit in first["hits"] + second["hits"]:
        assert set(hit) == HIT_KEYS
        assert len(hit["box"]) == 4 and len(hit["cell"]) == 4 and hit["level"] in (0, 1)
        assert all(isinstance(v, int) for v in hit["box"])
    assert first["hits"][0]["image"] == "rocket.jpg"
    assert first["hits"][0]["cell"] == [0, 0, 640, 427] and first["hits"][0]["level"] == 0
    for hit in first["hits"] + second["hits"]:
        # a refined box lies in its image and overlaps the cell it refines (its peak is there)
        (x0, y0, x1, y1), (c0, d0, c1, d1) = hit["box"], hit["cell"]
        width, height = Image.open(photos / hit["image"]).size
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert max(x0, c0) < min(x1, c1) and max(y0, d0) < min(y1, d1)
    assert second["hits"][0]["image"] == "sub/coffee.png"
    scores = [h["score"] for h in first["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_search_refine_none_returns_the_grid_cell(index_file, photos, capsys):
    status, out, _ = _run(capsys, ["search", str(index_file), str(photos / "rocket.jpg"),
                                   "--k", "2", "--json", "--refine", "none"])
    assert status == 0
    hits = json.loads(out)["hits"]
    assert all(h["box"] == h["cell"] for h in hits)
    assert hits[0]["box"] == [0, 0, 640, 427]


def test_search_box_and_queries_file(index_file, photos, tmp_path, capsys):
    # the astronaut's upper-left quarter is exactly one L1 cell of the indexed astronaut
    status, out, _ = _run(capsys, ["search", str(index_file), str(photos / "astronaut.jpg"),
                                   "--box", "0,0,256,256", "--k", "2", "--json"])
    assert status == 0
    hit = json.loads(out)["hits"][0]
    assert hit["image"] == "astronaut.jpg" and hit["cell"] == [0, 0, 256, 256]
    assert hit["score"] == pytest.approx(1.0, abs=1e-3)
    queries = [{"image": "astronaut.jpg", "box": [0, 0, 256, 256]},
               {"image": str(photos / "camera.png"), "box": None}]
    qfile = photos / "queries.json"
    qfile.write_text(json.dumps(queries))
    status, out, _ = _run(capsys, ["search", str(index_file), "--queries", str(qfile),
                                   "--k", "1", "--json"])
    assert status == 0
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["query"] for r in results] == ["astronaut.jpg", str(photos / "camera.png")]
    assert results[0]["hits"][0]["cell"] == [0, 0, 256, 256]
    assert results[1]["hits"][0]["image"] == "camera.png"


def test_search_table_output(index_file, photos, capsys):
    status, out, _ = _run(capsys, ["search", str(index_file), str(photos / "camera.png"),
                                   "--k", "2"])
    assert status == 0
    assert out.startswith(f"query {photos / 'camera.png'}") and "camera.png" in out.splitlines()[1]


def test_pq_index_from_a_path_list(photos, tmp_path, capsys, default_model_path):
    listing = tmp_path / "list.txt"
    # 4 photos + 5 crops of them: 9 images x 39 cells (L3s, the default) = 351 training patches
    paths = [str(p) for p in sorted(photos.rglob("*.*")) if p.suffix in (".jpg", ".png")]
    astronaut = np.asarray(Image.open(photos / "astronaut.jpg"))
    for i in range(5):
        Image.fromarray(astronaut[i * 40:i * 40 + 300, i * 30:i * 30 + 300]).save(
            tmp_path / f"crop{i}.png")
        paths.append(f"crop{i}.png")  # relative to the list file's folder
    listing.write_text("\n".join(paths) + "\n")
    out = tmp_path / "pq.ptch"
    status, stdout, _ = _run(capsys, ["index", str(listing), "--out", str(out),
                                      "--pq", "m=16,nbits=8", "--mode", "single_pass",
                                      "--model", str(default_model_path)])
    assert status == 0 and "indexed 9 images" in stdout
    status, stdout, _ = _run(capsys, ["info", str(out)])
    info = json.loads(stdout)
    assert info["store"]["kind"] == "pq" and info["store"]["m"] == 16
    assert info["bytes_per_image"] == pytest.approx(39 * 16 + 8) and info["mode"] == "single_pass"


def test_index_box_maps_refine_without_a_backbone_pass(photos, tmp_path, capsys, default_model_path):
    from pypatch import ImageIndex
    from pypatch.index.image_index import box_maps_path

    out = tmp_path / "maps.ptch"
    status, _, err = _run(capsys, ["index", str(photos), "--out", str(out), "--flat", "--box-maps",
                                   "16", "--model", str(default_model_path)])
    assert status == 0, err
    assert os.path.exists(box_maps_path(out))
    status, stdout, _ = _run(capsys, ["info", str(out)])
    info = json.loads(stdout)
    assert info["box_maps"]["dim"] == 16
    assert info["box_maps"]["bytes_per_image"] == pytest.approx(196 * (16 + 2))  # int8 + float16 scale
    query = str(photos / "rocket.jpg")
    status, stdout, _ = _run(capsys, ["search", str(out), query, "--json", "--k", "2"])
    cli_boxes = [h["box"] for h in json.loads(stdout)["hits"]]
    index = ImageIndex.load(out)
    hits = index.search(query, k=2, refine=True)
    assert cli_boxes == [list(h.box) for h in hits]
    assert getattr(index, "_pypatch_refiner", None) is None  # the maps refined, not the backbone
    # without --box-maps: no maps file, info says so; with --ray: refused before any work
    # (with --shards: tests/distributed/test_sharded_box_maps.py)
    status, _, err = _run(capsys, ["index", str(photos), "--out", str(tmp_path / "plain.ptch"),
                                   "--flat", "--model", str(default_model_path)])
    assert status == 0, err
    status, stdout, _ = _run(capsys, ["info", str(tmp_path / "plain.ptch")])
    assert json.loads(stdout)["box_maps"] is None
    assert not os.path.exists(box_maps_path(tmp_path / "plain.ptch"))
    status, _, err = _run(capsys, ["index", str(photos), "--out", str(tmp_path / "sh"), "--ray",
                                   "--box-maps", "--model", str(default_model_path)])
    assert status == 2 and "--box-maps" in err and not (tmp_path / "sh").exists()
    status, _, err = _run(capsys, ["index", str(photos), "--out", str(tmp_path / "z.ptch"),
                                   "--box-maps", "0", "--model", str(default_model_path)])
    assert status == 2 and "--box-maps: expected a positive integer, got 0" in err


@pytest.mark.parametrize("pca, opq", [(["--pca-dim", "32"], True),
                                       (["--pca-dim", "32", "--pca-power", "0", "--opq", "none"], False),
                                       (["--pca-dim", "none"], None)])
def test_index_transform_options_reach_the_stored_index(pca, opq, photos, tmp_path, capsys,
                                                        default_model_path):
    out = tmp_path / "pca.ptch"
    status, stdout, _ = _run(capsys, ["index", str(photos), "--out", str(out), "--pq",
                                      "m=8,nbits=4", "--model", str(default_model_path),
                                      "--threads", "2", *pca])
    assert status == 0 and "indexed 4 images" in stdout
    info = json.loads(_run(capsys, ["info", str(out)])[1])
    if opq is None:
        assert info["transform"] is None
    else:
        t = info["transform"]
        assert (t["dim"], t["opq"], t["auto"]) == (32, opq, False)
        assert t["power"] == (0.0 if "--pca-power" in pca else -0.5)
    status, stdout, _ = _run(capsys, ["search", str(out), str(photos / "rocket.jpg"), "--json"])
    assert status == 0 and json.loads(stdout)["hits"][0]["image"] == "rocket.jpg"


@pytest.mark.parametrize("argv_tail, message", [
    (["search", "{missing}", "{q}"], "not found"),
    (["search", "{corrupt}", "{q}"], "truncated"),
    (["info", "{corrupt}"], "truncated"),
    (["search", "{index}", "{notimage}"], "notes.txt"),
    (["search", "{index}", "{q}", "--box", "600,0,700,100"], "box"),
    (["search", "{index}", "{q}", "--k", "0"], "--k"),
    (["search", "{index}"], "no query"),
    (["index", "{missing_dir}", "--out", "{out}"], "no such file or folder"),
])
def test_errors_are_one_line_with_status_2(argv_tail, message, index_file, photos, tmp_path,
                                           capsys):
    corrupt = tmp_path / "corrupt.ptch"
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(data[: len(data) - 100])
    names = {"missing": str(tmp_path / "missing.ptch"), "corrupt": str(corrupt),
             "index": str(index_file), "q": str(photos / "rocket.jpg"),
             "notimage": str(photos / "notes.txt"), "missing_dir": str(tmp_path / "nodir"),
             "out": str(tmp_path / "x.ptch")}
    status, out, err = _run(capsys, [a.format(**names) for a in argv_tail])
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err.lower() or message in err


def test_bad_option_values_exit_2_with_usage(index_file, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["index", "x", "--out", "y", "--pq", "m=abc"])
    assert exc.value.code == 2
    assert "m=M,nbits=B" in capsys.readouterr().err
    for bad in (["--pca-dim", "0"], ["--pca-dim", "half"], ["--opq", "yes"]):
        with pytest.raises(SystemExit) as exc:
            main(["index", "x", "--out", "y", *bad])
        assert exc.value.code == 2
        assert ("'auto' or 'none'" if bad[0] == "--pca-dim" else "invalid choice") in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["search", str(index_file), "q.jpg", "--box", "1,2,3"])
    assert exc.value.code == 2


def test_console_entry_point_prints_no_traceback(tmp_path):
    bogus = tmp_path / "bogus.ptch"
    bogus.write_bytes(b"\x89PTCH\r\n\x1a" + b"\0" * 50)
    proc = run_python("-m", "pypatch", "info", str(bogus))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("pypatch info: error:")


def test_closed_stdout_stops_quietly(index_file):
    # `pypatch info INDEX | head -1` after head has gone: exit 141 (SIGPIPE), no error message
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "pypatch", "info", str(index_file)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                              cwd=tempfile.gettempdir())  # outside the checkout, like run_python
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == ""


def test_bench_command_runs_the_native_core(capsys):
    status, out, _ = _run(capsys, ["bench", "--images", "300", "--patches", "4", "--dim", "32",
                                   "--m", "8", "--queries", "4", "--threads", "1"])
    assert status == 0
    rows = [line.split() for line in out.splitlines() if line.startswith(("pq", "flat"))]
    assert [r[0] for r in rows] == ["pq", "flat"]
    assert int(rows[0][2]) == 4 * 8 + 8 and int(rows[1][2]) == 4 * 32 * 2 + 8


def test_eval_runs_index_configurations_with_true_boxes(tmp_path, capsys):
    """`pypatch eval` on a hand-made benchmark: a cat pasted into a real photo is the only
    positive; at L2 it is ranked first with the cell that holds the cat."""
    box = [230, 160, 380, 260]
    scene = Image.fromarray(skimage_data.coffee()).copy()
    scene.paste(Image.fromarray(skimage_data.chelsea()).resize((150, 100)), (230, 160))
    scene.save(tmp_path / "scene.png")
    Image.fromarray(skimage_data.chelsea()).save(tmp_path / "cat.png")
    others = {"rocket": skimage_data.rocket(), "astronaut": skimage_data.astronaut(),
              "camera": skimage_data.camera()}
    for name, arr in others.items():
        Image.fromarray(arr).save(tmp_path / f"{name}.png")
    bench = {"queries": [{"id": "q", "image": "cat.png", "box": None}],
             "database": [{"id": n, "image": f"{n}.png"} for n in ["scene", *others]],
             "positives": {"q": [{"id": "scene", "boxes": [box]}]}, "junk": {}}
    (tmp_path / "benchmark.json").write_text(json.dumps(bench))
    status, out, _ = _run(capsys, ["eval", str(tmp_path / "benchmark.json"), "--out",
                                   str(tmp_path / "report"), "--config", "global",
                                   "--config", "patchify-L2-flat", "--examples", "1"])
    assert status == 0 and "patchify-L2-flat: mAP 100.00" in out
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    patchify = results["configs"]["patchify-L2-flat"]
    cell = [200, 133, 400, 266]  # the L2 cell of the 600x400 scene that holds the cat
    inter = (380 - 230) * (260 - 160)
    iou = inter / ((cell[2] - cell[0]) * (cell[3] - cell[1]))  # the cat lies inside the cell
    assert patchify["summary"]["locscore"] == pytest.approx(iou, abs=1e-6)
    assert patchify["per_query"][0]["hits"][0][2] == cell
    assert patchify["bytes_per_image"] == pytest.approx(14 * 1280 * 4 + 8)
    whole = results["configs"]["global"]["per_query"][0]["hits"]
    assert next(h for h in whole if h[0] == "scene")[2] == [0, 0, 600, 400]


def test_search_never_imports_torch(index_file, photos):
    code = ("import sys; from pypatch.cli import main; "
            f"status = main(['search', {str(index_file)!r}, {str(photos / 'rocket.jpg')!r}, "
            "'--json', '--k', '1']); "
            "assert status == 0; "
            "heavy = [m for m in ('torch', 'starlette', 'uvicorn') if m in sys.modules]; "
            "assert not heavy, f'{heavy} imported'")  # the server stack is an optional extra
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"][0]["image"] == "rocket.jpg"

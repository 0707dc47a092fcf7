"""What a new user trips on (issue 15): argument errors of one line, negative box values,
`eval --list-configs` alone, several names after one --config, the shipped configurations by
default, small collections indexed with a store that works, a missing --out folder, bench
progress, refined boxes shown with the cell (and level) they came from, consistent --help.

Real photos, real index files; `pypatch.cli.main` in process and `python -m pypatch` in a child.
"""
from __future__ import annotations

import json
import tempfile

import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from _subprocess import run_python  # noqa: E402

from pypatch.cli import build_parser, main  # noqa: E402


def _run(capsys, argv):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse errors
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    root = tmp_path_factory.mktemp("usability")
    Image.fromarray(skimage_data.astronaut()).save(root / "astronaut.jpg")  # 512 x 512
    return root / "astronaut.jpg"


@pytest.fixture(scope="module")
def one_image_index(photo, tmp_path_factory, default_model_path):
    """`pypatch index one.jpg --out x` with the default store: what the issue tried."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("usability_index") / "one.ptch"
    proc = subprocess.run([sys.executable, "-m", "pypatch", "index", str(photo), "--out", str(out),
                           "--model", str(default_model_path), "--threads", "2"],
                          capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())  # outside the checkout: the installed pypatch
    return out, proc


# ------------------------------------------------------------------ argument errors
@pytest.mark.parametrize("argv, message", [
    (["search", "i.ptch", "q.jpg", "--k", "abc"], "argument --k"),
    (["search", "i.ptch", "q.jpg", "--bogus"], "unrecognized arguments: --bogus"),
    (["index", "src"], "--out"),
    (["eval", "b.json", "--format", "xml"], "invalid choice"),
    (["nosuch"], "invalid choice"),
])
def test_argument_errors_are_one_line_and_a_hint(argv, message, capsys):
    status, out, err = _run(capsys, argv)
    command = "pypatch" if argv[0] == "nosuch" else f"pypatch {argv[0]}"
    assert status == 2 and out == ""
    assert err.splitlines() == [err.splitlines()[0], f"(see {command} --help)"], err
    assert err.startswith(f"{command}: error: ") and message in err and "usage:" not in err


def test_argument_error_in_a_real_process():
    proc = run_python("-m", "pypatch", "search", "i.ptch", "q.jpg", "--k", "abc")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["pypatch search: error: argument --k/-k: invalid int "
                                        "value: 'abc'", "(see pypatch search --help)"]


# ------------------------------------------------------------------ --box
def test_negative_box_values_parse():
    args = build_parser().parse_args(["search", "i.ptch", "q.jpg", "--box", "-10,-10,50,50"])
    assert args.box == [[-10, -10, 50, 50]] and args.queries == ["q.jpg"]


@pytest.mark.parametrize("box", ["-10,-10,50,50", "500,500,600,600", "100,100,50,200"])
def test_a_box_outside_the_image_is_one_sentence(box, one_image_index, photo, capsys):
    status, out, err = _run(capsys, ["search", str(one_image_index[0]), str(photo), "--box", box])
    assert status == 2 and out == ""
    line = err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in err
    shown = "[" + box.replace(",", ", ") + "]"
    assert line.startswith(f"pypatch search: error: box {shown} ")
    assert "[0] =" not in line and line.count("[") == 1  # the box once, no index notation
    assert ("512x512 query image" in line) != (box == "100,100,50,200")


# ------------------------------------------------------------------ index
def test_index_of_one_image_falls_back_to_the_flat_store(one_image_index, photo, capsys):
    out, proc = one_image_index
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("pypatch index:")]
    assert len(notes) == 1 and "39 training vectors" in notes[0] and "--flat" in notes[0]
    assert "indexed 1 images" in proc.stdout
    status, stdout, _ = _run(capsys, ["info", str(out)])
    info = json.loads(stdout)
    assert info["store"]["kind"] == "flat" and info["transform"] is None
    assert info["patches"] == 39 and info["bytes_per_patch"] == 4 * info["dim"]
    status, stdout, _ = _run(capsys, ["search", str(out), str(photo), "--json", "--refine", "none"])
    hit = json.loads(stdout)["hits"][0]
    assert status == 0 and hit["score"] == pytest.approx(1.0, abs=1e-4) and hit["level"] == 0


def test_an_explicit_pq_store_that_cannot_train_names_the_flags(photo, tmp_path, capsys,
                                                                 default_model_path):
    status, out, err = _run(capsys, ["index", str(photo), "--out", str(tmp_path / "x.ptch"),
                                     "--pq", "m=16,nbits=8", "--model", str(default_model_path)])
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "256 training vectors" in err and "gave 39" in err
    assert "--flat" in err and "--pq m=M,nbits=4" in err
    assert "store=" not in err and "pca_dim" not in err and "pq_nbits" not in err
    assert not (tmp_path / "x.ptch").exists()


@pytest.mark.parametrize("flags, message", [
    (["--pq", "m=7"], "--pq m must divide the stored dimension"),
    (["--pca-dim", "5000"], "--pca-dim (at most the model's dimension)"),
])
def test_index_errors_name_flags_not_python_arguments(flags, message, photo, tmp_path, capsys,
                                                      default_model_path):
    status, _, err = _run(capsys, ["index", str(photo), "--out", str(tmp_path / "x.ptch"),
                                   "--model", str(default_model_path), *flags])
    assert status == 2 and message in err
    assert not any(name in err for name in ("pq_m", "pca_dim", "pq_nbits", "store="))


def test_index_into_a_missing_folder_says_so_before_any_work(photo, tmp_path, capsys):
    out = tmp_path / "nodir" / "x.ptch"
    status, stdout, err = _run(capsys, ["index", str(photo), "--out", str(out),
                                        "--model", "no-such-model"])  # checked first: no model
    assert status == 2 and stdout == ""
    assert err.strip() == (f"pypatch index: error: --out {out}: folder {out.parent} does not "
                           "exist (create it first)")
    assert "Errno" not in err and "tmp" not in err.replace(str(tmp_path), "")


# ------------------------------------------------------------------ search: level of a refined box
def test_search_table_shows_a_refined_box_with_its_cell_and_level(one_image_index, photo, capsys):
    index = str(one_image_index[0])
    status, out, _ = _run(capsys, ["search", index, str(photo), "--k", "1", "--json"])
    hit = json.loads(out)["hits"][0]
    assert status == 0 and hit["box"] != hit["cell"]  # refined (simmap, the CLI's default)
    assert hit["level"] == 0 and hit["cell"] == [0, 0, 512, 512]  # the cell's level
    status, out, _ = _run(capsys, ["search", index, str(photo), "--k", "1"])
    row = out.splitlines()[1]
    box = "[" + ",".join(f"{v:>5}" for v in hit["box"]) + "]"
    assert box in row and row.endswith("(from L0 cell [    0,    0,  512,  512])"), row
    assert " L0 " not in row.split("(from")[0]  # the level is not printed next to the box


# ------------------------------------------------------------------ eval
def _tiny_benchmark(root):
    """3 real photos; the query (a crop of the astronaut) has one positive with a true box."""
    d = skimage_data
    for name, arr in {"astronaut": d.astronaut(), "rocket": d.rocket(), "camera": d.camera()}.items():
        Image.fromarray(arr).save(root / f"{name}.png")
    Image.fromarray(d.astronaut()[100:300, 150:350]).save(root / "q.png")
    bench = {"queries": [{"id": "q", "image": "q.png", "box": None}],
             "database": [{"id": n, "image": f"{n}.png"} for n in ("astronaut", "rocket", "camera")],
             "positives": {"q": [{"id": "astronaut", "boxes": [[150, 100, 350, 300]]}]}, "junk": {}}
    (root / "benchmark.json").write_text(json.dumps(bench))
    return root / "benchmark.json"


def test_eval_list_configs_works_alone_and_describes_each(capsys):
    status, out, err = _run(capsys, ["eval", "--list-configs"])
    assert status == 0 and err == ""
    from pypatch.evaluation.harness import available_rankers

    rows = dict(line.split(None, 1) for line in out.splitlines())
    assert list(rows) == available_rankers() and len(rows) > 200 and all(rows.values())
    assert "baseline" in rows["hist-global"] and "baseline" in rows["hist-grid"]
    assert rows["patchify-L3-pq32"] == "L3 grid (30 cells), PQ 32 bytes/patch  [default]"
    assert rows["patchify-L2-flat16-sp"] == "L2 grid (14 cells), float16, single-pass"
    assert rows["patchify-L3-pq32-pcaw256-opq-ms"] == \
        "L3 grid (30 cells), PQ 32 bytes/patch, PCA-256 whitened + OPQ, multi-scale"
    assert rows["patchify-L3-pq32-mp-refine"].endswith(
        "multi-patch rerank, boxes refined by similarity map")
    assert rows["global"].startswith("whole image, exact float32")


def test_eval_takes_several_names_after_one_config(tmp_path, capsys):
    bench = _tiny_benchmark(tmp_path)
    status, out, err = _run(capsys, ["eval", str(bench), "--out", str(tmp_path / "r"),
                                     "--config", "oracle", "hist-global", "--config", "hist-grid"])
    assert status == 0, err
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert list(results["configs"]) == ["oracle", "hist-global", "hist-grid"]
    assert "oracle: mAP 100.00" in out


def test_eval_defaults_to_the_shipped_configurations(capsys, monkeypatch):
    from pypatch.commands import demo, eval as eval_command
    from pypatch.evaluation.rankers import DEFAULT_CONFIGS

    args = build_parser().parse_args(["eval", "b.json", "--out", "r"])
    assert eval_command.selected_configs(args) == list(DEFAULT_CONFIGS) == list(demo.CONFIGS)
    assert "hist" not in " ".join(DEFAULT_CONFIGS)
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps at hyphens ("hist-" / "global")
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: global patchify-L3s-pq32 patchify-L3s-flat patchify-L3-pq32 patchify-L3-flat" in text
    assert "hist-global, hist-grid, oracle" in text


def test_index_defaults_to_the_library_grid():
    import inspect

    from pypatch import ImageIndex
    from pypatch.commands import index as index_command
    from pypatch.extract.grid import DEFAULT_REGIONS

    args = build_parser().parse_args(["index", "photos", "--out", "x.ptch"])
    assert args.regions == index_command.DEFAULT_REGIONS == DEFAULT_REGIONS == "L3s"
    for method in (ImageIndex.build, ImageIndex.create):
        assert inspect.signature(method).parameters["regions"].default == DEFAULT_REGIONS


def test_eval_without_dataset_or_out_says_which(tmp_path, capsys):
    status, _, err = _run(capsys, ["eval", "--out", str(tmp_path / "r")])
    assert status == 2 and "DATASET_DIR_OR_JSON is required" in err
    status, _, err = _run(capsys, ["eval", "--out", str(tmp_path / "r"), "--config", "oracle",
                                   str(tmp_path)])
    assert status == 2 and "put DATASET before --config" in err
    status, _, err = _run(capsys, ["eval", str(tmp_path)])
    assert status == 2 and "--out DIR is required" in err


# ------------------------------------------------------------------ bench, help texts
def test_bench_shows_progress_on_stderr(capsys):
    status, out, err = _run(capsys, ["bench", "--images", "4500", "--patches", "2", "--dim", "16",
                                     "--m", "4", "--queries", "2", "--threads", "1"])
    assert status == 0
    steps = [line for line in err.splitlines() if line.startswith("[bench")]
    assert any("training PQ" in s for s in steps)
    assert [s.split("] ")[1] for s in steps if "adding" in s] == [
        "adding images 1-2000 of 4500", "adding images 2001-4000 of 4500",
        "adding images 4001-4500 of 4500"]
    assert steps[-1].endswith("done")
    rows = [line.split() for line in out.splitlines() if line.startswith(("pq", "flat"))]
    assert [r[0] for r in rows] == ["pq", "flat"]  # stdout keeps the table only


def test_demo_and_make_benchmark_help_give_the_generator_sizes(capsys):
    from pypatch.evaluation.benchgen import SIZES

    texts = []
    for command in ("demo", "make-benchmark"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts.append(" ".join(capsys.readouterr().out.split()))
    for size, cfg in SIZES.items():
        queries = cfg.instances * cfg.queries_per_instance
        database = cfg.instances * cfg.scenes_per_instance + cfg.distractors
        words = f"{queries} queries + {database:,} database images"
        assert all(words in text for text in texts), (words, texts)

"""`pypatch demo`, the README's main job, end to end on the small offline benchmark (~25 s).

Real model, real generated benchmark, real indexes and report files; the asserted numbers are
properties the method must have (Patchify far above the global descriptor, refined boxes
raising LocScore), not recorded values.
"""
from __future__ import annotations

import re

import pytest

from pypatch import ImageIndex
from pypatch.cli import main


def _row(table: str, name: str) -> list:
    for line in table.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return [float(v) for v in cells[1:4]]  # mAP, LocScore, mAP obj 3-10%
    raise AssertionError(f"no row {name!r} in:\n{table}")


def test_demo_runs_the_main_job_end_to_end(tmp_path, capsys, default_model_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    global_map = _row(printed, "global")[0]
    pq_map, pq_loc, _ = _row(printed, "patchify-L3s-pq32")  # the defaults
    refined_map, refined_loc, _ = _row(printed, "patchify-L3s-pq32-refine")
    assert pq_map >= global_map + 15, printed  # the paper's claim, on the offline benchmark
    assert refined_map == pq_map and refined_loc > pq_loc  # same ranking, sharper boxes
    html = (out / "report" / "index.html").read_text()
    assert "patchify-L3s-pq32" in html and "patchify-L3-pq32" in html and re.search(r"<img|data:image", html)
    assert (out / "report" / "results.md").exists()
    index = ImageIndex.load(out / "patchify.ptch")
    assert len(index) == 100 and index.info()["mode"] == "crop" and index.info()["regions"] == "L3s"
    query = re.search(r"try: pypatch search \S+ (\S+) --k 5", printed).group(1)
    assert len(index.search(query, k=5)) == 5


@pytest.mark.parametrize("argv_tail", [["--threads", "0"], ["--mode", "tiles"]])
def test_demo_bad_arguments_exit_2(tmp_path, capsys, argv_tail):
    try:  # argparse rejects bad choices (SystemExit), main() bad values (return code)
        code = main(["demo", "--out", str(tmp_path / "d"), *argv_tail])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "pypatch demo: error:" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing done before the error


def test_demo_refuses_a_file_as_output_folder(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["demo", "--out", str(target)]) == 2
    assert "not a folder" in capsys.readouterr().err

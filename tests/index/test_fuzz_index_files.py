"""The index-file mutation fuzzer (tests/fuzz/fuzz_index_files.py) as a CI test: 2,500 seeded
cases over PatchIndex files (flat, flat16, PQ 8/4-bit, XFRM, removed images) and ImageIndex
files (META formats 1-3), each loaded eagerly and mapped in a worker process. Every case must
load and work or raise a PypatchError; an untyped exception, a worker crash or a hang fails.
The long run: `python tests/fuzz/fuzz_index_files.py --iterations 100000 --seed S`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_index_files.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_index_files", FUZZ)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_seeded_mutations_load_or_raise_typed_errors(fuzz):
    stats = fuzz.run(seed=0, iterations=2500, timeout=20.0)
    report = "\n".join(f"seed {f['seed']} case {f['case']} {f['seed_file']}: {f['mutation']} "
                       f"(mmap={f['mmap']}, verify={f['verify']}; replay with --seed "
                       f"{f['seed']} --case {f['case']}):\n{f['error']}"
                       for f in stats["failures"][:10])
    assert not stats["failures"], f"{len(stats['failures'])} failing loads:\n{report}"
    assert stats["cases"] == 2500 and stats["loads"] == 5000
    # the mutations reach past the checksums, to the loaders' own checks, and some still load
    reasons = stats["reasons"]
    assert sum(n for why, n in reasons.items() if "checksum" not in why) > 1000, reasons
    assert any(why.startswith("image metadata") for why in reasons), reasons
    assert any("image offset" in why for why in reasons), reasons
    assert stats["outcomes"]["image loaded"] > 100 and stats["outcomes"]["patch loaded"] > 500


@pytest.mark.parametrize("what,expect", [("abort", "crash"), ("segv", "crash"),
                                         ("hang", "hang")])
def test_a_crash_or_a_hang_is_reported_not_fatal(fuzz, tmp_path, what, expect):
    """The harness itself: a worker that dies or stops answering is a failure of that case,
    and the next case gets a fresh worker."""
    worker = fuzz.Worker(tmp_path, 0)
    try:
        res = worker.ask({"selftest": what}, timeout=3.0)
        assert not res["ok"] and res["error"].startswith(expect), res
        seed = tmp_path / "ok.ptch"
        fuzz.fake_image_index_file(seed)
        res = worker.ask({"path": str(seed), "image": True, "mmap": True, "verify": False}, 30)
        assert res == {"ok": True, "outcome": "patch loaded | image loaded"}, res
    finally:
        worker.stop()


def test_an_untyped_exception_is_a_failure(fuzz, tmp_path):
    worker = fuzz.Worker(tmp_path, 0)
    try:
        res = worker.ask({"path": str(tmp_path / "missing.ptch"), "image": False, "mmap": True,
                          "verify": False}, 30)
        assert not res["ok"] and "FileNotFoundError" in res["error"]  # not a PypatchError
    finally:
        worker.stop()

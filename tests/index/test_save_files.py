"""save()/load() against real files: the replaced file's mode, the symlink rule, temporaries of
killed saves, and paths that are not regular files (a FIFO must not block load)."""
from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

import pypatch

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file semantics")


def small_index(seed: int = 0, n_images: int = 3) -> pypatch.PatchIndex:
    rng = np.random.default_rng(seed)
    ix = pypatch.PatchIndex(8)
    ix.add(rng.standard_normal((2 * n_images, 8)).astype(np.float32), patches_per_image=2)
    return ix


def same_index(a: pypatch.PatchIndex, b: pypatch.PatchIndex) -> bool:
    return len(a) == len(b) and all(np.array_equal(a.reconstruct(i), b.reconstruct(i))
                                    for i in range(len(a)))


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ------------------------------------------------------------------ mode
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_save_over_a_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "ix.ptch"
    small_index(0).save(path)
    os.chmod(path, mode)
    small_index(1, n_images=5).save(path)  # replaces the file (rename), not rewrites it
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert same_index(pypatch.PatchIndex.load(path), small_index(1, n_images=5))


def test_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        small_index().save(tmp_path / "new.ptch")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.ptch").st_mode) == 0o640


# ------------------------------------------------------------------ symlinks
def test_save_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "real.ptch"
    small_index(0).save(target)
    os.chmod(target, 0o600)
    link = tmp_path / "current.ptch"
    os.symlink(os.path.join("store", "real.ptch"), link)  # relative, as users make them
    small_index(2, n_images=4).save(link)
    assert os.path.islink(link) and os.readlink(link) == os.path.join("store", "real.ptch")
    assert same_index(pypatch.PatchIndex.load(target), small_index(2, n_images=4))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["current.ptch", "store"]  # no temporary left
    assert os.listdir(tmp_path / "store") == ["real.ptch"]


def test_save_through_a_chain_and_a_dangling_symlink(tmp_path):
    real = tmp_path / "real.ptch"
    os.symlink(real, tmp_path / "a.ptch")             # dangling: real does not exist yet
    os.symlink("a.ptch", tmp_path / "b.ptch")         # b -> a -> real
    small_index(3).save(tmp_path / "b.ptch")
    assert os.path.islink(tmp_path / "a.ptch") and os.path.islink(tmp_path / "b.ptch")
    assert real.is_file() and same_index(pypatch.PatchIndex.load(real), small_index(3))


def test_a_symlink_loop_is_an_oserror(tmp_path):
    os.symlink("y.ptch", tmp_path / "x.ptch")
    os.symlink("x.ptch", tmp_path / "y.ptch")
    with pytest.raises(OSError):
        small_index().save(tmp_path / "x.ptch")
    assert os.path.islink(tmp_path / "x.ptch") and os.path.islink(tmp_path / "y.ptch")


# ------------------------------------------------------------------ temporaries of killed saves
def test_save_removes_temporaries_of_dead_writers_only(tmp_path):
    path = tmp_path / "ix.ptch"
    small_index(0).save(path)
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f"ix.ptch.tmp.{dead}.0", tmp_path / f"ix.ptch.tmp.{dead}.17"]
        kept = [tmp_path / f"ix.ptch.tmp.{live.pid}.0",       # a live writer's
                tmp_path / f"ix.ptch.tmp.{os.getpid()}.999",   # this process's (another thread)
                tmp_path / f"other.ptch.tmp.{dead}.0",         # another target's
                tmp_path / f"ix.ptch.tmp.{dead}.0.bak",        # not our pattern
                tmp_path / f"ix.ptch.tmp.{dead}",
                tmp_path / "ix.ptch.tmp.x.0"]
        for p in stale + kept:
            p.write_bytes(b"x" * 1000)
        small_index(1).save(path)
        assert [p.exists() for p in stale] == [False] * len(stale)
        assert [p.exists() for p in kept] == [True] * len(kept)
        assert same_index(pypatch.PatchIndex.load(path), small_index(1))
    finally:
        live.kill()
        live.wait()


def test_a_locked_temporary_is_kept_even_if_its_pid_is_dead_here(tmp_path):
    """A writer in another PID namespace sharing the folder: its pid means nothing here, but
    it holds the temporary's lock until its rename."""
    tmp = tmp_path / f"ix.ptch.tmp.{dead_pid()}.0"
    tmp.write_bytes(b"partial")
    with open(tmp, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        small_index().save(tmp_path / "ix.ptch")
        assert tmp.exists()
    small_index().save(tmp_path / "ix.ptch")  # lock released: now it is stale
    assert not tmp.exists()


def test_a_symlink_named_like_a_stale_temporary_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / f"ix.ptch.tmp.{dead_pid()}.0")
    small_index().save(tmp_path / "ix.ptch")
    assert victim.read_text() == "keep me"


def test_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    """A real save killed half-way (SIGKILL, sent by a thread of the saving process as soon as
    the temporary exists; 20 MB keep the save busy long enough), then the next save here."""
    path = tmp_path / "ix.ptch"
    code = f"""
import os, signal, threading, time
import numpy as np, pypatch
ix = pypatch.PatchIndex(64)
ix.add(np.ones((80000, 64), np.float32), patches_per_image=100)
def kill_when_writing():
    while not any(n.startswith("ix.ptch.tmp.") for n in os.listdir({str(tmp_path)!r})):
        time.sleep(0.0005)
    os.kill(os.getpid(), signal.SIGKILL)
threading.Thread(target=kill_when_writing, daemon=True).start()
while True:
    ix.save({str(path)!r})
"""
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                             cwd=tempfile.gettempdir())  # outside the checkout (CI installs pypatch)
    _, err = child.communicate(timeout=300)
    assert child.returncode == -9, err.decode()
    left = [n for n in os.listdir(tmp_path) if n.startswith("ix.ptch.tmp.")]
    assert len(left) == 1 and left[0].startswith(f"ix.ptch.tmp.{child.pid}."), left
    small_index().save(path)
    assert [n for n in os.listdir(tmp_path) if n.startswith("ix.ptch.tmp.")] == []
    assert same_index(pypatch.PatchIndex.load(path), small_index())


# ------------------------------------------------------------------ not a regular file
@pytest.mark.parametrize("mmap", [True, False])
def test_load_from_a_fifo_is_refused_without_blocking(tmp_path, mmap):
    fifo = tmp_path / "ix.ptch"
    os.mkfifo(fifo)
    outcome = {}

    def load():
        try:
            pypatch.PatchIndex.load(fifo, mmap=mmap)
            outcome["result"] = "loaded"
        except Exception as e:  # noqa: BLE001 - the type is asserted below
            outcome["result"] = e

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():  # blocked in open(): release it with a writer, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(10)
        pytest.fail("PatchIndex.load blocked on a FIFO")
    err = outcome["result"]
    assert isinstance(err, OSError) and not isinstance(err, pypatch.errors.PypatchError), err
    assert "FIFO" in str(err) and str(fifo) in str(err)


def test_load_from_a_directory_is_refused(tmp_path):
    with pytest.raises(OSError, match="directory"):
        pypatch.PatchIndex.load(tmp_path, mmap=False)
    with pytest.raises(OSError, match="directory"):
        pypatch.PatchIndex.load(tmp_path, mmap=True)

"""auditkit's scratch root: made 0700 with a marker, refused when the name is anyone else's, and a
sweep that removes only the cell directories of runs that died (their lock is free), never
anything outside the root (tests/test_signals.py kills a real `protocol run` for the end-to-end)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditkit.errors import AuditError
from auditkit.study.executors import ROOT_MARKER, remove_stale_scratch, scratch_directory, scratch_root

ROOT_NAME = f"auditkit.scratch-{os.getuid()}"


def snapshot(d: Path) -> dict[str, bytes | None]:
    return {p.relative_to(d).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(d.rglob("*"))}


def test_the_root_is_made_private_with_its_marker(tmp_path):
    root = scratch_root(tmp_path)
    assert root == tmp_path / ROOT_NAME and (root.stat().st_mode & 0o777) == 0o700
    assert (root / ROOT_MARKER).is_file()
    assert scratch_root(tmp_path) == root                   # found again, not made twice
    assert [p.name for p in tmp_path.iterdir()] == [ROOT_NAME]  # no staging directory left


def _symlink(tmp: Path) -> None:
    (tmp / "elsewhere").mkdir()
    (tmp / ROOT_NAME).symlink_to(tmp / "elsewhere")


def _file(tmp: Path) -> None:
    (tmp / ROOT_NAME).write_text("a user's file")


def _no_marker(tmp: Path) -> None:
    (tmp / ROOT_NAME).mkdir(mode=0o700)
    (tmp / ROOT_NAME / "cell-x-1").mkdir()
    (tmp / ROOT_NAME / "cell-x-1.lock").write_text("")


def _open_mode(tmp: Path) -> None:
    scratch_root(tmp)
    (tmp / ROOT_NAME).chmod(0o755)


def _forged_marker(tmp: Path) -> None:
    (tmp / ROOT_NAME).mkdir(mode=0o700)
    (tmp / ROOT_NAME / ROOT_MARKER).write_text("something else")


def _marker_symlink(tmp: Path) -> None:
    (tmp / ROOT_NAME).mkdir(mode=0o700)
    (tmp / "m").write_text("x")
    (tmp / ROOT_NAME / ROOT_MARKER).symlink_to(tmp / "m")


@pytest.mark.parametrize("plant, says", [(_symlink, "not a directory"), (_file, "not a directory"),
                                         (_no_marker, "no .auditkit-scratch-root marker"),
                                         (_open_mode, "open to other users"),
                                         (_forged_marker, "not the marker"), (_marker_symlink, "no .auditkit")])
def test_a_root_auditkit_did_not_make_is_refused_and_left_alone(tmp_path, plant, says):
    plant(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(AuditError) as info:
        with scratch_directory("c", tmp_path):
            pass
    assert says in info.value.message and info.value.path == str(tmp_path / ROOT_NAME)
    assert "TMPDIR" in info.value.hint
    assert snapshot(tmp_path) == before


def test_a_root_of_another_user_is_refused(tmp_path, monkeypatch):
    scratch_root(tmp_path)
    monkeypatch.setattr(os, "getuid", lambda: 4242)         # as another user sees this one
    (tmp_path / ROOT_NAME).rename(tmp_path / "auditkit.scratch-4242")
    with pytest.raises(AuditError, match="belongs to another user"):
        scratch_root(tmp_path)


HOLD = """
import sys, time
from auditkit.study.executors import scratch_directory
with scratch_directory("held", sys.argv[1]) as work:
    (work / "data").write_text("in use")
    print(work, flush=True)
    sys.stdin.read()          # until the test closes our stdin or kills us
"""


def _holder(tmp: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_only_the_cells_of_dead_runs_are_swept(tmp_path):
    root = scratch_root(tmp_path)
    alive, alive_work = _holder(tmp_path)
    dead, dead_work = _holder(tmp_path)
    try:
        dead.kill()
        dead.wait()
        # what the sweep must leave: a cell directory with no lock file, a lock that is a symlink to a
        # directory outside the root, a file someone put there
        (root / "cell-orphan-1").mkdir()
        (root / "cell-orphan-1" / "keep").write_text("k")
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep").write_text("k")
        (root / "cell-link-2").symlink_to(outside)
        (root / "cell-link-2.lock").write_text("")
        (root / "notes.txt").write_text("n")
        assert remove_stale_scratch(tmp_path) == 1
        assert not dead_work.exists() and not dead_work.with_name(dead_work.name + ".lock").exists()
        assert (alive_work / "data").read_text() == "in use"
        assert (root / "cell-orphan-1" / "keep").is_file() and (outside / "keep").is_file()
        assert (root / "cell-link-2").is_symlink() and (root / "notes.txt").is_file()
    finally:
        alive.stdin.close()
        assert alive.wait(timeout=60) == 0
        if dead.poll() is None:
            dead.kill()
            dead.wait()
    assert not alive_work.exists() and not alive_work.with_name(alive_work.name + ".lock").exists()


def test_the_session_judges_only_its_own_temporary_directory(tmp_path):
    """tests/conftest.py gives the suite's processes their own TMPDIR and judges only that: the
    scratch root (marker and lock) may stay, a cell left in it or anything else may not."""
    import tempfile

    from conftest import SESSION_PREFIX, left_in_temp

    assert os.environ["TMPDIR"] == tempfile.gettempdir()
    assert Path(tempfile.gettempdir()).parent.name.startswith(SESSION_PREFIX)   # <session>/tmp
    assert not SESSION_PREFIX.startswith("auditkit-")
    with scratch_directory("c", tmp_path):
        pass
    assert left_in_temp(tmp_path) == []
    (scratch_root(tmp_path) / "cell-x-1").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    assert left_in_temp(tmp_path) == [f"{ROOT_NAME}/cell-x-1", "stray.txt"]

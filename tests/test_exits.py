"""Exits that are whole: a closed stdout ends quietly (exit 141), running out of memory or a
read-only / full target is an error with a hint (exit 2), never "a bug", and with --json every one
of them still prints a whole JSON document."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.cli.common import EXIT_CLOSED_PIPE

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ancillary"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("args", [["replay-gate", "all", "--package", PKG], ["claims", "--package", PKG],
                                  ["verify", PKG], ["replay-gate", "all", "--package", PKG, "--json"]],
                         ids=["replay-gate", "claims", "verify", "replay-gate-json"])
def test_a_closed_stdout_ends_quietly(args):
    r, w = os.pipe()
    os.close(r)                      # the reader is gone before auditkit writes a byte (`| head -0`)
    try:
        p = subprocess.run([sys.executable, "-m", "auditkit", *map(str, args)], stdout=w, stderr=subprocess.PIPE,
                           text=True, timeout=300, env=dict(os.environ, PYTHONSAFEPATH="1"))
    finally:
        os.close(w)
    assert p.returncode == EXIT_CLOSED_PIPE, p.stderr
    assert p.stderr == "", p.stderr          # no "BrokenPipeError", no "a bug", no "Exception ignored"


def _out_of_memory(*args, **kwargs):
    raise MemoryError()


def test_running_out_of_memory_says_where_and_exits_2(monkeypatch):
    import auditkit.gates.replay as replay

    monkeypatch.setattr(replay, "replay_package", _out_of_memory)
    r = invoke("replay-gate", "all", "--package", PKG)
    assert r.exit_code == 2, r.output
    assert "ran out of memory" in r.output and "_out_of_memory" in r.output and "ulimit" in r.output
    assert "a bug" not in r.output and "Traceback" not in r.output
    r = invoke("replay-gate", "all", "--package", PKG, "--json")
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 2 and "ran out of memory" in doc["error"]


def test_running_out_of_memory_under_a_real_limit_exits_2_with_whole_json(tmp_path):
    """Under a real address-space limit (`ulimit -v`): the allocation that fails is a real one."""
    code = (
        "import resource, sys\n"
        "import importlib, auditkit.cli.cmd_gates, auditkit.gates.replay as rp\n"
        "m = importlib.import_module('auditkit.cli.main')\n"
        "def big(*a, **k):\n"
        "    return [bytearray(64 << 20) for _ in range(10_000)]\n"   # far past the limit below
        "rp.replay_package = big\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, hard))\n"
        "sys.argv = ['auditkit', 'replay-gate', 'all', '--package', sys.argv[1], '--json']\n"
        "m.main()\n")
    p = subprocess.run([sys.executable, "-c", code, str(PKG)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    doc = json.loads(p.stdout)
    assert doc["exit_code"] == 2 and "ran out of memory (in <string>:5" in doc["error"]
    assert "Traceback" not in p.stderr


def _read_only(path, data):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))


def test_a_read_only_target_is_a_usage_error_with_a_hint(tmp_path, monkeypatch):
    # root may write anywhere, so the refusal is the system's answer simulated at the write
    monkeypatch.setattr(os, "fsync", lambda fd: _read_only("fd", b""))
    out = tmp_path / "tables"
    r = invoke("tables", "--package", PKG, "--out", out)
    assert r.exit_code == 2, r.output
    assert "Read-only file system" in r.output and "hint: the directory is not writable by you" in r.output
    assert str(out) in r.output and "a bug" not in r.output
    r = invoke("tables", "--package", PKG, "--out", tmp_path / "t2", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and "Read-only" in doc["error"] and doc["path"].startswith(str(tmp_path / "t2"))


def test_a_full_disk_while_deciding_is_a_usage_error(tmp_path, monkeypatch):
    import shutil

    import auditkit.package.atomic as store

    pkg = tmp_path / "pkg"
    shutil.copytree(PKG, pkg)
    gate = sorted(p.name for p in (pkg / "analysis").glob("*_decision.json"))[0].removesuffix("_decision.json")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "_synced_temporary", full)
    monkeypatch.setattr(os, "fsync", full)
    r = invoke("decide", gate, "--package", pkg, "--force")
    assert r.exit_code == 2, r.output
    assert "No space left on device" in r.output and "a bug" not in r.output


def test_an_unexpected_error_is_still_a_whole_json_document(monkeypatch):
    import auditkit.gates.replay as replay

    def boom(*a, **k):
        raise ZeroDivisionError("x")

    monkeypatch.setattr(replay, "replay_package", boom)
    r = invoke("replay-gate", "all", "--package", PKG, "--json")
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert "ZeroDivisionError" in doc["error"] and "a bug in auditkit" in doc["hint"]


def test_an_error_document_meeting_a_closed_stdout_is_quiet_too():
    code = ("import importlib, os, sys, auditkit.gates.replay as rp\n"
            "m = importlib.import_module('auditkit.cli.main')\n"
            "def boom(*a, **k):\n"
            "    raise ZeroDivisionError('x')\n"
            "rp.replay_package = boom\n"
            "sys.argv = ['auditkit', 'replay-gate', 'all', '--package', sys.argv[1], '--json']\n"
            "m.main()\n")
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-c", code, str(PKG)], stdout=w, stderr=subprocess.PIPE, text=True,
                           timeout=300)
    finally:
        os.close(w)
    assert p.returncode == EXIT_CLOSED_PIPE and p.stderr == "", p.stderr


def test_a_refused_path_names_itself_and_what_to_do():
    from auditkit.cli.common import unexpected_error

    e = unexpected_error(PermissionError(errno.EACCES, "Permission denied", "/srv/pkg/rows.csv"), "verify")
    assert e.message == "`auditkit verify` cannot use /srv/pkg/rows.csv: permission denied"
    assert e.path == "/srv/pkg/rows.csv" and "permissions" in e.hint
    e = unexpected_error(OSError(errno.EDQUOT, "Disk quota exceeded", "/home/u/out/t.csv"), "tables")
    assert "disk quota" in e.message and "make room" in e.hint
    e = unexpected_error(OSError(errno.EIO, "I/O error", "/x"), "verify")
    assert e.message.startswith("could not check: OSError") and "a bug in auditkit" in e.hint

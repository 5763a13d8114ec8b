"""Signals and children: a stopped run kills its runner (and the runner's children), removes its
scratch directory, leaves no partial row, exits 128 + the signal, and resumes when run again;
a SIGKILLed driver takes its runner with it and its scratch directory is cleaned next time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from auditkit.package.rows import RUN_COLUMNS, read_csv_text
from auditkit.study.executors import LOCK_NAME, remove_stale_scratch, scratch_directory
from auditkit.study.signals import Stopped, critical, stop_on_signals

MATRIX = ("config_id,role,depth,aspect_ratio,head_dim,seq_len,total_batch_size,device_batch_size,matrix_lr\n"
          "a,reference,1,16,16,64,512,8,0.03\n"
          "b,screened,1,16,16,64,512,8,0.02\n")
TOML = """
name = "sig"
matrix = "sig_matrix.csv"
hosts = ["h"]

[host_profiles.h]
device = "cpu"
threads = 1

[runner]
keep_checkpoints = "none"
steps_timeout = 300
settings = { data = "markov:seed=0", eval_tokens = 1024 }

[[stages]]
stage = "s1"
budget = { kind = "steps", value = %d }
seeds = [1]
hosts = ["h"]
candidates = "matrix"

[[gates]]
gate = "g"
[gates.rules]
inputs = { stages = ["s1"], hosts = ["h"], seeds = [1], candidates = "matrix" }
metric = { column = "val_bpb", better = "lower" }
promote = { top_k = 1, always_keep = [] }
checks = []
"""


@pytest.fixture
def study(tmp_path):
    """(manifest path, environment whose TMPDIR is this test's own, scratch dir)."""
    (tmp_path / "sig_matrix.csv").write_text(MATRIX)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), PYTHONSAFEPATH="1")
    return tmp_path, env, scratch


def write_manifest(root: Path, steps: int) -> Path:
    path = root / "sig.toml"
    path.write_text(TOML % steps)
    return path


def runners_of(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for k in kids:
        try:
            cmd = k.cmdline()
            if "auditkit.runner.train" in " ".join(cmd) and "--check" not in cmd:  # not the data check
                out.append(k)
        except psutil.Error:
            pass
    return out


def gone(proc: psutil.Process, within: float = 10.0) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def rows(pkg: Path) -> list[dict]:
    out = []
    for p in sorted((pkg / "remote-results").glob("*.csv")) if (pkg / "remote-results").is_dir() else []:
        header, rs = read_csv_text(p.read_text())
        assert tuple(header[:len(RUN_COLUMNS)]) == RUN_COLUMNS
        assert all(None not in r.values() and len(r) == len(header) for r in rs)  # no partial row
        out += rs
    return out


def _default_signals():
    # as from a terminal: the test runner itself may run with SIGINT/SIGHUP ignored (a background job)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def start(args: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "auditkit", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_signals)


def wait_for_runner(proc: subprocess.Popen, pkg: Path | None = None, min_rows: int = 0,
                    within: float = 120) -> psutil.Process:
    deadline = time.time() + within
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        found = runners_of(proc.pid)
        if found and (pkg is None or len(rows(pkg)) >= min_rows):
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no runner process appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_protocol_run_cleanly_and_a_rerun_resumes(study, sig):
    root, env, scratch = study
    # long enough that the second cell is still training when the signal comes
    manifest = write_manifest(root, 400 if sig == signal.SIGTERM else 4000)
    pkg = root / "pkg"
    args = ["protocol", "run", manifest, "--out", pkg, "--host", "all"]
    proc = start(args, env)
    try:
        runner = wait_for_runner(proc, pkg, min_rows=1 if sig == signal.SIGTERM else 0)
        assert list(scratch.glob("auditkit-*")), "the cell has a scratch directory while it runs"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, out
    assert f"stopped by {signal.Signals(sig).name}" in out and "Traceback" not in out
    assert gone(runner), "the runner outlived the stopped run"
    assert not list(scratch.glob("auditkit-*")) and not list(scratch.glob(".auditkit-*"))
    done = rows(pkg)
    assert len(done) == (1 if sig == signal.SIGTERM else 0)
    assert not list(pkg.rglob(".auditkit-tmp-*"))
    if sig != signal.SIGTERM:
        return
    # the same command again runs only the missing cell and finalizes
    r = subprocess.run([sys.executable, "-m", "auditkit", *map(str, args)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "complete: 1 cell(s) run now" in r.stdout
    assert sorted(x["config_id"] for x in rows(pkg)) == ["a", "b"]
    assert [x for x in rows(pkg) if x["config_id"] == done[0]["config_id"]] == done
    assert not list(scratch.glob("auditkit-*")) and not list(scratch.glob(".auditkit-*"))


def test_a_signal_stops_auditkit_run(study, tmp_path):
    root, env, scratch = study
    out_dir = tmp_path / "one"
    proc = start(["run", "--matrix", root / "sig_matrix.csv", "--config-id", "a", "--seed", 1,
                  "--budget", "100000steps", "--out", out_dir, "--eval-tokens", 1024], env)
    try:
        runner = wait_for_runner(proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, out
    assert gone(runner)
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no half-written runner file


def test_a_sigkilled_driver_takes_its_runner_along_and_the_next_run_cleans_up(study):
    root, env, scratch = study
    manifest = write_manifest(root, 4000)
    pkg = root / "pkg"
    proc = start(["protocol", "run", manifest, "--out", pkg, "--host", "all"], env)
    try:
        runner = wait_for_runner(proc)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert gone(runner), "the runner outlived a SIGKILLed driver"
    left = list(scratch.glob("auditkit-*"))
    assert len(left) == 1 and (left[0] / LOCK_NAME).is_file()
    assert remove_stale_scratch(scratch) == 1 and not list(scratch.glob("*auditkit-*"))


def test_stale_scratch_is_told_from_scratch_in_use(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old_unlocked = tmp_path / "auditkit-old-x"          # an older auditkit's, untouched for long
    old_unlocked.mkdir()
    (old_unlocked / "runner.log").write_text("x")
    long_ago = time.time() - 3600
    os.utime(old_unlocked / "runner.log", (long_ago, long_ago))
    os.utime(old_unlocked, (long_ago, long_ago))
    fresh_unlocked = tmp_path / "auditkit-new-y"        # one being set up right now
    fresh_unlocked.mkdir()
    other = tmp_path / "auditkit.txt"                   # not a directory: never touched
    other.write_text("keep")
    with scratch_directory("cell") as work:
        assert work.parent == tmp_path and work.name.startswith("auditkit-cell-")
        assert not old_unlocked.exists()                 # removed when this one was made
        assert remove_stale_scratch() == 0 and work.is_dir()  # in use: its lock is held
    assert not work.exists() and fresh_unlocked.is_dir() and other.read_text() == "keep"


def test_critical_defers_a_stop_until_it_is_done():
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    with pytest.raises(Stopped) as info:
        with stop_on_signals():
            with critical():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                seen.append("landed")
            seen.append("after")
    assert seen == ["landed"] and info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_ignored_signal_stays_ignored():
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGHUP, before)

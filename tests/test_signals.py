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
from auditkit.study.executors import remove_stale_scratch, scratch_directory, scratch_root
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
        assert cells(scratch), "the cell has a scratch directory while it runs"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, out
    assert f"stopped by {signal.Signals(sig).name}" in out and "Traceback" not in out
    assert gone(runner), "the runner outlived the stopped run"
    assert not cells(scratch)
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
    assert not cells(scratch)


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


LOOK_ALIKES = ("auditkit-notes", "auditkit-tests-x", ".auditkit-cache", "auditkit-old-x", "auditkit-scratch-other",
               "auditkit.scratch-other")


def plant_look_alikes(tmp: Path) -> dict[str, str]:
    """Directories named like auditkit's (one with a free `.lock`, as older auditkits left them),
    hours old: what a careless cleaner would take for its own."""
    planted = {}
    long_ago = time.time() - 6 * 3600
    for name in LOOK_ALIKES:
        d = tmp / name
        d.mkdir()
        (d / "notes.txt").write_text(f"the user's {name}")
        (d / ".lock").write_text("")
        for p in (d / "notes.txt", d / ".lock", d):
            os.utime(p, (long_ago, long_ago))
        planted[name] = f"the user's {name}"
    return planted


def look_alikes_intact(tmp: Path, planted: dict[str, str]) -> bool:
    return all((tmp / n / "notes.txt").read_text() == text and (tmp / n / ".lock").is_file()
               for n, text in planted.items())


def cells(tmp: Path) -> list[Path]:
    """The cell directories (and their lock files) in auditkit's scratch root under `tmp`."""
    root = tmp / f"auditkit.scratch-{os.getuid()}"
    return sorted(root.glob("cell-*")) if root.is_dir() else []


def test_a_sigkilled_driver_takes_its_runner_along_and_the_next_run_cleans_up(study):
    root, env, scratch = study
    planted = plant_look_alikes(scratch)
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
    left = cells(scratch)
    assert [p.suffix for p in left] == ["", ".lock"] and left[0].is_dir(), left
    assert look_alikes_intact(scratch, planted)
    # the next run (another study, a few steps) sweeps the killed run's cell, and only that
    other = root / "next"
    other.mkdir()
    (other / "sig_matrix.csv").write_text(MATRIX)
    r = subprocess.run([sys.executable, "-m", "auditkit", "protocol", "run", str(write_manifest(other, 2)),
                        "--out", str(other / "pkg"), "--host", "all"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not cells(scratch), cells(scratch)
    assert look_alikes_intact(scratch, planted)
    assert sorted(p.name for p in scratch.iterdir()) == sorted([*LOOK_ALIKES, f"auditkit.scratch-{os.getuid()}"])


def test_stale_scratch_is_told_from_scratch_in_use(tmp_path):
    planted = plant_look_alikes(tmp_path)
    with scratch_directory("cell", tmp_path) as work:
        assert work.parent == scratch_root(tmp_path) and work.name.startswith("cell-cell-")
        (work / "out.bin").write_bytes(b"x")
        assert remove_stale_scratch(tmp_path) == 0 and work.is_dir()  # in use: its lock is held
    assert not work.exists() and not cells(tmp_path)
    assert look_alikes_intact(tmp_path, planted)


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


def test_ctrl_c_during_a_command_exits_130(monkeypatch):
    """A KeyboardInterrupt inside any command is exit 130, never click's "Aborted!" (exit 1)."""
    from click.testing import CliRunner

    import auditkit.verify as verify_mod
    from auditkit.cli import cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify_mod, "verify_package", interrupted)
    r = CliRunner().invoke(cli, ["verify", "ancillary"])
    assert r.exit_code == 130 and "Aborted" not in r.output, r.output


def test_a_killed_runners_temporaries_are_removed_and_nothing_else(tmp_path):
    from auditkit.study.runs import _remove_runner_temporaries

    for name in (".summary.json.tmp-4321", ".checkpoint.safetensors.tmp-4321", ".notes.txt.tmp-4321",
                 ".summary.json.tmp-999", "summary.json"):
        (tmp_path / name).write_text("x")
    _remove_runner_temporaries(tmp_path, 4321)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt.tmp-4321", ".summary.json.tmp-999",
                                                          "summary.json"]

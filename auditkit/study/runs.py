"""Drive the bundled runner: one cell in a subprocess, with a timeout, and its run row.

`run_cell` always returns a summary (and writes `summary.json`): a run that
crashed gets status `failed`, one that ran past its timeout `timeout`, so a
protocol records every cell it tried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from auditkit.errors import AuditError
from auditkit.clock import utc_now
from auditkit.package.atomic import atomic_write_bytes
from auditkit.package.canonical import canonical_json_bytes
from auditkit.study.signals import critical
from auditkit.package.protocol import Budget
from auditkit.package.rows import EVAL_COLUMNS, EVAL_DOCS_COLUMNS, RUN_COLUMNS, format_float
from auditkit.package.schemas import schema_errors


SETTINGS_KEYS = {"data", "eval_tokens", "eval_seq_len", "tokenizer", "vocab_size", "compile", "seq_len", "dtype"}
# protocol-wide runner settings passed on as options (the evaluation protocol among them)
_OPTIONS = {"data": "--data", "eval_tokens": "--eval-tokens", "eval_seq_len": "--eval-seq-len",
            "tokenizer": "--tokenizer", "vocab_size": "--vocab-size", "dtype": "--dtype"}


def runner_sha256() -> str:
    from auditkit.runner.arch import runner_tree_sha256

    return runner_tree_sha256()


def parse_budget(text: str) -> Budget:
    """`30s`, `2.5s`, `200steps` -> Budget. Raises AuditError with the accepted forms."""
    t = str(text).strip().lower()
    try:
        if t.endswith("steps"):
            b = Budget("steps", float(int(t[:-5])))
        elif t.endswith("s"):
            b = Budget("seconds", float(t[:-1]))
        else:
            raise ValueError
    except ValueError:
        raise AuditError(f"budget {text!r} is not understood", hint="write 30s (wall-clock seconds) or 200steps") from None
    if b.value <= 0:
        raise AuditError(f"budget {text!r} must be positive")
    return b


def _now() -> str:
    return utc_now()


def failed_summary(*, run_id: str, config_id: str, seed: int, budget: Budget, reason: str,
                   status: str = "failed", started_at: str | None = None, total_seconds: float = 0.0) -> dict:
    """A schema-valid summary for a run that never produced one of its own."""
    now = _now()
    return {"run_id": run_id, "config_id": config_id, "seed": int(seed), "status": status, "val_bpb": None,
            "training_seconds": 0.0, "total_seconds": round(total_seconds, 3), "num_steps": 0,
            "total_tokens_M": 0.0, "num_params_M": 0.0, "peak_vram_mb": 0.0, "mfu_percent": 0.0,
            "started_at": started_at or now, "finished_at": now, "runner_sha256": runner_sha256(),
            "budget": budget.to_json(), "device": "", "dtype": "", "checkpoint": None,
            "checkpoint_sha256": None, "error": reason}


def _settings_options(settings: dict) -> list[str]:
    out = []
    for key, option in _OPTIONS.items():
        if key in settings:
            v = settings[key]
            out += [option, str(int(v)) if key in ("eval_tokens", "eval_seq_len", "vocab_size") else str(v)]
    return out


def check_runner_settings(matrix_row: dict[str, str], settings: dict | None, timeout: float = 900) -> str:
    """Let the runner read these settings and their data (no training): its one-line verdict.

    Raises AuditError with the runner's reason when it refuses them (a missing data file,
    no `text` column, too little validation text for the evaluation, an unknown setting),
    so a protocol stops before its first cell instead of recording a failed row per cell.
    """
    settings = dict(settings or {})
    unknown = sorted(set(settings) - SETTINGS_KEYS)
    if unknown:
        raise AuditError(f"unknown runner setting(s) {', '.join(unknown)}",
                         hint=f"known: {', '.join(sorted(SETTINGS_KEYS))}")
    if settings.get("seq_len") and not matrix_row.get("seq_len"):
        matrix_row = dict(matrix_row, seq_len=str(int(settings["seq_len"])))
    cmd = [sys.executable, "-m", "auditkit.runner.train", "--config-json", json.dumps(matrix_row), "--seed", "0",
           "--budget", "1steps", "--check", *_settings_options(settings)]
    env = dict(os.environ, PYTHONSAFEPATH="1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise AuditError(f"the runner took over {timeout:.0f} s to read its data") from None
    if p.returncode != 0:
        reason = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise AuditError(f"the runner refuses the settings {json.dumps(settings, sort_keys=True)}: "
                         f"{reason.removeprefix('error: ')}",
                         hint="fix the manifest's [runner].settings or the data, then run again")
    return p.stdout.strip()


def run_cell(*, matrix_row: dict[str, str], seed: int, budget: Budget, out_dir: Path, run_id: str,
             device: str = "cpu", threads: int = 1, timeout: float | None = None,
             settings: dict | None = None, stop: Callable[[], bool] | None = None,
             rng_seed: int | None = None) -> dict:
    """Train one cell in a runner subprocess; return (and leave in out_dir) its summary.json.

    `rng_seed`: seed the run's generators with it instead of `seed` (anchored stages);
    a runner that does not report training with it gives a `failed` summary.

    `settings` are protocol-wide runner options: `data` (spec, default `markov:seed=0`),
    the evaluation protocol `eval_tokens` and `eval_seq_len` (the runner's defaults
    otherwise), `tokenizer` (auto, bytes, bpe) and `vocab_size`, `compile` (bool),
    `seq_len` (used where the row has no seq_len), `dtype` (float32, or bfloat16 for
    bf16 autocast on CPU; a host profile may set it).  An unknown setting gives a
    `failed` summary naming it.

    The runner runs in its own process group and dies with this process (Linux).  If
    this call is interrupted (a signal's `Stopped`, any exception) or `stop()` turns
    true (polled every `STOP_POLL_SECONDS`; raises `CellCancelled`), the whole group is
    killed and the runner's half-written files are removed before the exception goes on.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(settings or {})
    unknown = sorted(set(settings) - SETTINGS_KEYS)
    if unknown:
        summary = failed_summary(run_id=run_id, config_id=matrix_row.get("config_id", ""), seed=seed, budget=budget,
                                 reason=f"unknown runner setting(s) {', '.join(unknown)}; "
                                        f"known: {', '.join(sorted(SETTINGS_KEYS))}")
        atomic_write_bytes(out_dir / "summary.json", canonical_json_bytes(summary))
        return summary
    if settings.get("seq_len") and not matrix_row.get("seq_len"):
        matrix_row = dict(matrix_row, seq_len=str(int(settings["seq_len"])))
    # the runner runs under auditkit.study.child, which makes it die with this process
    cmd = [sys.executable, "-m", "auditkit.study.child", str(os.getpid()), "auditkit.runner.train",
           "--config-json", json.dumps(matrix_row), "--seed", str(seed), "--budget", budget.label(),
           "--out", str(out_dir), "--run-id", run_id, "--device", device, "--threads", str(threads)]
    cmd += _settings_options(settings)
    if rng_seed is not None:
        cmd += ["--rng-seed", str(int(rng_seed))]
    if settings.get("compile"):
        cmd.append("--compile")
    started = _now()
    t0 = datetime.now(timezone.utc)
    # PYTHONSAFEPATH: `-m` must import the installed auditkit, never an `auditkit/`
    # directory that happens to sit in the current directory (a source checkout).
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", PYTHONSAFEPATH="1")
    log_path = out_dir / "runner.log"
    with open(log_path, "wb") as log:
        proc = None
        try:
            with critical():  # a stop while the child starts waits until we hold it, so it is killed too
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            rc = _wait(proc, timeout, stop)
        except BaseException:  # our own interruption (a signal, a cancelled task): never leave a runner behind
            if proc is not None:
                kill_process_group(proc)
                _remove_runner_temporaries(out_dir, proc.pid)
            raise
        if rc is None:
            kill_process_group(proc)
            _remove_runner_temporaries(out_dir, proc.pid)
    elapsed = (datetime.now(timezone.utc) - t0).total_seconds()
    summary_path = out_dir / "summary.json"
    tail = log_path.read_text("utf-8", "replace")[-2000:]
    common = dict(run_id=run_id, config_id=matrix_row.get("config_id", ""), seed=seed, budget=budget,
                  started_at=started, total_seconds=elapsed)
    if rc is None:
        summary = failed_summary(status="timeout", reason=f"killed after the {timeout:.0f} s timeout", **common)
    elif rc != 0 or not summary_path.exists():
        summary = failed_summary(reason=f"runner exited with status {rc}: {tail.strip()[-500:]}", **common)
    else:
        summary = json.loads(summary_path.read_text("utf-8"))
        errors = schema_errors(summary, "run-summary")
        if errors:
            summary = failed_summary(reason=f"runner summary invalid at {errors[0][0]}: {errors[0][1]}", **common)
        elif rng_seed is not None and summary.get("rng_seed") != int(rng_seed):
            summary = failed_summary(reason=f"the runner reports rng_seed {summary.get('rng_seed')}, "
                                            f"not the anchored {rng_seed} it was given", **common)
    atomic_write_bytes(summary_path, canonical_json_bytes(summary))
    return summary


class CellCancelled(Exception):
    """`run_cell` was told to stop (its `stop()` turned true); the runner was killed."""


STOP_POLL_SECONDS = 1.0


def _wait(proc: subprocess.Popen, timeout: float | None, stop: Callable[[], bool] | None) -> int | None:
    """The runner's exit status, None past `timeout`; CellCancelled once `stop()` is true."""
    if stop is None:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = STOP_POLL_SECONDS if deadline is None else min(STOP_POLL_SECONDS, deadline - time.monotonic())
        try:
            return proc.wait(timeout=max(step, 0.0))
        except subprocess.TimeoutExpired:
            pass
        if stop():
            raise CellCancelled("the cell was cancelled")
        if deadline is not None and time.monotonic() >= deadline:
            return None


def kill_process_group(proc: subprocess.Popen) -> None:
    """Kill `proc` and everything in its process group (it was started as a session leader); reap it."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # Windows: no process groups here
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


RUNNER_OUTPUTS = ("summary.json", "checkpoint.safetensors")   # what the runner writes into --out


def _remove_runner_temporaries(out_dir: Path, pid: int) -> None:
    """The runner writes `.NAME.tmp-PID` then renames; a killed runner leaves them behind.  Only
    the temporaries of the files it writes, of the runner just killed: `--out` may be a user's
    directory, whose other files are none of auditkit's business."""
    for name in RUNNER_OUTPUTS:
        p = out_dir / f".{name}.tmp-{pid}"
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)


def summary_to_row(summary: dict, *, host: str, stage: str, budget: Budget,
                   checkpoint_relpath: str = "", checkpoint_sha256: str = "",
                   eval_docs_relpath: str = "", eval_docs_sha256: str = "") -> dict[str, str]:
    """The SPEC section 4 run row (strings, fixed decimals) of a runner summary; with
    `eval_docs_relpath`, the v1.2 columns naming its per-document evaluation file."""
    ok = summary.get("status") == "ok" and summary.get("val_bpb") is not None
    b = budget.to_json()
    row = {
        "run_id": summary["run_id"], "host": host, "stage": stage, "seed": str(int(summary["seed"])),
        "config_id": summary["config_id"], "budget_kind": b["kind"], "budget_value": str(b["value"]),
        "status": summary["status"] if ok or summary["status"] != "ok" else "failed",
        "val_bpb": format_float(float(summary["val_bpb"])) if ok else "",
        "training_seconds": format_float(float(summary.get("training_seconds", 0.0)), 3),
        "total_seconds": format_float(float(summary.get("total_seconds", 0.0)), 3),
        "num_steps": str(int(summary.get("num_steps", 0))),
        "total_tokens_M": format_float(float(summary.get("total_tokens_M", 0.0))),
        "num_params_M": format_float(float(summary.get("num_params_M", 0.0))),
        "peak_vram_mb": format_float(float(summary.get("peak_vram_mb", 0.0)), 1),
        "mfu_percent": format_float(float(summary.get("mfu_percent", 0.0)), 3),
        "started_at": summary["started_at"], "finished_at": summary["finished_at"],
        "runner_sha256": summary["runner_sha256"],
        "checkpoint": checkpoint_relpath, "checkpoint_sha256": checkpoint_sha256 if checkpoint_relpath else "",
    }
    # v1.1 optional columns: how val_bpb was measured (empty where the run has no metric)
    se = summary.get("val_bpb_se")
    row.update({
        "val_bpb_se": format_float(float(se)) if ok and se is not None else "",
        "eval_sha256": str(summary.get("eval_sha256") or "") if ok else "",
        "eval_seq_len": str(int(summary["eval_seq_len"])) if ok and summary.get("eval_seq_len") else "",
        "eval_tokens": str(int(summary["eval_tokens"])) if ok and summary.get("eval_tokens") else "",
        "eval_bytes": str(int(summary["eval_bytes"])) if ok and summary.get("eval_bytes") else "",
        "tokenizer": str(summary.get("tokenizer") or "") if ok else "",
    })
    assert tuple(row) == RUN_COLUMNS + EVAL_COLUMNS
    if eval_docs_relpath:
        row.update({EVAL_DOCS_COLUMNS[0]: eval_docs_relpath, EVAL_DOCS_COLUMNS[1]: eval_docs_sha256})
    return row


def eval_docs_bytes(summary: dict) -> bytes | None:
    """The per-document evaluation file a runner summary carries (`eval_docs_csv`), checked
    against its `eval_docs_sha256`; None when the run has none (or they disagree)."""
    import hashlib

    text = summary.get("eval_docs_csv")
    if summary.get("status") != "ok" or not isinstance(text, str) or not text.startswith("doc,nats,bytes\n"):
        return None
    data = text.encode("utf-8")
    return data if hashlib.sha256(data).hexdigest() == summary.get("eval_docs_sha256") else None


def load_matrix_row(matrix_path: str | Path, config_id: str) -> dict[str, str]:
    """The matrix row of `config_id`; AuditError naming the file and the ids there otherwise."""
    from auditkit.package.rows import read_csv_text

    try:
        rows = read_csv_text(Path(matrix_path).read_text("utf-8"), str(matrix_path))[1]
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read the matrix: {exc}", path=str(matrix_path)) from exc
    row = next((r for r in rows if r.get("config_id") == config_id), None)
    if row is None:
        raise AuditError(f"no row with config_id {config_id!r}", path=str(matrix_path),
                         hint=f"config_ids there: {', '.join(r.get('config_id', '') for r in rows)}")
    return row


def run_adhoc(matrix_path: str | Path, config_id: str, *, seed: int, budget: str, out: Path, device: str = "cpu",
              threads: int = 1, timeout: float | None = None, settings: dict | None = None,
              host: str = "local", rng_seed: int | None = None) -> tuple[dict, dict]:
    """Train one cell outside a study (`auditkit run`): its summary and its run row.
    `rng_seed`: seed the generators with it instead of `seed` (as an anchored stage does)."""
    b = parse_budget(budget)
    row = load_matrix_row(matrix_path, config_id)
    check_runner_settings(row, settings)  # unusable data or settings: exit 2 before any training
    if timeout is None:
        timeout = (b.value * 3 + 120) if b.kind == "seconds" else 1800
    summary = run_cell(matrix_row=row, seed=seed, budget=b, out_dir=Path(out), run_id=f"{host}-{config_id}-s{seed}",
                       device=device, threads=threads, timeout=timeout, settings=settings or {}, rng_seed=rng_seed)
    ckpt = "checkpoint.safetensors" if summary.get("checkpoint") else ""
    return summary, summary_to_row(summary, host=host, stage="adhoc", budget=b, checkpoint_relpath=ckpt,
                                   checkpoint_sha256=summary.get("checkpoint_sha256") or "")

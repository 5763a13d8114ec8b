"""The protocol run: the loop that walks a staged protocol and writes a package that audits itself.

`run_protocol(manifest, out, hosts)` walks the stages in order; for each host
it runs every missing cell (candidate x seed) through an executor.  Before a
gate's first input stage starts, the gate's rules are frozen into
`preanalysis/<gate>.rules.json` (`frozen_at` = then).  Once every host's rows
for the gate's stages are in, the gate is decided with the same engine
`replay-gate` uses, and later stages take their candidates from it; when every
gate is decided the package is finalized (`auditkit.study.finalize`).  The
files themselves are written by the package writer (`auditkit.study.writer`).

Crash safety: a run killed at any moment leaves no partial row and no
half-written file; running the command again skips finished cells (by config
and seed) and never duplicates a row.

Evidence (SPEC v1.1, `auditkit.evidence`): with a `Recorder` (the CLI's
`--tsa URL`, `--sign-key KEY.pem` or `--evidence`), every freeze, cell start,
landed row, decision and the finalization is appended to the hash-chained
`evidence/events.jsonl`; freezes and decisions are timestamped by the TSAs and
decisions and the package signed, as they happen.  A stage with
`rng_seeds = "anchored"` trains every cell with the seed derived from the
freeze token of the first gate reading it (`evidence.seeds`); its rows keep
the nominal `seed` and add `rng_seed`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from auditkit.errors import AuditError
from auditkit.evidence.seeds import anchored_seed
from auditkit.package.protocol import Stage
from auditkit.package.rows import read_csv_text
from auditkit.study.executors import CellTask, Executor, LocalExecutor
from auditkit.study.finalize import finalize_package
from auditkit.study.spec import Manifest, anchor_gate, load_manifest
from auditkit.study.writer import StudyDir, run_id_for

EXIT_WAITING = 3


def _error_line(text, limit: int = 160) -> str:
    """The last non-empty line of an error (a traceback's message), shortened."""
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class BudgetLeft:
    """Planned budget of cells still to run: training seconds and training steps, kept apart
    (a protocol may mix stages budgeted in time with stages budgeted in steps)."""

    seconds: float = 0.0
    steps: float = 0.0

    def __add__(self, other: BudgetLeft) -> BudgetLeft:
        return BudgetLeft(self.seconds + other.seconds, self.steps + other.steps)

    def __sub__(self, other: BudgetLeft) -> BudgetLeft:
        return BudgetLeft(max(0.0, self.seconds - other.seconds), max(0.0, self.steps - other.steps))

    def __bool__(self) -> bool:
        return bool(self.seconds or self.steps)

    def text(self, *, approx: str = "about ") -> str:
        """'about 1.5 min', '600 steps' or 'about 1.5 min and 600 steps' (no budget: 'about 0.0 min')."""
        parts = []
        if self.seconds or not self.steps:
            parts.append(f"{approx}{self.seconds / 60:.1f} min")
        if self.steps:
            parts.append(f"{self.steps:.0f} steps")
        return " and ".join(parts)


def planned_budget(stage: Stage, n_cells: int) -> BudgetLeft:
    """The budget `n_cells` cells of `stage` are planned to spend, in the stage's own unit."""
    amount = stage.budget.value * n_cells
    return BudgetLeft(seconds=amount) if stage.budget.kind == "seconds" else BudgetLeft(steps=amount)


@dataclass
class RunOutcome:
    complete: bool
    waiting_for: list[str]
    cells_run: int
    package: Path
    finalized: str = ""  # "written" or "unchanged" (a finalized package left as it was); "" if not finalized


def run_protocol(manifest: Manifest, out: Path, hosts: list[str], *, executor: Executor | None = None,
                 wait: bool = True, poll_seconds: float = 2.0, finalize: bool = True,
                 log: Callable[[str], None] = lambda m: None, evidence=None) -> RunOutcome:
    """Run every missing cell of `hosts`, stage by stage; decide gates; finalize when all is in.

    With `wait`, a gate that needs another host's rows is polled for until they
    appear (hosts sharing one directory); without it the run stops there and
    `RunOutcome.waiting_for` says what is missing (merge, then run again).
    `evidence`: an `auditkit.evidence.record.Recorder` for `out`, or None.
    """
    proto = manifest.protocol
    unknown = [h for h in hosts if h not in proto.hosts]
    if unknown or not hosts:
        raise AuditError(f"unknown host(s) {unknown or hosts}", path=str(manifest.path),
                         hint=f"the protocol's hosts are: {', '.join(proto.hosts)}")
    _check_anchor_possible(manifest, evidence)
    if executor is None:  # the bundled runner on this machine: let it check its data before any cell runs
        from auditkit.study.runs import check_runner_settings

        try:
            first = read_csv_text(manifest.matrix_file.read_text("utf-8"), str(manifest.matrix_file))[1][:1]
        except (OSError, UnicodeDecodeError, AuditError):
            first = []  # StudyDir reports an unreadable matrix
        if first:
            log(check_runner_settings(first[0], manifest.runner.get("settings", {})))
    study = StudyDir(manifest, Path(out), log, evidence)
    study.init()
    executor = executor or LocalExecutor(keep_checkpoint=lambda task: study.keep_checkpoint(task.stage))
    matrix = study.matrix_rows()
    cells_run = 0
    for si, stage in enumerate(proto.stages):
        for gate in study.gates_fed_by(stage.stage):
            study.freeze(gate)
        cands = study.candidates(stage)
        while cands is None:
            gate = stage.promoted_by
            if not study.decide(gate):
                missing = study.gate_missing(gate)
                if not wait:
                    return RunOutcome(False, [f"gate {gate}: {m}" for m in missing], cells_run, study.out)
                log(f"gate {gate} waits for {len(missing)} cell(s), e.g. {missing[0]}")
                time.sleep(poll_seconds)
            cands = study.candidates(stage)
        anchor = _anchor(study, stage) if any(h in stage.hosts for h in hosts) else None
        tasks = []
        # interleaved: each (candidate, seed) on every host in turn, so no host's cells run
        # as one block of time (a slow spell of the machine falls on both hosts alike)
        stage_hosts = [h for h in hosts if h in stage.hosts]
        done = {host: study.done_cells(host, stage.stage) for host in stage_hosts}
        for cid in cands:
            if cid not in matrix:
                raise AuditError(f"stage {stage.stage} names config {cid!r}, not in the matrix",
                                 path=str(manifest.path))
            for seed in stage.seeds:
                for host in stage_hosts:
                    if (cid, seed) in done[host]:
                        continue
                    profile = manifest.host_profiles.get(host, {})
                    tasks.append(CellTask(
                        run_id=run_id_for(host, stage.stage, cid, seed), host=host, stage=stage.stage,
                        config_id=cid, seed=seed, budget=stage.budget, matrix_row=matrix[cid],
                        device=profile.get("device", "cpu"), threads=int(profile.get("threads", 1)),
                        timeout=_timeout(stage, manifest), settings=host_settings(manifest, host),
                        rng_seed=None if anchor is None else anchored_seed(anchor, stage.stage, seed)))
        left = planned_budget(stage, len(tasks)) + sum(
            (planned_budget(s, len(s.seeds) * len([h for h in hosts if h in s.hosts]) * _count_hint(study, s))
             for s in proto.stages[si + 1:]), BudgetLeft())
        if tasks:
            log(f"stage {stage.stage} ({stage.budget.label()}): {len(tasks)} cell(s) to run; "
                f"{left.text()} of budget left in the protocol")
        failures = []
        if tasks:
            study.snapshot_source()  # the source that runs these cells (never rewritten once there)
        if study.evidence is not None:
            for t in tasks:
                study.evidence.cell_started(t.run_id, t.host, t.stage, t.config_id, t.seed)
        for i, result in enumerate(_closing_iter(executor.run(tasks)), 1):
            row = study.land(result)
            cells_run += 1
            remaining = left - planned_budget(stage, i)
            why = ""
            if row["status"] != "ok":
                failures.append(_error_line(result.summary.get("error")))
                why = f" ({failures[-1]})" if failures[-1] else ""
            log(f"  [{stage.stage} {i}/{len(tasks)}] {result.task.host} {result.task.config_id} "
                f"seed {result.task.seed}: {row['status']} val_bpb={row['val_bpb'] or '-'}{why}"
                + (f"  ({remaining.text(approx='~')} of budget left)" if remaining else ""))
        if tasks and len(failures) == len(tasks) and len(tasks) > 1:
            # every cell failing is the environment, not the candidates: stop before a
            # gate decides on nothing and the next stages train nobody
            raise AuditError(
                f"every one of the {len(tasks)} cells of stage {stage.stage} failed; "
                f"first error: {failures[0] or 'none recorded'}",
                path=str(study.out),
                hint="fix the cause (try one cell with `auditkit run`), then start again with a new "
                     "--out directory; the failed rows stay in this one as evidence")
    for gate in proto.gates:
        if study.rules_path(gate.gate).exists():
            study.decide(gate.gate)
    waiting = []
    for gate in proto.gates:
        if not study.decision_path(gate.gate).exists():
            missing = study.gate_missing(gate.gate) if study.rules_path(gate.gate).exists() else ["rules not frozen"]
            waiting += [f"gate {gate.gate}: {m}" for m in missing]
    if waiting:
        return RunOutcome(False, waiting, cells_run, study.out)
    state = finalize_package(study)["state"] if finalize else ""
    return RunOutcome(True, [], cells_run, study.out, state)


def _closing_iter(results):
    """Iterate an executor's results and close the iterator however the loop ends, so an
    executor can cancel what it still runs (a generator's `finally` runs at once)."""
    try:
        yield from results
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def run_study(manifest_path: str | Path, out: Path, hosts: list[str], *, executor: str = "local",
              scheduler: str | None = None, wait: bool = True,
              log: Callable[[str], None] = lambda m: None, tsa_urls: list[str] = (),
              sign_keys: list[str] = (), evidence: bool = False, tsa_timeout: float = 30.0) -> RunOutcome:
    """`auditkit protocol run`: load the manifest, pick the hosts (`all` = every host) and the executor, run.

    Evidence is recorded when `evidence` is set or TSAs or signing keys are given; `tsa_timeout`
    bounds each exchange with a TSA (all of it, not each read).
    """
    manifest = load_manifest(manifest_path)
    recorder = None
    if evidence or tsa_urls or sign_keys:
        from auditkit.evidence.attest import load_signer
        from auditkit.evidence.record import Recorder

        recorder = Recorder(out, tsa_urls=list(tsa_urls), signers=[load_signer(k) for k in sign_keys], log=log,
                            timeout=tsa_timeout)
    hosts = list(manifest.protocol.hosts) if hosts == ["all"] else list(hosts)
    ex = None
    if executor == "dask":
        if not scheduler:
            raise AuditError("--executor dask needs --scheduler tcp://HOST:8786")
        from auditkit.study.dask_executor import DaskExecutor

        ex = DaskExecutor.connect(scheduler, manifest)
    return run_protocol(manifest, Path(out), hosts, executor=ex, wait=wait, log=log, evidence=recorder)


def _check_anchor_possible(manifest: Manifest, evidence) -> None:
    """An anchored stage's seeds come from a freeze token: refuse, before anything is written, a run without a TSA."""
    anchored = [s.stage for s in manifest.protocol.stages if s.anchored]
    if anchored and (evidence is None or not getattr(evidence, "tsa_urls", None)):
        raise AuditError(f"stage(s) {', '.join(anchored)} set rng_seeds = \"anchored\": their seeds are derived "
                         "from the freeze's timestamp token, and this run asks no TSA for one",
                         path=str(manifest.path),
                         hint="give --tsa URL (an RFC 3161 timestamp authority), or drop the setting")


def _anchor(study: StudyDir, stage: Stage) -> str | None:
    """The anchor (sha256 of the token file) of an anchored stage, logged before its first cell; None otherwise."""
    if not stage.anchored:
        return None
    gate = anchor_gate(study.protocol, study.manifest.rules, stage.stage)
    return study.evidence.anchor_seeds(stage.stage, study.protocol.gate(gate).rules)


HOST_SETTING_KEYS = ("dtype",)  # runner settings a host profile may set for its own cells


def host_settings(manifest: Manifest, host: str) -> dict:
    """The runner settings of `host`'s cells: the manifest's [runner].settings, with what the
    host's profile sets of HOST_SETTING_KEYS (e.g. `dtype = "bfloat16"`) over them."""
    settings = dict(manifest.runner.get("settings", {}))
    profile = manifest.host_profiles.get(host, {})
    settings.update({k: profile[k] for k in HOST_SETTING_KEYS if k in profile})
    return settings


def _count_hint(study: StudyDir, stage: Stage) -> int:
    cands = study.candidates(stage)
    if cands is not None:
        return len(cands)
    rules = study.manifest.rules.get(stage.promoted_by, {})
    return int(rules.get("promote", {}).get("top_k", 0))


def _timeout(stage: Stage, manifest: Manifest) -> float:
    if stage.budget.kind == "seconds":
        return stage.budget.value * 3 + float(manifest.runner.get("timeout_margin", 120))
    return float(manifest.runner.get("steps_timeout", 900))

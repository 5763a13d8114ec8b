"""Run a staged protocol end to end and write a package that audits itself.

`run_protocol(manifest, out, hosts)` walks the stages in order; for each host
it runs every missing cell (candidate x seed) through an executor.  Before a
gate's first input stage starts, the gate's rules are frozen into
`preanalysis/<gate>.rules.json` (`frozen_at` = then).  Once every host's rows
for the gate's stages are in, the gate is decided with the same engine
`replay-gate` uses, and later stages take their candidates from it.

Crash safety: a row is appended by rewriting the host/stage CSV to a temporary
file and `os.replace`-ing it; a checkpoint is stored the same way before its
row.  A run killed at any moment leaves no partial row and no half-written
file; running the command again skips finished cells (by config and seed) and
never duplicates a row.  Rules and decisions are created exclusively (a hard
link from a complete temporary file), so two host processes sharing one
package directory never overwrite each other.

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

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from auditkit.errors import AuditError
from auditkit.evidence.seeds import anchored_seed
from auditkit.package.store import (PackageStore, atomic_write_bytes, canonical_json_bytes as json_bytes,
                                    create_exclusive, decode_utf8, loads_strict, remove_stale_temporaries, utc_now)
from auditkit.package.writes import write_files
from auditkit.study.executors import CellResult, CellTask, Executor, LocalExecutor
from auditkit.study.signals import critical
from auditkit.package.hashing import sha256_bytes
from auditkit.package.manifest import MANIFEST_CSV, MANIFEST_JSON, build_manifest, manifest_entries, manifest_json_text
from auditkit.study.spec import Manifest, Protocol, Stage, anchor_gate, load_manifest
from auditkit.package.rows import read_csv_text, RNG_SEED_COLUMN, run_csv_path, run_header, write_csv_text

EXIT_WAITING = 3


def _error_line(text, limit: int = 160) -> str:
    """The last non-empty line of an error (a traceback's message), shortened."""
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


CARRY_LIMIT = 64 * 1024 * 1024  # a data file larger than this stays outside the package


def run_id_for(host: str, stage: str, config_id: str, seed: int) -> str:
    return f"{host}-{stage}-{config_id}-s{seed}"


# --- the package being written ------------------------------------------------

@dataclass
class StudyDir:
    """A package directory being written by the protocol runner."""

    manifest: Manifest
    out: Path
    log: Callable[[str], None] = field(default=lambda msg: None)
    evidence: object | None = None  # an auditkit.evidence.record.Recorder, when evidence is recorded
    wrote: bool = False  # this invocation added evidence (a row, rules, a decision, a base file)

    @property
    def protocol(self) -> Protocol:
        return self.manifest.protocol

    @property
    def finalized(self) -> bool:
        """The package has its MANIFEST: it was finalized (and is evidence as it stands)."""
        return (self.out / MANIFEST_JSON).is_file()

    def init(self) -> None:
        """Lay down protocol.json and the matrix (and the runner source, unless finalized);
        refuse a different study."""
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out)
        want = json_bytes(self.protocol.to_json())
        pj = self.out / "protocol.json"
        have = self.read_own("protocol.json")
        if have is not None:
            if have != want:
                raise AuditError("this directory holds a different protocol", path=str(pj),
                                 hint="use a new --out directory, or the manifest that wrote this one")
        else:
            atomic_write_bytes(pj, want)
            self.wrote = True
        try:
            matrix = self.manifest.matrix_file.read_bytes()
        except OSError as exc:
            raise AuditError(f"cannot read the candidate matrix: {exc}", path=str(self.manifest.matrix_file)) from exc
        mpath = self.out / self.protocol.matrix
        have = self.read_own(self.protocol.matrix)
        if have is not None and have != matrix:
            raise AuditError("the matrix in the package differs from the manifest's", path=str(mpath))
        if have is None:
            atomic_write_bytes(mpath, matrix)
            self.wrote = True
        if not self.finalized:
            self.snapshot_source()
            self.carry_data()

    def carry_data(self) -> None:
        """Copy the text/parquet files a relative `data` setting names into the package at the same
        relative path (once; a different file already there is refused), so `verify --deep` can
        rebuild the evaluation from the package alone.  Absolute paths, paths that climb out with
        `..`, and files over CARRY_LIMIT bytes are left where they are (logged)."""
        from auditkit.runner.data import parse_spec

        try:
            kind, opts = parse_spec(str(self.manifest.runner.get("settings", {}).get("data", "markov:seed=0")))
        except ValueError:
            return  # the runner's own check of the settings says what is wrong
        for rel in opts.get("paths", []) if kind in ("text", "parquet") else []:
            src = Path(rel)
            if src.is_absolute() or ".." in src.parts or not src.is_file():
                self.log(f"data file {rel} is not carried in the package (an absolute or climbing path, or "
                         f"not a file here); verify --deep will read it from the working directory")
                continue
            size = src.stat().st_size
            if size > CARRY_LIMIT:
                self.log(f"data file {rel} ({size} bytes) is over {CARRY_LIMIT} bytes and is not carried in "
                         f"the package; verify --deep will read it from the working directory")
                continue
            dest = self.out / src.as_posix()
            data = src.read_bytes()
            if PackageStore(self.out).kind(src.as_posix()) is not None:
                try:
                    same = self.read_own(src.as_posix()) == data
                except AuditError:
                    same = False
                if not same:
                    raise AuditError(f"the package already carries a different {rel}", path=str(dest),
                                     hint="use a new --out directory, or the data this study was run on")
                continue
            atomic_write_bytes(dest, data)
            self.wrote = True

    def snapshot_source(self) -> None:
        """Copy the runner source that produces the runs into source/runner/ (once)."""
        import auditkit.runner as runner_pkg

        src = Path(runner_pkg.__file__).parent
        for p in sorted(src.glob("*.py")):
            dest = self.out / "source" / "runner" / p.name
            if not dest.exists():  # the snapshot of the source that ran; never rewritten
                atomic_write_bytes(dest, p.read_bytes())
                self.wrote = True

    def read_own(self, rel: str) -> bytes | None:
        """The bytes of `rel` in the output directory (None when absent), read through its store:
        a link, FIFO or device there is refused (PackageDefect, exit 2), never followed or waited on."""
        if not os.path.isdir(self.out):
            return None
        store = PackageStore(self.out)
        if store.kind(rel) is None:
            return None
        return store.read_bytes(rel, 1 << 30)

    def matrix_rows(self) -> dict[str, dict]:
        data = self.read_own(self.protocol.matrix) or b""
        _, rows = read_csv_text(decode_utf8(data, self.protocol.matrix), self.protocol.matrix)
        return {r["config_id"]: r for r in rows}

    # rows
    def rows(self, host: str, stage: str) -> list[dict]:
        rel = run_csv_path(host, stage)
        data = self.read_own(rel)
        return [] if data is None else read_csv_text(decode_utf8(data, rel), rel)[1]

    def done_cells(self, host: str, stage: str) -> set[tuple[str, int]]:
        return {(r["config_id"], int(r["seed"])) for r in self.rows(host, stage)}

    def append_row(self, host: str, stage: str, row: dict) -> dict | None:
        """Append `row` unless its run_id is there; return the row as the CSV now holds it (None if skipped).

        The columns are RUN_COLUMNS, then any the file has already, then the
        optional ones (`rng_seed`) the row carries.
        """
        rel = run_csv_path(host, stage)
        data = self.read_own(rel)
        header, rows = read_csv_text(decode_utf8(data, rel), rel) if data is not None else ([], [])
        if any(r["run_id"] == row["run_id"] for r in rows):
            return None
        rows.append(row)
        header = run_header(rows)
        atomic_write_bytes(self.out / run_csv_path(host, stage),
                           write_csv_text(header, [{k: r.get(k, "") for k in header} for r in rows]).encode("utf-8"))
        self.wrote = True
        return next(r for r in self.rows(host, stage) if r["run_id"] == row["run_id"])

    # gates
    def rules_path(self, gate: str) -> Path:
        return self.out / self.protocol.gate(gate).rules

    def decision_path(self, gate: str) -> Path:
        return self.out / self.protocol.gate(gate).decision_path

    def freeze(self, gate: str) -> None:
        """Freeze the gate's rules now, unless they are frozen already."""
        path = self.rules_path(gate)
        if path.exists():
            self._record_freeze(gate)  # a run that crashed between the rules and their evidence
            return
        doc = {"schema": "auditkit/rules/v1", "gate": gate, "frozen_at": utc_now(), **self.manifest.rules[gate]}
        from auditkit.gates.rules import validate_rules

        bad = validate_rules(doc, str(path), known_configs=set(self.matrix_rows()))
        if bad:
            raise AuditError(f"the manifest's rules for gate {gate!r} are not valid: {bad[0]}",
                             path=str(self.manifest.path), hint="fix [gates.rules] in the manifest")
        if create_exclusive(path, json_bytes(doc)):
            self.wrote = True
            self.log(f"froze rules of gate {gate} at {doc['frozen_at']}")
        self._record_freeze(gate)
        time.sleep(0.002)  # every row started after this instant, strictly

    def _record_freeze(self, gate: str) -> None:
        if self.evidence is not None:
            self.evidence.frozen(gate, self.protocol.gate(gate).rules)

    def gate_missing(self, gate: str) -> list[str]:
        """Cells the gate still waits for, as 'host/stage/config/seed' (empty when complete)."""
        rel = self.protocol.gate(gate).rules
        rules = loads_strict(self.read_own(rel) or b"", rel)
        missing = []
        for sname in rules["inputs"]["stages"]:
            stage = self.protocol.stage(sname)
            cands = self.candidates(stage)
            if cands is None:
                return [f"decision of gate {stage.promoted_by}"]
            for host in stage.hosts:
                if host not in rules["inputs"]["hosts"]:
                    continue
                done = self.done_cells(host, sname)
                for cid in cands:
                    for seed in stage.seeds:
                        if seed in rules["inputs"]["seeds"] and (cid, seed) not in done:
                            missing.append(f"{host}/{sname}/{cid}/{seed}")
        return missing

    def decide(self, gate: str) -> bool:
        """Decide the gate if all its rows are in; True when a decision exists afterwards."""
        path = self.decision_path(gate)
        if path.exists():
            self._record_decision(gate)
            return True
        if not self.rules_path(gate).exists() or self.gate_missing(gate):
            return False
        from auditkit.gates.replay import decide_gate

        doc = decide_gate(self.out, gate, decided_at=utc_now())
        if create_exclusive(path, json_bytes(doc)):
            self.wrote = True
            self.log(f"decided gate {gate}: promoted {', '.join(doc['promoted'])}")
        self._record_decision(gate)
        return True

    def _record_decision(self, gate: str) -> None:
        if self.evidence is not None:
            self.evidence.decided(gate, self.protocol.gate(gate).decision_path)

    def candidates(self, stage: Stage) -> list[str] | None:
        """The stage's candidates, or None while the gate it depends on is undecided."""
        if stage.candidates == "matrix":
            return list(self.matrix_rows())
        if stage.promoted_by:
            rel = self.protocol.gate(stage.promoted_by).decision_path
            data = self.read_own(rel)
            if data is None:
                return None
            return list(loads_strict(data, rel)["promoted"])
        return list(stage.candidates)

    def gates_fed_by(self, stage: str) -> list[str]:
        return [g for g, body in self.manifest.rules.items() if stage in body["inputs"]["stages"]]

    def keep_checkpoint(self, stage: str) -> bool:
        keep = self.manifest.runner.get("keep_checkpoints", "final")
        if keep == "all":
            return True
        if keep == "none":
            return False
        if keep == "final":
            return stage == self.protocol.stages[-1].stage
        return stage in keep

    def land(self, result: CellResult) -> dict:
        """Store a finished cell: checkpoint first, then its row (each atomically; a stop
        signal waits until both are down)."""
        from auditkit.study.runs import eval_docs_bytes, summary_to_row

        t = result.task
        with critical():
            ckpt_rel, ckpt_sha = "", ""
            if result.checkpoint is not None:
                ckpt_rel = f"checkpoints/{t.run_id}.safetensors"
                atomic_write_bytes(self.out / ckpt_rel, result.checkpoint)
                ckpt_sha = sha256_bytes(result.checkpoint)
                self.wrote = True
            docs_rel, docs_sha = "", ""
            docs = eval_docs_bytes(result.summary)
            if docs is not None:  # SPEC v1.2: the run's per-document evaluation losses
                docs_rel = f"eval-docs/{t.run_id}.csv"
                atomic_write_bytes(self.out / docs_rel, docs)
                docs_sha = sha256_bytes(docs)
                self.wrote = True
            row = summary_to_row(result.summary, host=t.host, stage=t.stage, budget=t.budget,
                                 checkpoint_relpath=ckpt_rel, checkpoint_sha256=ckpt_sha,
                                 eval_docs_relpath=docs_rel, eval_docs_sha256=docs_sha)
            if t.rng_seed is not None:
                row[RNG_SEED_COLUMN] = str(t.rng_seed)
            written = self.append_row(t.host, t.stage, row)
            if written is not None and self.evidence is not None:
                self.evidence.row_landed(t.run_id, run_csv_path(t.host, t.stage), written)
        return row


def planned_seconds(stage: Stage, n_cells: int) -> float:
    return stage.budget.value * n_cells if stage.budget.kind == "seconds" else 0.0


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
        left = planned_seconds(stage, len(tasks)) + sum(
            planned_seconds(s, len(s.seeds) * len([h for h in hosts if h in s.hosts]) *
                            _count_hint(study, s)) for s in proto.stages[si + 1:])
        if tasks:
            log(f"stage {stage.stage} ({stage.budget.label()}): {len(tasks)} cell(s) to run; "
                f"about {left / 60:.1f} min of budget left in the protocol")
        failures = []
        if tasks:
            study.snapshot_source()  # the source that runs these cells (never rewritten once there)
        if study.evidence is not None:
            for t in tasks:
                study.evidence.cell_started(t.run_id, t.host, t.stage, t.config_id, t.seed)
        for i, result in enumerate(_closing_iter(executor.run(tasks)), 1):
            row = study.land(result)
            cells_run += 1
            remaining = max(0.0, left - planned_seconds(stage, i))
            why = ""
            if row["status"] != "ok":
                failures.append(_error_line(result.summary.get("error")))
                why = f" ({failures[-1]})" if failures[-1] else ""
            log(f"  [{stage.stage} {i}/{len(tasks)}] {result.task.host} {result.task.config_id} "
                f"seed {result.task.seed}: {row['status']} val_bpb={row['val_bpb'] or '-'}{why}"
                + (f"  (~{remaining / 60:.1f} min of budget left)" if remaining else ""))
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


def derived_files(study: StudyDir) -> dict[str, bytes]:
    """What finalizing writes besides the MANIFEST: tables, figures (when matplotlib is
    installed) and README.txt, in memory."""
    from auditkit.derived.tables import table_files

    files = dict(table_files(study.out)[1])
    try:
        from auditkit.derived.figures import figure_files
    except ImportError:  # matplotlib is an extra
        figure_files = None
    if figure_files is not None:
        files.update(figure_files(study.out)[1])
    files["README.txt"] = readme_text(study).encode("utf-8")
    baseline = baseline_json(study)
    if baseline is not None:
        files[BASELINE_PATH] = baseline
    from auditkit.report.claims import OBSERVATIONS_FILE, claims_text, observations_from_study

    # what the study's own rows show, whatever it is: observations (they hold by construction), not
    # claims; claims.json is for what authors or reviewers claim (the manifest's `claims = FILE`),
    # and `auditkit claims` decides it
    files[OBSERVATIONS_FILE] = claims_text(observations_from_study(study.out)).encode("utf-8")
    if study.manifest.claims is not None:
        files["claims.json"] = manifest_claims(study.manifest)
    return files


def manifest_claims(manifest: Manifest) -> bytes:
    """The bytes of the manifest's claims file (`claims = "FILE"`), checked against the claims schema."""
    from auditkit.package.schemas import schema_errors
    from auditkit.package.store import loads_strict

    path = manifest.claims
    try:
        data = path.read_bytes()
        doc = loads_strict(data, str(path))
    except (OSError, UnicodeDecodeError, ValueError, AuditError) as exc:
        raise AuditError(f"cannot read the manifest's claims file: {exc}", path=str(path)) from exc
    errors = schema_errors(doc, "claims")
    if errors:
        raise AuditError(f"the manifest's claims file is not auditkit/claims/v1: {errors[0][0]}: {errors[0][1]}",
                         path=str(path), hint="see tests/data/paper06_claims.json for the format")
    return data


BASELINE_PATH = "analysis/baseline.json"


def baseline_json(study: StudyDir) -> bytes | None:
    """analysis/baseline.json: the count-based bigram baseline (runner/baseline.py) on the study's
    evaluation tokens, rebuilt from the data the package carries, and each stage's mean val_bpb
    beside it.  None when the rows name no single evaluation, the data is not carried, or the
    runner's dependencies (numpy, the BPE tokenizer) are missing."""
    from statistics import fmean

    rows = [r for s in study.protocol.stages for h in s.hosts for r in study.rows(h, s.stage)]
    ok = [r for r in rows if r.get("status") == "ok" and r.get("val_bpb")]
    evals = {(r.get("eval_sha256"), r.get("eval_tokens"), r.get("eval_seq_len")) for r in ok}
    if len(evals) != 1 or not all(next(iter(evals))):
        return None
    sha, n_tokens, seq_len = next(iter(evals))
    settings = study.manifest.runner.get("settings", {})
    try:
        from auditkit.runner.baseline import bigram_bpb
        from auditkit.runner.data import load_corpus, parse_spec
        from auditkit.runner.evaluation import make_eval_set

        spec = str(settings.get("data", "markov:seed=0"))
        kind, opts = parse_spec(spec)
        def read(path: str) -> bytes:  # the package's own copy of the data (carried by carry_data), via the store
            try:
                data = study.read_own(path)
            except AuditError as exc:   # PackageDefect too: a link, FIFO or device is refused, never followed
                raise ValueError(f"{path}: {exc}") from None
            if data is None:
                raise ValueError(f"{path}: not carried in the package")
            return data

        corpus = load_corpus(spec, tokenizer=str(settings.get("tokenizer", "auto")),
                             vocab_size=int(settings.get("vocab_size", 8192)),
                             read=read if kind in ("text", "parquet") else None)
        es = make_eval_set(corpus.val, corpus.tokenizer.token_bytes, int(n_tokens), int(seq_len))
    except (ImportError, OSError, ValueError):
        return None
    if es.sha256 != sha:
        return None
    base = bigram_bpb(corpus.train, es.tokens, corpus.tokenizer.token_bytes, corpus.tokenizer.vocab_size)
    stages = {}
    for s in study.protocol.stages:
        vals = [float(r["val_bpb"]) for h in s.hosts for r in study.rows(h, s.stage)
                if r.get("status") == "ok" and r.get("val_bpb")]
        if vals:
            stages[s.stage] = {"runs": len(vals), "mean_val_bpb": round(fmean(vals), 6),
                               "worst_val_bpb": round(max(vals), 6),
                               "mean_beats_baseline": fmean(vals) < base["bigram_bpb"],
                               "runs_beating_baseline": sum(v < base["bigram_bpb"] for v in vals)}
    doc = {"schema": "auditkit/baseline/v1", "kind": "bigram",
           "definition": "count-based bigram model of the training tokens, p(b|a) = (c(a,b) + alpha u(b)) / "
                         "(c(a) + alpha), u(b) = (c(b)+1)/(N+V), alpha chosen on the training stream alone "
                         "(counts from its first 90%, scored on its last 10%); scored on the run rows' "
                         "evaluation tokens like val_bpb (runner/baseline.py)",
           "data": spec, "tokenizer": corpus.tokenizer.label(), "eval_sha256": sha, "eval_tokens": int(n_tokens),
           "eval_seq_len": int(seq_len), **base, "stages": stages}
    return json_bytes(doc)


def finalize_package(study: StudyDir) -> dict:
    """Tables, figures, README.txt and the MANIFEST of a complete study directory.

    A package that is finalized already (it has a MANIFEST) and gained nothing in this
    run is left exactly as it is when finalizing again gives the same bytes (state
    "unchanged"); when it would not (newer code, or files changed since the MANIFEST was
    written) finalizing is refused (AuditError) with how to finalize into a new directory.
    Otherwise everything is (re)written atomically (state "written"). Returns
    {"state": ..., "manifest": the MANIFEST document}.
    """
    out = study.out
    if study.finalized and not study.wrote:
        recorded = study.read_own(MANIFEST_JSON) or b""
        entries = manifest_entries(out)
        listed = {e.get("path"): e.get("sha256") for e in loads_strict(recorded, MANIFEST_JSON).get("files", [])}
        differ = sorted({e.path for e in entries if listed.get(e.path) != e.sha256}
                        | (set(listed) - {e.path for e in entries}))
        why = "its files differ from what its MANIFEST recorded"
        if not differ:
            files = derived_files(study)
            differ = [rel for rel, data in sorted(files.items()) if not _same_bytes(study, rel, data)]
            if not differ and manifest_json_text(entries).encode("utf-8") != recorded:
                differ = [MANIFEST_JSON]
            why = "this auditkit would write different bytes (newer code or libraries)"
        if not differ:
            study.log("the package is finalized already and finalizing again gives the same bytes: unchanged")
            return {"state": "unchanged", "manifest": loads_strict(recorded, MANIFEST_JSON)}
        raise AuditError(
            f"the package is finalized (it has a MANIFEST) and nothing was left to run, but finalizing "
            f"again would change {len(differ)} file(s) "
            f"({', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}): {why}; "
            f"nothing was written",
            path=str(out),
            hint=f"the package stays as it is (check it with: auditkit verify {out}); to finalize a copy with "
                 f"this auditkit: cp -a {out} NEW && rm NEW/{MANIFEST_JSON} NEW/{MANIFEST_CSV} && "
                 f"auditkit protocol run {study.manifest.path} --out NEW --host all")
    readme = readme_text(study).encode("utf-8")
    # README first: the figures label hosts with the profiles it lists (derived.figures.host_labels).
    # Both through the write rule: nothing under the output directory is followed; these files are
    # the run's own, so rewriting them needs no --force
    write_files(out, {"README.txt": readme}, force=True, what="protocol run")
    write_files(out, derived_files(study), force=True, what="protocol run")
    if study.evidence is not None:
        study.evidence.finalized()
    return {"state": "written", "manifest": build_manifest(out)}


def _same_bytes(study: StudyDir, rel: str, data: bytes) -> bool:
    try:
        return study.read_own(rel) == data
    except AuditError:
        return False


def readme_text(study: StudyDir) -> str:
    proto = study.protocol
    lines = [
        f"Ancillary package: {proto.name}",
        "",
        f"Produced by `auditkit protocol run {study.manifest.path.name}` (auditkit's bundled runner,",
        "source/runner/), from real training runs; nothing in it was edited by hand.",
        *_runs_line(study),
        "",
        f"Hosts: {', '.join(proto.hosts)}",
        "Stages:",
    ]
    for s in proto.stages:
        lines.append(f"  {s.stage}: budget {s.budget.label()}, seeds {list(s.seeds)}, candidates {s.to_json()['candidates']}")
    lines += ["Gates: " + ", ".join(g.gate for g in proto.gates), "",
              "Host profiles:"]
    for h in proto.hosts:
        lines.append(f"  {h}: {json.dumps(study.manifest.host_profiles.get(h, {}), sort_keys=True)}")
    settings = study.manifest.runner.get("settings")
    if settings:
        lines.append(f"Runner settings: {json.dumps(settings, sort_keys=True)}")
    lines += ["", "Audit it:",
              "  auditkit verify .              # whole and unaltered (MANIFEST, schemas, checkpoints)",
              "  auditkit replay-gate all --package .   # every decision re-derived from the raw rows",
              "  auditkit tables --package . --check     # every table regenerated",
              "  auditkit figures --package . --check    # every figure regenerated", ""]
    return "\n".join(lines)


def _runs_line(study: StudyDir) -> list[str]:
    """'auditkit X; N runs (status counts) from first start to last finish' — from the rows themselves."""
    from collections import Counter

    from auditkit import __version__

    rows = [r for s in study.protocol.stages for h in s.hosts for r in study.rows(h, s.stage)]
    if not rows:
        return [f"auditkit {__version__}; no runs yet."]
    status = ", ".join(f"{n} {k}" for k, n in sorted(Counter(r.get("status", "?") for r in rows).items()))
    return [f"auditkit {__version__}; {len(rows)} runs ({status}), "
            f"from {min(r.get('started_at', '') for r in rows)} to {max(r.get('finished_at', '') for r in rows)}."]


# --- merging host outputs -----------------------------------------------------

def merge_packages(sources: list[Path], into: Path, log: Callable[[str], None] = lambda m: None) -> dict:
    """Join host outputs into `into` (created if needed); sources are never changed.

    Run CSVs are joined by run_id (a run_id with different contents is an
    error); checkpoints must agree byte for byte; frozen rules and decisions
    that differ only in `frozen_at`/`decided_at` keep the earliest; anything
    else that differs is an error that names the file.  The package MANIFEST
    is not rebuilt here: `protocol run` finalizes once every gate is decided.

    Atomic as far as a refusal goes: every source is checked against `into` and the
    others first, with nothing written; only then is each new file staged as a synced
    temporary beside its destination and the temporaries renamed into place.  A refused
    merge leaves `into` exactly as it was.
    """
    into = Path(into)
    plan = _MergePlan(into)
    for src in sources:
        plan.add_source(Path(src))
        log(f"checked {src}")
    _commit(into, plan.writes)
    log(f"merged {len(sources)} output(s) into {into}: {len(plan.writes)} file(s) written")
    return {"rows": plan.rows, "files": plan.files}


class _Ref:
    """A file of a source or of the target, read through that directory's store (no link followed)."""

    def __init__(self, store: PackageStore, rel: str):
        self.store, self.rel = store, rel

    def read(self) -> bytes:
        return self.store.read_bytes(self.rel, MAX_MERGED_FILE)


MAX_MERGED_FILE = 1 << 34   # a file is read whole to stage it; one larger than this is refused


class _MergePlan:
    """What a merge would write (path -> bytes, or the source file to copy), decided with
    nothing written; raises AuditError on the first conflict.  Sources and target are read
    through stores: a link, FIFO or device in either, or a link on the way to a file of the
    target, is refused, never followed."""

    def __init__(self, into: Path):
        self.into = into
        self.target = PackageStore(into) if os.path.isdir(into) else None
        self.writes: dict[str, bytes | _Ref] = {}
        self.rows = 0
        self.files = 0

    def _current(self, rel: str) -> bytes | _Ref | None:
        """The planned content of `rel` in the target: planned bytes or source, the file there, or None."""
        if rel in self.writes:
            return self.writes[rel]
        kind = self.target.kind(rel) if self.target is not None else None
        if kind in ("other", "dir"):
            raise AuditError(f"{rel} in the target is not a regular file (or lies under a link); nothing was merged",
                             path=str(self.into / rel),
                             hint="auditkit never writes through a link: remove it, or merge into a new directory")
        return _Ref(self.target, rel) if kind == "file" else None

    @staticmethod
    def _bytes(current: bytes | _Ref) -> bytes:
        return current if isinstance(current, bytes) else current.read()

    def _files(self, store: PackageStore, under: str = "") -> list[str]:
        """The regular files of a source (hidden entries and its MANIFEST left out); AuditError at
        a link or special file."""
        out = []
        for name, kind in store.listdir(under):
            rel = f"{under}/{name}" if under else name
            if name.startswith("."):
                continue
            if kind == "dir":
                out += self._files(store, rel)
            elif kind == "file":
                if rel not in (MANIFEST_JSON, MANIFEST_CSV):
                    out.append(rel)
            else:
                raise AuditError("symlink or special file in a host output; nothing was merged",
                                 path=str(store.root / rel), hint="a host output holds regular files only")
        return out

    def add_source(self, src: Path) -> None:
        if not os.path.isdir(src) or PackageStore(src).kind("protocol.json") != "file":
            raise AuditError("not a protocol output directory (no protocol.json)", path=str(src))
        if _inside(self.into, src) or _inside(src, self.into):
            raise AuditError("the merge target and a source overlap; sources are never changed", path=str(src),
                             hint="merge into a directory outside every source")
        store = PackageStore(src)
        for rel in self._files(store):
            p = _Ref(store, rel)
            if rel.startswith("remote-results/") and rel.endswith(".csv"):
                self._rows(p, rel)
            elif rel.startswith("preanalysis/") and rel.endswith(".rules.json"):
                self._timestamped(p, rel, "frozen_at")
            elif rel.startswith("analysis/") and rel.endswith("_decision.json"):
                self._timestamped(p, rel, "decided_at")
            elif rel.startswith("analysis/") or rel in ("README.txt", "table_manifest.json", "figure_manifest.json") \
                    or rel.startswith("figures/"):
                continue  # derived: regenerated when the merged study is finalized
            else:
                current = self._current(rel)
                if current is None:
                    self.writes[rel] = p
                    self.files += 1
                elif self._bytes(current) != p.read():
                    raise AuditError(f"{rel} differs between host outputs", path=str(src / rel),
                                     hint="host outputs of one study must share protocol, matrix and runner "
                                          "source; nothing was merged")

    def _rows(self, src: _Ref, rel: str) -> None:
        where = str(src.store.root / rel)
        header, new = _run_rows(src.read(), where)
        current = self._current(rel)
        old = _run_rows(self._bytes(current), rel)[1] if current is not None else []
        by_id = {r["run_id"]: r for r in old}
        added = 0
        for r in new:
            have = by_id.get(r["run_id"])
            if have is None:
                by_id[r["run_id"]] = r
                old.append(r)
                added += 1
            elif have != r:
                raise AuditError(f"run {r['run_id']} differs between host outputs", path=where,
                                 hint="two outputs recorded the same run differently; keep one of them; "
                                      "nothing was merged")
        if added:
            self.writes[rel] = write_csv_text(header, old).encode("utf-8")
            self.rows += added

    def _timestamped(self, src: _Ref, rel: str, key: str) -> None:
        where = str(src.store.root / rel)
        data = src.read()
        new = _stamped_object(data, where, key)
        current = self._current(rel)
        if current is None:
            self.writes[rel] = data
            self.files += 1
            return
        old = _stamped_object(self._bytes(current), rel, key)
        if {k: v for k, v in new.items() if k != key} != {k: v for k, v in old.items() if k != key}:
            raise AuditError(f"{Path(rel).name} differs between host outputs beyond {key}", path=where,
                             hint="the hosts froze or decided this gate differently; they cannot be merged; "
                                  "nothing was merged")
        if str(new[key]) < str(old[key]):
            self.writes[rel] = data
            self.files += 1


def _run_rows(data: bytes, where: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a run CSV to merge; AuditError naming the file when it is not UTF-8 CSV
    with a run_id column."""
    from auditkit.package.store import PackageDefect, decode_utf8

    try:
        text = decode_utf8(data, where)
    except PackageDefect as exc:
        raise AuditError(exc.finding.message, path=where, hint=f"{exc.hint}; nothing was merged") from None
    header, rows = read_csv_text(text, where)
    if "run_id" not in header:
        raise AuditError("a run CSV without a run_id column cannot be merged", path=where,
                         hint="rows are joined by run_id (docs/SPEC.md); nothing was merged")
    return header, rows


def _stamped_object(data: bytes, where: str, key: str) -> dict:
    """A rules or decision document to merge: a strict JSON object whose `key` is a string."""
    from auditkit.package.store import PackageDefect, loads_strict

    try:
        doc = loads_strict(data, where)
    except PackageDefect as exc:
        raise AuditError(exc.finding.message + (f" at {exc.finding.location}" if exc.finding.location else ""),
                         path=where, hint="rules and decisions are strict JSON objects; nothing was merged") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), str):
        raise AuditError(f"not a JSON object with a {key} string (found {type(doc).__name__})", path=where,
                         hint="rules and decisions are JSON objects (docs/SPEC.md); nothing was merged")
    return doc


def _inside(path: Path, root: Path) -> bool:
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _commit(into: Path, writes: dict[str, bytes | _Ref]) -> None:
    """Stage every write, then rename them all (`auditkit.package.writes`: nothing under `into`
    followed; a failure part way puts back what was there)."""
    files = {rel: content if isinstance(content, bytes) else content.read() for rel, content in sorted(writes.items())}
    with critical():
        write_files(into, files, force=True, what="protocol merge")

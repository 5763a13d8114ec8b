"""The package writer: `StudyDir`, a package directory as the protocol run writes it.

It owns every write of a study's own files while the protocol runs: `protocol.json`, the
matrix, the runner source snapshot and carried data (`init`), rows appended to the host/stage
CSVs, checkpoints and per-document evaluation losses (`land`), rules frozen and gates decided
(`freeze`, `decide`, created exclusively), and what the package says so far (`rows`,
`candidates`, `gate_missing`), all read back through the package's store.  It does not decide
what to run (`auditkit.study.run`), finalize (`auditkit.study.finalize`) or merge
(`auditkit.study.merge`).

Crash safety: a row is appended by rewriting the host/stage CSV to a temporary
file and `os.replace`-ing it; a checkpoint is stored the same way before its
row.  Rules and decisions are created exclusively (a hard link from a complete
temporary file), so two host processes sharing one package directory never
overwrite each other.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from auditkit.errors import AuditError
from auditkit.package.hashing import sha256_bytes
from auditkit.package.manifest import MANIFEST_JSON
from auditkit.package.protocol import Protocol, Stage
from auditkit.package.rows import RNG_SEED_COLUMN, read_csv_text, run_csv_path, run_header, write_csv_text
from auditkit.clock import utc_now
from auditkit.package.atomic import atomic_write_bytes, create_exclusive, remove_stale_temporaries
from auditkit.package.canonical import canonical_json_bytes as json_bytes
from auditkit.package.store import PackageStore, decode_utf8, loads_strict
from auditkit.study.executors import CellResult
from auditkit.study.signals import critical
from auditkit.study.spec import Manifest

CARRY_LIMIT = 64 * 1024 * 1024  # a data file larger than this stays outside the package


def run_id_for(host: str, stage: str, config_id: str, seed: int) -> str:
    return f"{host}-{stage}-{config_id}-s{seed}"


@dataclass
class StudyDir:
    """A package directory being written by the protocol runner."""

    manifest: Manifest
    out: Path
    log: Callable[[str], None] = field(default=lambda msg: None)
    evidence: object | None = None  # an auditkit.evidence.record.Recorder, when evidence is recorded
    wrote: bool = False  # this invocation added evidence (a row, rules, a decision, a base file)
    clock: Callable[[], str] = utc_now  # frozen_at and decided_at (as evidence.record.Recorder takes clock=)

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
        doc = {"schema": "auditkit/rules/v1", "gate": gate, "frozen_at": self.clock(), **self.manifest.rules[gate]}
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

        doc = decide_gate(self.out, gate, decided_at=self.clock())
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

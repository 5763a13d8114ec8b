"""What the table generators read (`TableSource`), and `PackageData`, its reading from a SPEC
package: protocol, matrix, every run row, recorded decisions and rules, every byte through the
package's store. `read_run_rows` is the tables' one CSV read (pandas, the columns the tables
use); `add_derived_columns` the typed columns every generator uses; `decide_gates` every gate
decided again from the raw rows."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol as Interface

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from auditkit.findings import Finding
from auditkit.package.columns import (MAX_RUN_CSV_BYTES, SHARED_COLUMNS, csv_header, shared_run_frame, text_frame,
                                      typed_frame)
from auditkit.gates.documents import read_json
from auditkit.package.rows import run_csv_path
from auditkit.package.schemas import validate_document
from auditkit.errors import PackageDefect, defect
from auditkit.package.store import PackageStore, decode_utf8, open_package
from auditkit.package.protocol import Protocol, load_package_protocol

TABLE_COLUMNS = ("run_id", "host", "stage", "seed", "config_id", "status", "val_bpb", "training_seconds",
                 "num_steps")


class TableSource(Interface):
    """What a table generator reads: a SPEC package (`PackageData`) or a package read through a
    profile (`auditkit.profile.audit`). `rows` holds the run rows as text plus the columns of
    `add_derived_columns`; `decisions` and `rules` are documents by gate name (a decision valid,
    without the per-cell values of its eligible candidates: no table reads them)."""

    protocol: Protocol
    stage_order: dict[str, int]
    matrix: list[dict]
    run_csvs: list[str]
    rows: pd.DataFrame
    decisions: dict[str, dict]
    decision_paths: list[str]
    rules: dict[str, dict]

    @property
    def gates(self) -> DecidedGates:
        """The package's gates decided from the raw rows (made on first use unless given)."""
        if self._gates is None:
            self._gates = DecidedGates(self.store)
        return self._gates

    def gate_of_stage(self, stage: str) -> str | None: ...


def add_derived_columns(df: pd.DataFrame) -> pd.DataFrame:
    """`df` (run rows as text) with the typed columns the generators use, in place: `seed` (int),
    `val` (val_bpb, NaN where not a number), `train_s`, `steps`, and `good` (status ok, val finite)."""
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").fillna(0).astype(np.int64)
    df["val"] = pd.to_numeric(df["val_bpb"], errors="coerce").astype(np.float64)
    df["train_s"] = pd.to_numeric(df["training_seconds"], errors="coerce").fillna(0.0).astype(np.float64)
    df["steps"] = pd.to_numeric(df["num_steps"], errors="coerce").fillna(0).astype(np.int64)
    df["good"] = (df["status"] == "ok") & np.isfinite(df["val"])
    return df


# the common case parsed straight into these types (ids as categories, sorted as text sorts)
_TYPED = {c: SHARED_COLUMNS.get(c, "float64") for c in TABLE_COLUMNS}     # val_bpb: float64
_CATEGORIES = ("host", "stage", "config_id", "status")


def read_run_rows(store: PackageStore, rel: str) -> pd.DataFrame:
    """The columns `TABLE_COLUMNS` of run CSV `rel` plus those of `add_derived_columns` (the tables'
    one CSV read; PackageDefect when it is not readable or lacks a column). Parsed typed where every
    value parses (the same values `add_derived_columns` gives), else as text and converted."""
    shared, _sha = shared_run_frame(store, rel)     # parsed once for the tables and replay
    if shared is not None:
        df = shared[list(TABLE_COLUMNS)]
    else:
        df = _own_run_rows(store, rel)
    df["val"] = df["val_bpb"]
    df["train_s"] = df["training_seconds"].fillna(0.0)
    df["steps"] = df["num_steps"]
    df["good"] = (df["status"] == "ok").to_numpy(bool) & np.isfinite(df["val"].to_numpy())
    return df


def _own_run_rows(store: PackageStore, rel: str) -> pd.DataFrame:
    """`read_run_rows` of a file the shared parse could not read: typed, else as text (converted)."""
    data = store.read_bytes(rel, MAX_RUN_CSV_BYTES)
    if not data.isascii():
        decode_utf8(data, rel)
    header = csv_header(data, rel)
    missing = [c for c in TABLE_COLUMNS if c not in header]
    if missing:
        raise defect(rel, "run-csv-missing-column", f"the run CSV lacks column(s) {missing}", location="header",
                     expected=", ".join(TABLE_COLUMNS), found=", ".join(header),
                     hint="SPEC.md section 4 lists the required columns")
    try:
        df = typed_frame(data, list(TABLE_COLUMNS), _TYPED, na_values={"val_bpb": [""], "training_seconds": [""]})
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError):
        df = None      # a value that is not a number, or not CSV: as text (which names a file that is not CSV)
    if df is None:
        df = text_frame(data, rel, list(TABLE_COLUMNS), what="run CSV")
        add_derived_columns(df)
        df["val_bpb"], df["training_seconds"], df["num_steps"] = df["val"], df["train_s"], df["steps"]
    return df


def concat_run_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of `read_run_rows` as one; the id columns categorical with their categories sorted as
    text, so that grouping and sorting by them orders as text does (whichever way each was read)."""
    if not frames:
        frames = [add_derived_columns(pd.DataFrame({c: [] for c in TABLE_COLUMNS}, dtype=str))]
    cols = {}
    for c in frames[0].columns:
        parts = [f[c] if isinstance(f[c].dtype, pd.CategoricalDtype) or c not in _CATEGORIES
                 else f[c].astype(str).astype("category") for f in frames]
        if c in _CATEGORIES:
            parts = [p.cat.rename_categories(p.cat.categories.astype(str)) for p in parts]   # an empty file's: no dtype
            cols[c] = union_categoricals(parts, sort_categories=True, ignore_order=True)
        else:
            cols[c] = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    return pd.DataFrame(cols)


def decide_gates(package) -> dict:
    """Every gate of the package decided again from its raw rows ({gate: GateOutcome})."""
    from auditkit.gates.outcomes import decide_all   # the gate pipeline's home until it moves to gates/

    return decide_all(package)


class DecidedGates:
    """Every gate of one package decided from its raw rows once (`outcomes`, lazily) and each decided
    gate's per-document evaluation losses read once (`doc_losses`), for everything one command
    derives from them: the robustness tables, claims and their support."""

    def __init__(self, package):
        self.store = package if isinstance(package, PackageStore) else open_package(package)
        self._outcomes: dict | None = None
        self._docs: dict[str, tuple] = {}

    @property
    def outcomes(self) -> dict:
        """{gate: GateOutcome} in protocol order (`decide_gates`)."""
        if self._outcomes is None:
            self._outcomes = decide_gates(self.store)
        return self._outcomes

    def doc_losses(self, gate: str) -> tuple:
        """(DocLosses or None, note) of a decided gate (`auditkit.package.evaldocs.gate_doc_losses`)."""
        if gate not in self._docs:
            from auditkit.package.evaldocs import gate_doc_losses

            o = self.outcomes[gate]
            self._docs[gate] = gate_doc_losses(self.store, o.rules, o.decision)
        return self._docs[gate]


def decision_findings(doc: dict, rel: str) -> list[Finding]:
    """Schema findings for a decision, its per-cell objects checked directly (see replay)."""
    from auditkit.gates.documents import validate_decision

    return validate_decision(doc, rel)


class PackageData:
    """What the generators read: protocol, matrix, all run rows, recorded decisions — every
    byte through the package's store (no link followed, strict UTF-8 and JSON; a defective
    file raises PackageDefect naming it)."""

    def __init__(self, package_dir: str | Path | PackageStore, gates: DecidedGates | None = None):
        self.store = package_dir if isinstance(package_dir, PackageStore) else open_package(package_dir)
        self._gates = gates
        self.memo: dict = {}       # what one generator makes and another reads (immutable tables)
        self.pkg = self.store.root
        self.protocol = load_package_protocol(self.store)
        self.stage_order = {s.stage: i for i, s in enumerate(self.protocol.stages)}
        _, self.matrix = self.store.read_csv(self.protocol.matrix)
        self.run_csvs = sorted({run_csv_path(h, s.stage) for s in self.protocol.stages for h in s.hosts
                                if self.store.kind(run_csv_path(h, s.stage)) is not None})
        self.rows = concat_run_rows([read_run_rows(self.store, rel) for rel in self.run_csvs])
        self.decisions: dict[str, dict] = {}
        self.decision_paths: list[str] = []
        for g in self.protocol.gates:
            if self.store.kind(g.decision_path) is not None:
                self.decisions[g.gate] = self._json(g.decision_path, "decision")
                self.decision_paths.append(g.decision_path)
        self.rules: dict[str, dict] = {}
        for g in self.protocol.gates:
            if self.store.kind(g.rules) is not None:
                self.rules[g.gate] = self._json(g.rules, "rules")

    def _json(self, rel: str, schema: str) -> dict:
        """A decision or rules document, strict and valid against its schema (else PackageDefect)."""
        doc = read_json(self.store, rel)
        bad = validate_document(doc, schema, rel) if schema == "rules" else decision_findings(doc, rel)
        if bad:
            raise PackageDefect(bad[0])
        if schema == "decision":    # no table reads an eligible candidate's cells: a million of them are 1/4 GB
            for c in doc["candidates"]:
                if c.get("eligible") is True:
                    c.pop("cells", None)
        return doc

    @property
    def gates(self) -> DecidedGates:
        """The package's gates decided from the raw rows (made on first use unless given)."""
        if self._gates is None:
            self._gates = DecidedGates(self.store)
        return self._gates

    def gate_of_stage(self, stage: str) -> str | None:
        return gate_of_stage(self, stage)


def gate_of_stage(source: TableSource, stage: str) -> str | None:
    """The first gate (in protocol order) whose rules read `stage`, None when no gate does."""
    for g in source.protocol.gates:
        r = source.rules.get(g.gate)
        if r and stage in r["inputs"]["stages"]:
            return g.gate
    return None

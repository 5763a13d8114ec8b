"""Replay gate decisions: load the frozen rules and raw rows, decide, diff.

`decide_gate` writes nothing and needs no MANIFEST or tables, so the protocol
runner uses it while a study runs; `replay_gate`/`replay_all` recompute every
recorded decision of a finished package and report each difference as a
finding (hashes, inputs named vs selected, rules frozen before the data, the
promoted-by chain, and every field of the decision).
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from auditkit.errors import AuditError
from auditkit.findings import Finding, Report, json_location
from auditkit.gates.engine import Decision, DuplicateRowError, chain_bound, decide_columns, validate_rules
from auditkit.package.rows import run_csv_path
from auditkit.package.schemas import validate_document
from auditkit.package.canonical import canonical_json_bytes
from auditkit.errors import PackageDefect, defect
from auditkit.package.store import PackageStore, decode_utf8, loads_strict, open_package
from auditkit.package.protocol import Protocol, load_package_protocol

TOLERANCE = 1e-9
ROW_COLUMNS = ("host", "stage", "seed", "config_id", "status", "started_at")
TEXT_COLUMNS = ("host", "stage", "config_id", "status")
# A decision holds one object per run row and a run CSV one line per run: both are read whole,
# so they get a larger cap than the store's default for one document.
MAX_RUN_CSV_BYTES = 1 << 30
MAX_DECISION_BYTES = 1 << 30


# --------------------------------------------------------------------------- loading

def package_store(package) -> PackageStore:
    """The store of `package` (a directory path or an open store); AuditError (exit 2) if it is no package."""
    return package if isinstance(package, PackageStore) else open_package(package)


def gate_inputs(package_dir, rules: dict) -> list[str]:
    """The run CSVs the rules select: ``remote-results/<host>_<stage>_summary.csv`` for every
    host x stage of `inputs`, sorted (package-relative POSIX paths)."""
    ins = rules["inputs"]
    return sorted({run_csv_path(h, s) for h in ins["hosts"] for s in ins["stages"]})


def read_run_csv(store: PackageStore, rel: str, metric: str = "val_bpb") -> tuple[pd.DataFrame, str]:
    """(rows, sha256) of one run CSV, parsed from the very bytes that were hashed.

    Columns: `host`, `stage`, `config_id`, `status` (categorical), `seed` (int64), `value`
    (the metric as float64, NaN when empty or not a number), `started` (UTC datetime, NaT
    when not a timestamp), `_row` (data rows counted from 1), plus `started_at` (the text)
    only when some timestamp did not parse.  Raises PackageDefect naming the file (and row)
    when it is not a regular UTF-8 CSV with the columns replay needs, or a seed is no integer."""
    data = store.read_bytes(rel, MAX_RUN_CSV_BYTES)
    sha = hashlib.sha256(data).hexdigest()
    if not data.isascii():
        decode_utf8(data, rel)  # a BOM or an invalid byte is a PackageDefect naming the offset
    header = _csv_header(data, rel)
    need = list(ROW_COLUMNS) + ([metric] if metric not in ROW_COLUMNS else [])
    missing = [c for c in need if c not in header]
    if missing:
        raise defect(rel, "run-csv-missing-column", f"the run CSV lacks column(s) {missing}", location="header",
                     expected=", ".join(need), found=", ".join(header) or "no header",
                     hint="SPEC.md section 4 lists the required columns; without them the gate cannot be replayed")
    try:
        df = _typed_rows(data, need, metric) if metric not in ROW_COLUMNS else None
    except (ValueError, TypeError, OverflowError):
        df = None  # a value that does not parse: the text path below finds and names it
    except pd.errors.ParserError as exc:
        raise defect(rel, "csv-unreadable", f"not a readable CSV: {exc}") from None
    if df is None:
        df = _text_rows(data, need, metric, rel)
    df["_row"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df, sha


def _csv_header(data: bytes, rel: str) -> list[str]:
    end = data.find(b"\n")
    first = (data if end < 0 else data[:end]).decode("utf-8").rstrip("\r")
    try:
        header = next(csv.reader([first], strict=True), [])
    except csv.Error as exc:
        raise defect(rel, "csv-unreadable", f"the header is not CSV: {exc}", location="header") from None
    seen = set()
    for name in header:
        if name in seen:
            raise defect(rel, "csv-duplicate-column", f"column {name!r} appears twice in the header", location="header",
                         expected="each column once", found=name,
                         hint="two columns of one name: which one holds the run's value is ambiguous")
        seen.add(name)
    return header


def _typed_rows(data: bytes, need: list[str], metric: str) -> pd.DataFrame:
    """The common case, parsed straight into compact columns by pandas' C reader."""
    dtype = {c: "category" for c in TEXT_COLUMNS} | {"seed": "int64", metric: "float64"}
    df = pd.read_csv(io.BytesIO(data), usecols=need, dtype=dtype, keep_default_na=False,
                     na_values={metric: [""]}, parse_dates=["started_at"], date_format="ISO8601", engine="c")
    if not isinstance(df["started_at"].dtype, pd.DatetimeTZDtype):
        raise ValueError("a started_at that is not an ISO-8601 UTC timestamp")
    return df.rename(columns={metric: "value", "started_at": "started"})


def _text_rows(data: bytes, need: list[str], metric: str, rel: str) -> pd.DataFrame:
    """Every value as text first: slower, and names the row of a value that does not parse."""
    try:
        raw = pd.read_csv(io.BytesIO(data), usecols=need, dtype=object, keep_default_na=False, engine="c")
    except (ValueError, pd.errors.ParserError) as exc:
        raise defect(rel, "csv-unreadable", f"not a readable CSV: {exc}") from None
    raw = raw.fillna("")
    seed = pd.to_numeric(raw["seed"], errors="coerce")
    bad = (seed.isna() | (seed % 1 != 0)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise defect(rel, "row-bad-seed", "a seed is not an integer", location=f"row {i + 1}, column seed",
                     expected="an integer", found=repr(raw["seed"].iat[i]),
                     hint="cells are (host, seed) pairs: a row without an integer seed cannot be placed")
    df = pd.DataFrame({c: raw[c].astype("category") for c in TEXT_COLUMNS})
    df["seed"] = seed.astype(np.int64).to_numpy()
    df["value"] = pd.to_numeric(raw[metric], errors="coerce").astype(np.float64).to_numpy()
    df["started"] = pd.to_datetime(raw["started_at"], utc=True, format="ISO8601", errors="coerce")
    df["started_at"] = raw["started_at"].astype(object).to_numpy()
    return df


def load_gate_rows(package, paths: list[str], metric: str = "val_bpb") -> pd.DataFrame:
    """The rows of `paths` as one frame (the columns of `read_run_csv` plus `_file`).
    Raises PackageDefect for a missing or unreadable file."""
    store = package_store(package)
    return concat_rows([_with_file(read_run_csv(store, rel, metric)[0], rel) for rel in paths])


def _with_file(df: pd.DataFrame, rel: str) -> pd.DataFrame:
    df["_file"] = pd.Categorical.from_codes(np.zeros(len(df), dtype=np.int8), categories=[rel])
    return df


def concat_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of `read_run_csv` as one (categorical columns joined without decoding them)."""
    if not frames:
        out = pd.DataFrame({c: pd.Categorical([]) for c in TEXT_COLUMNS})
        out["seed"] = np.zeros(0, dtype=np.int64)
        out["value"] = np.zeros(0, dtype=np.float64)
        out["started"] = pd.to_datetime(pd.Series([], dtype=object), utc=True)
        out["_row"] = np.zeros(0, dtype=np.int64)
        out["_file"] = pd.Categorical([])
        return out
    if len(frames) == 1:
        return frames[0]
    cols = {}
    for c in frames[0].columns.union([c for f in frames for c in f.columns], sort=False):
        parts = [f[c] if c in f.columns else pd.Series([None] * len(f), dtype=object) for f in frames]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            if any(p.cat.categories.dtype != parts[0].cat.categories.dtype for p in parts):
                # categories of one text dtype (an empty file's have none to infer it from)
                parts = [p.cat.rename_categories(p.cat.categories.astype(str)) for p in parts]
            cols[c] = union_categoricals(parts, ignore_order=True)
        else:
            cols[c] = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(cols)


def _columns(df: pd.DataFrame) -> dict:
    """The engine's columns (`decide_columns`); text columns stay categorical (never decoded per row)."""
    return {"stage": df["stage"], "host": df["host"], "seed": df["seed"].to_numpy(),
            "config_id": df["config_id"], "status": df["status"], "value": df["value"].to_numpy(),
            "where": _Where(df)}


class _Where:
    """Lazy 'file row N' names, built only when a duplicate is reported."""

    def __init__(self, df: pd.DataFrame):
        self.df = df

    def __getitem__(self, i: int) -> str:
        return f"{self.df['_file'].iat[i]} row {int(self.df['_row'].iat[i])}"

    def __len__(self) -> int:
        return len(self.df)


@contextmanager
def paused_gc():
    """Pause the cyclic garbage collector: replay builds millions of small acyclic objects
    (one per run row) and collections triggered by allocation alone cost time for nothing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_json(package, rel: str) -> dict:
    """A package JSON object, read strictly through the store (PackageDefect if it is missing,
    not a regular file, not strict JSON or not an object)."""
    return _json_object(package_store(package).read_bytes(rel, MAX_DECISION_BYTES), rel)


def _json_object(data: bytes, rel: str) -> dict:
    with paused_gc():
        doc = loads_strict(data, rel)
    if not isinstance(doc, dict):
        raise defect(rel, "json-not-object", "the document is not a JSON object", location="$",
                     expected="a JSON object", found=type(doc).__name__)
    return doc


def package_protocol(package) -> Protocol:
    """The package's protocol (AuditError if `package` is no package, PackageDefect if the protocol is bad)."""
    return load_package_protocol(package_store(package))


def _gate(protocol: Protocol, gate: str):
    try:
        return protocol.gate(gate)
    except KeyError:
        names = ", ".join(g.gate for g in protocol.gates) or "(none)"
        raise AuditError(f"unknown gate {gate!r}", hint=f"the protocol's gates are: {names}") from None


def matrix_config_ids(package, protocol: Protocol) -> list[str]:
    """The candidate matrix's config_ids (PackageDefect if it is unreadable or has no config_id column)."""
    header, rows = package_store(package).read_csv(protocol.matrix)
    if "config_id" not in header:
        raise defect(protocol.matrix, "run-csv-missing-column", "the matrix has no config_id column",
                     location="header", expected="config_id", found=", ".join(header) or "no header",
                     hint="SPEC.md section 2: a matrix names its configurations in config_id")
    return [r["config_id"] for r in rows]


def resolve_candidates(package, protocol: Protocol, rules: dict, *, read=None) -> list[str]:
    """The gate's candidates: the matrix's config_ids, the recorded promoted list of the
    gate named by ``promoted-by:``, or the explicit list. Raises AuditError (a PackageDefect
    for a defective file) if unreadable. `read(rel) -> dict` reads a package JSON file."""
    cands = rules["inputs"]["candidates"]
    if cands == "matrix":
        return matrix_config_ids(package, protocol)
    if isinstance(cands, str) and cands.startswith("promoted-by:"):
        g = _gate(protocol, cands.split(":", 1)[1])
        doc = (read or (lambda rel: read_json(package, rel)))(g.decision_path)
        promoted = doc.get("promoted")
        if not isinstance(promoted, list) or not all(isinstance(c, str) for c in promoted):
            raise defect(g.decision_path, "schema-invalid", "the decision has no promoted list", location="$.promoted",
                         expected="a list of config_ids", found=json.dumps(promoted)[:80])
        return list(promoted)
    return list(cands)


def load_rules(package, protocol: Protocol, gate: str, *, known_configs=None) -> tuple[str, dict]:
    """(path, doc) of a gate's frozen rules; AuditError if missing, unreadable or invalid."""
    rel = _gate(protocol, gate).rules
    doc = read_json(package, rel)
    chain = None
    if isinstance(doc.get("inputs"), dict) and str(doc["inputs"].get("candidates")).startswith("promoted-by:"):
        chain = chain_bound(gate, lambda name: _valid_rules(package, protocol, name), known_configs)
    bad = validate_rules(doc, rel, known_configs=known_configs, chain=chain)
    if bad:
        raise AuditError(f"rules are not valid: {bad[0]}", path=rel, hint="a gate's rules must follow SPEC.md section 5")
    return rel, doc


def _valid_rules(package, protocol: Protocol, gate: str) -> dict | None:
    """A gate's rules if they can be read and follow the schema, else None (for `chain_bound`)."""
    try:
        rel = protocol.gate(gate).rules
        doc = read_json(package, rel)
    except (KeyError, PackageDefect):
        return None
    return None if validate_document(doc, "rules", rel) else doc


def decide_gate(package_dir, gate: str, decided_at: str) -> dict:
    """The full decision document (SPEC section 6) of `gate`, from the package's rules and
    rows, hashes included. Writes nothing. Raises AuditError when it cannot decide
    (unknown gate, missing or invalid rules or inputs, two rows of one candidate in a cell)."""
    store = package_store(package_dir)
    protocol = package_protocol(store)
    rules_rel, rules = load_rules(store, protocol, gate)
    candidates = resolve_candidates(store, protocol, rules)
    paths = gate_inputs(store, rules)
    frames, inputs = [], []
    for p in paths:
        df, sha = read_run_csv(store, p, rules["metric"]["column"])
        frames.append(_with_file(df, p))
        inputs.append({"path": p, "sha256": sha})
    df = concat_rows(frames)
    try:
        decision = decide_columns(rules, _columns(df), candidates)
    except DuplicateRowError as exc:
        raise AuditError(str(exc), path=paths[0] if len(paths) == 1 else None,
                         hint="each candidate has one row per (host, seed) cell; remove the extra row") from exc
    return decision.to_json(rules_ref={"path": rules_rel, "sha256": store.sha256(rules_rel)},
                            inputs=inputs, decided_at=decided_at)


def write_decision(package_dir: str | Path, gate: str, decided_at: str, *, force: bool = False) -> tuple[Path, dict]:
    """Decide `gate` and write ``analysis/<gate>_decision.json``. Refuses (AuditError) to
    overwrite a recorded decision unless `force`."""
    pkg = Path(package_dir)
    protocol = package_protocol(pkg)
    rel = _gate(protocol, gate).decision_path
    out = pkg / rel
    if os.path.lexists(out) and not force:
        raise AuditError("a decision is already recorded; the recorded decision is evidence and is not overwritten",
                         path=str(out), hint=f"replay it with: auditkit replay-gate {gate} --package {pkg}; "
                                             "to overwrite it anyway pass --force")
    doc = decide_gate(pkg, gate, decided_at)
    from auditkit.package.writes import write_files   # the one rule: no link under the package followed

    write_files(pkg, {rel: canonical_json_bytes(doc)}, force=True, what="decide")
    return out, doc


def decision_text(doc: dict) -> str:
    return canonical_json_bytes(doc).decode("utf-8")


def validate_decision(doc: dict, path: str, *, cells: bool = True) -> list[Finding]:
    """Schema findings for a decision document. The per-cell objects (one per run row, up to
    millions) are checked by a direct test equal to their schema (`cell_findings`), the rest by
    jsonschema; with `cells=False` the caller checks the cells itself."""
    cands = doc.get("candidates")
    if not isinstance(cands, list):
        return validate_document(doc, "decision", path)
    skeleton = dict(doc)
    skeleton["candidates"] = [{k: v for k, v in c.items() if k != "cells"} if isinstance(c, dict) else c
                              for c in cands]
    findings = validate_document(skeleton, "decision", path)
    for i, c in enumerate(cands):
        if isinstance(c, dict) and "cells" in c and (cells or not isinstance(c["cells"], dict)):
            findings += cell_findings(path, i, c["cells"])
    return findings


def cell_findings(path: str, i: int, cells) -> list[Finding]:
    """Schema findings for candidate `i`'s cells object."""
    if not isinstance(cells, dict):
        return _cell_finding(path, ["candidates", i, "cells"], "an object", cells)
    out = []
    for key, cell in cells.items():
        if not isinstance(cell, dict):
            out += _cell_finding(path, ["candidates", i, "cells", key], "an object", cell)
            continue
        v, r = cell.get("val_bpb"), cell.get("rank")
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            out += _cell_finding(path, ["candidates", i, "cells", key, "val_bpb"], "a number or null", v)
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))
                              or not float(r).is_integer()):
            out += _cell_finding(path, ["candidates", i, "cells", key, "rank"], "an integer or null", r)
    return out


def _cell_finding(path: str, loc: list, expected: str, found) -> list[Finding]:
    return [Finding(path, "schema-invalid", json_location(loc), expected, _show(found),
                    "the decision does not follow SPEC.md section 6 here, so this part of it cannot be compared")]


# --------------------------------------------------------------------------- replay

@dataclass
class GateReplay:
    """One gate's replay: the recorded and replayed decisions and every difference.

    `replayed` is the replayed decision document; a replay of a package fills `decision` (the
    engine's result) instead and builds the document only when asked (`replayed_doc`): one
    object per run row is what a large gate cannot afford twice. `recorded` is the recorded
    document when it had to be parsed, None when it is byte for byte the canonical form of the
    replayed one (then `recorded_doc` rebuilds it) or unreadable."""

    gate: str
    rules_path: str = ""
    rules: dict | None = None
    recorded: dict | None = None
    replayed: dict | None = None
    findings: list[Finding] = field(default_factory=list)
    first_input_start: str | None = None  # the earliest started_at of the rows the gate selects
    decision: Decision | None = None
    recorded_promoted: list[str] | None = None  # the recorded promoted list, when readable
    _refs: dict = field(default_factory=dict)   # rules_ref, inputs, decided_at of the replayed document
    _canonical: bool = False                    # the recorded file is the canonical form of the replayed one
    uncertainty: object = None                  # auditkit.stats.uncertainty.GateUncertainty, when asked for

    @property
    def identical(self) -> bool:
        return not self.findings

    def replayed_doc(self) -> dict | None:
        if self.replayed is None and self.decision is not None:
            self.replayed = self.decision.to_json(**self._refs)
        return self.replayed

    def recorded_doc(self) -> dict | None:
        return self.recorded if self.recorded is not None or not self._canonical else self.replayed_doc()

    @property
    def replayed_promoted(self) -> list[str] | None:
        if self.decision is not None:
            return list(self.decision.promoted)
        return None if self.replayed is None else list(self.replayed["promoted"])

    def summary(self) -> dict:
        """The verdict and what the replay found, for `--json`: promoted list, ranks, checks and
        `frozen_at` beside the first input row's start (None where the gate could not be replayed)."""
        frozen = self.rules.get("frozen_at") if isinstance(self.rules, dict) else None
        before = None
        if frozen and self.first_input_start:
            try:
                before = bool(pd.Timestamp(frozen) < pd.Timestamp(self.first_input_start))
            except (ValueError, TypeError):
                before = None
        out = {"gate": self.gate, "verdict": "identical" if self.identical else "differs",
               "differences": len(self.findings), "frozen_at": frozen,
               "first_input_started_at": self.first_input_start, "frozen_before_data": before, "replayed": None}
        keys = ("kind", "candidate", "reference", "value", "threshold", "passed")
        if self.decision is not None:
            d = self.decision
            out["replayed"] = {"promoted": list(d.promoted), "ranks": {c.config_id: c.rank for c in d.candidates},
                               "eligible": {c.config_id: c.eligible for c in d.candidates},
                               "checks": [dict(zip(keys, (ch.kind, ch.candidate, ch.reference, ch.value, ch.threshold,
                                                          ch.passed))) for ch in d.checks]}
        elif self.replayed is not None:
            doc = self.replayed
            out["replayed"] = {"promoted": list(doc["promoted"]),
                               "ranks": {c["config_id"]: c.get("rank") for c in doc["candidates"]},
                               "eligible": {c["config_id"]: c["eligible"] for c in doc["candidates"]},
                               "checks": [{k: ch.get(k) for k in keys} for ch in doc["checks"]]}
        if self.uncertainty is not None:
            out["uncertainty"] = self.uncertainty.to_json()
        return out


@dataclass
class ReplayReport(Report):
    """A replay-gate Report whose JSON form also carries each gate's replayed decision (`gates`)."""

    gates: list[dict] = field(default_factory=list)  # `GateReplay.summary()` of each gate, in protocol order

    def to_dict(self) -> dict:
        return {**super().to_dict(), "gates": self.gates}


class _Session:
    """Caches what several gates of one replay share (protocol, rows, hashes, replayed decisions)."""

    def __init__(self, package_dir):
        self.store = package_store(package_dir)
        self.pkg = self.store.root
        self.protocol = package_protocol(self.store)
        self.results: dict[str, GateReplay] = {}
        self.hashes: dict[str, str] = {}
        self.docs: dict[str, dict] = {}
        self.valid: dict[str, dict | None] = {}
        self._matrix: tuple | None = None

    def json(self, rel: str) -> dict:
        """A package JSON object, read strictly; the bytes parsed are the bytes hashed."""
        if rel not in self.docs:
            data = self.store.read_bytes(rel, MAX_DECISION_BYTES)
            self.hashes[rel] = hashlib.sha256(data).hexdigest()
            self.docs[rel] = _json_object(data, rel)
        return self.docs[rel]

    def rules_of(self, gate: str) -> dict | None:
        """A gate's rules when readable and valid against the schema, else None (for `chain_bound`)."""
        if gate not in self.valid:
            doc = None
            try:
                rel = self.protocol.gate(gate).rules
                doc = self.json(rel)
                if validate_document(doc, "rules", rel):
                    doc = None
            except (KeyError, PackageDefect):
                doc = None
            self.valid[gate] = doc
        return self.valid[gate]

    def matrix(self) -> list[str] | None:
        """The matrix's config_ids, or None when it cannot be read (a gate over it reports why)."""
        if self._matrix is None:
            try:
                self._matrix = (matrix_config_ids(self.store, self.protocol),)
            except PackageDefect:
                self._matrix = (None,)
        return self._matrix[0]

    def sha(self, rel: str) -> str:
        if rel not in self.hashes:
            self.hashes[rel] = self.store.sha256(rel)
        return self.hashes[rel]

    def frame(self, rel: str, metric: str) -> pd.DataFrame:
        """A run CSV's rows (not kept: a gate's rows are freed once it is decided); its hash is."""
        df, self.hashes[rel] = read_run_csv(self.store, rel, metric)
        return _with_file(df, rel)

    def replay(self, gate: str, stack: tuple[str, ...] = ()) -> GateReplay:
        if gate not in self.results:
            if gate in stack:
                return GateReplay(gate, findings=[Finding(path="protocol.json", code="chain-cycle",
                                                          location="$.gates", found=" -> ".join(stack + (gate,)),
                                                          message="promoted-by gates form a cycle")])
            self.results[gate] = _replay_gate(self, gate, stack + (gate,))
        return self.results[gate]


def replay_gate(package_dir, gate: str) -> GateReplay:
    """Replay one gate. Raises AuditError when it cannot run (no package, unknown gate) and
    PackageDefect (an AuditError carrying a finding) when protocol.json is defective;
    everything else is a finding."""
    s = _Session(package_dir)
    _gate(s.protocol, gate)
    with paused_gc():
        return s.replay(gate)


def replay_all(package_dir) -> list[GateReplay]:
    """Replay every gate of the package's protocol, in protocol order (raises as `replay_gate`)."""
    s = _Session(package_dir)
    if not s.protocol.gates:
        raise AuditError("the protocol defines no gate", path="protocol.json",
                         hint="a package without gates has nothing to replay")
    with paused_gc():
        return [s.replay(g.gate) for g in s.protocol.gates]


def replay_package(package_dir, gate: str, *, level: float | None = None) -> tuple[list[GateReplay], Report]:
    """`replay_all` (gate ``all``) or `replay_gate`, and their report.

    Raises AuditError ("could not check", exit 2) when protocol.json is defective: without it
    there are no gates to replay.  The defect itself is a finding about the package, and
    `verify` reports it as one.  With `level`, each gate's summary carries its `uncertainty` at that
    level (`attach_uncertainty`)."""
    try:
        replays = replay_all(package_dir) if gate == "all" else [replay_gate(package_dir, gate)]
    except PackageDefect as exc:
        raise AuditError(f"cannot replay without a usable protocol.json: {exc.finding}",
                         path=str(Path(package_dir) / exc.finding.path),
                         hint=f"run `auditkit verify {package_dir}` for every finding about the package") from None
    if level is not None:
        attach_uncertainty(package_dir, replays, level)
    return replays, replay_report(replays, str(package_dir))


def attach_uncertainty(package_dir, replays: list[GateReplay], level: float) -> None:
    """Set each replay's `uncertainty` (auditkit.stats.uncertainty) where its decision was recomputed;
    the checks of all `replays` are one family for Holm's adjustment. Per-document evaluation losses
    are read where the rows name them (SPEC v1.2); a gate whose files cannot be used says why."""
    from auditkit.package.evaldocs import gate_doc_losses
    from auditkit.stats.uncertainty import apply_holm, gate_uncertainty

    store = package_store(package_dir)
    done = []
    for r in replays:
        if r.decision is None or r.rules is None:
            continue
        docs, why = gate_doc_losses(store, r.rules, r.decision)
        u = gate_uncertainty(r.decision, r.rules, level, docs)
        if why:
            u.notes.append(why)
        r.uncertainty = u
        done.append(u)
    apply_holm(done)


def replay_report(replays: list[GateReplay], target: str) -> ReplayReport:
    """One report of every finding of `replays`, each once (a file two gates read is one finding
    per gate only where the findings differ), and each gate's `summary` for `--json`."""
    rep = ReplayReport(command="replay-gate", target=target)
    seen = set()
    for r in replays:
        for x in r.findings:
            if x not in seen:
                seen.add(x)
                rep.add(x)
    rep.checked = {"gates": len(replays)}
    rep.gates = [r.summary() for r in replays]
    rep.info = {f"gate {r.gate}": ("identical" if r.identical else f"{len(r.findings)} difference(s)")
                for r in replays}
    return rep


# rules findings after which the gate cannot be recomputed (the others are reported, and it is)
_UNREPLAYABLE = {"schema-invalid", "rules-chain-cycle", "rules-non-finite-threshold", "rules-unknown-check"}


def rules_promoted_by(rules: dict) -> str | None:
    """The gate named by ``promoted-by:`` in rules' candidates, or None."""
    cands = rules.get("inputs", {}).get("candidates") if isinstance(rules.get("inputs"), dict) else None
    return cands.split(":", 1)[1] if isinstance(cands, str) and cands.startswith("promoted-by:") else None


def _replay_gate(s: _Session, gate: str, stack: tuple[str, ...]) -> GateReplay:
    g = s.protocol.gate(gate)
    out = GateReplay(gate, rules_path=g.rules)
    f = out.findings
    dec_rel = g.decision_path

    # rules
    try:
        rules = s.json(g.rules)
    except PackageDefect as exc:
        f.append(exc.finding)
        return out
    chain = None
    if rules_promoted_by(rules) is not None:
        chain = chain_bound(gate, s.rules_of, s.matrix())
    bad = validate_rules(rules, g.rules, known_configs=s.matrix(), chain=chain)
    f.extend(bad)
    if any(x.code in _UNREPLAYABLE for x in bad):
        return out
    out.rules = rules
    if rules["gate"] != gate:
        f.append(Finding(g.rules, "rules-wrong-gate", "$.gate", gate, rules["gate"], "the rules name another gate"))

    # inputs, read (and hashed) through the store
    selected = gate_inputs(s.store, rules)
    present = [p for p in selected if s.store.kind(p) is not None]
    for p in selected:
        if p not in present:
            f.append(Finding(p, "input-missing", expected="a run CSV the rules select", found="no such file",
                             message=f"gate {gate} selects this host x stage, but the package holds no rows for it"))
    metric = rules["metric"]["column"]
    frames = []
    for p in list(present):
        try:
            frames.append(s.frame(p, metric))
        except PackageDefect as exc:
            f.append(exc.finding)
            present.remove(p)
    df = concat_rows(frames)
    del frames
    ins = rules["inputs"]
    sel = df[df["stage"].isin(ins["stages"]) & df["host"].isin(ins["hosts"]) & df["seed"].isin(ins["seeds"])]
    del df
    if len(sel) == 0:
        f.append(Finding(g.rules, "gate-no-rows", "$.inputs", "rows for the gate's stages, hosts and seeds",
                         "none", "a gate with no data decides nothing"))
    f.extend(_frozen_before(rules, sel, g.rules))
    if len(sel) and sel["started"].notna().any():
        out.first_input_start = _iso(sel["started"].min())

    # candidates (for promoted-by: the parent's recorded promoted list), and the recomputed decision
    decision = None
    parent = rules_promoted_by(rules)
    candidates, parent_replay = _candidates(s, gate, g.rules, rules, parent, stack, f)
    if candidates is not None:
        if not candidates:
            f.append(Finding(g.rules, "gate-no-candidates", "$.inputs.candidates", "at least one candidate", "none",
                             "a gate with no candidates decides nothing"))
        try:
            decision = decide_columns(rules, _columns(sel), candidates)
        except DuplicateRowError as exc:
            first = exc.where[0].split(" row ")[0] if exc.where else g.rules
            f.append(Finding(first, "duplicate-run-row", "; ".join(exc.where), "one row per candidate and cell",
                             f"{exc.config_id} in {exc.cell}", "two runs of one candidate in one cell: the rules "
                             "cannot say which counts (SPEC 5.2); find out which run the recorded decision used"))
    del sel
    out.decision = decision
    if decision is not None and parent_replay is not None and parent_replay.replayed_promoted is not None \
            and parent_replay.replayed_promoted != candidates:
        f.append(Finding(dec_rel, "chain-broken-on-replay", "$.candidates",
                         f"gate {parent}'s replayed promoted list {parent_replay.replayed_promoted}",
                         f"its recorded list {candidates}",
                         f"gate {parent} does not replay to the candidates gate {gate} used"))

    # the recorded decision, and what it records about the rules and inputs
    rec = _read_recorded(s, gate, dec_rel, decision, f)
    out._refs = {"rules_ref": {"path": g.rules, "sha256": s.sha(g.rules)},
                 "inputs": [{"path": p, "sha256": s.sha(p)} for p in present],
                 "decided_at": rec.meta["decided_at"] if rec is not None and rec.meta is not None else ""}
    if rec is None:
        return out
    out.recorded_promoted = rec.promoted
    if rec.meta is None:
        return out
    out.recorded, out._canonical = rec.doc, rec.doc is None
    _check_refs(s, gate, g.rules, dec_rel, selected, present, rec.meta, f)
    if decision is None:
        return out
    if parent is not None:
        named = sorted(c.config_id for c in decision.candidates) if rec.doc is None else \
            sorted(c["config_id"] for c in rec.doc["candidates"])
        if named != sorted(candidates):
            f.append(Finding(dec_rel, "chain-broken", "$.candidates",
                             f"the promoted list of gate {parent}: {sorted(candidates)}", str(named),
                             f"gate {gate} must decide among exactly the candidates gate {parent} promoted"))
    if rec.doc is not None:
        f.extend(diff_decisions(rec.doc, out.replayed_doc(), dec_rel, better=rules["metric"]["better"]))
    return out


def _candidates(s: _Session, gate: str, rules_rel: str, rules: dict, parent: str | None, stack: tuple[str, ...],
                f: list) -> tuple[list[str] | None, GateReplay | None]:
    """(the gate's candidates or None when they cannot be known, the parent gate's replay)."""
    try:
        if parent is None:
            return resolve_candidates(s.store, s.protocol, rules), None
        _gate(s.protocol, parent)
        parent_replay = s.replay(parent, stack)
        if parent_replay.recorded_promoted is None:
            f.append(Finding(rules_rel, "candidates-unresolved", "$.inputs.candidates",
                             f"the promoted list gate {parent} recorded", "none readable",
                             f"gate {parent}'s recorded decision is missing or unreadable (reported for that gate), "
                             f"so the candidates of gate {gate} are not known"))
            return None, parent_replay
        return parent_replay.recorded_promoted, parent_replay
    except PackageDefect as exc:
        f.append(exc.finding)
    except AuditError as exc:
        f.append(Finding(exc.path or rules_rel, "candidates-unresolved", "$.inputs.candidates", "a resolvable list",
                         exc.message, exc.hint or ""))
    return None, None


@dataclass
class _Recorded:
    """A recorded decision as replay needs it. `doc` is None when the file is byte for byte the
    canonical form (SPEC 6, as auditkit writes it) of the replayed decision: then nothing of it
    differs and it was never parsed. `meta` (rules, inputs, decided_at, ...) is None when the
    decision does not follow the schema."""

    doc: dict | None
    meta: dict | None
    promoted: list[str] | None


_META_KEYS = ("decided_at", "gate", "inputs", "promoted", "rules", "schema")  # sorted after "checks"


def _read_recorded(s: _Session, gate: str, rel: str, decision: Decision | None, f: list) -> _Recorded | None:
    try:
        data = s.store.read_bytes(rel, MAX_DECISION_BYTES)
    except PackageDefect as exc:
        if exc.finding.code == "missing-file":
            f.append(Finding(rel, "decision-missing", expected=f"the recorded decision of gate {gate}",
                             found="no such file", message="the package does not hold the decision this gate made: "
                             "without it there is nothing to replay against; find out whether it was ever recorded"))
        else:
            f.append(exc.finding)
        return None
    meta = _canonical_meta(data, rel) if decision is not None else None
    if meta is not None and _is_canonical_form(data, decision, meta):
        bad = validate_document({**meta, "cells": [], "candidates": [], "checks": []}, "decision", rel)
        if bad:
            f.extend(bad)
            return _Recorded(None, None, list(decision.promoted))
        return _Recorded(None, meta, list(decision.promoted))
    try:
        doc = _json_object(data, rel)
    except PackageDefect as exc:
        f.append(exc.finding)
        return None
    del data
    promoted = doc.get("promoted")
    promoted = list(promoted) if isinstance(promoted, list) and all(isinstance(c, str) for c in promoted) else None
    bad = validate_decision(doc, rel, cells=False)  # cells: in diff_decisions
    if bad:
        f.extend(bad)
        return _Recorded(None, None, promoted)
    return _Recorded(doc, {k: doc[k] for k in _META_KEYS if k in doc}, promoted)


def _canonical_meta(data: bytes, rel: str) -> dict | None:
    """The top-level fields after ``checks`` of a decision in canonical form (sorted keys, two-space
    indent: they close the file), parsed strictly; None when the file is not in that form."""
    i = data.rfind(b'\n  "decided_at": ')
    if i < 0:
        return None
    try:
        meta = loads_strict(b"{" + data[i + 1:], rel)
    except PackageDefect:
        return None
    if not isinstance(meta, dict) or tuple(sorted(meta)) != _META_KEYS or not isinstance(meta["rules"], dict) \
            or not isinstance(meta["inputs"], list) or not all(isinstance(x, dict) for x in meta["inputs"]):
        return None
    return meta


_PLACEHOLDER = re.compile(r'"\\u0000cells (\d+)\\u0000"')
# the per-cell objects as `json.dumps(indent=2, sort_keys=True)` writes them inside a decision
_K, _R, _S, _V, _E = "        ", ': {\n          "rank": ', ',\n          "status": ', ',\n          "val_bpb": ', "\n        }"


def _is_canonical_form(data: bytes, decision: Decision, meta: dict) -> bool:
    """Whether `data` is exactly ``canonical_json_bytes`` of `decision`'s document with the recorded
    rules, inputs and decided_at — compared piece by piece as it is generated, never parsed or
    built whole. The document's skeleton comes from the one canonical writer; only the per-cell
    objects (one per run row) are formatted here, as that writer formats them (tested against it)."""
    try:
        skeleton = decision.to_json(rules_ref=meta["rules"], inputs=meta["inputs"], decided_at=meta["decided_at"],
                                    cells=False)
    except (TypeError, ValueError):
        return False
    if skeleton["gate"] != meta["gate"] or skeleton["promoted"] != meta["promoted"] or not data.isascii():
        return False
    for i, c in enumerate(skeleton["candidates"]):
        c["cells"] = f"\x00cells {i}\x00"
    try:
        parts = _PLACEHOLDER.split(canonical_json_bytes(skeleton).decode("ascii"))
    except (TypeError, ValueError):
        return False
    if [int(x) for x in parts[1::2]] != list(range(len(decision.candidates))):
        return False
    keys = decision.cell_keys()
    order = sorted(range(len(keys)), key=keys.__getitem__)
    json_keys = [json.encoder.encode_basestring_ascii(keys[j]) for j in order]
    pos = 0
    for k, piece in enumerate(parts):
        chunk = (piece if k % 2 == 0 else _cells_text(decision.candidates[k // 2], order, json_keys)).encode("ascii")
        if not data.startswith(chunk, pos):
            return False
        pos += len(chunk)
    return pos == len(data)


def _cells_text(c, order: list[int], json_keys: list[str]) -> str:
    """One candidate's ``cells`` object as ``json.dumps(indent=2, sort_keys=True)`` writes it at its depth."""
    n = len(order)
    if not n:
        return "{}"
    pick = (lambda xs: list(xs)) if order == list(range(n)) else (lambda xs: [xs[j] for j in order])
    vals, ranks, stats = pick(c.values), pick(c.cell_ranks), pick(c.statuses)
    if c.eligible:  # every cell ok, with a value and a rank: no status key, no null
        pieces = [",\n"] * (8 * n)
        pieces[0::8] = [_K] * n
        pieces[1::8] = json_keys
        pieces[2::8] = [_R] * n
        pieces[3::8] = map(int.__repr__, ranks)
        pieces[4::8] = [_V] * n
        pieces[5::8] = map(float.__repr__, vals)
        pieces[6::8] = [_E] * n
        return "{\n" + "".join(pieces[:-1]) + "\n      }"
    cells = []
    for key, r, v, st in zip(json_keys, ranks, vals, stats):
        r = "null" if r is None else int.__repr__(r)
        v = "null" if v is None else float.__repr__(v)
        cells.append(_K + key + _R + r + (_S + json.encoder.encode_basestring_ascii(st) if st != "ok" else "")
                     + _V + v + _E)
    return "{\n" + ",\n".join(cells) + "\n      }"


def _check_refs(s: _Session, gate: str, rules_rel: str, dec_rel: str, selected: list[str], present: list[str],
                meta: dict, f: list) -> None:
    """The decision names the protocol's rules and exactly the inputs its rules select, with the
    sha256 of the bytes the package holds."""
    rr = meta["rules"]
    if rr["path"] != rules_rel:
        f.append(Finding(dec_rel, "rules-path-mismatch", "$.rules.path", rules_rel, rr["path"],
                         "the decision names other rules than the protocol's"))
    actual = s.sha(rules_rel)
    if rr["sha256"] != actual:
        f.append(Finding(dec_rel, "rules-hash-mismatch", "$.rules.sha256", rr["sha256"], actual,
                         f"the decision records other bytes for {rules_rel} than the package holds: the rules "
                         "changed after the decision was recorded, or the record was altered"))
    named = {i["path"]: i["sha256"] for i in meta["inputs"]}
    for p in selected:
        if p not in named:
            f.append(Finding(dec_rel, "input-not-recorded", "$.inputs", p, "not named",
                             "the decision left out a run CSV its rules select"))
    for i, (p, h) in enumerate((x["path"], x["sha256"]) for x in meta["inputs"]):
        if p not in selected:
            f.append(Finding(dec_rel, "input-extra", json_location(["inputs", i, "path"]), "only inputs the rules select",
                             p, "the decision names a file its rules do not select"))
        elif p in present and s.sha(p) != h:
            f.append(Finding(p, "input-hash-mismatch", "", h, s.sha(p),
                             f"the rows changed after gate {gate} was decided"))


def _frozen_before(rules: dict, sel: pd.DataFrame, rules_rel: str) -> list[Finding]:
    """SPEC 5.10: `frozen_at` earlier than every input row's `started_at` (compared as times)."""
    try:
        frozen = pd.to_datetime(rules["frozen_at"], utc=True, format="ISO8601")
    except (ValueError, OverflowError):
        return []  # validate_rules reported rules-bad-frozen-at
    started = sel["started"]
    out = []
    bad_ts = np.flatnonzero(started.isna().to_numpy())
    for i in bad_ts[:5]:
        text = sel["started_at"].iat[i] if "started_at" in sel.columns else ""
        out.append(Finding(str(sel["_file"].iat[i]), "row-bad-timestamp",
                           f"row {int(sel['_row'].iat[i])}, column started_at", "an ISO-8601 UTC timestamp", repr(text),
                           "without a start time the freeze cannot be checked for this row"))
    late = np.flatnonzero((started <= frozen).to_numpy())
    if len(late):
        i = int(late[np.argmin(started.to_numpy()[late])])
        out.append(Finding(rules_rel, "rules-frozen-after-data", "$.frozen_at",
                           "frozen_at earlier than every input row's started_at",
                           f"{rules['frozen_at']} is not before {_iso(started.iat[i])} "
                           f"({sel['_file'].iat[i]} row {int(sel['_row'].iat[i])}; {len(late)} row(s) in all)",
                           "the rules were written after data they decide on existed: they are no pre-registration "
                           "for those rows"))
    return out


def _iso(ts) -> str:
    """A UTC timestamp as ISO-8601 with a `Z` (what run rows record)."""
    return pd.Timestamp(ts).tz_convert("UTC").isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- diff

def _num_differs(a, b) -> bool:
    """Numbers differ beyond 1e-9 (SPEC 6); None only equals None; a bool is no number."""
    if a is None or b is None:
        return a is not b
    if isinstance(a, bool) or isinstance(b, bool):
        return True
    try:
        return not (math.isfinite(float(a)) and math.isfinite(float(b)) and abs(float(a) - float(b)) <= TOLERANCE)
    except (TypeError, ValueError):
        return True


def _int_differs(got, want) -> bool:
    """An integer field (rank, wins): equal as numbers, `1.0` being `1` (JSON has one number type); a bool
    or a fraction is no integer."""
    if got is None or want is None:
        return got is not want
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return True
    return not (float(got).is_integer() and got == want)


DIFFERS = "the recorded value is not what the frozen rules give on the raw rows"
DIFFERS_HINT = ("the decision, its rules or its rows changed after it was made, or it was not made by these rules: "
                "compare the input hashes the decision records, and the rows of the cell named")
_ABSENT = object()


def diff_decisions(recorded: dict, replayed: dict, path: str, *, better: str = "lower") -> list[Finding]:
    """Every field where `recorded` differs from `replayed` (auditkit's form), comparing exactly what
    SPEC v1 defines — promoted list and order, the set of cells and of candidates, eligibility,
    ranks, wins, per-cell values, check outcomes exactly; numbers within 1e-9 — and accepting either
    v1 form where the SPEC leaves the representation open (docs/SPEC.md, "v1.1: representations").
    `better` is the rules' metric direction (the sign of a `mean_gap` value is open only for
    `higher`). Locations are JSON paths into the recorded file."""
    out = []

    def differ(loc, code, exp, got, msg=DIFFERS):
        out.append(Finding(path, code, json_location(loc), _show(exp), _show(got), msg, DIFFERS_HINT, roles="replay"))

    if recorded.get("gate") != replayed["gate"]:
        differ(["gate"], "decision-differs", replayed["gate"], recorded.get("gate"))
    # cells: a set of (host, seed) pairs, in any order
    rec_cells = sorted((str(h), s) for h, s in recorded["cells"])
    if len(rec_cells) != len(replayed["cells"]) or rec_cells != sorted((h, s) for h, s in replayed["cells"]):
        differ(["cells"], "decision-differs", replayed["cells"], recorded["cells"])
    if recorded["promoted"] != replayed["promoted"]:
        differ(["promoted"], "promoted-differs", replayed["promoted"], recorded["promoted"],
               "the rules applied to the raw rows promote a different list")
    # candidates: matched by config_id, in any order
    rec_c = {}
    for i, c in enumerate(recorded["candidates"]):
        rec_c.setdefault(c["config_id"], (i, c))
    names_rec = sorted(c["config_id"] for c in recorded["candidates"])
    names_rep = sorted(c["config_id"] for c in replayed["candidates"])
    if names_rec != names_rep:
        differ(["candidates"], "candidates-differ", names_rep, names_rec)
    for want in replayed["candidates"]:
        cid = want["config_id"]
        if cid not in rec_c:
            continue
        i, got = rec_c[cid]
        if got.get("eligible") is not want["eligible"]:
            differ(["candidates", i, "eligible"], "eligible-differs", want["eligible"], got.get("eligible"))
        # rank and wins: an ineligible candidate has neither (null, absent; wins also 0)
        rank = got.get("rank")
        if _int_differs(rank, want["rank"]):
            differ(["candidates", i, "rank"], "rank-differs", want["rank"], rank)
        wins = got.get("wins")
        if not (not want["eligible"] and wins in (None, 0) and not isinstance(wins, bool)) \
                and _int_differs(wins, want["wins"]):
            differ(["candidates", i, "wins"], "wins-differs", want["wins"], wins)
        # statistics: null or absent where there is none (an ineligible candidate, std of one cell)
        for key in ("mean", "min", "max", "std"):
            if _num_differs(got.get(key), want[key]):
                differ(["candidates", i, key], "value-differs", want[key], got.get(key))
        _diff_cells(got.get("cells", _ABSENT), want, i, path, differ, out)
    _diff_checks(recorded["checks"], replayed["checks"], better, differ)
    return out


def _diff_cells(gcells, want: dict, i: int, path: str, differ, out: list) -> None:
    """An eligible candidate's cells: exactly the decision's cells, each value and rank. An ineligible
    candidate's: `{}` or any of its cells, each value as the row's and no rank."""
    wcells = want["cells"]
    if gcells is _ABSENT:
        if want["eligible"]:
            differ(["candidates", i, "cells"], "decision-differs", "the candidate's cells", "none")
        return
    if gcells == wcells:  # the common case, compared in C; floats round-trip through JSON exactly
        return
    bad = cell_findings(path, i, gcells)
    if bad:
        out += bad
        return
    extra = sorted(set(gcells) - set(wcells))
    if (want["eligible"] and set(gcells) != set(wcells)) or extra:
        differ(["candidates", i, "cells"], "decision-differs", sorted(wcells), sorted(gcells))
    for ck, gc in gcells.items():
        wc = wcells.get(ck)
        if wc is None:
            continue
        if _num_differs(gc.get("val_bpb"), wc["val_bpb"]):
            differ(["candidates", i, "cells", ck, "val_bpb"], "value-differs", wc["val_bpb"], gc.get("val_bpb"))
        if _int_differs(gc.get("rank"), wc["rank"]):
            differ(["candidates", i, "cells", ck, "rank"], "rank-differs", wc["rank"], gc.get("rank"))


def _check_key(ch: dict) -> tuple:
    ref = None if ch.get("kind") == "ranks_first_in_all_cells" else ch.get("reference")
    return ch.get("kind"), ch.get("candidate"), ref


def _diff_checks(rchecks: list, wchecks: list, better: str, differ) -> None:
    """Checks matched by (kind, candidate, reference), in any order; value per the open forms."""
    unused = list(range(len(rchecks)))
    pairs = []
    for w in wchecks:
        j = next((j for j in unused if _check_key(rchecks[j]) == _check_key(w)), None)
        if j is None:
            differ(["checks"], "checks-differ", f"a {w['kind']} check of {w['candidate']}", "none")
            continue
        unused.remove(j)
        pairs.append((j, rchecks[j], w))
    for j in unused:
        differ(["checks", j], "checks-differ", "only the checks the rules define",
               f"a {rchecks[j].get('kind')} check of {rchecks[j].get('candidate')}")
    for j, got, want in pairs:
        if not _check_value_matches(got.get("value"), want, better):
            differ(["checks", j, "value"], "check-value-differs", want["value"], got.get("value"))
        if want["kind"] != "ranks_first_in_all_cells" and _num_differs(got.get("threshold"), want["threshold"]):
            differ(["checks", j, "threshold"], "check-value-differs", want["threshold"], got.get("threshold"))
        if got.get("passed") is not want["passed"]:
            differ(["checks", j, "passed"], "check-outcome-differs", want["passed"], got.get("passed"))


def _check_value_matches(got, want: dict, better: str) -> bool:
    """The recorded `value` of a check against the replayed one, in either open form (SPEC v1.1)."""
    value = want["value"]
    if want["kind"] == "ranks_first_in_all_cells":
        # null, or the number of first places (0 for an ineligible candidate, which has none)
        return got is None or not _num_differs(got, 0.0 if value is None else value)
    if value is None or got is None:
        return got is value
    if not _num_differs(got, value):
        return True
    if want["kind"] == "near_equivalence" or better == "higher":
        # |difference| for near_equivalence; for `higher` the SPEC fixes no sign of the gap
        return not _num_differs(got, -value)
    return False


def _show(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


# --------------------------------------------------------------------------- rendering

def render_gate(r: GateReplay) -> str:
    """Text for one replayed gate: candidates x cells, checks, verdict."""
    from tabulate import tabulate

    from auditkit.text import printable

    lines = [f"== gate {r.gate} =="]
    doc = r.replayed_doc() or r.recorded
    if doc is not None:
        keys = [f"{h}/{s}" for h, s in doc["cells"]]
        promoted = set(doc["promoted"])
        rows = []
        for c in doc["candidates"]:
            row = [("*" if c["config_id"] in promoted else "") + c["config_id"], c.get("rank") or "-"]
            for k in keys:
                cell = (c.get("cells") or {}).get(k, {})
                v = cell.get("val_bpb")
                row.append("-" if v is None else f"{v:.6f} ({cell.get('rank') or cell.get('status', '-')})")
            row.append("-" if c.get("mean") is None else f"{c['mean']:.6f}")
            rows.append(row)
        lines += tabulate([[printable(c) for c in row] for row in rows],
                          headers=[printable(h) for h in ["candidate", "rank", *keys, "mean"]], tablefmt="simple",
                          disable_numparse=True).splitlines()
        lines.append(f"promoted (*): {', '.join(doc['promoted']) or '(none)'}")
        for ch in doc["checks"]:
            ref = f" vs {ch['reference']}" if ch.get("reference") else ""
            val = "-" if ch.get("value") is None else (f"{ch['value']:.9f}" if ch["kind"] != "ranks_first_in_all_cells"
                                                       else f"{int(ch['value'])}/{len(keys)} cells")
            thr = "" if ch.get("threshold") is None else f" (threshold {ch['threshold']})"
            outcome = "pass" if ch["passed"] else "FAIL (an outcome the study recorded, not a problem)"
            lines.append(f"check {ch['kind']} {ch['candidate']}{ref}: {val}{thr} -> {outcome}")
    summary = r.summary()
    if summary["frozen_at"] and summary["first_input_started_at"]:
        rel = {True: "before", False: "NOT before", None: "?"}[summary["frozen_before_data"]]
        lines.append(f"frozen_at {summary['frozen_at']} {rel} the first input row's start "
                     f"{summary['first_input_started_at']}")
    if r.uncertainty is not None:
        from auditkit.stats.uncertainty import render_calls

        lines.extend(render_calls(r.uncertainty))
    if r.identical:
        lines.append(f"verdict: identical — gate {r.gate} replays to its recorded decision")
    else:
        lines.append(f"verdict: DIFFERS — {len(r.findings)} difference(s), listed below")
    return "\n".join(printable(line) for line in lines)  # package text: one line each, no terminal control

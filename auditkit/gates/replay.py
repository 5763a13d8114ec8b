"""Replay gate decisions: load the frozen rules and raw rows, decide, diff.

`decide_gate` writes nothing and needs no MANIFEST or tables, so the protocol
runner uses it while a study runs; `replay_gate`/`replay_all` recompute every
recorded decision of a finished package and report each difference as a
finding (hashes, inputs named vs selected, rules frozen before the data, the
promoted-by chain, and every field of the decision).
"""

from __future__ import annotations

import gc
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.errors import AuditError
from auditkit.package.store import atomic_write_bytes, canonical_json_bytes
from auditkit.findings import Finding, Report, json_location
from auditkit.package.hashing import sha256_file
from auditkit.study.spec import Protocol, load_protocol
from auditkit.package.rows import read_csv_text, run_csv_path
from auditkit.gates.engine import DuplicateRowError, decide_columns, validate_rules
from auditkit.package.schemas import validate_document

TOLERANCE = 1e-9
ROW_COLUMNS = ("run_id", "host", "stage", "seed", "config_id", "status", "started_at")


# --------------------------------------------------------------------------- loading

def gate_inputs(package_dir: str | Path, rules: dict) -> list[str]:
    """The run CSVs the rules select: ``remote-results/<host>_<stage>_summary.csv`` for every
    host x stage of `inputs`, sorted (package-relative POSIX paths)."""
    ins = rules["inputs"]
    return sorted({run_csv_path(h, s) for h in ins["hosts"] for s in ins["stages"]})


def load_gate_rows(package_dir: str | Path, paths: list[str], metric: str = "val_bpb") -> pd.DataFrame:
    """The rows of `paths` as one frame: the run columns as text plus `seed` (int),
    `value` (the metric as float, NaN when empty or not a number), `_file` and `_row`
    (data rows counted from 1). Raises AuditError for a missing or unreadable file."""
    pkg = Path(package_dir)
    frames = []
    for rel in paths:
        p = pkg / rel
        if not p.is_file():
            raise AuditError("input run CSV is missing", path=rel,
                             hint="the rules select this host x stage; the package must hold its rows")
        try:
            head = pd.read_csv(p, dtype=str, keep_default_na=False, nrows=0)
            need = list(ROW_COLUMNS) + [metric]
            missing = [c for c in need if c not in head.columns]
            if missing:
                raise AuditError(f"run CSV lacks column(s) {missing}", path=rel,
                                 hint="SPEC.md section 4 lists the required columns")
            df = pd.read_csv(p, dtype=str, keep_default_na=False, usecols=need, engine="c")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise AuditError(f"not a readable run CSV: {exc}", path=rel) from exc
        seed = pd.to_numeric(df["seed"], errors="coerce")
        if seed.isna().any() or (seed % 1 != 0).any():
            i = int(np.flatnonzero((seed.isna() | (seed % 1 != 0)).to_numpy())[0])
            raise AuditError(f"row {i + 1}, column seed: {df['seed'].iat[i]!r} is not an integer", path=rel)
        df["seed"] = seed.astype(np.int64)
        df["value"] = pd.to_numeric(df[metric], errors="coerce").astype(np.float64)
        df["_file"] = rel
        df["_row"] = np.arange(1, len(df) + 1)
        frames.append(df)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ROW_COLUMNS}
                            | {"seed": pd.Series(dtype=np.int64), "value": pd.Series(dtype=np.float64),
                               "_file": pd.Series(dtype=object), "_row": pd.Series(dtype=np.int64)})
    return pd.concat(frames, ignore_index=True)


def _columns(df: pd.DataFrame) -> dict:
    where = _Where(df)
    return {"stage": df["stage"].to_numpy(), "host": df["host"].to_numpy(), "seed": df["seed"].to_numpy(),
            "config_id": df["config_id"].to_numpy(), "status": df["status"].to_numpy(),
            "value": df["value"].to_numpy(), "where": where}


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


def read_json(pkg: Path, rel: str) -> dict:
    """A package JSON object; AuditError if missing or unreadable. The cyclic garbage collector
    is paused while parsing: a decision holds one object per run row, and collections
    triggered by allocation alone would make parsing quadratic-ish for nothing."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        doc = json.loads((pkg / rel).read_text("utf-8"))
    except FileNotFoundError as exc:
        raise AuditError("file is missing", path=rel) from exc
    except (OSError, ValueError) as exc:
        raise AuditError(f"not readable JSON: {exc}", path=rel) from exc
    finally:
        if gc_was:
            gc.enable()
    if not isinstance(doc, dict):
        raise AuditError("not a JSON object", path=rel)
    return doc


def package_protocol(package_dir: str | Path) -> Protocol:
    pkg = Path(package_dir)
    if not pkg.is_dir():
        raise AuditError("package directory not found", path=str(pkg),
                         hint="give the package directory with --package PATH")
    if not (pkg / "protocol.json").is_file():
        raise AuditError("not a package directory (no protocol.json)", path=str(pkg),
                         hint="give the directory that holds protocol.json with --package PATH")
    return load_protocol(pkg / "protocol.json")


def _gate(protocol: Protocol, gate: str):
    try:
        return protocol.gate(gate)
    except KeyError:
        names = ", ".join(g.gate for g in protocol.gates) or "(none)"
        raise AuditError(f"unknown gate {gate!r}", hint=f"the protocol's gates are: {names}") from None


def matrix_config_ids(package_dir: str | Path, protocol: Protocol) -> list[str]:
    pkg = Path(package_dir)
    try:
        text = (pkg / protocol.matrix).read_text("utf-8")
    except OSError as exc:
        raise AuditError(f"cannot read the candidate matrix: {exc}", path=protocol.matrix) from exc
    header, rows = read_csv_text(text, protocol.matrix)
    if "config_id" not in header:
        raise AuditError("matrix has no config_id column", path=protocol.matrix)
    return [r["config_id"] for r in rows]


def resolve_candidates(package_dir: str | Path, protocol: Protocol, rules: dict, *, read=None) -> list[str]:
    """The gate's candidates: the matrix's config_ids, the recorded promoted list of the
    gate named by ``promoted-by:``, or the explicit list. Raises AuditError if unreadable.
    `read(rel) -> dict` reads a package JSON file (default: `read_json`)."""
    cands = rules["inputs"]["candidates"]
    if cands == "matrix":
        return matrix_config_ids(package_dir, protocol)
    if isinstance(cands, str) and cands.startswith("promoted-by:"):
        g = _gate(protocol, cands.split(":", 1)[1])
        doc = (read or (lambda rel: read_json(Path(package_dir), rel)))(g.decision_path)
        if not isinstance(doc.get("promoted"), list):
            raise AuditError("decision has no promoted list", path=g.decision_path)
        return list(doc["promoted"])
    return list(cands)


def load_rules(package_dir: str | Path, protocol: Protocol, gate: str, *, known_configs=None) -> tuple[str, dict]:
    """(path, doc) of a gate's frozen rules; AuditError if missing, unreadable or invalid."""
    rel = _gate(protocol, gate).rules
    doc = read_json(Path(package_dir), rel)
    bad = validate_rules(doc, rel, known_configs=known_configs)
    if bad:
        raise AuditError(f"rules are not valid: {bad[0]}", path=rel, hint="a gate's rules must follow SPEC.md section 5")
    return rel, doc


def decide_gate(package_dir: str | Path, gate: str, decided_at: str) -> dict:
    """The full decision document (SPEC section 6) of `gate`, from the package's rules and
    rows, hashes included. Writes nothing. Raises AuditError when it cannot decide
    (unknown gate, missing or invalid rules or inputs, two rows of one candidate in a cell)."""
    pkg = Path(package_dir)
    protocol = package_protocol(pkg)
    rules_rel, rules = load_rules(pkg, protocol, gate)
    candidates = resolve_candidates(pkg, protocol, rules)
    paths = gate_inputs(pkg, rules)
    df = load_gate_rows(pkg, paths, rules["metric"]["column"])
    try:
        decision = decide_columns(rules, _columns(df), candidates)
    except DuplicateRowError as exc:
        raise AuditError(str(exc), path=paths[0] if len(paths) == 1 else None,
                         hint="each candidate has one row per (host, seed) cell; remove the extra row") from exc
    inputs = [{"path": p, "sha256": sha256_file(pkg / p)} for p in paths]
    return decision.to_json(rules_ref={"path": rules_rel, "sha256": sha256_file(pkg / rules_rel)},
                            inputs=inputs, decided_at=decided_at)


def write_decision(package_dir: str | Path, gate: str, decided_at: str, *, force: bool = False) -> tuple[Path, dict]:
    """Decide `gate` and write ``analysis/<gate>_decision.json``. Refuses (AuditError) to
    overwrite a recorded decision unless `force`."""
    pkg = Path(package_dir)
    protocol = package_protocol(pkg)
    out = pkg / _gate(protocol, gate).decision_path
    if out.exists() and not force:
        raise AuditError("a decision is already recorded; the recorded decision is evidence and is not overwritten",
                         path=str(out), hint=f"replay it with: auditkit replay-gate {gate} --package {pkg}; "
                                             "to overwrite it anyway pass --force")
    doc = decide_gate(pkg, gate, decided_at)
    atomic_write_bytes(out, canonical_json_bytes(doc))
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
        if r is not None and (isinstance(r, bool) or not isinstance(r, int)):
            out += _cell_finding(path, ["candidates", i, "cells", key, "rank"], "an integer or null", r)
    return out


def _cell_finding(path: str, loc: list, expected: str, found) -> list[Finding]:
    return [Finding(path, "schema-invalid", json_location(loc), expected, _show(found),
                    "the value at this location does not follow SPEC.md")]


# --------------------------------------------------------------------------- replay

@dataclass
class GateReplay:
    """One gate's replay: the recorded and replayed documents and every difference."""

    gate: str
    rules_path: str = ""
    rules: dict | None = None
    recorded: dict | None = None
    replayed: dict | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.findings


class _Session:
    """Caches what several gates of one replay share (protocol, rows, replayed decisions)."""

    def __init__(self, package_dir: str | Path):
        self.pkg = Path(package_dir)
        self.protocol = package_protocol(self.pkg)
        self.results: dict[str, GateReplay] = {}
        self.frames: dict[tuple[str, str], pd.DataFrame] = {}
        self.hashes: dict[str, str] = {}
        self.docs: dict[str, dict] = {}

    def json(self, rel: str) -> dict:
        if rel not in self.docs:
            self.docs[rel] = read_json(self.pkg, rel)
        return self.docs[rel]

    def sha(self, rel: str) -> str:
        if rel not in self.hashes:
            self.hashes[rel] = sha256_file(self.pkg / rel)
        return self.hashes[rel]

    def frame(self, rel: str, metric: str) -> pd.DataFrame:
        key = (rel, metric)
        if key not in self.frames:
            self.frames[key] = load_gate_rows(self.pkg, [rel], metric)
        return self.frames[key]

    def replay(self, gate: str, stack: tuple[str, ...] = ()) -> GateReplay:
        if gate not in self.results:
            if gate in stack:
                return GateReplay(gate, findings=[Finding(path="protocol.json", code="chain-cycle",
                                                          location="$.gates", found=" -> ".join(stack + (gate,)),
                                                          message="promoted-by gates form a cycle")])
            self.results[gate] = _replay_gate(self, gate, stack + (gate,))
        return self.results[gate]


def replay_gate(package_dir: str | Path, gate: str) -> GateReplay:
    """Replay one gate. Raises AuditError when it cannot run (no package, unreadable
    protocol, unknown gate); everything else is a finding."""
    s = _Session(package_dir)
    _gate(s.protocol, gate)
    with paused_gc():
        return s.replay(gate)


def replay_all(package_dir: str | Path) -> list[GateReplay]:
    """Replay every gate of the package's protocol, in protocol order."""
    s = _Session(package_dir)
    if not s.protocol.gates:
        raise AuditError("the protocol defines no gate", path="protocol.json",
                         hint="a package without gates has nothing to replay")
    with paused_gc():
        return [s.replay(g.gate) for g in s.protocol.gates]


def replay_report(replays: list[GateReplay], target: str) -> Report:
    """One Report of every finding of `replays`."""
    rep = Report(command="replay-gate", target=target)
    for r in replays:
        rep.extend(r.findings)
    rep.checked = {"gates": len(replays)}
    rep.info = {f"gate {r.gate}": ("identical" if r.identical else f"{len(r.findings)} difference(s)")
                for r in replays}
    return rep


def _replay_gate(s: _Session, gate: str, stack: tuple[str, ...]) -> GateReplay:
    g = s.protocol.gate(gate)
    out = GateReplay(gate, rules_path=g.rules)
    f = out.findings
    dec_rel = g.decision_path

    # rules
    try:
        rules = s.json(g.rules)
    except AuditError as exc:
        f.append(Finding(g.rules, "rules-unreadable", found=exc.message, message="the gate's frozen rules must be readable"))
        return out
    bad = validate_rules(rules, g.rules)
    if bad:
        f.extend(bad)
        return out
    out.rules = rules
    if rules["gate"] != gate:
        f.append(Finding(g.rules, "rules-wrong-gate", "$.gate", gate, rules["gate"], "the rules name another gate"))

    # recorded decision
    try:
        rec = s.json(dec_rel)
    except AuditError as exc:
        f.append(Finding(dec_rel, "decision-missing", found=exc.message,
                         message=f"gate {gate}'s recorded decision is absent or unreadable: nothing to replay against"))
        rec = None
    if rec is not None:
        schema_bad = validate_decision(rec, dec_rel, cells=False)  # cells: in diff_decisions
        if schema_bad:
            f.extend(schema_bad)
            rec = None
    out.recorded = rec

    # hashes and inputs named vs selected
    selected = gate_inputs(s.pkg, rules)
    present = [p for p in selected if (s.pkg / p).is_file()]
    for p in selected:
        if p not in present:
            f.append(Finding(p, "input-missing", expected="a run CSV the rules select", found="no such file",
                             message=f"gate {gate} selects this host x stage; restore the file"))
    if rec is not None:
        rr = rec["rules"]
        if rr["path"] != g.rules:
            f.append(Finding(dec_rel, "rules-path-mismatch", "$.rules.path", g.rules, rr["path"],
                             "the decision names other rules than the protocol's"))
        actual = s.sha(g.rules)
        if rr["sha256"] != actual:
            f.append(Finding(g.rules, "rules-hash-mismatch", "$.rules.sha256", rr["sha256"], actual,
                             "the rules changed after the decision was recorded"))
        named = {i["path"]: i["sha256"] for i in rec["inputs"]}
        for p in selected:
            if p not in named:
                f.append(Finding(dec_rel, "input-not-recorded", "$.inputs", p, "not named",
                                 "the decision left out a run CSV its rules select"))
        for i, (p, h) in enumerate((x["path"], x["sha256"]) for x in rec["inputs"]):
            if p not in selected:
                f.append(Finding(dec_rel, "input-extra", json_location(["inputs", i, "path"]), "only inputs the rules select",
                                 p, "the decision names a file its rules do not select"))
            elif (s.pkg / p).is_file() and s.sha(p) != h:
                f.append(Finding(p, "input-hash-mismatch", "", h, s.sha(p),
                                 f"the rows changed after gate {gate} was decided"))

    # rows
    metric = rules["metric"]["column"]
    try:
        frames = [s.frame(p, metric) for p in present]
    except AuditError as exc:
        f.append(Finding(exc.path or "", "input-unreadable", found=exc.message, message=exc.hint or ""))
        return out
    df = pd.concat(frames, ignore_index=True) if frames else load_gate_rows(s.pkg, [])
    ins = rules["inputs"]
    sel = df[df["stage"].isin(ins["stages"]) & df["host"].isin(ins["hosts"]) & df["seed"].isin(ins["seeds"])]
    if len(sel) == 0:
        f.append(Finding(g.rules, "gate-no-rows", "$.inputs", "rows for the gate's stages, hosts and seeds",
                         "none", "a gate with no data decides nothing"))
    f.extend(_frozen_before(rules, sel, g.rules))

    # candidates and the chain
    cands_spec = ins["candidates"]
    try:
        if isinstance(cands_spec, str) and cands_spec.startswith("promoted-by:"):
            parent = cands_spec.split(":", 1)[1]
            candidates = resolve_candidates(s.pkg, s.protocol, rules, read=s.json)
            f.extend(_chain(s, gate, parent, candidates, rec, stack, dec_rel))
        else:
            candidates = resolve_candidates(s.pkg, s.protocol, rules)
    except AuditError as exc:
        f.append(Finding(exc.path or g.rules, "candidates-unresolved", "$.inputs.candidates", "a resolvable list",
                         exc.message, exc.hint or ""))
        return out
    if not candidates:
        f.append(Finding(g.rules, "gate-no-candidates", "$.inputs.candidates", "at least one candidate", "none",
                         "a gate with no candidates decides nothing"))

    # recompute and diff
    try:
        decision = decide_columns(rules, _columns(sel), candidates)
    except DuplicateRowError as exc:
        first = exc.where[0].split(" row ")[0] if exc.where else g.rules
        f.append(Finding(first, "duplicate-run-row", "; ".join(exc.where), "one row per candidate and cell",
                         f"{exc.config_id} in {exc.cell}", "two rows claim one cell: find out which run is genuine"))
        return out
    replayed = decision.to_json(
        rules_ref={"path": g.rules, "sha256": s.sha(g.rules)},
        inputs=[{"path": p, "sha256": s.sha(p)} for p in present],
        decided_at=rec["decided_at"] if rec else "")
    out.replayed = replayed
    if rec is not None:
        f.extend(diff_decisions(rec, replayed, dec_rel))
    return out


def _frozen_before(rules: dict, sel: pd.DataFrame, rules_rel: str) -> list[Finding]:
    frozen = pd.to_datetime(rules["frozen_at"], utc=True, format="ISO8601")
    started = pd.to_datetime(sel["started_at"], utc=True, format="ISO8601", errors="coerce")
    out = []
    bad_ts = np.flatnonzero(started.isna().to_numpy())
    for i in bad_ts[:5]:
        out.append(Finding(sel["_file"].iat[i], "row-bad-timestamp", f"row {int(sel['_row'].iat[i])}, column started_at",
                           "an ISO-8601 UTC timestamp", repr(sel["started_at"].iat[i]),
                           "without a start time the freeze cannot be checked"))
    late = np.flatnonzero((started <= frozen).to_numpy())
    if len(late):
        i = int(late[np.argmin(started.to_numpy()[late])])
        out.append(Finding(rules_rel, "rules-frozen-after-data", "$.frozen_at",
                           f"frozen_at earlier than every input row's started_at",
                           f"{rules['frozen_at']} is not before {sel['started_at'].iat[i]} "
                           f"({sel['_file'].iat[i]} row {int(sel['_row'].iat[i])}; {len(late)} row(s) in all)",
                           "the rules were written after data they decide on existed"))
    return out


def _chain(s: _Session, gate: str, parent: str, candidates: list[str], rec: dict | None,
           stack: tuple[str, ...], dec_rel: str) -> list[Finding]:
    """The gate's candidates are exactly the parent's promoted list: recorded and replayed."""
    out = []
    if rec is not None:
        named = sorted(c["config_id"] for c in rec["candidates"])
        if named != sorted(candidates):
            out.append(Finding(dec_rel, "chain-broken", "$.candidates",
                               f"the promoted list of gate {parent}: {sorted(candidates)}", str(named),
                               f"gate {gate} must decide among exactly the candidates gate {parent} promoted"))
    parent_replay = s.replay(parent, stack)
    if parent_replay.replayed is not None and parent_replay.replayed["promoted"] != candidates:
        out.append(Finding(dec_rel, "chain-broken-on-replay", "$.candidates",
                           f"gate {parent}'s replayed promoted list {parent_replay.replayed['promoted']}",
                           f"its recorded list {candidates}",
                           f"gate {parent} does not replay to the candidates gate {gate} used"))
    return out


# --------------------------------------------------------------------------- diff

def _num_differs(a, b) -> bool:
    if a is None or b is None:
        return a is not b
    try:
        return not (math.isfinite(float(a)) and math.isfinite(float(b)) and abs(float(a) - float(b)) <= TOLERANCE)
    except (TypeError, ValueError):
        return True


def diff_decisions(recorded: dict, replayed: dict, path: str) -> list[Finding]:
    """Every field where `recorded` differs from `replayed`: exact for lists, ranks, eligibility,
    wins and outcomes; within 1e-9 for numbers. Location is a JSON path into the recorded file."""
    out = []

    def differ(loc, code, exp, got, msg="recompute it from the rules and raw rows: the recorded value is not what they give"):
        out.append(Finding(path, code, json_location(loc), _show(exp), _show(got), msg))

    if recorded.get("gate") != replayed["gate"]:
        differ(["gate"], "decision-differs", replayed["gate"], recorded.get("gate"))
    if recorded["cells"] != replayed["cells"]:
        differ(["cells"], "decision-differs", replayed["cells"], recorded["cells"])
    if recorded["promoted"] != replayed["promoted"]:
        differ(["promoted"], "promoted-differs", replayed["promoted"], recorded["promoted"],
               "the rules applied to the raw rows promote a different list")
    rec_c = {c["config_id"]: (i, c) for i, c in enumerate(recorded["candidates"])}
    rep_c = {c["config_id"]: c for c in replayed["candidates"]}
    order_rec = [c["config_id"] for c in recorded["candidates"]]
    order_rep = [c["config_id"] for c in replayed["candidates"]]
    if sorted(order_rec) != sorted(order_rep):
        differ(["candidates"], "candidates-differ", sorted(order_rep), sorted(order_rec))
    elif order_rec != order_rep:
        differ(["candidates"], "decision-differs", order_rep, order_rec)
    for cid, want in rep_c.items():
        if cid not in rec_c:
            continue
        i, got = rec_c[cid]
        for key in ("eligible", "rank", "wins"):
            if got.get(key) != want[key] or type(got.get(key)) is not type(want[key]):
                differ(["candidates", i, key], f"{key}-differs", want[key], got.get(key))
        for key in ("mean", "min", "max", "std"):
            if _num_differs(got.get(key), want[key]):
                differ(["candidates", i, key], "value-differs", want[key], got.get(key))
        gcells, wcells = got.get("cells", {}), want["cells"]
        if gcells == wcells:  # the common case, compared in C; floats round-trip through JSON exactly
            continue
        bad = cell_findings(path, i, gcells)
        if bad:
            out += bad
            continue
        if set(gcells) != set(wcells):
            differ(["candidates", i, "cells"], "decision-differs", sorted(wcells), sorted(gcells))
        for ck, wc in wcells.items():
            gc = gcells.get(ck)
            if gc is None:
                continue
            if _num_differs(gc.get("val_bpb"), wc["val_bpb"]):
                differ(["candidates", i, "cells", ck, "val_bpb"], "value-differs", wc["val_bpb"], gc.get("val_bpb"))
            if gc.get("rank") != wc["rank"]:
                differ(["candidates", i, "cells", ck, "rank"], "rank-differs", wc["rank"], gc.get("rank"))
    rchecks, wchecks = recorded["checks"], replayed["checks"]
    if len(rchecks) != len(wchecks):
        differ(["checks"], "checks-differ", f"{len(wchecks)} check(s)", f"{len(rchecks)} check(s)")
    for i, (got, want) in enumerate(zip(rchecks, wchecks)):
        for key in ("kind", "candidate", "reference"):
            if got.get(key) != want.get(key):
                differ(["checks", i, key], "checks-differ", want.get(key), got.get(key))
        for key in ("value", "threshold"):
            if _num_differs(got.get(key), want.get(key)):
                differ(["checks", i, key], "check-value-differs", want.get(key), got.get(key))
        if got.get("passed") is not want["passed"]:
            differ(["checks", i, "passed"], "check-outcome-differs", want["passed"], got.get("passed"))
    return out


def _show(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


# --------------------------------------------------------------------------- rendering

def render_gate(r: GateReplay) -> str:
    """Text for one replayed gate: candidates x cells, checks, verdict."""
    from tabulate import tabulate

    lines = [f"== gate {r.gate} =="]
    doc = r.replayed or r.recorded
    if doc is not None:
        keys = [f"{h}/{s}" for h, s in doc["cells"]]
        promoted = set(doc["promoted"])
        rows = []
        for c in doc["candidates"]:
            row = [("*" if c["config_id"] in promoted else "") + c["config_id"], c["rank"] if c["rank"] else "-"]
            for k in keys:
                cell = c["cells"].get(k, {})
                v = cell.get("val_bpb")
                row.append("-" if v is None else f"{v:.6f} ({cell.get('rank') or cell.get('status', '-')})")
            row.append("-" if c["mean"] is None else f"{c['mean']:.6f}")
            rows.append(row)
        lines.append(tabulate(rows, headers=["candidate", "rank", *keys, "mean"], tablefmt="simple",
                              disable_numparse=True))
        lines.append(f"promoted (*): {', '.join(doc['promoted']) or '(none)'}")
        for ch in doc["checks"]:
            ref = f" vs {ch['reference']}" if ch.get("reference") else ""
            val = "-" if ch.get("value") is None else (f"{ch['value']:.9f}" if ch["kind"] != "ranks_first_in_all_cells"
                                                       else f"{int(ch['value'])}/{len(keys)} cells")
            thr = "" if ch.get("threshold") is None else f" (threshold {ch['threshold']})"
            lines.append(f"check {ch['kind']} {ch['candidate']}{ref}: {val}{thr} -> {'pass' if ch['passed'] else 'FAIL'}")
    if r.identical:
        lines.append(f"verdict: identical — gate {r.gate} replays to its recorded decision")
    else:
        lines.append(f"verdict: DIFFERS — {len(r.findings)} difference(s):")
        lines += [f"  {x}" for x in r.findings]
    return "\n".join(lines)

"""Derived tables (SPEC section 7): deterministic generators, `table_manifest.json`, `--check`.

Every table is computed from the package's raw rows, matrix and recorded
decisions, and written twice, as CSV and as JSON (`analysis/<id>.csv|.json`),
byte-stable: rows sorted, floats in a fixed decimal format, `\\n` endings,
sorted JSON keys.  Kinds (`TableKind`):

- `budget_counterfactual`: executed training GPU-hours per stage (recorded
  `training_seconds`) and in total; per gate, the cost of continuing all of
  its candidates through the final stage (candidates x final cells x final
  budget); the executed final branch;
- `promotion_survival`: per matrix configuration, the furthest stage reached,
  its overall rank at each gate and its outcome;
- `threshold_sensitivity`: each thresholded check over a grid of thresholds
  around the frozen one, and the threshold where its outcome flips;
- `host_comparison`: per stage, each candidate's mean and rank on each host
  (`host_comparison`), and per host pair Spearman and Kendall correlation of
  those ranks and the top-k overlap (`host_correlation`);
- `stage_summary`: per stage and candidate, n, mean, std, min, max of val_bpb;
- `smoke_summary`: per smoke-stage run, status, steps, val_bpb;
- `robustness`: per gate, resampling over host-seed cells through the engine
  (`auditkit.report.robustness`): each candidate's probability of promotion and rank
  interval, each check's probability of flipping, the margin at the cut in units of
  the noise, the promoted list under other `top_k`; host correlations with intervals.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.errors import AuditError
from auditkit.derived.output import Written, check_report, output_dir, write_outputs
from auditkit.package.canonical import canonical_json_bytes
from auditkit.errors import PackageDefect, defect
from auditkit.package.store import PackageStore, decode_utf8, open_package
from auditkit.findings import Finding, Report
from auditkit.package.hashing import sha256_bytes
from auditkit.package.protocol import Protocol, Stage, load_package_protocol
from auditkit.package.rows import read_csv_text, run_csv_path
from auditkit.gates.rules import CheckKind, threshold_passes
from auditkit.gates.documents import read_json
from auditkit.package.columns import MAX_RUN_CSV_BYTES
from auditkit.package.schemas import validate_document

TABLE_MANIFEST = "table_manifest.json"
TABLE_DIR = "analysis"
GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)  # multiples of the frozen threshold
TABLE_COLUMNS = ("run_id", "host", "stage", "seed", "config_id", "status", "val_bpb", "training_seconds",
                 "num_steps")


class TableKind(str, Enum):
    BUDGET_COUNTERFACTUAL = "budget_counterfactual"
    PROMOTION_SURVIVAL = "promotion_survival"
    THRESHOLD_SENSITIVITY = "threshold_sensitivity"
    HOST_COMPARISON = "host_comparison"
    STAGE_SUMMARY = "stage_summary"
    SMOKE_SUMMARY = "smoke_summary"
    ROBUSTNESS = "robustness"


# The version of each generator this auditkit runs.  A generator's version goes up whenever the
# bytes it writes for the same inputs change (a new column, another number format); the version
# that wrote a table is recorded with it in table_manifest.json, so `--check` compares a table with
# what *that* version gives, and a package keeps checking after auditkit grows.  `_AS_OF` turns the
# current generator's table into an older version's (every older version is a projection of the
# current one).  A manifest without `generators` was written by auditkit's first table generators
# (SPEC v1): every kind but `robustness`, each at version 1.
GENERATOR_VERSIONS = {
    TableKind.BUDGET_COUNTERFACTUAL.value: 1,
    TableKind.PROMOTION_SURVIVAL.value: 2,    # 2: the `reason` column
    TableKind.THRESHOLD_SENSITIVITY.value: 1,
    TableKind.HOST_COMPARISON.value: 1,
    TableKind.STAGE_SUMMARY.value: 1,
    TableKind.SMOKE_SUMMARY.value: 1,
    TableKind.ROBUSTNESS.value: 2,            # a kind the first generators did not have; 2: the statistics corrected
}
FIRST_GENERATORS = {k: 1 for k in GENERATOR_VERSIONS if k != TableKind.ROBUSTNESS.value}


def _drop_columns(table: "Table", names: tuple[str, ...]) -> "Table":
    keep = [j for j, c in enumerate(table.columns) if c not in names]
    return Table(table.id, table.kind, tuple(table.columns[j] for j in keep),
                 tuple(tuple(r[j] for j in keep) for r in table.rows), table.inputs, table.decimals)


_AS_OF = {
    (TableKind.PROMOTION_SURVIVAL.value, 1): lambda t: _drop_columns(t, ("reason",)),
}

# Versions auditkit retired on purpose: their numbers were wrong, so they are not rerun.  A package
# whose tables one of them made keeps checking everything else; these tables are reported as not
# checked (information), with the reason, never as matching.
RETIRED = {
    (TableKind.ROBUSTNESS.value, 1): "robustness generator 1 drew evaluation noise independently for each candidate "
                                     "(all are scored on the same tokens) and resampled cells without stratifying by "
                                     "host; generator 2 corrects both (docs/STATISTICS.md) and version 1 is not rerun",
}


def known_versions(kind: str, current: dict, as_of: dict) -> list[int]:
    """The versions of generator `kind` this auditkit can rerun, newest first."""
    if kind not in current:
        return []
    return [current[kind]] + sorted((v for k, v in as_of if k == kind), reverse=True)


def pick_version(entry: dict, kind: str, recorded: dict | None, candidates: list[int], matches) -> int:
    """The generator version a manifest entry is checked against: the one it records, else the
    manifest's `generators[kind]`; a manifest that records neither (auditkit before generator
    versions) is checked against the newest version `matches(version)` accepts (the one whose
    output is the file in the package), else the newest."""
    if "generator" in entry:
        return entry["generator"]
    if recorded is not None and kind in recorded:
        return recorded[kind]
    for v in candidates:
        if matches(v):
            return v
    return candidates[0] if candidates else 0


def table_as_of(table: "Table", version: int) -> "Table | None":
    """`table` as version `version` of its generator writes it; None for a version this auditkit
    does not know (newer than its own, or never made)."""
    current = GENERATOR_VERSIONS.get(table.kind)
    if current is None or not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return None
    if version == current:
        return table
    step = _AS_OF.get((table.kind, version))
    return step(table) if step else None


_FORMULA_START = frozenset("=+-@\t\r")
_SPEC_ID = re.compile(r"[A-Za-z0-9._:-]+")     # the alphabet of SPEC's ids (config_id, host, stage, run_id)


@dataclass(frozen=True)
class Table:
    """One derived table: typed rows (str, int, float, bool or None), written byte-stably."""

    id: str
    kind: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    inputs: tuple[str, ...]
    decimals: dict = field(default_factory=dict)  # column -> decimals (default 6)

    def _formatted(self) -> tuple[list[list[str]], list[list]]:
        """(CSV text, JSON value) of every cell, column by column."""
        n = len(self.columns)
        csv_rows: list[list[str]] = [[""] * n for _ in self.rows]
        json_rows: list[list] = [[None] * n for _ in self.rows]
        for j, col in enumerate(self.columns):
            d = self.decimals.get(col, 6)
            zero, negzero = f"{0.0:.{d}f}", f"{-0.0:.{d}f}"
            for i, r in enumerate(self.rows):
                v = r[j]
                t = type(v)
                if v is None:
                    continue
                if t is float:
                    if v != v or v in (math.inf, -math.inf):
                        raise ValueError(f"table {self.id}, column {col}: non-finite value {v!r}")
                    text = f"{v:.{d}f}"
                    if text == negzero:
                        text = zero
                    csv_rows[i][j], json_rows[i][j] = text, float(text)
                elif t is bool:
                    csv_rows[i][j], json_rows[i][j] = ("true" if v else "false"), v
                elif t is int or isinstance(v, (int, np.integer)):
                    csv_rows[i][j], json_rows[i][j] = str(int(v)), int(v)
                else:
                    csv_rows[i][j] = json_rows[i][j] = str(v)
        return csv_rows, json_rows

    def csv_text(self, formatted=None) -> str:
        csv_rows = (formatted or self._formatted())[0]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        w.writerows(csv_rows)
        return buf.getvalue()

    def json_text(self, formatted=None) -> str:
        """Sorted keys, one row object a line (compact separators keep the C encoder)."""
        json_rows = (formatted or self._formatted())[1]
        head = {"columns": list(self.columns), "id": self.id, "inputs": list(self.inputs), "kind": self.kind}
        dumps = json.JSONEncoder(sort_keys=True, separators=(", ", ": ")).encode
        cols = self.columns
        rows = ",\n".join(dumps(dict(zip(cols, r))) for r in json_rows)
        return dumps(head)[:-1] + (', "rows": [\n' + rows + "\n]}\n" if rows else ', "rows": []}\n')

    def formula_cell(self) -> tuple[int, str, str] | None:
        """(row, column, text) of the first text cell a spreadsheet would run as a formula (it
        starts with =, +, -, @, a tab or a carriage return and is not an id of SPEC's alphabet),
        or None.  Such text comes from the package's data (verify refuses such ids)."""
        for j, col in enumerate(self.columns):
            for i, r in enumerate(self.rows):
                v = r[j]
                if type(v) is str and v[:1] in _FORMULA_START and not _SPEC_ID.fullmatch(v):
                    return i + 1, col, v
        return None

    def files(self) -> dict[str, str]:
        """Package-relative path -> text, for both forms."""
        f = self._formatted()
        return {f"{TABLE_DIR}/{self.id}.csv": self.csv_text(f), f"{TABLE_DIR}/{self.id}.json": self.json_text(f)}


# --------------------------------------------------------------------------- context

class _Package:
    """What the generators read: protocol, matrix, all run rows, recorded decisions — every
    byte through the package's store (no link followed, strict UTF-8 and JSON; a defective
    file raises PackageDefect naming it)."""

    def __init__(self, package_dir: str | Path | PackageStore):
        self.store = package_dir if isinstance(package_dir, PackageStore) else open_package(package_dir)
        self.pkg = self.store.root
        self.protocol = load_package_protocol(self.store)
        self.stage_order = {s.stage: i for i, s in enumerate(self.protocol.stages)}
        _, self.matrix = self.store.read_csv(self.protocol.matrix)
        self.run_csvs = sorted({run_csv_path(h, s.stage) for s in self.protocol.stages for h in s.hosts
                                if self.store.kind(run_csv_path(h, s.stage)) is not None})
        frames = [self._run_rows(rel) for rel in self.run_csvs]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in TABLE_COLUMNS}, dtype=str)
        df["seed"] = pd.to_numeric(df["seed"], errors="coerce").fillna(0).astype(np.int64)
        df["val"] = pd.to_numeric(df["val_bpb"], errors="coerce").astype(np.float64)
        df["train_s"] = pd.to_numeric(df["training_seconds"], errors="coerce").fillna(0.0).astype(np.float64)
        df["steps"] = pd.to_numeric(df["num_steps"], errors="coerce").fillna(0).astype(np.int64)
        df["good"] = (df["status"] == "ok") & np.isfinite(df["val"])
        self.rows = df
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

    def _run_rows(self, rel: str) -> pd.DataFrame:
        data = self.store.read_bytes(rel, MAX_RUN_CSV_BYTES)
        if not data.isascii():
            decode_utf8(data, rel)
        try:
            df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, usecols=lambda c: c in TABLE_COLUMNS)
        except (ValueError, pd.errors.ParserError) as exc:
            raise defect(rel, "csv-unreadable", f"not a readable run CSV: {exc}") from None
        missing = [c for c in TABLE_COLUMNS if c not in df.columns]
        if missing:
            raise defect(rel, "run-csv-missing-column", f"the run CSV lacks column(s) {missing}", location="header",
                         expected=", ".join(TABLE_COLUMNS), found=", ".join(df.columns),
                         hint="SPEC.md section 4 lists the required columns")
        return df

    def _json(self, rel: str, schema: str) -> dict:
        """A decision or rules document, strict and valid against its schema (else PackageDefect)."""
        doc = read_json(self.store, rel)
        bad = validate_document(doc, schema, rel) if schema == "rules" else _decision_shape(doc, rel)
        if bad:
            raise PackageDefect(bad[0])
        return doc

    def gate_of_stage(self, stage: str) -> str | None:
        for g in self.protocol.gates:
            r = self.rules.get(g.gate)
            if r and stage in r["inputs"]["stages"]:
                return g.gate
        return None


# --------------------------------------------------------------------------- accounting

def stage_cells(stage: Stage) -> int:
    return len(stage.hosts) * len(stage.seeds)


def budget_seconds(stage: Stage) -> float | None:
    return float(stage.budget.value) if stage.budget.kind == "seconds" else None


def final_branch(protocol: Protocol) -> list[Stage]:
    """The final stage and the stages just before it that share its budget and candidates
    (the paper runs its 12 h branch as one stage per seed)."""
    last = protocol.stages[-1]
    out = []
    for s in reversed(protocol.stages):
        if s.budget != last.budget or s.candidates != last.candidates:
            break
        out.insert(0, s)
    return out


def _branch(protocol: Protocol) -> tuple[str, int, float | None]:
    """(label, cells, budget seconds) of the final branch."""
    stages = final_branch(protocol)
    return "+".join(s.stage for s in stages), sum(stage_cells(s) for s in stages), budget_seconds(stages[-1])


def _hours(n: int, cells: int, seconds: float | None) -> float | None:
    return None if seconds is None else n * cells * seconds / 3600.0


def protocol_counterfactual(protocol: Protocol, rules: dict[str, dict], matrix_size: int) -> list[dict]:
    """Planned GPU-hours of a protocol, from its definition alone (no data).

    A stage's candidate count is the matrix size (``matrix``), the named gate's
    ``top_k`` (``promoted-by:``) or the explicit list's length. Rows (dicts):
    ``item`` one of ``stage`` (planned hours of each stage), ``total``,
    ``final_branch`` (the final stage as planned) and ``gate_counterfactual``
    (each gate's candidates continued through the final stage instead).
    """
    def count(spec, gate_name=None) -> int:
        if spec == "matrix":
            return matrix_size
        if isinstance(spec, str) and spec.startswith("promoted-by:"):
            g = spec.split(":", 1)[1]
            if g not in rules:
                raise AuditError(f"no rules for gate {g!r}", hint="every gate needs [gates.rules]")
            return int(rules[g]["promote"]["top_k"])
        return len(spec)

    label, cells, seconds = _branch(protocol)
    final = protocol.stages[-1]
    out = []
    total = 0.0
    for s in protocol.stages:
        n = count(s.candidates)
        h = _hours(n, stage_cells(s), budget_seconds(s))
        total += h or 0.0
        out.append({"item": "stage", "stage": s.stage, "gate": None, "candidates": n, "cells": stage_cells(s),
                    "budget_seconds": budget_seconds(s), "gpu_hours": h})
    out.append({"item": "total", "stage": None, "gate": None, "candidates": None, "cells": None,
                "budget_seconds": None, "gpu_hours": total})
    n = count(final.candidates)
    out.append({"item": "final_branch", "stage": label, "gate": None, "candidates": n, "cells": cells,
                "budget_seconds": seconds, "gpu_hours": _hours(n, cells, seconds)})
    for g in protocol.gates:
        n = count(rules[g.gate]["inputs"]["candidates"])
        out.append({"item": "gate_counterfactual", "stage": label, "gate": g.gate, "candidates": n,
                    "cells": cells, "budget_seconds": seconds, "gpu_hours": _hours(n, cells, seconds)})
    return out


def manifest_counterfactual(manifest_path: str | Path) -> list[dict]:
    """`protocol_counterfactual` of a hand-written manifest TOML (its matrix counted)."""
    from auditkit.study.spec import load_manifest

    m = load_manifest(manifest_path)
    try:
        _, rows = read_csv_text(m.matrix_file.read_text("utf-8"), str(m.matrix_file))
    except OSError as exc:
        raise AuditError(f"cannot read the matrix: {exc}", path=str(m.matrix_file)) from exc
    return protocol_counterfactual(m.protocol, m.rules, len(rows))


BUDGET_COLUMNS = ("item", "stage", "gate", "candidates", "cells", "budget_seconds", "gpu_hours")


def _budget(p: _Package) -> list[Table]:
    df = p.rows
    rows = []
    total = 0.0
    for s in p.protocol.stages:
        sub = df[df["stage"] == s.stage]
        hours = math.fsum(sub["train_s"].tolist()) / 3600.0
        total += hours
        rows.append(("stage", s.stage, None, int(sub["config_id"].nunique()),
                     int(len(sub[["host", "seed"]].drop_duplicates())), budget_seconds(s), hours))
    rows.append(("total", None, None, None, None, None, total))
    label, cells, seconds = _branch(p.protocol)
    fsub = df[df["stage"].isin([s.stage for s in final_branch(p.protocol)])]
    n = int(fsub["config_id"].nunique())
    rows.append(("final_branch", label, None, n, cells, seconds, _hours(n, cells, seconds)))
    for g in p.protocol.gates:
        d = p.decisions.get(g.gate)
        if d is None:
            continue
        n = len(d["candidates"])
        rows.append(("gate_counterfactual", label, g.gate, n, cells, seconds, _hours(n, cells, seconds)))
    return [Table("budget_counterfactual", TableKind.BUDGET_COUNTERFACTUAL.value, BUDGET_COLUMNS, tuple(rows),
                  tuple(p.run_csvs + p.decision_paths + ["protocol.json"]), {"gpu_hours": 6, "budget_seconds": 1})]


# --------------------------------------------------------------------------- the other generators

def _promotion(p: _Package) -> list[Table]:
    gates = [g.gate for g in p.protocol.gates if g.gate in p.decisions]
    furthest = {}
    seen = p.rows[["stage", "config_id"]].drop_duplicates()
    for stage, cid in zip(seen["stage"], seen["config_id"]):
        i = p.stage_order.get(stage, -1)
        if i > furthest.get(cid, (-1, ""))[0]:
            furthest[cid] = (i, stage)
    by_gate = {g: {c["config_id"]: c for c in p.decisions[g]["candidates"]} for g in gates}
    why = _reasons_by_gate(p, gates)
    rows = []
    for m in sorted(p.matrix, key=lambda r: r["config_id"]):
        cid = m["config_id"]
        ranks, outcome, reason = [], None, None
        for g in gates:
            c = by_gate[g].get(cid)
            ranks.append(None if c is None else c.get("rank"))
            if outcome is None and c is not None:
                if not c["eligible"]:
                    outcome, reason = f"ineligible at {g}", why[g].get(cid)
                elif cid not in p.decisions[g]["promoted"]:
                    outcome, reason = f"eliminated at {g}", why[g].get(cid)
        entered = [g for g in gates if cid in by_gate[g]]
        if outcome is None:
            outcome = f"promoted by {entered[-1]}" if entered else "not a candidate"
            reason = why[entered[-1]].get(cid) if entered else None
        rows.append((cid, m.get("role", ""), furthest.get(cid, (0, None))[1], *ranks, outcome, reason))
    return [Table("promotion_survival", TableKind.PROMOTION_SURVIVAL.value,
                  ("config_id", "role", "furthest_stage", *[f"rank_{g}" for g in gates], "outcome", "reason"),
                  tuple(rows), tuple([p.protocol.matrix] + p.run_csvs + p.decision_paths))]


def _reasons_by_gate(p: _Package, gates: list[str]) -> dict[str, dict[str, str]]:
    """Per gate, why each candidate was promoted, eliminated or ineligible (`auditkit.gates.reasons`),
    from the recorded decision and the gate's rules; {} for a gate without readable rules."""
    from auditkit.gates.reasons import reasons_of_document

    out = {}
    for g in gates:
        rules = p.rules.get(g)
        ok = isinstance(rules, dict) and isinstance(rules.get("promote"), dict) and "top_k" in rules["promote"]
        out[g] = reasons_of_document(p.decisions[g], rules) if ok else {}
    return out


def _robustness(p: _Package) -> list[Table]:
    from auditkit.report.robustness import robustness_tables

    return robustness_tables(p)


def flip_threshold(kind: str, value: float | None) -> float | None:
    """The smallest threshold at which the check passes (None: never, or at every threshold >= 0)."""
    if value is None:
        return None
    if kind == CheckKind.NEAR_EQUIVALENCE:
        return abs(value)
    return value if value >= 0 else None


def _sensitivity(p: _Package) -> list[Table]:
    rows = []
    for g in p.protocol.gates:
        d = p.decisions.get(g.gate)
        if d is None:
            continue
        for i, ch in enumerate(d["checks"]):
            if ch["kind"] not in (CheckKind.NEAR_EQUIVALENCE, CheckKind.MEAN_GAP) or ch.get("threshold") is None:
                continue
            frozen = float(ch["threshold"])
            flip = flip_threshold(ch["kind"], ch.get("value"))
            grid = sorted({round(frozen * k, 9) for k in GRID} | ({round(flip, 9)} if flip is not None else set()))
            for t in grid:
                rows.append((g.gate, i, ch["kind"], ch["candidate"], ch.get("reference"), ch.get("value"), t,
                             t == round(frozen, 9), threshold_passes(ch["kind"], ch.get("value"), t), flip))
    return [Table("threshold_sensitivity", TableKind.THRESHOLD_SENSITIVITY.value,
                  ("gate", "check", "kind", "candidate", "reference", "value", "threshold", "frozen", "passed",
                   "flip_at"), tuple(rows), tuple(p.decision_paths),
                  {"value": 9, "threshold": 9, "flip_at": 9})]


def _ranks(means: dict[str, float]) -> dict[str, int]:
    """Rank 1 = lowest mean, ties by config_id."""
    return {c: i + 1 for i, c in enumerate(sorted(means, key=lambda c: (means[c], c)))}


def _group_fsum(keys: pd.DataFrame, values: np.ndarray) -> dict[tuple, tuple[int, float]]:
    """(count, exact sum) of `values` per distinct row of `keys` (math.fsum: order-independent)."""
    if len(keys) == 0:
        return {}
    codes = keys.groupby(list(keys.columns), sort=True).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    bounds = np.flatnonzero(np.diff(sc)) + 1
    starts = np.concatenate([[0], bounds])
    firsts = keys.iloc[order[starts]]
    out = {}
    for key, chunk in zip(firsts.itertuples(index=False, name=None), np.split(values[order], bounds)):
        xs = chunk.tolist()
        out[key] = (len(xs), math.fsum(xs))
    return out


def spearman(a: list[int], b: list[int]) -> float | None:
    """Spearman correlation of two rankings without ties (1..n); None for n < 2."""
    n = len(a)
    if n < 2:
        return None
    ra, rb = _rerank(a), _rerank(b)
    d2 = sum((x - y) ** 2 for x, y in zip(ra, rb))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def kendall(a: list[int], b: list[int]) -> float | None:
    """Kendall tau of two rankings without ties (O(n log n) inversion count); None for n < 2."""
    n = len(a)
    if n < 2:
        return None
    seq = [y for _, y in sorted(zip(_rerank(a), _rerank(b)))]
    inv = _inversions(seq)
    pairs = n * (n - 1) // 2
    return (pairs - 2 * inv) / pairs


def _rerank(xs: list) -> list[int]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0] * len(xs)
    for pos, i in enumerate(order):
        r[i] = pos + 1
    return r


def _inversions(seq: list[int]) -> int:
    if len(seq) < 2:
        return 0
    mid = len(seq) // 2
    left, right = seq[:mid], seq[mid:]
    inv = _inversions(left) + _inversions(right)
    left.sort()
    right.sort()
    j = 0
    for x in left:  # count pairs (x in left, y in right) with x > y
        while j < len(right) and right[j] < x:
            j += 1
        inv += j
    return inv


def _hosts(p: _Package) -> list[Table]:
    df = p.rows
    rank_rows, corr_rows = [], []
    for s in p.protocol.stages:
        sub = df[df["stage"] == s.stage]
        hosts = sorted(sub["host"].unique().tolist())
        if len(hosts) < 2:
            continue
        runs = sub.groupby(["host", "config_id"], sort=True)["good"].agg(["size", "all"])
        good = sub[sub["good"]]
        sums = _group_fsum(good[["host", "config_id"]], good["val"].to_numpy())
        means: dict[str, dict[str, float]] = {h: {} for h in hosts}
        for (h, cid), n, all_good in zip(runs.index, runs["size"].tolist(), runs["all"].tolist()):
            if all_good:
                cnt, total = sums[(h, cid)]
                means[h][cid] = total / cnt
        ranks = {h: _ranks(means[h]) for h in hosts}
        for (h, cid), n in zip(runs.index, runs["size"].tolist()):
            rank_rows.append((s.stage, cid, h, int(n), means[h].get(cid), ranks[h].get(cid)))
        gate = p.gate_of_stage(s.stage)
        k_rule = int(p.rules[gate]["promote"]["top_k"]) if gate else 3
        for i, a in enumerate(hosts):
            for b in hosts[i + 1:]:
                common = sorted(set(ranks[a]) & set(ranks[b]))
                ra = [ranks[a][c] for c in common]
                rb = [ranks[b][c] for c in common]
                k = min(k_rule, len(common))
                top_a = set(sorted(common, key=ranks[a].__getitem__)[:k])
                top_b = set(sorted(common, key=ranks[b].__getitem__)[:k])
                corr_rows.append((s.stage, a, b, len(common), spearman(ra, rb), kendall(ra, rb), k,
                                  len(top_a & top_b)))
    rank_rows.sort(key=lambda r: (p.stage_order[r[0]], r[1], r[2]))
    inputs = tuple(p.run_csvs + [p.protocol.gate(g).rules for g in p.rules])
    return [Table("host_comparison", TableKind.HOST_COMPARISON.value,
                  ("stage", "config_id", "host", "n", "mean_val_bpb", "rank"), tuple(rank_rows), inputs),
            Table("host_correlation", TableKind.HOST_COMPARISON.value,
                  ("stage", "host_a", "host_b", "n", "spearman", "kendall", "top_k", "top_k_overlap"),
                  tuple(corr_rows), inputs)]


def _stage_summary(p: _Package) -> list[Table]:
    df = p.rows
    runs = df.groupby(["stage", "config_id"], sort=True).size()
    good = df[df["good"]]
    g = good.groupby(["stage", "config_id"], sort=True)["val"]
    lo, hi = g.min().to_dict(), g.max().to_dict()
    sums = _group_fsum(good[["stage", "config_id"]], good["val"].to_numpy())
    means = {k: total / n for k, (n, total) in sums.items()}
    dev = good["val"].to_numpy() - np.array([means[k] for k in zip(good["stage"], good["config_id"])]) \
        if len(good) else np.zeros(0)
    sq = _group_fsum(good[["stage", "config_id"]], dev * dev)
    rows = []
    for key, n_runs in zip(runs.index, runs.tolist()):
        n = sums.get(key, (0, 0.0))[0]
        mean = means.get(key)
        std = math.sqrt(sq[key][1] / (n - 1)) if n > 1 else None
        rows.append((key[0], key[1], int(n_runs), n, mean, std, lo.get(key), hi.get(key)))
    rows.sort(key=lambda r: (p.stage_order.get(r[0], len(p.stage_order)), r[0], r[1]))
    return [Table("stage_summary", TableKind.STAGE_SUMMARY.value,
                  ("stage", "config_id", "runs", "n_ok", "mean_val_bpb", "std_val_bpb", "min_val_bpb", "max_val_bpb"),
                  tuple(rows), tuple(p.run_csvs))]


def smoke_stages(p: _Package) -> list[str]:
    """Stages named smoke (or stage0); else the first stage when no gate reads it."""
    names = [s.stage for s in p.protocol.stages if "smoke" in s.stage or s.stage == "stage0"]
    if not names and p.protocol.stages and p.gate_of_stage(p.protocol.stages[0].stage) is None \
            and len(p.protocol.stages) > 1:
        names = [p.protocol.stages[0].stage]
    return names


def _smoke(p: _Package) -> list[Table]:
    stages = smoke_stages(p)
    sub = p.rows[p.rows["stage"].isin(stages)]
    rows = [(st, h, c, int(sd), r, status, int(steps), None if math.isnan(v) else v, ts)
            for st, h, c, sd, r, status, steps, v, ts in zip(sub["stage"], sub["host"], sub["config_id"], sub["seed"],
                                                            sub["run_id"], sub["status"], sub["steps"], sub["val"],
                                                            sub["train_s"])]
    rows.sort(key=lambda r: (p.stage_order[r[0]], r[1], r[2], r[3], r[4]))
    inputs = tuple(x for x in p.run_csvs if any(x.endswith(f"_{s}_summary.csv") for s in stages))
    return [Table("smoke_summary", TableKind.SMOKE_SUMMARY.value,
                  ("stage", "host", "config_id", "seed", "run_id", "status", "num_steps", "val_bpb",
                   "training_seconds"), tuple(rows), inputs, {"training_seconds": 3})]


GENERATORS = {
    TableKind.BUDGET_COUNTERFACTUAL: _budget,
    TableKind.PROMOTION_SURVIVAL: _promotion,
    TableKind.THRESHOLD_SENSITIVITY: _sensitivity,
    TableKind.HOST_COMPARISON: _hosts,
    TableKind.STAGE_SUMMARY: _stage_summary,
    TableKind.SMOKE_SUMMARY: _smoke,
    TableKind.ROBUSTNESS: _robustness,
}


def _decision_shape(doc: dict, rel: str) -> list[Finding]:
    """Schema findings for a decision, its per-cell objects checked directly (see replay)."""
    from auditkit.gates.documents import validate_decision

    return validate_decision(doc, rel)


def build_tables(package_dir: str | Path | PackageStore) -> list[Table]:
    """Every table of the package, in memory, in kind order (PackageDefect for a defective file)."""
    p = _Package(package_dir)
    out = []
    for kind in TableKind:
        out += GENERATORS[kind](p)
    return out


def _manifest(tables: list[Table], versions: dict | None = None) -> tuple[dict, dict[str, str]]:
    """(table_manifest.json document, {path: text}). `versions` ({kind: version}) records each
    table's generator version (the current ones by default); None for an unversioned manifest
    (the form auditkit wrote before it recorded versions), only to reproduce such a package."""
    files, entries = {}, []
    for t in tables:
        for path, text in t.files().items():
            files[path] = text
            e = {"id": path.rsplit("/", 1)[1], "path": path, "kind": t.kind,
                 "inputs": sorted(set(t.inputs)), "sha256": sha256_bytes(text.encode("utf-8"))}
            if versions is not None:
                e["generator"] = versions[t.kind]
            entries.append(e)
    doc = {"schema": "auditkit/tables/v1", "tables": entries}
    if versions is not None:
        doc["generators"] = dict(versions)
    return doc, files


def valid_manifest(store: PackageStore, rel: str, schema: str) -> dict | None:
    """The package's own manifest `rel` when it is a readable file valid against `schema`, else None
    (its defects are the --check's findings, not the regenerator's business)."""
    if store.kind(rel) != "file":
        return None
    try:
        doc = read_json(store, rel)
    except PackageDefect:
        return None
    return None if validate_document(doc, schema, rel) else doc


def _recorded_versions(store: PackageStore, tables: list[Table]) -> tuple[dict, bool] | None:
    """({kind: version}, versioned) of the package's own table_manifest.json — the generators
    that made the tables it lists — or None when it has none (or none that can be read)."""
    recorded = valid_manifest(store, TABLE_MANIFEST, "table-manifest")
    if recorded is None:
        return None
    gens = recorded.get("generators")
    by_path = {f"{TABLE_DIR}/{t.id}.{ext}": t for t in tables for ext in ("csv", "json")}
    out = dict(gens) if gens is not None else {}
    for e in recorded["tables"]:
        t = by_path.get(e["path"])
        if t is None or t.kind in out:
            continue
        versions = known_versions(t.kind, GENERATOR_VERSIONS, _AS_OF)
        out[t.kind] = pick_version(e, t.kind, gens, versions,
                                   lambda v: sha256_bytes(table_as_of(t, v).files()[e["path"]].encode("utf-8"))
                                   == e["sha256"])
    if gens is None:   # kinds it did not list: the first generators had them (at version 1) or not at all
        out.update({k: v for k, v in FIRST_GENERATORS.items() if k not in out})
    return out, gens is not None


def table_files(package_dir: str | Path, *, as_recorded: bool = True) -> tuple[list[dict], dict[str, bytes]]:
    """Every table file and `table_manifest.json`, in memory: (manifest entries, {path: bytes}).

    `as_recorded`: a package that lists its tables gets them regenerated by the generator
    versions that made them, in the manifest form it has (so regenerating a finished package
    changes nothing, whichever auditkit made it); otherwise, and for a package without a table
    manifest, the current generators, each version recorded."""
    store = package_dir if isinstance(package_dir, PackageStore) else open_package(package_dir)
    tables = build_tables(store)
    for t in tables:       # tables are meant for spreadsheets: no cell may be a formula
        bad = t.formula_cell()
        if bad is not None:
            row, col, text = bad
            raise AuditError(f"{TABLE_DIR}/{t.id}.csv row {row}, column {col}: {text[:60]!r} would run as a "
                             f"spreadsheet formula; no table was written", path=str(store.root),
                             hint="the value comes from the package's data and is not an id of SPEC's alphabet "
                                  "[A-Za-z0-9._:-]: run `auditkit verify` to see where it comes from")
    plan = _recorded_versions(store, tables) if as_recorded else None
    if plan is None:
        doc, files = _manifest(tables, dict(GENERATOR_VERSIONS))
    else:
        versions, versioned = plan
        kept = [table_as_of(t, versions[t.kind]) for t in tables if t.kind in versions]
        if any(t is None for t in kept):      # a version this auditkit cannot make: the current ones
            doc, files = _manifest(tables, dict(GENERATOR_VERSIONS))
        else:
            doc, files = _manifest(kept, versions if versioned else None)
    files[TABLE_MANIFEST] = canonical_json_bytes(doc).decode("utf-8")
    return doc["tables"], {rel: text.encode("utf-8") for rel, text in files.items()}


def generate_tables(package_dir: str | Path, out_dir: str | Path | None = None, *,
                    in_place: bool = False, force: bool = False) -> Written:
    """Write every table (CSV and JSON under `analysis/`) and `table_manifest.json` into
    `out_dir`, or into the package itself only with `in_place` (see `auditkit.derived.output`).
    A file of another content already there is replaced only with `force` (`in_place` says it).
    Returns the manifest entries (`.changed`: the files whose bytes changed). Raises AuditError."""
    dest = output_dir(package_dir, out_dir, in_place=in_place, what="tables")
    entries, files = table_files(package_dir)
    return Written(entries, dest, write_outputs(dest, files, force=force or in_place, what="tables"))


def check_tables(package_dir: str | Path) -> Report:
    """Regenerate every table in memory and report each difference with the recorded files."""
    return check_report(package_dir, "tables --check", _check_tables)


def _check_tables(store: PackageStore, rep: Report) -> None:
    if store.kind(TABLE_MANIFEST) is None:
        rep.add(Finding(TABLE_MANIFEST, "table-manifest-missing", expected="a table manifest", found="no such file",
                        message="the package lists no derived tables, so none can be checked against its raw rows"))
        return
    recorded = read_json(store, TABLE_MANIFEST)
    bad = validate_document(recorded, "table-manifest", TABLE_MANIFEST)
    if bad:
        rep.extend(bad)
        return
    if not recorded["tables"]:
        rep.add(Finding(TABLE_MANIFEST, "table-manifest-empty", "$.tables", "at least one table", "none",
                        "an empty table manifest checks nothing"))
    gens = recorded.get("generators")   # validated: {kind: version} or absent
    tables = {f"{TABLE_DIR}/{t.id}.{ext}": t for t in build_tables(store) for ext in ("csv", "json")}
    # the kinds the writing auditkit had: those it records, else the first generators and any it listed
    had = set(gens) if gens is not None else set(FIRST_GENERATORS) | {
        tables[e["path"]].kind for e in recorded["tables"] if e["path"] in tables}
    listed = set()
    retired: dict[str, list[str]] = {}      # reason -> tables made by a retired generator version
    retired_kinds: set[str] = set()
    for i, e in enumerate(recorded["tables"]):
        path = e["path"]
        listed.add(path)
        loc = f"$.tables[{i}]"
        table = tables.get(path)
        if table is None:
            rep.add(Finding(TABLE_MANIFEST, "table-unknown", loc, "a table auditkit generates", path,
                            f"kinds auditkit generates: {', '.join(k.value for k in TableKind)}"))
            continue
        versions = known_versions(table.kind, GENERATOR_VERSIONS, _AS_OF)

        def matches(v, table=table, path=path, e=e):
            return sha256_bytes(table_as_of(table, v).files()[path].encode("utf-8")) == e["sha256"]

        version = pick_version(e, table.kind, gens, versions, matches)
        if ("generator" not in e and (gens is None or table.kind not in gens) and (table.kind, 1) in RETIRED
                and not any(matches(v) for v in versions)):
            version = 1   # written before generator versions, by the generator since retired
        old = table_as_of(table, version)
        if old is None and (table.kind, version) in RETIRED:
            retired.setdefault(RETIRED[(table.kind, version)], []).append(path)
            retired_kinds.add(table.kind)
            continue
        if old is None:
            rep.add(Finding(TABLE_MANIFEST, "table-generator-unknown", loc + ".generator",
                            f"a version of the {table.kind} generator this auditkit has "
                            f"({', '.join(map(str, versions))})", repr(version),
                            "the table was made by a generator this auditkit cannot rerun; check it with the "
                            "auditkit that wrote it (or a newer one)"))
            continue
        doc, files = _manifest([old], None)
        want = next(x for x in doc["tables"] if x["path"] == path)
        if e["kind"] != want["kind"]:
            rep.add(Finding(TABLE_MANIFEST, "table-kind-differs", loc + ".kind", want["kind"], e["kind"]))
        if sorted(e["inputs"]) != want["inputs"]:
            rep.add(Finding(TABLE_MANIFEST, "table-inputs-differ", loc + ".inputs", str(want["inputs"]),
                            str(sorted(e["inputs"])), "the table's inputs are not what regenerating it reads"))
        if e["sha256"] != want["sha256"]:
            rep.add(Finding(TABLE_MANIFEST, "table-hash-differs", loc + ".sha256", want["sha256"], e["sha256"],
                            "the recorded hash is not that of the table its inputs give"))
        if store.kind(path) is None:
            rep.add(Finding(path, "table-missing", expected="the listed table file", found="no such file"))
            continue
        try:
            on_disk = store.read_text(path)
        except PackageDefect as exc:
            rep.add(exc.finding)
            continue
        if on_disk != files[path]:
            rep.add(_first_difference(path, on_disk, files[path]))
    newer = []
    for path in sorted(set(tables) - listed):
        if tables[path].kind in had and tables[path].kind not in retired_kinds:
            rep.add(Finding(TABLE_MANIFEST, "table-not-listed", "$.tables", path, "not listed",
                            "the package's data gives a table its manifest does not list"))
        else:
            newer.append(path)
    if newer:   # the auditkit that wrote the package had no generator for these: nothing is missing
        rep.info["tables a newer auditkit adds (not checked)"] = ", ".join(newer)
    for reason, paths in retired.items():
        rep.info[f"tables of a retired generator (not checked: {reason})"] = ", ".join(paths)
    rep.checked = {"tables": len(recorded["tables"])}


def _first_difference(path: str, got: str, want: str) -> Finding:
    g, w = got.split("\n"), want.split("\n")
    n_diff = sum(1 for a, b in zip(g, w) if a != b) + abs(len(g) - len(w))
    for i, (a, b) in enumerate(zip(g, w)):
        if a != b:
            loc = f"line {i + 1}"
            if path.endswith(".csv") and i > 0:
                header = w[0].split(",")
                ga, wb = a.split(","), b.split(",")
                cols = [header[j] for j in range(min(len(ga), len(wb), len(header))) if ga[j] != wb[j]]
                loc = f"row {i}" + (f", column {cols[0]}" if cols else "")
            return Finding(path, "table-differs", loc, b, a,
                           f"the recorded table is not what its inputs give ({n_diff} line(s) differ): {TABLE_DIFFERS}")
    return Finding(path, "table-differs", f"line {min(len(g), len(w)) + 1}", f"{len(w)} lines", f"{len(g)} lines",
                   f"the recorded table is not what its inputs give: {TABLE_DIFFERS}")


TABLE_DIFFERS = ("the table or its inputs changed after it was generated, or it was made another way; compare the "
                 "inputs' hashes with the MANIFEST and look at the rows the differing line is computed from")

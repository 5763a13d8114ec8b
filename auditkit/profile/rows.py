"""Run rows and the candidate matrix of a package read through a profile: each value converted
to SPEC text (`convert_value`), each row file matched to its pattern (`match_rows`), each row
checked as SPEC section 4 asks (`read_rows`); problems are findings, kept per area."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd

from auditkit.errors import AuditError
from auditkit.findings import Finding, row_location
from auditkit.package.rows import RUN_COLUMNS, STATUSES
from auditkit.package.store import parse_csv
from auditkit.profile import _store
from auditkit.profile.bounds import FilePattern
from auditkit.profile.model import ENGINE_COLUMNS, ColumnRule, Convert, Profile, Provenance, Source
from auditkit.profile.values import Fact

SLUG_RE = re.compile(r"^[a-z0-9-]+$")
STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConvertError(ValueError):
    pass


def convert_value(rule: ColumnRule, raw: str) -> str:
    """The SPEC text of one package value under `rule` (map first, then conversion).
    Raises ConvertError saying why."""
    v = raw
    if rule.map:
        m = dict(rule.map)
        if v not in m:
            raise ConvertError(f"{v!r} is not in the profile's map ({', '.join(sorted(m))})")
        v = m[v]
    if rule.convert is None:
        return v
    if rule.convert in (Convert.MINUTES_TO_SECONDS, Convert.HOURS_TO_SECONDS):
        if v.strip() == "":
            return ""
        try:
            d = Decimal(v.strip())
        except InvalidOperation:
            raise ConvertError(f"{v!r} is not a number") from None
        if not d.is_finite():
            raise ConvertError(f"{v!r} is not a finite number")
        d = d * (60 if rule.convert is Convert.MINUTES_TO_SECONDS else 3600)
        text = format(d.normalize(), "f")
        return text
    if rule.convert is Convert.LOCAL_TO_UTC:
        if v.strip() == "":
            return ""
        try:
            ts = datetime.fromisoformat(v.strip())
        except ValueError:
            raise ConvertError(f"{v!r} is not an ISO-8601 time") from None
        if ts.tzinfo is None:
            raise ConvertError(f"{v!r} has no UTC offset: a local time without one cannot be placed in UTC")
        return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise ConvertError(f"unknown conversion {rule.convert!r}")  # pragma: no cover - Convert is exhaustive


def compile_pattern(p: str):
    """A file-name pattern (`auditkit.profile.bounds.FilePattern`): each {name} matches one path
    segment's worth of text (no '/'); its work is bounded whatever the pattern and name."""
    return FilePattern(p, "rows.files")


def match_rows(profile: Profile, files) -> dict[str, dict[str, str]]:
    """Run-row files of the package (sorted) -> their captures."""
    out = {}
    parsers = [compile_pattern(p) for p in profile.rows.patterns]
    for rel in sorted(files):
        for p in parsers:
            r = p.parse(rel)
            if r is not None:
                out[rel] = r
                break
    return out


def effective_rules(profile: Profile, header: list[str], captures: dict[str, str]) -> dict[str, ColumnRule]:
    """SPEC column -> rule: the profile's own, else the same-named package column, else capture."""
    out = {r.target: r for r in profile.rows.columns}
    for col in RUN_COLUMNS:
        if col in out:
            continue
        if col in header:
            out[col] = ColumnRule(col, Source.COLUMN, col, implicit=True)
        elif col in captures:
            out[col] = ColumnRule(col, Source.CAPTURE, col, implicit=True)
    return out


def csv_rows(text: str, rel: str) -> tuple[list[str], list[dict[str, str]], list[Finding]]:
    """The store's one CSV reader, plus a finding for each row with more cells than the header
    (and "" for a row's missing cells). Raises PackageDefect when it is not CSV."""
    header, raw = parse_csv(text, rel)
    findings, rows = [], []
    for i, r in enumerate(raw, 1):
        extra = r.pop(None, None)
        if extra:
            findings.append(Finding(rel, "csv-extra-cells", row_location(i), f"{len(header)} cells",
                                    f"{len(header) + len(extra)} cells"))
        rows.append({k: (v if isinstance(v, str) else "") for k, v in r.items()})
    return header, rows, findings


def _ts(s: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(s)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo is not None else None



def read_matrix(store, profile, files, findings, facts):
    spec = profile.matrix
    if spec.path not in files:
        return [], []
    try:
        header, rows, bad = csv_rows(store.read_text(spec.path), spec.path)
    except AuditError as exc:
        findings["matrix"].append(_store.as_finding(exc, spec.path, "matrix-unreadable", "a UTF-8 CSV"))
        return [], []
    findings["matrix"] += bad
    for col in (spec.config_id, spec.role):
        if col not in header:
            findings["matrix"].append(Finding(spec.path, "csv-missing-column", "header", col, ", ".join(header),
                                              "the profile names a column the matrix lacks"))
    if spec.config_id not in header:
        return [], []
    ids, out = [], []
    for i, r in enumerate(rows, 1):
        cid = r[spec.config_id]
        if cid in ids:
            findings["matrix"].append(Finding(spec.path, "config-id-duplicate", row_location(i, spec.config_id),
                                              "unique config_id", cid))
        elif not re.match(r"^[A-Za-z0-9._-]+$", cid):
            findings["matrix"].append(Finding(spec.path, "row-invalid", row_location(i, spec.config_id),
                                              "a config_id of [A-Za-z0-9._-]", repr(cid)))
        ids.append(cid)
        spec_row = {k: v for k, v in r.items() if k not in (spec.config_id, spec.role)}
        out.append({"config_id": cid, "role": r.get(spec.role, ""), **spec_row})
    if not rows:
        findings["matrix"].append(Finding(spec.path, "csv-empty", "", "at least one row", "no rows"))
    facts.append(Fact("matrix", Provenance.PACKAGE,
                      f"{spec.path}: config_id from column {spec.config_id!r}, role from {spec.role!r} "
                      f"({len(ids)} configurations)"))
    return list(dict.fromkeys(ids)), out


def read_rows(store, profile, files, matrix_ids, findings, facts):
    matched = match_rows(profile, files)
    out_rows: list[dict] = []
    first_rules: dict[str, ColumnRule] = {}
    f = findings["rows"]
    if not matched:
        f.append(Finding(profile.rows.patterns[0], "rows-none", "", "run-row files matching the profile's pattern",
                         "no file matches", "check rows.files against the package's file names"))
    seen_ids: dict[str, tuple[str, int]] = {}
    for rel, caps in matched.items():
        try:
            header, rows, bad = csv_rows(store.read_text(rel), rel)
        except AuditError as exc:
            f.append(_store.as_finding(exc, rel, "csv-invalid", "a UTF-8 CSV"))
            continue
        f.extend(bad)
        rules = effective_rules(profile, header, caps)
        for col, r in rules.items():
            first_rules.setdefault(col, r)
        missing = [c for c in ENGINE_COLUMNS if c not in rules]
        gone = [r for r in rules.values() if r.source is Source.COLUMN and r.name not in header]
        if missing or gone:
            f.append(Finding(rel, "profile-column-missing", "header",
                             ", ".join([f"{c} (a rule or a same-named column)" for c in missing]
                                       + [f"package column {r.name!r} (for {r.target})" for r in gone]),
                             ", ".join(header) or "no header",
                             "the file's rows are not used: fix rows.columns or the file"))
            continue
        if not rows:
            f.append(Finding(rel, "csv-empty", "", "at least one row", "no rows", "an empty table proves nothing"))
        for i, raw in enumerate(rows, 1):
            row, ok = {}, True
            for col, rule in rules.items():
                src = raw[rule.name] if rule.source is Source.COLUMN else (
                    caps[rule.name] if rule.source is Source.CAPTURE else rule.name)
                try:
                    row[col] = convert_value(rule, src) if rule.source is not Source.CONST else src
                except ConvertError as exc:
                    f.append(Finding(rel, "row-unconvertible", row_location(i, rule.name if rule.source is Source.COLUMN
                                                                            else col),
                                     f"a value the profile can convert to {col}", str(exc),
                                     f"fix the profile's rule for {col} or the row"))
                    ok = False
            if not ok:
                continue
            ok = _check_row(rel, i, row, rules, caps, matrix_ids, seen_ids, f)
            if ok:
                row["_file"], row["_row"] = rel, i
                out_rows.append(row)
    cols = [c for c in RUN_COLUMNS if c in first_rules]
    df = pd.DataFrame(out_rows, columns=cols + ["_file", "_row"]) if out_rows else \
        pd.DataFrame({c: pd.Series(dtype=object) for c in cols + ["_file"]} | {"_row": pd.Series(dtype=np.int64)})
    for c in ENGINE_COLUMNS:
        if c not in df.columns:
            df[c] = pd.Series(dtype=object)
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").fillna(-1).astype(np.int64)
    for col in RUN_COLUMNS:
        if col in first_rules:
            r = first_rules[col]
            facts.append(Fact(f"row column {col}", r.provenance, r.describe()))
    facts.append(Fact("run rows", Provenance.PACKAGE,
                      f"{len(df)} row(s) from {len(matched)} file(s) matching {', '.join(profile.rows.patterns)}"))
    return df, sorted(matched), first_rules


def _check_row(rel, i, row, rules, caps, matrix_ids, seen_ids, f) -> bool:
    """SPEC section 4 sense of one converted row; False when the engine cannot use it."""
    def bad(code, col, expected, found, message=""):
        f.append(Finding(rel, code, row_location(i, col), expected, found, message))

    usable = True
    if row["status"] not in STATUSES:
        bad("row-invalid", "status", f"one of {', '.join(STATUSES)} (after the profile's map)", repr(row["status"]),
            "add the authors' word to the profile's status map")
        usable = False
    try:
        int(row["seed"])
    except ValueError:
        bad("row-invalid", "seed", "an integer", repr(row["seed"]))
        usable = False
    if not SLUG_RE.match(row["host"]):
        bad("row-invalid", "host", "a host label [a-z0-9-]+ (after the profile's map)", repr(row["host"]),
            "map the authors' label in the profile")
    if not STAGE_RE.match(row["stage"]):
        bad("row-invalid", "stage", "a stage slug", repr(row["stage"]))
    for col in ("host", "stage"):
        r = rules[col]
        if r.source is not Source.CAPTURE and col in caps and row[col] != caps[col]:
            bad(f"{col}-mismatch", col, f"{caps[col]} (from the file name)", row[col],
                f"a row's {col} must equal the {col} in its file name")
    v = row["val_bpb"].strip()
    try:
        val = float(v) if v else None
    except ValueError:
        bad("row-invalid", "val_bpb", "a decimal or empty", repr(v))
        val = None
    if row["status"] == "ok" and (val is None or val != val or val in (float("inf"), float("-inf"))):
        bad("row-invalid", "val_bpb", "a finite val_bpb for status ok", repr(v))
    elif row["status"] != "ok" and val is not None:
        bad("row-invalid", "val_bpb", f"empty for status {row['status']}", v, "SPEC 4: val_bpb only for ok runs")
    rid = row["run_id"]
    if rid in seen_ids:
        bad("run-id-duplicate", "run_id", "a run_id unique in the package",
            f"{rid} (also {seen_ids[rid][0]} row {seen_ids[rid][1]})")
    else:
        seen_ids[rid] = (rel, i)
    if matrix_ids and row["config_id"] not in matrix_ids:
        bad("unknown-config", "config_id", "a config_id of the matrix", row["config_id"])
    a, b = _ts(row["started_at"]), _ts(row.get("finished_at", ""))
    if a is None:
        bad("row-bad-timestamp", "started_at", "an ISO-8601 time with an offset", repr(row["started_at"]),
            "without a start time the freeze cannot be checked")
    elif b is not None and a > b:
        bad("time-order", "finished_at", f"at or after {row['started_at']}", row["finished_at"])
    return usable

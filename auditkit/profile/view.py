"""A legacy package read through a profile into the SPEC-shaped objects the engine uses.

`read_package(root, profile)` never writes and never follows a symlink.  It
gives a `PackageView`: the matrix's config_ids, the run rows converted to SPEC
section 4 columns (a DataFrame, each row naming its file and row), each
gate's rules (the reviewer's transcription) with the freeze date the prose
asserts, the authors' recorded decisions as far as the profile maps them, a
`Protocol` derived from the rows, and `facts`: for every fact, whether it came
from the package's bytes, from the profile, or from both (a package value the
profile converted).  Problems met while reading are findings, kept per file.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import jsonpath
import numpy as np
import pandas as pd

from auditkit.errors import AuditError
from auditkit.findings import Finding, row_location
from auditkit.profile import _store
from auditkit.profile.model import (ENGINE_COLUMNS, ColumnRule, Convert, FieldMap, GateSpec, Profile, Provenance, Source)
from auditkit.gates.rules import validate_rules
from auditkit.package.store import parse_csv
from auditkit.profile.bounds import FilePattern, find_values
from auditkit.study.spec import Budget, Gate, Protocol, Stage
from auditkit.package.rows import RUN_COLUMNS, STATUSES

DATE_RE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
SLUG_RE = re.compile(r"^[a-z0-9-]+$")
STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# a date with no zone names a day somewhere between UTC-12 and UTC+14
ZONE_EARLY, ZONE_LATE = timedelta(hours=14), timedelta(hours=12)


@dataclass(frozen=True)
class Fact:
    """One fact a result rests on, and who vouches for it."""

    name: str
    provenance: Provenance
    detail: str

    def to_dict(self) -> dict:
        return {"fact": self.name, "from": self.provenance.value, "detail": self.detail}


@dataclass(frozen=True)
class Freeze:
    """When the prose says the rules were written: a date, or a time with its zone (`instant`, from a
    `Frozen: 2026-04-28 08:00:00+02:00` line of the text), asserted, never proven. `scope`: the
    inputs the prose governs (an addendum for some seeds or stages), None for all of the gate's."""

    day: date | None
    source: str          # where the date was read
    instant: datetime | None = None
    path: str = ""
    scope: tuple | None = None     # (seeds or None, stages or None)

    def window(self) -> tuple[datetime, datetime] | None:
        """UTC instants the asserted freeze may be: the stated time itself, or every instant the
        asserted day covers somewhere (its zone is not stated)."""
        if self.instant is not None:
            return self.instant, self.instant
        if self.day is None:
            return None
        start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=timezone.utc)
        return start - ZONE_EARLY, start + timedelta(days=1) + ZONE_LATE

    def shown(self) -> str:
        return self.instant.isoformat() if self.instant is not None else str(self.day)

    def latest(self) -> datetime:
        """The latest instant this freeze may be (to find the gate's last prose)."""
        w = self.window()
        return w[1] if w else datetime.min.replace(tzinfo=timezone.utc)


@dataclass
class Recorded:
    """What the authors recorded for one gate, as far as the profile maps it. Each value is
    (value, path, location) so a difference names the exact place in the authors' file."""

    gate: str
    sources: list[str] = field(default_factory=list)
    promoted: tuple[list[str], str, str] | None = None
    ordered: bool = False
    candidates: dict[str, dict[str, tuple]] | None = None
    candidates_at: tuple[str, str] | None = None
    cells: dict[tuple[str, str, int], dict[str, tuple]] | None = None
    cells_at: tuple[str, str] | None = None
    checks: dict[int, dict[str, tuple]] = field(default_factory=dict)
    tolerance: float = 5e-7


@dataclass
class GateView:
    spec: GateSpec
    rules: dict | None          # None: TODO in the profile, or not valid rules (see `problems`)
    freeze: Freeze
    recorded: Recorded | None
    problems: list[Finding] = field(default_factory=list)   # why the transcribed rules are unusable
    freezes: list[Freeze] = field(default_factory=list)     # one per prose file, each with its scope


@dataclass
class PackageView:
    root: Path
    profile: Profile
    store: _store.PackageStore
    files: list[str]
    findings: dict[str, list[Finding]]      # by area: "files", "matrix", "rows", "recorded", "profile"
    matrix_ids: list[str]
    matrix_rows: list[dict]
    rows: pd.DataFrame
    row_files: list[str]
    columns: dict[str, ColumnRule]          # SPEC column -> how it was obtained (first file that had it)
    absent_columns: list[str]               # SPEC columns no rule or package column supplies
    gates: dict[str, GateView]
    protocol: Protocol
    facts: list[Fact]
    _sha: dict[str, str] = field(default_factory=dict)

    def sha(self, rel: str) -> str | None:
        if rel not in self.files:
            return None
        if rel not in self._sha:
            self._sha[rel] = _store.hash_file(self.store, rel)[0]
        return self._sha[rel]

    def all_findings(self, *areas: str) -> list[Finding]:
        return [f for a in (areas or self.findings) for f in self.findings.get(a, [])]


# --------------------------------------------------------------------------- conversion

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


def _pattern(p: str):
    """A file-name pattern (`auditkit.profile.bounds.FilePattern`): each {name} matches one path
    segment's worth of text (no '/'); its work is bounded whatever the pattern and name."""
    return FilePattern(p, "rows.files")


def match_rows(profile: Profile, files) -> dict[str, dict[str, str]]:
    """Run-row files of the package (sorted) -> their captures."""
    out = {}
    parsers = [_pattern(p) for p in profile.rows.patterns]
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


def _csv(text: str, rel: str) -> tuple[list[str], list[dict[str, str]], list[Finding]]:
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


# --------------------------------------------------------------------------- reading

def read_package(root: str | Path, profile: Profile) -> PackageView:
    """Read the package at `root` through `profile`. Raises AuditError only when the package
    cannot be listed at all; everything else is a finding in `view.findings`."""
    root = Path(root)
    store, files, problems = _store.open_package(root)
    findings: dict[str, list[Finding]] = defaultdict(list)
    findings["files"] += problems
    facts: list[Fact] = [Fact("profile", Provenance.PROFILE, f"{profile.source} (sha256 {profile.sha256 or 'n/a'})")]

    # named files must exist
    named = [("matrix", profile.matrix.path)] + [("manifest", m.path) for m in profile.manifests]
    for g in profile.gates:
        named += [(f"prose of gate {g.gate}", p.path) for p in g.prose]
        named += [(f"recorded decision of gate {g.gate}", r.path) for r in g.recorded]
    named += [("recorded table", t.path) for t in profile.tables]
    for what, rel in named:
        if rel not in files:
            findings["profile"].append(Finding(rel, "profile-file-missing", "", f"the {what} the profile names",
                                               "no such regular file", "the profile does not fit this package"))

    matrix_ids, matrix_rows = _read_matrix(store, profile, files, findings, facts)
    df, row_files, columns = _read_rows(store, profile, files, set(matrix_ids), findings, facts)
    absent = [c for c in RUN_COLUMNS if c not in columns]
    gates = {}
    for g in profile.gates:
        freezes = prose_freezes(g, store, files, findings)
        dated = [f for f in freezes if f.day is not None]
        freeze = max(dated, key=lambda f: f.latest()) if dated else Freeze(None, "no date in the prose's file name or text")
        rules, problems = None, []
        if g.rules is not None:
            rules = dict(g.rules, frozen_at=_frozen_at(freeze))
            problems = validate_rules(rules, f"{profile.source} [gates.{g.gate}.rules]",
                                      known_configs=set(matrix_ids) or None)
            if problems:
                rules = None
                findings["profile"] += problems
        rec = _read_recorded(g, store, files, profile, columns, findings) if g.recorded else None
        gates[g.gate] = GateView(g, rules, freeze, rec, problems, dated)
        facts.append(Fact(f"rules of gate {g.gate}", Provenance.PROFILE,
                          "transcribed by the reviewer from " + ", ".join(
                              f"{p.path} (sha256 pinned)" for p in g.prose)))
        facts.append(Fact(f"freeze date of gate {g.gate}", Provenance.PACKAGE,
                          f"asserted: {freeze.shown()} ({freeze.source})" if freeze.day else "none found"))
        if rec is not None:
            facts.append(Fact(f"recorded decision of gate {g.gate}", Provenance.PACKAGE,
                              ", ".join(rec.sources) + " (read where the profile points)"))
    protocol = _protocol(profile, df, gates, matrix_ids, findings)
    facts.append(Fact("stages", Provenance.PACKAGE,
                      "derived from the run rows: order by first started_at, seeds, hosts and budget as recorded"))
    return PackageView(root, profile, store, files, dict(findings), matrix_ids, matrix_rows, df, row_files, columns, absent,
                       gates, protocol, facts)


def _read_matrix(store, profile, files, findings, facts):
    spec = profile.matrix
    if spec.path not in files:
        return [], []
    try:
        header, rows, bad = _csv(store.read_text(spec.path), spec.path)
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


def _read_rows(store, profile, files, matrix_ids, findings, facts):
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
            header, rows, bad = _csv(store.read_text(rel), rel)
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


# `Frozen: 2026-04-28 08:00:00+02:00` (also `Freeze time`, `Registered`, `Pre-registered at`): a time
# with its zone on a line that says it is the freeze; the text's own statement beats the file name's date
FROZEN_RE = re.compile(r"(?im)^[^\n]{0,40}?\b(?:frozen|freeze(?:\s+time)?|(?:pre-?)?registered)(?:\s+(?:at|on))?\s*:?\s*"
                       r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?\s*(Z|UTC|[+-]\d{2}:?\d{2})")


def _stated_instant(text: str) -> tuple[datetime | None, str | None]:
    """(the first freeze time with a zone the text states, None) or (None, the text that is no time)."""
    m = FROZEN_RE.search(text)
    if not m:
        return None, None
    y, mo, d, h, mi, sec, zone = m.groups()
    if zone in ("Z", "UTC"):
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec or 0), tzinfo=tz).astimezone(timezone.utc), None
    except ValueError:
        return None, m.group(0).strip()


def prose_freezes(g: GateSpec, store, files, findings) -> list[Freeze]:
    """One Freeze per prose file of the gate, in profile order: a `Frozen:` time with its zone stated in
    the text first, else the date in the file name, else the first date in the text."""
    out = []
    for p in g.prose:
        scope = (getattr(p, "seeds", None), getattr(p, "stages", None))
        scope = None if scope == (None, None) else scope
        text = None
        if p.path in files:
            try:
                text = store.read_text(p.path)
            except AuditError:
                text = None
        if text is not None:
            instant, bad = _stated_instant(text)
            if bad is not None:
                findings["profile"].append(Finding(p.path, "freeze-date-invalid", "", "a calendar date and time", bad))
            if instant is not None:
                out.append(Freeze(instant.date(), f"freeze time stated in the text of {p.path}", instant, p.path,
                                  scope))
                continue
        found = None
        m = DATE_RE.search(p.path.rsplit("/", 1)[-1])
        if m:
            found = (m, f"date in the file name {p.path}")
        elif text is not None:
            m = DATE_RE.search(text)
            if m:
                found = (m, f"first date in the text of {p.path}")
        if found is None:
            out.append(Freeze(None, f"no date in {p.path}", None, p.path, scope))
            continue
        try:
            d = date(int(found[0][1]), int(found[0][2]), int(found[0][3]))
        except ValueError:
            findings["profile"].append(Finding(p.path, "freeze-date-invalid", "", "a calendar date", found[0][0]))
            continue
        out.append(Freeze(d, found[1], None, p.path, scope))
    return out


def _frozen_at(freeze: Freeze) -> str:
    # SPEC rules need a frozen_at; a profiled gate's is the asserted day (start, UTC) or the epoch,
    # and is never used as proof: `audit.freeze_evidence` judges the day against the rows.
    if freeze.instant is not None:
        return freeze.instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    d = freeze.day or date(1970, 1, 1)
    return f"{d.isoformat()}T00:00:00Z"


# --------------------------------------------------------------------------- recorded decisions

def _find(path: str, doc, rel: str, bad) -> object:
    try:
        matches = find_values(path, doc, 2, key=rel)
    except AuditError as exc:
        bad(rel, "profile-invalid", path, "a JSON path the profile's bounds allow", exc.message)
        return None
    except jsonpath.JSONPathError as exc:
        bad(rel, "profile-invalid", path, "a JSONPath (RFC 9535)", str(exc).splitlines()[0])
        return None
    if len(matches) != 1:
        bad(rel, "recorded-unresolved", path, "exactly one value at this JSON path", f"{len(matches)} match(es)")
        return None
    return matches[0]


def _as(kind: str, v):
    """A recorded value as the SPEC field's type; ValueError when it is not one."""
    if kind in ("rank", "wins", "seed"):
        if isinstance(v, bool):
            raise ValueError
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return int(v) if isinstance(v, int) else int(str(v).strip())
    if kind in ("eligible", "promoted", "passed"):
        if isinstance(v, bool):
            return v
        s = str(v).strip().lower()
        if s in ("true", "yes", "y", "1", "pass", "passed", "promoted"):
            return True
        if s in ("false", "no", "n", "0", "fail", "failed", ""):
            return False
        raise ValueError
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return None
    if isinstance(v, bool):
        raise ValueError
    x = float(v)
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError
    return x


def _records(spec: FieldMap, doc, rel: str, bad) -> list[tuple[dict, str]] | None:
    """(record, location prefix) pairs: JSON objects at `spec.at`, or CSV rows."""
    if isinstance(doc, list) and spec.at is None:  # CSV rows
        return [(r, f"row {i}") for i, r in enumerate(doc, 1)]
    recs = _find(spec.at, doc, rel, bad)
    if recs is None:
        return None
    if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
        bad(rel, "recorded-unreadable", spec.at, "a list of objects", type(recs).__name__)
        return None
    return [(r, f"{spec.at}[{i}]") for i, r in enumerate(recs)]


def _loc(prefix: str, fld: str) -> str:
    return f"{prefix}, column {fld}" if prefix.startswith("row ") else f"{prefix}.{fld}"


def _read_recorded(g: GateSpec, store, files, profile: Profile, columns, findings) -> Recorded:
    out = Recorded(g.gate)
    f = findings["recorded"]

    def bad(rel, code, loc, expected, found, message="the profile points where the authors recorded nothing usable"):
        f.append(Finding(rel, code, loc, expected, str(found), message))

    host_rule = columns.get("host")
    host_map = dict(host_rule.map) if host_rule is not None else {}
    for spec in g.recorded:
        rel = spec.path
        out.sources.append(rel)
        out.tolerance = spec.tolerance
        if rel not in files:
            continue
        try:
            if rel.endswith(".csv"):
                _, doc, extra = _csv(store.read_text(rel), rel)
            else:
                doc, extra = store.read_json(rel), []
        except AuditError as exc:
            f.append(_store.as_finding(exc, rel, "recorded-unreadable", "a readable JSON or CSV file"))
            continue
        f.extend(extra)
        if spec.promoted is not None:
            v = _find(spec.promoted, doc, rel, bad)
            if isinstance(v, str):
                v = [v]
            if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
                bad(rel, "recorded-unreadable", spec.promoted, "a config_id or a list of them", v)
            elif v is not None:
                out.promoted = (list(v), rel, spec.promoted)
                out.ordered = spec.ordered
        for part in ("candidates", "cells"):
            fm: FieldMap | None = getattr(spec, part)
            if fm is None:
                continue
            recs = _records(fm, doc, rel, bad)
            if recs is None:
                continue
            table: dict = {}
            for rec, prefix in recs:
                if fm.key not in rec:
                    bad(rel, "recorded-unreadable", _loc(prefix, fm.key), "the config_id field", "absent")
                    continue
                key: tuple | str = str(rec[fm.key])
                if part == "cells":
                    try:
                        h = str(rec[fm.host])
                        key = (key, host_map.get(h, h), _as("seed", rec[fm.seed]))
                    except (KeyError, ValueError):
                        bad(rel, "recorded-unreadable", prefix, "host and integer seed fields",
                            f"{rec.get(fm.host)!r}, {rec.get(fm.seed)!r}")
                        continue
                vals = {}
                for spec_field, name in fm.fields:
                    if name not in rec:
                        bad(rel, "recorded-unreadable", _loc(prefix, name), f"a {spec_field} field", "absent")
                        continue
                    try:
                        vals[spec_field] = (_as(spec_field, rec[name]), rel, _loc(prefix, name))
                    except (TypeError, ValueError):
                        bad(rel, "recorded-unreadable", _loc(prefix, name), f"a {spec_field} value", repr(rec[name]))
                if key in table:
                    bad(rel, "recorded-duplicate", prefix, f"one record for {key}", "two or more")
                table[key] = vals
            if part == "candidates":
                out.candidates = {**(out.candidates or {}), **table}
                out.candidates_at = (rel, fm.at or "rows")
            else:
                out.cells = {**(out.cells or {}), **table}
                out.cells_at = (rel, fm.at or "rows")
        for cm in spec.checks:
            entry = {}
            for fld in ("passed", "value"):
                p = getattr(cm, fld)
                if p is None:
                    continue
                v = _find(p, doc, rel, bad)
                if v is None:
                    continue
                try:
                    entry[fld] = (_as(fld, v), rel, p)
                except (TypeError, ValueError):
                    bad(rel, "recorded-unreadable", p, f"a check {fld}", repr(v))
            out.checks[cm.index] = entry
    return out


# --------------------------------------------------------------------------- the protocol

def _protocol(profile: Profile, df: pd.DataFrame, gates: dict[str, GateView], matrix_ids: list[str],
              findings) -> Protocol:
    """A SPEC protocol derived from the rows: stages ordered by their first started_at; each stage's
    candidates are those of the first gate (profile order) that reads it, else the matrix when
    every configuration ran, else the configurations that ran."""
    stages = []
    if len(df):
        starts = pd.to_datetime(df["started_at"], utc=True, format="ISO8601", errors="coerce")
        first = starts.groupby(df["stage"]).min()
        order = sorted(first.index, key=lambda s: (pd.isna(first[s]), first[s] if not pd.isna(first[s]) else 0, s))
    else:
        order = []
    for s in order:
        sub = df[df["stage"] == s]
        budget = Budget("unknown", 0.0)
        if "budget_kind" in df.columns and "budget_value" in df.columns:
            pairs = Counter(zip(sub["budget_kind"], sub["budget_value"]))
            (kind, value), _ = pairs.most_common(1)[0]
            if len(pairs) > 1:
                findings["rows"].append(Finding(sub["_file"].iat[0], "stage-budget-inconsistent", f"stage {s}",
                                                "one budget per stage", str(sorted(pairs))))
            try:
                budget = Budget(kind, float(value))
            except ValueError:
                pass
        cands: str | tuple[str, ...] | None = None
        for gv in gates.values():
            if gv.rules is not None and s in gv.rules["inputs"]["stages"]:
                c = gv.rules["inputs"]["candidates"]
                cands = tuple(c) if isinstance(c, list) else c
                break
        if cands is None:
            ran = sorted(set(sub["config_id"]))
            cands = "matrix" if matrix_ids and ran == sorted(matrix_ids) else tuple(ran)
        stages.append(Stage(s, budget, tuple(sorted(set(int(x) for x in sub["seed"]))),
                            tuple(sorted(set(sub["host"]))), cands))
    hosts = tuple(sorted(set(df["host"]))) if len(df) else ()
    gate_list = tuple(Gate(g.spec.gate, g.spec.prose[0].path) for g in gates.values())
    return Protocol(profile.name, profile.matrix.path, hosts, tuple(stages), gate_list)

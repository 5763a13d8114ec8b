"""What a profile maps from the authors' own files: each gate's asserted freeze, read from its
prose (`prose_freezes`), and the decision the authors recorded (`read_recorded`), each value
with the exact place it was read."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import jsonpath

from auditkit.errors import AuditError
from auditkit.findings import Finding
from auditkit.profile import _store
from auditkit.profile.bounds import find_values
from auditkit.profile.model import FieldMap, GateSpec, Profile
from auditkit.profile.rows import csv_rows
from auditkit.profile.values import DATE_RE, Freeze, Recorded


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


def frozen_at(freeze: Freeze) -> str:
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


def read_recorded(g: GateSpec, store, files, profile: Profile, columns, findings) -> Recorded:
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
                _, doc, extra = csv_rows(store.read_text(rel), rel)
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

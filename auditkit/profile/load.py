"""Loading a profile: `load_profile` reads the TOML file (bounded in size and depth),
`profile_findings` checks the document (the schema first, then sense: patterns, captures,
JSON paths), and `parse_profile` turns a valid document into the frozen `Profile` of
`auditkit.profile.model`."""

from __future__ import annotations

import hashlib
import json
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path

from jsonschema import Draft202012Validator

from auditkit.derived.tables import TableKind
from auditkit.errors import AuditError
from auditkit.package.protocol import parent_gate
from auditkit.findings import Finding, json_location
from auditkit.package.rows import RUN_COLUMNS
from auditkit.profile.model import (DEFAULT_TOLERANCE, TODO, CheckMap, ColumnRule, Convert, FieldMap,
                                    GateSpec, ManifestSpec, MatrixSpec, Profile, RecordedSpec, RowsSpec, Source,
                                    TableSpec, prose_ref)

# --------------------------------------------------------------------------- loading

@lru_cache(maxsize=1)
def profile_validator() -> Draft202012Validator:
    """The profile schema, itself checked first."""
    try:
        text = resources.files("auditkit.profile").joinpath("profile.schema.json").read_text("utf-8")
        schema = json.loads(text)
        Draft202012Validator.check_schema(schema)
    except (OSError, ValueError) as exc:
        raise AuditError(f"the profile schema is broken or missing: {exc}", hint="reinstall auditkit") from exc
    return Draft202012Validator(schema)


def profile_findings(doc: dict, source: str = "<profile>") -> list[Finding]:
    """Every way `doc` (a parsed profile) is not usable: schema first, then sense."""
    out = [Finding(source, "profile-invalid", json_location(e.absolute_path), e.validator, e.message,
                   "fix the profile at this key (docs/PROFILES.md)")
           for e in sorted(profile_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    if out:
        return out
    return _sense(doc, source)


def _sense(doc: dict, source: str) -> list[Finding]:
    from auditkit.profile.bounds import pattern_problem

    out = []

    def bad(loc, expected, found, message):
        out.append(Finding(source, "profile-invalid", json_location(loc), expected, found, message))

    patterns = doc["rows"]["files"]
    patterns = [patterns] if isinstance(patterns, str) else patterns
    captures = set()
    for i, p in enumerate(patterns):
        names = _captures(p)
        why = pattern_problem(p)
        if why:
            bad(["rows", "files"], why, p[:80], "a file pattern names a few parts of a file name")
        elif names is None:
            bad(["rows", "files"], "a glob with {name} captures", p, "braces must pair and name a capture")
        else:
            captures |= set(names)
    for col, spec in doc["rows"].get("columns", {}).items():
        if col not in RUN_COLUMNS:
            bad(["rows", "columns", col], "a SPEC run-row column", col,
                f"the SPEC columns are: {', '.join(RUN_COLUMNS)}")
        if isinstance(spec, dict) and "capture" in spec and spec["capture"] not in captures:
            bad(["rows", "columns", col, "capture"], f"one of the captures {sorted(captures)}", spec["capture"],
                "name a {capture} of rows.files")
    names = list(doc["gates"])
    for i, (name, g) in enumerate(doc["gates"].items()):
        rules = g["rules"]
        if rules == TODO:
            continue
        merged = merge_rules(doc.get("rules", {}), rules)
        cands = merged.get("inputs", {}).get("candidates")
        parent = parent_gate(cands)
        if parent is not None:
            if parent not in names[:i]:
                bad(["gates", name, "rules", "inputs", "candidates"], "a gate listed earlier in the profile", parent,
                    "gates are replayed in profile order; list the parent gate first")
        recs = g.get("recorded", [])
        for j, r in enumerate(recs if isinstance(recs, list) else [recs]):
            is_csv = r["path"].endswith(".csv")
            loc = ["gates", name, "recorded"] + ([j] if isinstance(recs, list) else [])
            if is_csv and ("promoted" in r or "checks" in r):
                bad(loc, "a JSON decision for promoted/checks paths", r["path"],
                    "in a CSV decision give promoted as a column of candidates")
            for part in ("candidates", "cells"):
                fm = r.get(part)
                if fm is not None and is_csv and "at" in fm:
                    bad(loc + [part, "at"], "no JSON path for a CSV file", fm["at"], "remove `at`")
                if fm is not None and not is_csv and "at" not in fm:
                    bad(loc + [part], "`at`: the JSON path of the records", "none", "add at = \"$.…\"")
            if r.get("cells") is not None and not {"host", "seed"} <= set(r["cells"]):
                bad(loc + ["cells"], "host and seed fields", sorted(r["cells"]), "a cell is a (host, seed) pair")
    out += _jsonpath_findings(doc, source)
    kinds = {k.value for k in TableKind}
    for i, t in enumerate(doc.get("tables", [])):
        if t["generator"] not in kinds:
            bad(["tables", i, "generator"], f"one of {sorted(kinds)}", t["generator"], "name an auditkit generator")
    return out


def _jsonpath_findings(doc: dict, source: str) -> list[Finding]:
    """Every JSON path the profile gives must compile (RFC 9535, python-jsonpath) within the bounds
    of `auditkit.profile.bounds`."""
    import jsonpath

    from auditkit.profile.bounds import jsonpath_problem

    paths = [(["manifests", i, "entries"], m["entries"]) for i, m in enumerate(doc["manifests"]) if "entries" in m]
    for name, g in doc["gates"].items():
        recs = g.get("recorded", [])
        for j, r in enumerate(recs if isinstance(recs, list) else [recs]):
            base = ["gates", name, "recorded", j]
            if "promoted" in r:
                paths.append((base + ["promoted"], r["promoted"]))
            for part in ("candidates", "cells"):
                if "at" in r.get(part, {}):
                    paths.append((base + [part, "at"], r[part]["at"]))
            for k, c in enumerate(r.get("checks", [])):
                paths += [(base + ["checks", k, f], c[f]) for f in ("passed", "value") if f in c]
    out = []
    for loc, p in paths:
        why = jsonpath_problem(p)
        if why:
            out.append(Finding(source, "profile-invalid", json_location(loc), why, p[:80],
                               "select the value by its own keys ($.a.b[0]): such a path can take hours"))
            continue
        try:
            jsonpath.compile(p)
        except jsonpath.JSONPathError as exc:
            out.append(Finding(source, "profile-invalid", json_location(loc), "a JSONPath (RFC 9535)",
                               str(exc).splitlines()[0], "fix the path"))
    return out


def _captures(pattern: str) -> list[str] | None:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "}":
            return None
        if c == "{":
            j = pattern.find("}", i)
            if j < 0:
                return None
            name = pattern[i + 1:j]
            if not name.isidentifier() or "{" in name:
                return None
            out.append(name)
            i = j
        i += 1
    return out


def merge_rules(defaults: dict, own: dict) -> dict:
    """A gate's rules: the profile-wide [rules] with the gate's own keys on top (inputs key by key)."""
    merged = {**defaults, **own}
    if isinstance(defaults.get("inputs"), dict) and isinstance(own.get("inputs"), dict):
        merged["inputs"] = {**defaults["inputs"], **own["inputs"]}
    merged.setdefault("checks", [])
    return merged


def parse_profile(doc: dict, source: str = "<profile>", sha256: str = "") -> Profile:
    """A `Profile` from a parsed TOML/JSON document. Raises AuditError listing every problem."""
    bad = profile_findings(doc, source)
    if bad:
        lines = "; ".join(f"{f.location or '$'}: {f.found}" for f in bad[:8])
        raise AuditError(f"the profile is not valid ({len(bad)} problem(s)): {lines}", path=source,
                         hint="fix the keys named (docs/PROFILES.md describes the format)")
    manifests = tuple(
        ManifestSpec(m["path"], m["columns"]["path"], m["columns"]["sha256"], m["columns"].get("bytes"),
                     m.get("entries"), m.get("algorithm", "sha256"))
        for m in doc["manifests"])
    mx = doc["matrix"]
    matrix = MatrixSpec(mx["path"], mx.get("config_id", "config_id"), mx.get("role", "role"))
    files = doc["rows"]["files"]
    rules = tuple(_column_rule(k, v) for k, v in doc["rows"].get("columns", {}).items())
    rows = RowsSpec(tuple([files] if isinstance(files, str) else files), rules)
    gates = []
    for name, g in doc["gates"].items():
        prose = g["prose"] if isinstance(g["prose"], list) else [g["prose"]]
        recs = g.get("recorded", [])
        recs = recs if isinstance(recs, list) else [recs]
        rules_doc = None
        if g["rules"] != TODO:
            rules_doc = {"schema": "auditkit/rules/v1", "gate": name,
                         **merge_rules(doc.get("rules", {}), g["rules"])}
        gates.append(GateSpec(name, tuple(prose_ref(p) for p in prose), rules_doc,
                              tuple(_recorded(r) for r in recs)))
    tables = tuple(
        TableSpec(t["path"], t["generator"], t.get("table", t["generator"]), tuple(t["key"]),
                  tuple(t.get("columns", {}).items()), tuple((k, tuple(str(x) for x in (v if isinstance(v, list) else [v])))
                        for k, v in t.get("where", {}).items()),
                  float(t.get("tolerance", DEFAULT_TOLERANCE)),
                  tuple((c, tuple((str(a), str(b)) for a, b in m.items())) for c, m in t.get("values", {}).items()),
                  t.get("accounting", "measured"))
        for t in doc.get("tables", []))
    return Profile(doc["name"], manifests, matrix, rows, tuple(gates), tables, source, sha256, doc)


def _column_rule(target: str, spec) -> ColumnRule:
    if isinstance(spec, str):
        return ColumnRule(target, Source.COLUMN, spec)
    convert = Convert(spec["convert"]) if "convert" in spec else None
    mapping = tuple((str(k), str(v)) for k, v in spec.get("map", {}).items())
    if "column" in spec:
        return ColumnRule(target, Source.COLUMN, spec["column"], convert, mapping)
    if "capture" in spec:
        return ColumnRule(target, Source.CAPTURE, spec["capture"], convert, mapping)
    return ColumnRule(target, Source.CONST, str(spec["const"]))


_FIELDS = ("rank", "mean", "min", "max", "std", "wins", "eligible", "promoted", "val_bpb")


def _fieldmap(d: dict | None) -> FieldMap | None:
    if d is None:
        return None
    return FieldMap(d["key"], d.get("at"), d.get("host"), d.get("seed"),
                    tuple((f, d[f]) for f in _FIELDS if f in d))


def _recorded(r: dict) -> RecordedSpec:
    checks = tuple(CheckMap(c.get("index", i), c.get("passed"), c.get("value")) for i, c in enumerate(r.get("checks", [])))
    return RecordedSpec(r["path"], r.get("promoted"), bool(r.get("ordered", False)), _fieldmap(r.get("candidates")),
                        _fieldmap(r.get("cells")), checks, float(r.get("tolerance", DEFAULT_TOLERANCE)))


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile TOML file. Raises AuditError (missing, not TOML, not valid)."""
    from auditkit.userfiles import read_user_file

    p = Path(path)
    data = read_user_file(p, "profile", MAX_PROFILE_BYTES,  # a FIFO or /dev/zero is refused, not read forever
                          hint="give the profile with --profile P.toml (draft one: auditkit profile draft PKG)")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AuditError(f"the profile is not TOML: {exc}", path=str(p)) from exc
    except RecursionError:  # arrays or inline tables nested thousands deep
        raise AuditError(f"the profile nests arrays or tables deeper than {MAX_PROFILE_DEPTH} levels",
                         path=str(p), hint="a profile is a few levels deep (docs/PROFILES.md)") from None
    where = _too_deep(doc, MAX_PROFILE_DEPTH)
    if where is not None:
        raise AuditError(f"the profile nests arrays or tables deeper than {MAX_PROFILE_DEPTH} levels (at {where})",
                         path=str(p), hint="a profile is a few levels deep (docs/PROFILES.md)")
    return parse_profile(doc, str(p), hashlib.sha256(data).hexdigest())


MAX_PROFILE_DEPTH = 64   # as the store's JSON limit: deeper nesting is refused before anything walks it
MAX_PROFILE_BYTES = 16 << 20   # a profile is a page of TOML; this is far more than any needs


def _too_deep(doc, limit: int) -> str | None:
    """The JSON path of the first value nested deeper than `limit`, or None (a walk with a stack)."""
    stack = [(doc, "$", 0)]
    while stack:
        value, at, depth = stack.pop()
        if depth > limit:
            return at if len(at) <= 120 else at[:117] + "..."
        if isinstance(value, dict):
            stack.extend((v, f"{at}.{k}", depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{at}[{i}]", depth + 1) for i, v in enumerate(value))
    return None

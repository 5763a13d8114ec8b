"""Draft a profile from a package's own files (like frictionless `describe`).

`draft_profile(package)` reads the package (never writes, never follows a
symlink) and returns TOML text: the manifest(s) and their columns, the matrix,
the run-row files with a file-name pattern and host/stage captures, a guess
for every SPEC run-row column (renames, minutes to seconds, local times to
UTC, status and host label maps), one gate per prose file that reads like a
pre-registration with its sha256 pinned — and ``rules = "TODO"`` for each:
the rules themselves are a person's transcription, never a guess.  Likely
recorded decisions and tables are suggested in comments.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

import tomlkit

from auditkit.profile import _store
from auditkit.profile.model import ENGINE_COLUMNS, PROFILE_SCHEMA, TODO
from auditkit.profile.values import DATE_RE
from auditkit.package.rows import STATUSES
from auditkit.derived.tables import TableKind

SYNONYMS = {
    "run_id": ("run_id", "run_name", "run", "name", "id"),
    "host": ("host", "machine", "hostname", "node", "host_label"),
    "seed": ("seed",),
    "config_id": ("config_id", "condition", "config", "candidate", "arm"),
    "status": ("status", "exit_status", "result", "state", "outcome"),
    "val_bpb": ("val_bpb", "final_val_bpb", "val_bpb_final", "valid_bpb", "bpb"),
    "runner_sha256": ("runner_sha256", "runner_sha", "code_sha", "git_sha"),
    "started_at": ("started_at", "start", "start_time", "start_local", "start_utc", "started"),
    "finished_at": ("finished_at", "end", "end_time", "end_local", "end_utc", "finished"),
}
# (SPEC column, package column, conversion)
UNITS = {
    "budget_value": (("budget_seconds", None), ("budget_s", None), ("budget_value", None),
                     ("budget_min", "minutes_to_seconds"), ("budget_minutes", "minutes_to_seconds"),
                     ("budget_h", "hours_to_seconds"), ("budget_hours", "hours_to_seconds")),
    "training_seconds": (("training_seconds", None), ("train_s", None), ("train_seconds", None),
                         ("train_min", "minutes_to_seconds"), ("training_minutes", "minutes_to_seconds"),
                         ("train_h", "hours_to_seconds")),
}
STATUS_WORDS = {"ok": "ok", "completed": "ok", "complete": "ok", "done": "ok", "success": "ok", "succeeded": "ok",
                "finished": "ok", "crashed": "failed", "crash": "failed", "error": "failed", "failed": "failed",
                "fail": "failed", "killed": "failed", "oom": "oom", "out_of_memory": "oom", "timeout": "timeout",
                "timed_out": "timeout", "diverged": "diverged", "nan": "diverged"}
PATH_COLS = ("path", "relative_path", "file", "filename", "name")
HASH_COLS = ("sha256", "sha256sum", "hash", "digest", "checksum", "sha512", "sha1", "md5")
SIZE_COLS = ("bytes", "size", "size_bytes", "length")
PREREG_RE = re.compile(r"pre-?regist|preanalysis|frozen rule", re.I)


def _read_csv(store, rel) -> tuple[list[str], list[dict]]:
    try:
        return store.read_csv(rel)
    except Exception:  # noqa: BLE001 - a draft skips what it cannot read, and says so
        return [], []


_TIME_WORDS = {"started_at": re.compile(r"(?:^|_)(?:start|started|begin|began)(?:_|$)", re.I),
               "finished_at": re.compile(r"(?:^|_)(?:end|ended|finish|finished|stop|stopped|done)(?:_|$)", re.I)}
_TIME_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _time_column(header, samples, spec: str) -> str | None:
    """A start/finish column the synonyms missed (`start_time_local`, `run_end_utc`): its name holds the
    word as a part, and every value it holds looks like a date and time."""
    for h in header:
        vals = [v for v in samples.get(h, ()) if v]
        if _TIME_WORDS[spec].search(h) and vals and all(_TIME_VALUE.match(v) for v in vals):
            return h
    return None


def _pick(header, names) -> str | None:
    low = {h.lower(): h for h in header}
    for n in names:
        if n in low:
            return low[n]
    return None


def _manifest(store, rel) -> tuple[dict | None, str]:
    if rel.endswith(".csv"):
        header, rows = _read_csv(store, rel)
        p, h = _pick(header, PATH_COLS), _pick(header, HASH_COLS)
        if p and h and rows:
            cols = {"path": p, "sha256": h}
            if _pick(header, SIZE_COLS):
                cols["bytes"] = _pick(header, SIZE_COLS)
            return {"path": rel, "columns": cols, **_algorithm(h, rows[0].get(h, ""))}, ""
        return None, "no path and hash columns"
    try:
        doc = store.read_json(rel)
    except Exception:  # noqa: BLE001
        return None, "not readable JSON"
    for key, val in (doc.items() if isinstance(doc, dict) else []):
        if isinstance(val, list) and val and all(isinstance(e, dict) for e in val):
            p, h = _pick(list(val[0]), PATH_COLS), _pick(list(val[0]), HASH_COLS)
            if p and h:
                cols = {"path": p, "sha256": h}
                if _pick(list(val[0]), SIZE_COLS):
                    cols["bytes"] = _pick(list(val[0]), SIZE_COLS)
                return {"path": rel, "entries": f"$.{key}", "columns": cols,
                        **_algorithm(h, str(val[0].get(h, "")))}, ""
    return None, "no list of entries with a path and a hash"


def _algorithm(col: str, sample: str) -> dict:
    n = len(sample.strip())
    alg = {32: "md5", 40: "sha1", 128: "sha512"}.get(n, "sha256")
    for a in ("md5", "sha1", "sha512"):
        if a in col.lower():
            alg = a
    return {} if alg == "sha256" else {"algorithm": alg}


def _pattern(rels: list[str]) -> str | None:
    """`dir/{host}_{stage}<suffix>` when the file names share a directory and a suffix and their
    first `_`-token (the host) takes few values."""
    dirs = {r.rsplit("/", 1)[0] if "/" in r else "" for r in rels}
    if len(dirs) != 1 or len(rels) < 2:
        return None
    names = [r.rsplit("/", 1)[-1] for r in rels]
    if not all("_" in n for n in names):
        return None
    suffix = os.path.commonprefix([n[::-1] for n in names])[::-1]
    suffix = suffix[suffix.rfind("_"):] if "_" in suffix else suffix
    firsts = {n.split("_", 1)[0] for n in names}
    if len(firsts) > 16 or not suffix:
        return None
    d = dirs.pop()
    return (f"{d}/" if d else "") + "{host}_{stage}" + suffix


def draft_profile(package: str | Path) -> str:
    """TOML text of a first profile for `package`; rules are TODO. Raises AuditError when the
    package cannot be listed."""
    root = Path(package)
    store, files, problems = _store.open_package(root)
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"Draft profile for {root.name}, written by `auditkit profile draft`."))
    doc.add(tomlkit.comment("Every value below is a guess from the package's own files: check each one."))
    doc.add(tomlkit.comment("TODO marks what only a person can decide: each gate's rules, transcribed from its prose."))
    for f in problems:
        doc.add(tomlkit.comment(f"skipped {f.path}: {f.found}"))
    doc.add("schema", PROFILE_SCHEMA)
    doc.add("name", re.sub(r"[^A-Za-z0-9._-]+", "-", root.name) or "package")

    # manifests
    aot = tomlkit.aot()
    notes = []
    for rel in sorted(files):
        if "/" not in rel and "manifest" in rel.lower() and rel.endswith((".csv", ".json")):
            m, why = _manifest(store, rel)
            if m is None:
                notes.append(f"{rel} is not a manifest ({why})")
                continue
            t = tomlkit.table()
            t.add("path", m["path"])
            if "entries" in m:
                t.add("entries", m["entries"])
            if "algorithm" in m:
                t.add("algorithm", m["algorithm"])
            t.add("columns", _inline(m["columns"]))
            aot.append(t)
    for n in notes:
        doc.add(tomlkit.comment(n))
    if len(aot):
        doc.add("manifests", aot)
    else:
        doc.add(tomlkit.comment("no manifest found: fixity cannot be checked"))
        doc.add("manifests", tomlkit.array())

    # matrix
    mats = sorted(r for r in files if r.startswith("matrices/") and r.endswith(".csv"))
    matrix = tomlkit.table()
    matrix_ids: set[str] = set()
    if mats:
        header, rows = _read_csv(store, mats[0])
        cid = _pick(header, SYNONYMS["config_id"]) or (header[0] if header else "config_id")
        role = _pick(header, ("role", "kind", "type"))
        matrix.add("path", mats[0])
        if cid != "config_id":
            matrix.add("config_id", cid)
        if role and role != "role":
            matrix.add("role", role)
        matrix_ids = {r.get(cid, "") for r in rows}
        if len(mats) > 1:
            matrix.add(tomlkit.comment(f"other matrices: {', '.join(mats[1:])}"))
    else:
        matrix.add("path", TODO)
        matrix.add(tomlkit.comment("TODO: no matrices/*.csv found; name the candidate matrix"))
    doc.add("matrix", matrix)

    # run rows
    doc.add("rows", _rows(store, files))

    # gates
    gates = tomlkit.table(is_super_table=True)
    for rel, day in _preregistrations(store, files):
        g = tomlkit.table()
        g.add(tomlkit.comment(f"asserted {day or 'undated'}; TODO: transcribe the rules of this prose file "
                              "(inputs, metric, promote, checks; docs/PROFILES.md)"))
        g.add("prose", _inline({"path": rel, "sha256": _store.hash_file(store, rel)[0]}))
        g.add("rules", TODO)
        gates.add(_slug(rel), g)
    if not gates:
        gates.add(tomlkit.comment("TODO: no prose pre-registration found; add [gates.NAME] tables by hand"))
    doc.add("gates", gates)
    for line in _suggestions(store, files, matrix_ids):
        doc.add(tomlkit.comment(line))
    return tomlkit.dumps(doc)


def _inline(d: dict):
    t = tomlkit.inline_table()
    t.update(d)
    return t


def _slug(rel: str) -> str:
    stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = DATE_RE.sub("", stem)
    stem = re.sub(r"(?i)^(preanalysis|prereg(istration)?)[_-]*", "", stem)
    return re.sub(r"[^a-z0-9._-]+", "_", stem.lower()).strip("_-.") or "gate"


def _preregistrations(store, files) -> list[tuple[str, str | None]]:
    out = []
    for rel in sorted(files):
        if not rel.lower().endswith((".txt", ".md")):
            continue
        name = rel.rsplit("/", 1)[-1]
        if "decision" in name.lower():
            continue
        try:
            text = store.read_text(rel)
        except Exception:  # noqa: BLE001
            continue
        if PREREG_RE.search(name) or (rel.startswith("preanalysis/") and PREREG_RE.search(text)):
            m = DATE_RE.search(name) or DATE_RE.search(text)
            out.append((rel, m.group(0) if m else None))
    return sorted(out, key=lambda x: (x[1] or "9999", x[0]))


def _rows(store, files):
    t = tomlkit.table()
    cands = sorted(r for r in files if r.startswith("remote-results/") and r.endswith(".csv"))
    pattern = _pattern(cands)
    if pattern is None:
        t.add("files", "TODO")
        t.add(tomlkit.comment("TODO: no run-row files found by name; give their pattern, e.g. "
                              "remote-results/{host}_{stage}_summary.csv"))
        return t
    t.add("files", pattern)
    t["files"].comment("host and stage are captured from the file name")
    from auditkit.profile.rows import compile_pattern

    parser = compile_pattern(pattern)
    headers, samples, host_pairs = {}, defaultdict(set), defaultdict(set)
    for rel in cands:
        caps = parser.parse(rel)
        header, rows = _read_csv(store, rel)
        headers[rel] = header
        for r in rows:
            for k, v in r.items():
                if k is not None and len(samples[k]) < 50:
                    samples[k].add(v or "")
        hcol = _pick(header, SYNONYMS["host"])
        if caps is not None and hcol:
            for r in rows:
                host_pairs[r.get(hcol, "")].add(caps["host"])
    header = headers[cands[0]]
    if any(h != header for h in headers.values()):
        t.add(tomlkit.comment("the run-row files do not all share one header: check the columns below"))
    cols = tomlkit.table()
    for spec, names in SYNONYMS.items():
        col = _pick(header, names)
        if col is None and spec in _TIME_WORDS:
            col = _time_column(header, samples, spec)
        if col is None:
            if spec in ENGINE_COLUMNS and spec not in ("host", "stage"):
                cols.add(tomlkit.comment(f"TODO: no column found for {spec}"))
            continue
        rule: dict | str = col
        if spec == "host":
            mapping = {k: sorted(v)[0] for k, v in host_pairs.items() if len(v) == 1}
            if all(k == v for k, v in mapping.items()):
                continue  # the file name's label is the row's: the capture is enough
            rule = {"column": col, "map": mapping}
        elif spec == "status":
            vals = sorted(samples[col])
            if not set(vals) <= set(STATUSES):
                rule = {"column": col, "map": {v: STATUS_WORDS.get(v.lower(), TODO) for v in vals}}
        elif spec in ("started_at", "finished_at"):
            if any(re.search(r"[+-]\d\d:?\d\d$", v) for v in samples[col]):
                rule = {"column": col, "convert": "local_to_utc"}
            elif not all(v.endswith("Z") for v in samples[col] if v):
                cols.add(tomlkit.comment(f"TODO: {col} has no UTC offset: a person must say which zone"))
        if rule == spec:
            continue  # same name: read as it is
        cols.add(spec, rule if isinstance(rule, str) else _inline(rule))
    for spec, options in UNITS.items():
        for name, conv in options:
            col = _pick(header, (name,))
            if col is None:
                continue
            if spec == "budget_value":
                cols.add("budget_kind", _inline({"const": "seconds"}))
            if col != spec or conv:
                cols.add(spec, _inline({"column": col, **({"convert": conv} if conv else {})}))
            break
    t.add("columns", cols)
    return t


def _suggestions(store, files, matrix_ids: set[str]) -> list[str]:
    """Comments: where decisions look recorded, which tables look like a generator's."""
    out = []
    for rel in sorted(files):
        if not rel.startswith("analysis/"):
            continue
        name = rel.rsplit("/", 1)[-1].lower()
        if "decision" in name and rel.endswith(".json"):
            try:
                doc = store.read_json(rel)
            except Exception:  # noqa: BLE001
                continue
            for path in _id_lists(doc, matrix_ids, "$"):
                out.append(f"recorded promoted list? recorded = {{ path = {json.dumps(rel)}, promoted = {json.dumps(path)} }}")
        for kind in TableKind:
            if kind.value in name and rel.endswith(".csv"):
                header, _ = _read_csv(store, rel)
                out.append(f"table? [[tables]] path = {json.dumps(rel)}, generator = {json.dumps(kind.value)} "
                           f"(its columns: {', '.join(header)}; give key and columns)")
    if out:
        out.insert(0, "Suggestions (not active; copy what holds into a gate's `recorded` or into [[tables]]):")
    return out


def _id_lists(doc, ids: set[str], at: str) -> list[str]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            p = f"{at}.{k}" if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(k)) else f"{at}[{json.dumps(k)}]"
            if ids and ((isinstance(v, list) and v and all(isinstance(x, str) and x in ids for x in v))
                        or (isinstance(v, str) and v in ids)):
                out.append(p)
            elif isinstance(v, (dict, list)):
                out += _id_lists(v, ids, p)
    return out

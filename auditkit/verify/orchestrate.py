"""`auditkit verify`: prove a package is whole, unaltered and what the format says.

One read of every file (`auditkit.package.scan_package`), then checks over
what was read — never stopping at the first finding:

- completeness and fixity against MANIFEST.json (missing, unlisted, changed,
  duplicated or unsafe entries), MANIFEST.csv agreeing with it, the `root`
  recomputed;
- every JSON document against its schema; every CSV under `remote-results/`
  and `matrices/` row by row (columns, types, status/val_bpb coherence, host
  and stage equal to the file name's, unique run_id, config_id in the matrix,
  started_at <= finished_at, no BOM, no CRLF, at least one row);
- cross-file: the protocol's required files exist; decisions name rules and
  inputs with the sha256 they record; rows name checkpoints that exist with
  the recorded hash; table and figure manifests match their files;
- checkpoints: header, offsets, sizes, metadata, finite values, and tensor
  names and shapes exactly as their `model_config` implies;
- with `deep`, every checkpoint named by a row is re-evaluated (torch).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Callable

from auditkit.package.checkpoint import architecture_problems, expected_num_params
from auditkit.errors import AuditError
from auditkit.findings import Finding, Report, row_location
from auditkit.package.manifest import MANIFEST_CSV, MANIFEST_JSON, Entry, root_hash
from auditkit.package.scan import DOC_CAP, FileScan, PackageScan, scan_package, unsafe_reason
from auditkit.package.rows import RNG_SEED_COLUMN, RUN_COLUMNS, parse_run_csv_path


def schema_errors(instance, name: str):
    from auditkit.package.schemas import schema_errors as errors

    return errors(instance, name)


def validate_document(instance, name: str, path: str):
    from auditkit.package.schemas import validate_document as validate

    return validate(instance, name, path)


# -- fast validity tests compiled from the schemas --------------------------------------------
# jsonschema takes ~0.2 ms a run row and as much a MANIFEST entry; a package holds thousands.
# `_compile` turns the subset of JSON Schema our row/entry schemas use into a plain predicate
# with the same answer (tests compare them on generated instances); only instances it refuses
# go to jsonschema, which then says why.  A keyword outside the subset: no fast path.

_IGNORED = {"$schema", "$id", "title", "description"}


class _Unsupported(Exception):
    pass


def _same(a, b) -> bool:
    """JSON equality as jsonschema means it: booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _is_type(x, t: str) -> bool:
    if t == "string":
        return isinstance(x, str)
    if t == "object":
        return isinstance(x, dict)
    if t == "array":
        return isinstance(x, list)
    if t == "boolean":
        return isinstance(x, bool)
    if t == "null":
        return x is None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    if t == "number":
        return True
    if t == "integer":
        return isinstance(x, int) or x.is_integer()
    raise _Unsupported(t)


def _compile(schema) -> Callable[[object], bool]:
    import re

    if schema is True:
        return lambda x: True
    if schema is False:
        return lambda x: False
    if not isinstance(schema, dict):
        raise _Unsupported(repr(schema))
    keys = set(schema) - _IGNORED
    if keys <= {"type", "pattern", "minLength"} and schema.get("type") == "string":
        rx = re.compile(schema.get("pattern", ""))
        n = schema.get("minLength", 0)
        return lambda x: isinstance(x, str) and len(x) >= n and rx.search(x) is not None  # the common column
    tests: list[Callable[[object], bool]] = []
    for key, val in schema.items():
        if key in _IGNORED:
            continue
        if key == "type":
            types = val if isinstance(val, list) else [val]
            for t in types:
                _is_type(None, t)  # unsupported type names raise here
            tests.append(lambda x, ts=tuple(types): any(_is_type(x, t) for t in ts))
        elif key == "pattern":
            rx = re.compile(val)
            tests.append(lambda x, rx=rx: not isinstance(x, str) or rx.search(x) is not None)
        elif key == "minLength":
            tests.append(lambda x, n=val: not isinstance(x, str) or len(x) >= n)
        elif key == "minimum":
            tests.append(lambda x, n=val: not _is_type(x, "number") or x >= n)
        elif key == "exclusiveMinimum":
            tests.append(lambda x, n=val: not _is_type(x, "number") or x > n)
        elif key == "enum":
            tests.append(lambda x, vs=tuple(val): any(_same(x, v) for v in vs))
        elif key == "const":
            tests.append(lambda x, v=val: _same(x, v))
        elif key == "required":
            tests.append(lambda x, ks=tuple(val): not isinstance(x, dict) or all(k in x for k in ks))
        elif key == "properties":
            subs = {k: _compile(v) for k, v in val.items()}
            tests.append(lambda x, subs=subs: not isinstance(x, dict)
                         or all(f(x[k]) for k, f in subs.items() if k in x))
        elif key == "additionalProperties":
            known = set(schema.get("properties", {}))
            sub = _compile(val)
            tests.append(lambda x, sub=sub, known=known: not isinstance(x, dict)
                         or all(sub(v) for k, v in x.items() if k not in known))
        elif key in ("allOf", "anyOf"):
            subs = [_compile(v) for v in val]
            agg = all if key == "allOf" else any
            tests.append(lambda x, subs=subs, agg=agg: agg(f(x) for f in subs))
        elif key == "if":
            cond = _compile(val)
            then = _compile(schema.get("then", True))
            other = _compile(schema.get("else", True))
            tests.append(lambda x, c=cond, t=then, o=other: t(x) if c(x) else o(x))
        elif key in ("then", "else"):
            continue
        else:
            raise _Unsupported(key)
    return lambda x: all(t(x) for t in tests)


@functools.lru_cache(maxsize=None)
def fast_valid(name: str, pointer: tuple[str, ...] = ()) -> Callable[[object], bool] | None:
    """A predicate equal to "valid against schema `name` (at `pointer`)", or None if the schema
    uses a keyword the compiler does not know."""
    from auditkit.package.schemas import load_schema

    schema = load_schema(name)
    for key in pointer:
        schema = schema[key]
    try:
        return _compile(schema)
    except (_Unsupported, re.error):
        return None


def row_schema_errors(row: dict, name: str) -> list[tuple[str, str]]:
    """schema_errors for one CSV row, with the compiled fast path for valid rows."""
    ok = fast_valid(name)
    if ok is not None and ok(row):
        return []
    return schema_errors(row, name)


def manifest_schema_findings(doc) -> list:
    """schema-invalid findings of MANIFEST.json, the same as validating the whole document."""
    files = doc.get("files") if isinstance(doc, dict) else None
    if isinstance(files, list) and len(files) > 1:
        ok = fast_valid("manifest", ("properties", "files", "items"))
        if ok is not None and all(ok(e) for e in files):
            return validate_document(dict(doc, files=files[:1]), "manifest", MANIFEST_JSON)
    return validate_document(doc, "manifest", MANIFEST_JSON)


def _warm() -> None:
    """Import jsonschema and numpy and compile every validator while the first files are read."""
    try:
        import numpy  # noqa: F401

        from auditkit.package.schemas import SCHEMA_NAMES, validator

        for name in SCHEMA_NAMES:
            validator(name)
        fast_valid("run-row")
        fast_valid("matrix-row")
        fast_valid("manifest", ("properties", "files", "items"))
    except Exception:  # noqa: BLE001 - the checks themselves will raise it as an AuditError
        pass


def schema_for(rel: str) -> str | None:
    if rel == "protocol.json":
        return "protocol"
    if rel == "table_manifest.json":
        return "table-manifest"
    if rel == "figure_manifest.json":
        return "figure-manifest"
    if rel.startswith("preanalysis/") and rel.endswith(".rules.json"):
        return "rules"
    if rel.startswith("analysis/") and rel.endswith("_decision.json"):
        return "decision"
    return None


class _Checker:
    def __init__(self, scan: PackageScan, report: Report):
        self.scan = scan
        self.files = scan.files
        self.report = report
        self.docs: dict[str, object] = {}
        self._csv: dict[str, object] = {}                       # rel -> rows (findings emitted once)
        self._row_errors: dict[tuple[str, int, str], list] = {}  # (rel, row, schema) -> [(loc, msg)]
        self._validated: dict[str, list] = {}                   # rel -> schema findings of a JSON document

    def prefetch(self) -> None:
        """Parse and validate every JSON/CSV document already read; the later checks reuse the results.

        Runs while the readers still hash the large files (documents are read first)."""
        for rel in sorted(self.files):
            if rel == MANIFEST_JSON:
                self.manifest_findings()
            elif rel.endswith(".json"):
                self.validated(rel)
            elif rel == MANIFEST_CSV:
                self.csv_rows(rel, ("path", "sha256", "bytes"), require_rows=False)
            elif parse_run_csv_path(rel):
                for i, r in self.csv_rows(rel, RUN_COLUMNS) or []:
                    self.row_errors(rel, i, r, "run-row")
            elif rel.startswith("matrices/") and rel.endswith(".csv"):
                for i, r in self.csv_rows(rel, ("config_id", "role")) or []:
                    self.row_errors(rel, i, r, "matrix-row")

    def row_errors(self, rel: str, i: int, row: dict, name: str) -> list:
        key = (rel, i, name)
        if key not in self._row_errors:
            self._row_errors[key] = row_schema_errors(row, name)
        return self._row_errors[key]

    def validated(self, rel: str) -> list:
        """Schema findings of a JSON document (its schema chosen by path); [] for one without a schema."""
        if rel not in self._validated:
            doc = self.json_doc(rel)
            name = schema_for(rel)
            self._validated[rel] = validate_document(doc, name, rel) if name and doc is not None else []
        return self._validated[rel]

    def manifest_findings(self) -> list:
        if MANIFEST_JSON not in self._validated:
            doc = self.json_doc(MANIFEST_JSON)
            self._validated[MANIFEST_JSON] = manifest_schema_findings(doc) if doc is not None else []
        return self._validated[MANIFEST_JSON]

    def add(self, path, code, location="", expected="", found="", message=""):
        self.report.add(Finding(path, code, location, str(expected), str(found), message))

    def collisions(self) -> None:
        """Paths that differ only in case or Unicode normalisation: one would overwrite the other
        when the package is copied to macOS or Windows."""
        import unicodedata

        seen: dict[str, str] = {}
        for rel in sorted(self.files):
            key = unicodedata.normalize("NFC", rel).casefold()
            if key in seen:
                self.add(rel, "path-collision", "", "a path unique ignoring case and Unicode normalisation",
                         f"same as {seen[key]}", "copied to a case-insensitive file system, one overwrites the other")
            else:
                seen[key] = rel

    def too_large(self, rel: str, fs: FileScan) -> None:
        self.add(rel, "document-too-large", "", f"at most {DOC_CAP} bytes", f"{fs.bytes} bytes",
                 "a JSON or CSV document this large is not parsed; its content is unchecked")

    # -- JSON ------------------------------------------------------------------
    def json_doc(self, rel: str):
        if rel in self.docs:
            return self.docs[rel]
        fs = self.files.get(rel)
        doc = None
        if fs is not None and fs.content is None:
            self.too_large(rel, fs)
        if fs is not None and fs.content is not None:
            try:
                doc = json.loads(fs.content.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                self.add(rel, "json-invalid", "", "valid UTF-8 JSON", str(exc)[:160], "the file does not parse")
        self.docs[rel] = doc
        return doc

    # -- manifest --------------------------------------------------------------
    def manifest(self) -> None:
        doc = self.json_doc(MANIFEST_JSON)
        if MANIFEST_JSON not in self.files:
            self.add(MANIFEST_JSON, "manifest-missing", "", "MANIFEST.json", "absent",
                     "nothing records the package's files or their hashes: obtain the published MANIFEST.json")
        if doc is None:
            if MANIFEST_CSV not in self.files:
                self.manifest_csv({})
            return
        self.report.extend(self.manifest_findings())
        listed: dict[str, Entry] = {}
        entries = doc.get("files") if isinstance(doc, dict) and isinstance(doc.get("files"), list) else []
        if not entries:
            self.add(MANIFEST_JSON, "manifest-empty", "$.files", "at least one file", "none",
                     "an empty manifest vouches for no file")
        paths_in_order = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not isinstance(e.get("path"), str):
                continue
            p = e["path"]
            paths_in_order.append(p)
            why = unsafe_reason(p)
            if why:
                self.add(MANIFEST_JSON, "manifest-unsafe-path", f"$.files[{i}].path", "a relative path inside the package",
                         p, f"{why}: the entry is refused and never opened")
                continue
            if p in listed:
                self.add(MANIFEST_JSON, "manifest-duplicate-entry", f"$.files[{i}].path", "each path once", p)
                continue
            if p in (MANIFEST_JSON, MANIFEST_CSV):
                self.add(MANIFEST_JSON, "manifest-lists-itself", f"$.files[{i}].path", "no entry for the manifests", p)
                continue
            listed[p] = Entry(p, str(e.get("sha256", "")), int(e.get("bytes", -1)) if isinstance(e.get("bytes"), int) else -1)
        if paths_in_order != sorted(paths_in_order):
            self.add(MANIFEST_JSON, "manifest-unsorted", "$.files", "entries sorted by path", "another order")
        for p, e in sorted(listed.items()):
            fs = self.files.get(p)
            if fs is None:
                self.add(p, "file-missing", "", f"sha256 {e.sha256[:16]}…", "absent",
                         "a file the MANIFEST lists is not in the package")
            elif fs.sha256 != e.sha256:
                self.add(p, "file-changed", "", f"sha256 {e.sha256}", f"sha256 {fs.sha256}",
                         "the file's content differs from what the MANIFEST recorded")
            elif fs.bytes != e.bytes:
                self.add(p, "file-size-changed", "", f"{e.bytes} bytes", f"{fs.bytes} bytes")
        for p in sorted(set(self.files) - set(listed) - {MANIFEST_JSON, MANIFEST_CSV}):
            self.add(p, "file-unlisted", "", "listed in MANIFEST.json", "not listed",
                     "a file the MANIFEST does not list: nothing vouches for its bytes; find out who added it")
        recorded_root = doc.get("root") if isinstance(doc, dict) else None
        computed = root_hash(listed.values())
        if recorded_root != computed:
            self.add(MANIFEST_JSON, "manifest-root-mismatch", "$.root", computed, recorded_root,
                     "the root does not hash the entries listed")
        actual = root_hash(Entry(p, f.sha256, f.bytes) for p, f in self.files.items()
                           if p not in (MANIFEST_JSON, MANIFEST_CSV))
        self.report.info["root (recorded)"] = recorded_root
        self.report.info["root (of the files)"] = actual
        self.manifest_csv(listed)

    def manifest_csv(self, listed: dict[str, Entry]) -> None:
        fs = self.files.get(MANIFEST_CSV)
        if fs is None:
            self.add(MANIFEST_CSV, "manifest-csv-missing", "", "MANIFEST.csv", "absent",
                     "SPEC section 9 asks for MANIFEST.csv beside MANIFEST.json")
            return
        rows = self.csv_rows(MANIFEST_CSV, ("path", "sha256", "bytes"), require_rows=False)
        if rows is None:
            return
        seen = {}
        for i, r in rows:
            seen[r.get("path", "")] = (r.get("sha256", ""), r.get("bytes", ""))
        want = {p: (e.sha256, str(e.bytes)) for p, e in listed.items()}
        for p in sorted(set(want) | set(seen)):
            if want.get(p) != seen.get(p):
                self.add(MANIFEST_CSV, "manifest-csv-mismatch", f"path {p}",
                         want.get(p, "no entry"), seen.get(p, "no entry"),
                         "MANIFEST.csv and MANIFEST.json disagree: one was edited after the pair was written")

    # -- CSV -------------------------------------------------------------------
    def csv_rows(self, rel: str, required: tuple[str, ...], *, require_rows: bool = True):
        """[(row number, row)] of a CSV document, its findings added once; None if unreadable."""
        if rel not in self._csv:
            self._csv[rel] = self._read_csv(rel, required, require_rows)
        return self._csv[rel]

    def _read_csv(self, rel: str, required: tuple[str, ...], require_rows: bool):
        fs = self.files.get(rel)
        if fs is None:
            return None
        if fs.content is None:
            self.too_large(rel, fs)
            return None
        raw = fs.content
        if raw.startswith(b"\xef\xbb\xbf"):
            self.add(rel, "csv-bom", "byte 0", "no byte-order mark", "UTF-8 BOM",
                     "the file was re-saved by a tool that adds a BOM")
            raw = raw[3:]
        if b"\r\n" in raw:
            self.add(rel, "csv-crlf", "", "\\n line endings", "\\r\\n line endings",
                     "the file was re-saved by a tool that writes \\r\\n endings")
        try:
            text = raw.decode("utf-8")
            reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
            header = [h.strip("\r") for h in (reader.fieldnames or [])]
            rows = []
            for i, r in enumerate(reader, 1):
                if None in r:
                    self.add(rel, "csv-extra-cells", row_location(i), f"{len(header)} cells", f"{len(header) + len(r[None])}")
                    r.pop(None)
                rows.append((i, {k.strip("\r") if k else k: (v.strip("\r") if isinstance(v, str) else "") for k, v in r.items()}))
        except (UnicodeDecodeError, csv.Error) as exc:
            self.add(rel, "csv-invalid", "", "UTF-8 CSV", str(exc)[:160])
            return None
        missing = [c for c in required if c not in header]
        if missing:
            self.add(rel, "csv-missing-column", "header", ", ".join(missing), ", ".join(header) or "no header",
                     "SPEC.md lists the required columns; rows without them are not checked")
        if require_rows and not rows:
            self.add(rel, "csv-empty", "", "at least one row", "no rows", "an empty table proves nothing")
        return rows

    # -- the package's own structure --------------------------------------------
    def structure(self) -> tuple[set[str], dict]:
        """Protocol, matrix, required files. Returns (matrix config_ids, protocol doc)."""
        proto = self.json_doc("protocol.json")
        if "protocol.json" not in self.files:
            self.add("protocol.json", "required-missing", "", "protocol.json", "absent", "SPEC section 1 requires it")
        configs: set[str] = set()
        if not isinstance(proto, dict):
            return configs, {}
        matrix = proto.get("matrix")
        if isinstance(matrix, str):
            if matrix not in self.files:
                self.add(matrix, "required-missing", "", "the matrix protocol.json names", "absent")
            elif unsafe_reason(matrix) is None:
                configs = self.matrix_rows(matrix)
        else:
            matrix = None
        for g in proto.get("gates", []) if isinstance(proto.get("gates"), list) else []:
            if not isinstance(g, dict):
                continue
            for rel in (g.get("rules"), f"analysis/{g.get('gate')}_decision.json"):
                if isinstance(rel, str) and rel not in self.files:
                    self.add(rel, "required-missing", "", f"the file of gate {g.get('gate')}", "absent",
                             "SPEC section 1 requires every gate's rules and decision")
        for rel in sorted(self.files):
            if rel.startswith("matrices/") and rel.endswith(".csv") and rel != matrix:
                self.matrix_rows(rel)
        if not any(parse_run_csv_path(p) for p in self.files):
            self.add("remote-results/", "required-missing", "", "at least one run CSV", "none")
        return configs, proto

    def matrix_rows(self, rel: str) -> set[str]:
        configs: set[str] = set()
        for i, r in self.csv_rows(rel, ("config_id", "role")) or []:
            for loc, msg in self.row_errors(rel, i, r, "matrix-row"):
                col = loc[2:] if loc.startswith("$.") else None
                self.add(rel, "row-invalid", row_location(i, col), "a matrix row following SPEC section 2", msg)
            cid = r.get("config_id", "")
            if cid in configs:
                self.add(rel, "config-id-duplicate", row_location(i, "config_id"), "unique config_id", cid)
            configs.add(cid)
        return configs

    def documents(self) -> None:
        for rel in sorted(self.files):
            name = schema_for(rel)
            if name is None:
                if rel.endswith(".json") and rel not in (MANIFEST_JSON,):
                    self.json_doc(rel)  # must parse
                continue
            self.report.extend(self.validated(rel))

    def run_rows(self, configs: set[str], stages: set[str] = frozenset()) -> dict[str, tuple[str, int, dict]]:
        """Validate every run CSV; return run_id -> (file, row number, row)."""
        seen: dict[str, tuple[str, int, dict]] = {}
        for rel in sorted(self.files):
            hs = parse_run_csv_path(rel)
            if hs is None:
                if rel.startswith("remote-results/") and rel.endswith(".csv"):
                    self.add(rel, "run-csv-name", "", "remote-results/<host>_<stage>_summary.csv", rel)
                continue
            host, stage = hs
            rows = self.csv_rows(rel, RUN_COLUMNS)
            for i, r in rows or []:
                for loc, msg in self.row_errors(rel, i, r, "run-row"):
                    col = loc[2:] if loc.startswith("$.") else None
                    self.add(rel, "row-invalid", row_location(i, col), "a value following SPEC section 4", msg)
                if r.get("host") and r["host"] != host:
                    self.add(rel, "host-mismatch", row_location(i, "host"), host, r["host"],
                             "a row's host must equal the host in its file name")
                if r.get("stage") and r["stage"] != stage:
                    self.add(rel, "stage-mismatch", row_location(i, "stage"), stage, r["stage"])
                rid = r.get("run_id", "")
                if rid in seen:
                    self.add(rel, "run-id-duplicate", row_location(i, "run_id"), "a run_id unique in the package",
                             f"{rid} (also {seen[rid][0]} row {seen[rid][1]})")
                elif rid:
                    seen[rid] = (rel, i, r)
                if stages and r.get("stage") and r["stage"] not in stages:
                    self.add(rel, "unknown-stage", row_location(i, "stage"), "a stage of protocol.json", r["stage"])
                if configs and r.get("config_id") and r["config_id"] not in configs:
                    self.add(rel, "unknown-config", row_location(i, "config_id"), "a config_id of the matrix", r["config_id"])
                a, b = _ts(r.get("started_at")), _ts(r.get("finished_at"))
                if a and b and a > b:
                    self.add(rel, "time-order", row_location(i, "finished_at"), f"at or after {r['started_at']}",
                             r["finished_at"])
        return seen

    def decisions(self) -> None:
        for rel in sorted(self.files):
            if not (rel.startswith("analysis/") and rel.endswith("_decision.json")):
                continue
            doc = self.json_doc(rel)
            if not isinstance(doc, dict):
                continue
            refs = []
            if isinstance(doc.get("rules"), dict):
                refs.append(("$.rules", doc["rules"]))
            for i, inp in enumerate(doc.get("inputs") or []):
                if isinstance(inp, dict):
                    refs.append((f"$.inputs[{i}]", inp))
            if not doc.get("inputs"):
                self.add(rel, "decision-no-inputs", "$.inputs", "the run CSVs the gate read", "none")
            for loc, ref in refs:
                p, sha = ref.get("path"), ref.get("sha256")
                if not isinstance(p, str):
                    continue
                fs = self.files.get(p)
                if fs is None:
                    self.add(rel, "decision-input-missing", loc + ".path", p, "absent",
                             "the decision names a file that is not in the package")
                elif fs.sha256 != sha:
                    self.add(rel, "decision-input-hash", loc + ".sha256", sha, fs.sha256,
                             f"{p} is not the file the decision was made from")

    def manifests_of_derived(self) -> None:
        for man, key in (("table_manifest.json", "tables"), ("figure_manifest.json", "figures")):
            doc = self.json_doc(man)
            if not isinstance(doc, dict):
                continue
            for i, e in enumerate(doc.get(key) or []):
                if not isinstance(e, dict) or not isinstance(e.get("path"), str):
                    continue
                fs = self.files.get(e["path"])
                if fs is None:
                    self.add(man, "derived-missing", f"$.{key}[{i}].path", e["path"], "absent")
                elif fs.sha256 != e.get("sha256"):
                    self.add(man, "derived-hash", f"$.{key}[{i}].sha256", e.get("sha256"), fs.sha256,
                             f"{e['path']} is not the file this manifest recorded")
                for inp in e.get("inputs") or []:
                    if isinstance(inp, str) and inp not in self.files:
                        self.add(man, "derived-input-missing", f"$.{key}[{i}].inputs", inp, "absent")

    def checkpoints(self, rows: dict[str, tuple[str, int, dict]]) -> list[tuple[FileScan, dict, str]]:
        named = []
        for rid, (rel, i, r) in sorted(rows.items()):
            ck = r.get("checkpoint", "")
            if not ck:
                continue
            fs = self.files.get(ck)
            if fs is None:
                self.add(rel, "checkpoint-missing", row_location(i, "checkpoint"), ck, "absent")
                continue
            if fs.sha256 != r.get("checkpoint_sha256"):
                self.add(rel, "checkpoint-hash", row_location(i, "checkpoint_sha256"), r.get("checkpoint_sha256"),
                         fs.sha256, f"{ck} is not the checkpoint this run wrote")
            scan = fs.checkpoint
            if scan is not None and scan.metadata is not None:
                mid = scan.metadata.get("run_id")
                if mid != rid:
                    self.add(ck, "checkpoint-run-mismatch", "__metadata__.run_id", rid, mid,
                             "the row names a checkpoint of another run")
                rng = (r.get(RNG_SEED_COLUMN) or "").strip()
                if rng and scan.metadata.get(RNG_SEED_COLUMN) != rng:  # anchored seeds (SPEC v1.1)
                    self.add(ck, "checkpoint-run-mismatch", f"__metadata__.{RNG_SEED_COLUMN}", rng,
                             scan.metadata.get(RNG_SEED_COLUMN) or "absent",
                             "the checkpoint was not trained with the seed its row claims")
                n_params = expected_num_params(scan)
                if n_params is not None:
                    n = n_params / 1e6
                    try:
                        claimed = float(r.get("num_params_M", ""))
                    except ValueError:
                        claimed = None
                    if claimed is not None and abs(claimed - n) > 5e-7 + 1e-9:
                        self.add(rel, "num-params-mismatch", row_location(i, "num_params_M"), f"{n:.6f}", r["num_params_M"],
                                 "the row's parameter count is not the checkpoint's")
            named.append((fs, r, ck))
        for rel, fs in sorted(self.files.items()):
            if fs.checkpoint is None:
                continue
            for code, loc, exp, found in fs.checkpoint.problems:
                self.add(rel, code, loc, exp, found)
            meta = fs.checkpoint.metadata
            if meta is None and not fs.checkpoint.problems:
                self.add(rel, "checkpoint-metadata-missing", "__metadata__", "run_id, config_id, seed, step, model_config", "none")
            elif meta is not None:
                for loc, msg in schema_errors(meta, "checkpoint-metadata"):
                    self.add(rel, "checkpoint-metadata-invalid", "__metadata__" + loc[1:], "SPEC section 8 metadata", msg)
                if "model_config" in meta and fs.checkpoint.tensors:
                    for code, loc, exp, found in architecture_problems(fs.checkpoint):
                        self.add(rel, code, loc, exp, found, "the checkpoint is not the architecture its model_config names")
        return named


def _ts(s):
    if not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


PROGRESS_MIN_BYTES = 256 * 1024 * 1024
SWITCH_INTERVAL = 1e-4


def _deep_module():
    """`auditkit.verify.deep`, imported only for --deep; AuditError (exit 2) when it or torch is missing."""
    import importlib.util

    hint = "--deep needs the runner extra: pip install torch==2.13.0"
    if importlib.util.find_spec("torch") is None:
        raise AuditError("--deep re-evaluates checkpoints with torch, which is not installed", hint=hint)
    try:
        import auditkit.verify.deep as deep
    except ImportError as exc:
        raise AuditError(f"--deep is not available: {exc}", hint=hint) from exc
    return deep


def verify_package(path: str | Path, *, jobs: int | None = None, deep: bool = False,
                   progress_factory: Callable[[int], object] | None = None, max_members: int | None = None,
                   max_bytes: int | None = None) -> Report:
    """Every check of a package (directory or archive). Raises AuditError when it cannot run.

    `progress_factory(total_bytes)` may return a tqdm-like bar (or None) once
    the size of the package is known.
    """
    deep_mod = _deep_module() if deep else None
    warm = threading.Thread(target=_warm, name="auditkit-warm", daemon=True)
    warm.start()
    report = Report("verify", str(path))
    bar = None

    def total_hint(total: int) -> None:
        nonlocal bar
        bar = progress_factory(total) if progress_factory else None

    def progress(k: int) -> None:
        if bar is not None:
            bar.update(k)

    checker: list[_Checker] = []

    def on_documents(scan: PackageScan) -> None:
        warm.join()
        checker.append(_Checker(scan, report))
        checker[0].prefetch()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)  # readers get the GIL back at once while the warm-up imports run
    try:
        scan = scan_package(path, jobs=jobs, keep_checkpoints=deep, progress=progress if progress_factory else None,
                            total_hint=total_hint, max_members=max_members, max_bytes=max_bytes,
                            on_documents=on_documents)
    finally:
        sys.setswitchinterval(interval)
        if bar is not None:
            bar.close()
    warm.join()
    try:
        _check(scan, report, deep_mod, checker[0] if checker else None)
    finally:
        for fs in scan.files.values():
            if fs.spool is not None:
                fs.spool.close()
                fs.spool = None
    return report


def _check(scan: PackageScan, report: Report, deep_mod, c: _Checker | None = None) -> None:
    for code, rel, found in scan.problems:
        report.add(Finding(rel, code, "", "a regular file at a safe relative path inside the package", found,
                           "packages hold only regular files at relative paths; the entry was not read"))
    c = c or _Checker(scan, report)
    c.collisions()
    c.manifest()
    configs, proto = c.structure()
    stages = {st.get("stage") for st in proto.get("stages") or [] if isinstance(st, dict)} \
        if isinstance(proto.get("stages"), list) else set()
    c.documents()
    rows = c.run_rows(configs, stages)
    c.decisions()
    c.manifests_of_derived()
    named = c.checkpoints(rows)
    report.checked = {"files": len(scan.files), "run rows": len(rows),
                      "checkpoints": sum(1 for f in scan.files.values() if f.checkpoint is not None)}
    if deep_mod is not None:
        done = 0
        for fs, row, ck in named:
            data = fs.read_spool()      # one checkpoint in memory at a time
            if data is None:
                continue
            report.extend(deep_mod.reevaluate_checkpoint(data, row, ck))
            done += 1
        report.checked["re-evaluated"] = done

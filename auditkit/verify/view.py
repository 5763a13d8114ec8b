"""The read-only view of a scanned package that every check reads.

`scan_package` reads each file once (hash, kept document bytes, checkpoint scan);
`PackageView` turns what was read into what the checks ask about — parsed JSON
documents, CSV tables, schema violations, the protocol, the matrix's config_ids,
the run rows by run_id — each computed once, on first use, and cached.  Nothing
here opens a file: the view only reads the `PackageScan`.

Parsing is strict and goes through `auditkit.package.store`: JSON with
`loads_strict` (duplicate keys, NaN/Infinity, numbers overflowing to infinity,
over-long integers, too-deep nesting), text with `decode_utf8`, CSV with
`parse_csv`.  What a parse finds wrong travels with the parsed value (`Document.findings`,
`Table.findings`); exactly one check reports each document's parse findings, the
others only use the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from auditkit.findings import Finding, row_location
from auditkit.package.manifest import MANIFEST_CSV, MANIFEST_JSON, Entry, root_hash
from auditkit.package.rows import RUN_COLUMNS, parse_run_csv_path
from auditkit.package.scanned import FileScan, PackageScan, unsafe_reason
from auditkit.errors import PackageDefect
from auditkit.package.store import decode_utf8, loads_strict, parse_csv

if TYPE_CHECKING:  # jsonschema (under auditkit.package.schemas) is imported beside the readers, not before them
    from auditkit.package.schemas import SchemaViolation

MANIFEST_CSV_COLUMNS = ("path", "sha256", "bytes")
MATRIX_COLUMNS = ("config_id", "role")


def finding(path: str, code: str, location: str = "", expected: object = "", found: object = "",
            message: str = "") -> Finding:
    """A Finding with `expected` and `found` as text (None -> "None", like the report shows it)."""
    return Finding(path, code, location, str(expected), str(found), message)


def schema_for(rel: str) -> str | None:
    """The schema a package JSON document follows, chosen by its path (None: no schema)."""
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
    if rel in ("claims.json", "observations.json"):   # observations: a study's own, in the claims format
        return "claims"
    return None


def parse_timestamp(s: str | None) -> datetime | None:
    """An ISO-8601 timestamp (`Z` or an offset), or None when empty or not one."""
    if not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Document:
    """A JSON document as parsed: `value` None when it is absent or could not be parsed."""

    value: object
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class Table:
    """A CSV document: header, rows numbered from 1 (cells as strings), and what reading it found.
    `readable` is False when it could not be parsed at all (then there are no rows)."""

    header: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, str]], ...]
    findings: tuple[Finding, ...]
    readable: bool = True


def _too_large(rel: str, fs: FileScan) -> Finding:
    from auditkit.package import scanned as scan

    return finding(rel, "document-too-large", "", f"at most {scan.DOC_CAP} bytes", f"{fs.bytes} bytes",
                   "a JSON or CSV document this large is not parsed; its content is unchecked")


class PackageView:
    """Read-only questions about one scanned package; every answer computed once."""

    def __init__(self, scan: PackageScan):
        self._scan = scan
        self._docs: dict[str, Document] = {}
        self._tables: dict[str, Table | None] = {}
        self._schema: dict[str, tuple[Finding, ...]] = {}
        self._violations: dict[str, dict[int, list["SchemaViolation"]]] = {}
        self._memo: dict[str, object] = {}

    # -- files -------------------------------------------------------------------------
    @property
    def files(self) -> Mapping[str, FileScan]:
        """Every regular file read, by package-relative path (read-only)."""
        return MappingProxyType(self._scan.files)

    @property
    def problems(self) -> tuple[tuple[str, str, str], ...]:
        """(code, path, what) of every entry that was refused and never read (links, special files, ...)."""
        return tuple(self._scan.problems)

    def sha256(self, rel: str) -> str | None:
        fs = self._scan.files.get(rel)
        return fs.sha256 if fs is not None else None

    # -- documents -------------------------------------------------------------------------
    def document(self, rel: str) -> Document:
        """The JSON document `rel`, strictly parsed (its parse findings in `.findings`)."""
        doc = self._docs.get(rel)
        if doc is None:
            doc = self._docs[rel] = self._parse_json(rel)
        return doc

    def json(self, rel: str):
        """The parsed value of `rel`, or None (absent or unreadable)."""
        return self.document(rel).value

    def _parse_json(self, rel: str) -> Document:
        fs = self._scan.files.get(rel)
        if fs is None:
            return Document(None)
        if fs.content is None:
            return Document(None, (_too_large(rel, fs),))
        try:
            return Document(loads_strict(fs.content, rel))
        except PackageDefect as exc:
            return Document(None, (exc.finding,))

    def parse_findings(self, rel: str) -> tuple[Finding, ...]:
        """The findings of parsing the JSON document `rel` strictly: those of the reader that parsed it
        where it was read (`FileScan.parsed`: a source snapshot's documents), else of parsing it here."""
        fs = self._scan.files.get(rel)
        if rel not in self._docs and fs is not None and fs.parsed is not None:
            return fs.parsed
        return self.document(rel).findings

    def schema_findings(self, rel: str) -> tuple[Finding, ...]:
        """`schema-invalid` findings of the JSON document `rel` against the schema its path names."""
        out = self._schema.get(rel)
        if out is None:
            name = "manifest" if rel == MANIFEST_JSON else schema_for(rel)
            out = ()
            if name:
                from auditkit.package.schemas import violation_findings
                from auditkit.verify.fastschema import violations

                value = self.json(rel)
                out = tuple(violation_findings(violations(value, name), name, rel)) if value is not None else ()
            self._schema[rel] = out
        return out

    # -- CSV ---------------------------------------------------------------------------------
    def table(self, rel: str) -> Table | None:
        """The CSV document `rel` (None if absent), its required columns chosen by its kind: a run CSV,
        MANIFEST.csv, or else a candidate matrix."""
        if rel not in self._tables:
            if parse_run_csv_path(rel):
                required, need_rows = RUN_COLUMNS, True
            elif rel == MANIFEST_CSV:
                required, need_rows = MANIFEST_CSV_COLUMNS, False
            else:
                required, need_rows = MATRIX_COLUMNS, True
            self._tables[rel] = self._read_table(rel, required, need_rows)
        return self._tables[rel]

    def _read_table(self, rel: str, required: tuple[str, ...], need_rows: bool) -> Table | None:
        fs = self._scan.files.get(rel)
        if fs is None:
            return None
        if fs.content is None:
            return Table((), (), (_too_large(rel, fs),), False)
        found: list[Finding] = []
        raw = fs.content
        if raw.startswith(b"\xef\xbb\xbf"):
            found.append(finding(rel, "csv-bom", "byte 0", "no byte-order mark", "UTF-8 BOM",
                                 "the file was saved with a byte-order mark; its first column is read without it"))
            raw = raw[3:]
        if b"\r\n" in raw:
            found.append(finding(rel, "csv-crlf", "", "\\n line endings", "\\r\\n line endings",
                                 "SPEC section 4 writes \\n endings: the file was rewritten by another tool"))
        try:
            header, parsed = parse_csv(decode_utf8(raw, rel), rel)
        except PackageDefect as exc:
            return Table((), (), (*found, exc.finding), False)
        seen: set[str] = set()
        for col in header:
            if col in seen:
                found.append(finding(rel, "csv-duplicate-column", "header", "each column once", col,
                                     "two columns share a name: a reader keeps only one of them"))
            seen.add(col)
        missing = [c for c in required if c not in seen]
        if missing:
            found.append(finding(rel, "csv-missing-column", "header", ", ".join(missing), ", ".join(header) or "no header",
                                 "SPEC.md lists the required columns; this file lacks them"))
        rows = []
        for i, r in enumerate(parsed, 1):
            extra = r.pop(None, None)
            if extra is not None:
                found.append(finding(rel, "csv-extra-cells", row_location(i), f"{len(header)} cells",
                                     f"{len(header) + len(extra)}"))
            short = [k for k, v in r.items() if v is None]
            if short:
                found.append(finding(rel, "csv-missing-cells", row_location(i), f"{len(header)} cells",
                                     f"{len(header) - len(short)}", "the row ends before its last columns"))
                r = {k: ("" if v is None else v) for k, v in r.items()}
            rows.append((i, r))
        if need_rows and not rows:
            found.append(finding(rel, "csv-empty", "", "at least one row", "no rows", "an empty table proves nothing"))
        return Table(tuple(header), tuple(rows), tuple(found))

    def row_violations(self, rel: str) -> dict[int, list["SchemaViolation"]]:
        """Row number -> schema violations of the run CSV or matrix `rel` (rows without any left out)."""
        out = self._violations.get(rel)
        if out is None:
            from auditkit.verify.fastschema import row_violations

            name = "run-row" if parse_run_csv_path(rel) else "matrix-row"
            table = self.table(rel)
            out = {}
            for i, r in table.rows if table is not None else ():
                v = row_violations(r, name)
                if v:
                    out[i] = v
            self._violations[rel] = out
        return out

    def prefetch(self) -> None:
        """Parse and validate every JSON/CSV document already read (later checks reuse the results).

        Called while the readers still hash the large files: documents are read first."""
        for rel in sorted(self._scan.files):
            if rel.endswith(".json"):
                self.parse_findings(rel)       # every document is parsed strictly, one with no schema too
                self.schema_findings(rel)
            elif rel == MANIFEST_CSV:
                self.table(rel)
            elif parse_run_csv_path(rel) or (rel.startswith("matrices/") and rel.endswith(".csv")):
                self.row_violations(rel)

    # -- what the package says about itself --------------------------------------------------------
    def memo(self, key: str, compute):
        """compute() the first time `key` is asked for, the same value after (a check's work that
        depends on the documents only, done once: see `checks.prepare`)."""
        return self._once(key, compute)

    def _once(self, key: str, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def protocol(self) -> dict:
        """protocol.json as a dict ({} when absent, unreadable or not an object)."""
        return self._once("protocol", lambda: p if isinstance(p := self.json("protocol.json"), dict) else {})

    @property
    def stages(self) -> set[str]:
        """The protocol's stage slugs."""
        def compute():
            stages = self.protocol.get("stages")
            return {st.get("stage") for st in stages if isinstance(st, dict)} if isinstance(stages, list) else set()
        return self._once("stages", compute)

    @property
    def matrix(self) -> str | None:
        """The path of the matrix protocol.json names (None: it names none)."""
        m = self.protocol.get("matrix")
        return m if isinstance(m, str) else None

    @property
    def matrices(self) -> list[str]:
        """The matrix CSVs to read: the protocol's (when present at a safe path), then matrices/*.csv."""
        def compute():
            out = []
            m = self.matrix
            if m is not None and m in self._scan.files and unsafe_reason(m) is None and m not in (
                    MANIFEST_CSV, MANIFEST_JSON) and not parse_run_csv_path(m):
                out.append(m)
            out += [rel for rel in sorted(self._scan.files)
                    if rel.startswith("matrices/") and rel.endswith(".csv") and rel != m]
            return out
        return self._once("matrices", compute)

    @property
    def configs(self) -> set[str]:
        """The config_ids of the protocol's matrix (empty when it is absent or unreadable)."""
        def compute():
            m = self.matrix
            table = self.table(m) if m in self.matrices else None
            return {r.get("config_id", "") for _, r in table.rows} if table is not None else set()
        return self._once("configs", compute)

    @property
    def run_csvs(self) -> list[tuple[str, str, str]]:
        """(path, host, stage) of every run CSV, by path."""
        return self._once("run_csvs", lambda: [(rel, *hs) for rel in sorted(self._scan.files)
                                               if (hs := parse_run_csv_path(rel)) is not None])

    @property
    def runs(self) -> dict[str, tuple[str, int, dict[str, str]]]:
        """run_id -> (file, row number, row) of the first row with that run_id, files by path."""
        def compute():
            seen: dict[str, tuple[str, int, dict[str, str]]] = {}
            for rel, _, _ in self.run_csvs:
                table = self.table(rel)
                for i, r in table.rows if table is not None else ():
                    rid = r.get("run_id", "")
                    if rid and rid not in seen:
                        seen[rid] = (rel, i, r)
            return seen
        return self._once("runs", compute)

    @property
    def gate_inputs(self) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
        """(gate, its input rows as (file, row)) for every gate of the protocol whose rules name their inputs:
        the rows of `runs` in the rules' stages, hosts and seeds (all hosts or seeds when the rules list none).
        Gates whose rules are unreadable are left out (the rules' own findings say why)."""
        def compute():
            gates = self.protocol.get("gates")
            if not isinstance(gates, list):
                return []
            by_stage: dict[str, list[tuple[str, dict]]] = {}
            for _rid, (rel, _i, row) in self.runs.items():
                by_stage.setdefault(row.get("stage", ""), []).append((rel, row))
            out = []
            for g in gates:
                if not isinstance(g, dict) or not isinstance(g.get("rules"), str):
                    continue
                rules = self.json(g["rules"])
                inputs = rules.get("inputs") if isinstance(rules, dict) else None
                if not isinstance(inputs, dict):
                    continue
                stages = inputs.get("stages") if isinstance(inputs.get("stages"), list) else []
                hosts = {str(h) for h in inputs["hosts"]} if isinstance(inputs.get("hosts"), list) else None
                seeds = {str(s) for s in inputs["seeds"]} if isinstance(inputs.get("seeds"), list) else None
                out.append((str(g.get("gate", "?")),
                            [(rel, r) for st in stages if isinstance(st, str) for rel, r in by_stage.get(st, [])
                             if (hosts is None or r.get("host") in hosts) and (seeds is None or r.get("seed") in seeds)]))
            return out
        return self._once("gate_inputs", compute)

    def named_checkpoints(self) -> list[tuple[FileScan, dict[str, str], str]]:
        """(checkpoint file, its row, its path) for every row that names a checkpoint present, by run_id."""
        out = []
        for _, (_, _, r) in sorted(self.runs.items()):
            ck = r.get("checkpoint", "")
            fs = self._scan.files.get(ck) if ck else None
            if fs is not None:
                out.append((fs, r, ck))
        return out

    # -- the MANIFEST ---------------------------------------------------------------------------------
    @property
    def recorded_root(self):
        doc = self.json(MANIFEST_JSON)
        return doc.get("root") if isinstance(doc, dict) else None

    def files_root(self) -> str:
        """The root hash of the files as they are (the MANIFEST files left out)."""
        return root_hash(Entry(p, f.sha256, f.bytes) for p, f in self._scan.files.items()
                         if p not in (MANIFEST_JSON, MANIFEST_CSV))

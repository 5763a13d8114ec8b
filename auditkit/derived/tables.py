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
  (`auditkit.derived.robustness`): each candidate's probability of promotion and rank
  interval, each check's probability of flipping, the margin at the cut in units of
  the noise, the promoted list under other `top_k`; host correlations with intervals.

The modules: `table` (the value and generator versions), `package_data` (what the generators
read), `accounting`, `generators` and `robustness` (the generators), `versions` (which version
a file is checked against); this one builds, writes and checks them.
"""

from __future__ import annotations

from pathlib import Path

from auditkit.derived.accounting import budget_table
from auditkit.derived.generators import (host_tables, promotion_table, sensitivity_table, smoke_table,
                                         stage_summary_table)
from auditkit.derived.output import Written, check_report, output_dir, write_outputs
from auditkit.derived.package_data import DecidedGates, PackageData
from auditkit.derived.robustness import robustness_tables
from auditkit.derived.table import (AS_OF, FIRST_GENERATORS, GENERATOR_VERSIONS, RETIRED, TABLE_DIR,  # noqa: F401
                                    Table, TableKind, table_as_of)
from auditkit.derived.versions import known_versions, pick_version, valid_manifest  # noqa: F401
from auditkit.errors import AuditError
from auditkit.findings import Finding, Report
from auditkit.gates.documents import read_json
from auditkit.package.hashing import sha256_bytes
from auditkit.package.schemas import validate_document
from auditkit.errors import PackageDefect
from auditkit.package.canonical import canonical_json_bytes
from auditkit.package.store import PackageStore, open_package

TABLE_MANIFEST = "table_manifest.json"

GENERATORS = {
    TableKind.BUDGET_COUNTERFACTUAL: budget_table,
    TableKind.PROMOTION_SURVIVAL: promotion_table,
    TableKind.THRESHOLD_SENSITIVITY: sensitivity_table,
    TableKind.HOST_COMPARISON: host_tables,
    TableKind.STAGE_SUMMARY: stage_summary_table,
    TableKind.SMOKE_SUMMARY: smoke_table,
    TableKind.ROBUSTNESS: robustness_tables,
}


def build_tables(package_dir: str | Path | PackageStore, gates: DecidedGates | None = None) -> list[Table]:
    """Every table of the package, in memory, in kind order (PackageDefect for a defective file).
    `gates`: the package's gates decided already, where the caller has them."""
    p = PackageData(package_dir, gates)
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
        versions = known_versions(t.kind, GENERATOR_VERSIONS, AS_OF)
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


def check_tables(package_dir: str | Path, tables: list[Table] | None = None) -> Report:
    """Regenerate every table in memory and report each difference with the recorded files.
    `tables`: the package's tables (`build_tables`) where the caller has built them already."""
    return check_report(package_dir, "tables --check", lambda store, rep: _check_tables(store, rep, tables))


def _check_tables(store: PackageStore, rep: Report, built: list[Table] | None = None) -> None:
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
    tables = {f"{TABLE_DIR}/{t.id}.{ext}": t for t in (build_tables(store) if built is None else built)
              for ext in ("csv", "json")}
    # the kinds the writing auditkit had: those it records, else the first generators and any it listed
    had = set(gens) if gens is not None else set(FIRST_GENERATORS) | {
        tables[e["path"]].kind for e in recorded["tables"] if e["path"] in tables}
    listed = set()
    retired: dict[str, list[str]] = {}      # reason -> tables made by a retired generator version
    retired_kinds: set[str] = set()
    made: dict[tuple[str, int], tuple[dict, dict]] = {}
    for i, e in enumerate(recorded["tables"]):
        path = e["path"]
        listed.add(path)
        loc = f"$.tables[{i}]"
        table = tables.get(path)
        if table is None:
            rep.add(Finding(TABLE_MANIFEST, "table-unknown", loc, "a table auditkit generates", path,
                            f"kinds auditkit generates: {', '.join(k.value for k in TableKind)}"))
            continue
        versions = known_versions(table.kind, GENERATOR_VERSIONS, AS_OF)

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
        if (table.id, version) not in made:      # a table's CSV and JSON entries share one formatting
            made[table.id, version] = _manifest([old], None)
        doc, files = made[table.id, version]
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

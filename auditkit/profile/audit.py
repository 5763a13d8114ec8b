"""verify and tables --check of a package read through a profile (replay: `auditkit.profile.replay`).

The same checks and table generators as for SPEC v1 packages (`auditkit.derived.tables`) on the
package's own bytes, converted as the profile says; never a byte written into the package. Every
result is a `ProfiledReport` (`auditkit.profile.results`): the findings, the facts it rests on with
who vouches for each (the package, the profile, or both), and what could not be checked or
compared, and why.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.derived.package_data import add_derived_columns, gate_of_stage
from auditkit.derived.tables import GENERATORS, TableKind
from auditkit.errors import AuditError
from auditkit.findings import Finding
from auditkit.gates.diff import num_differs
from auditkit.package.manifest import MANIFEST_CSV, MANIFEST_JSON
from auditkit.package.store import parse_csv
from auditkit.profile import _store
from auditkit.profile.load import load_profile
from auditkit.profile.model import Profile, Provenance
from auditkit.profile.replay import replay_profiled, replay_view  # noqa: F401 (replay_profiled: the package's API)
from auditkit.profile.results import NotChecked, ProfiledReport, prose_findings, require_findings
from auditkit.profile.rows import csv_rows as _csv
from auditkit.profile.view import Fact, PackageView, read_package


def _open(package, profile) -> tuple[Profile, PackageView]:
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    return prof, read_package(package, prof)


# --------------------------------------------------------------------------- verify

def verify_profiled(package: str | Path, profile: str | Path | Profile, *, jobs: int | None = None,
                    require: tuple[str, ...] = ()) -> ProfiledReport:
    """Fixity against the package's own manifest(s) in their own format, no unlisted file, the
    run rows parsed and converted, the matrix, the prose hashes the profile pins, the
    transcribed rules valid, the recorded decisions where the profile points; with `require`
    (freeze-evidence levels), `evidence-below-required` for each gate that cannot meet one.
    Raises AuditError when it cannot run (no package, unusable profile)."""
    prof, view = _open(package, profile)
    rep = ProfiledReport(command="verify --profile", target=str(package), facts=list(view.facts))
    rep.extend(view.all_findings())
    rep.extend(require_findings(view, require))
    _manifests(view, rep, jobs)
    prose_findings(view, rep.findings)
    for g in prof.gates:
        if g.rules is None:   # invalid transcriptions are findings of the view already
            rep.not_checked.append(NotChecked(f"rules of gate {g.gate}", "TODO in the profile"))
    if view.absent_columns:
        rep.not_checked.append(NotChecked("run-row columns " + ", ".join(view.absent_columns),
                                          "the package has no such column and the profile supplies none"))
    rep.not_checked.append(NotChecked("schemas of the authors' JSON and CSV documents",
                                      "no SPEC schema applies to them; only what the profile maps is read"))
    rep.not_checked.append(NotChecked("checkpoints", "profiles do not map checkpoints yet"))
    rep.checked = {"files": len(view.files), "run rows": len(view.rows), "gates": len(prof.gates)}
    return rep


def _manifests(view: PackageView, rep: ProfiledReport, jobs: int | None) -> None:
    prof = view.profile
    if not prof.manifests:
        rep.not_checked.append(NotChecked("fixity", "the profile names no manifest: nothing says what the files "
                                                    "should hold"))
        return
    own = {m.path for m in prof.manifests} | ({MANIFEST_JSON, MANIFEST_CSV} & set(view.files))
    algorithms = sorted({m.algorithm for m in prof.manifests})
    rels = sorted(view.files)

    def one(rel):
        return rel, {a: _store.hash_file(view.store, rel, a) for a in algorithms}

    with ThreadPoolExecutor(max_workers=jobs or 4) as pool:
        digests = dict(pool.map(one, rels))
    for rel, d in digests.items():
        if "sha256" in d:
            view._sha[rel] = d["sha256"][0]
    for m in prof.manifests:
        if m.path not in view.files:
            continue  # profile-file-missing already
        entries = _manifest_entries(view, m, rep.findings)
        if entries is None:
            continue
        if not entries:
            rep.add(Finding(m.path, "manifest-empty", "", "at least one entry", "none",
                            "an empty manifest proves nothing"))
        listed = set()
        for loc, path, digest, size in entries:
            if path in listed:
                rep.add(Finding(m.path, "manifest-duplicate-entry", loc, "each path once", path))
                continue
            listed.add(path)
            if path not in digests:
                rep.add(Finding(path, "file-missing", f"listed in {m.path}", f"{m.algorithm} {digest}", "absent",
                                "a file the manifest lists is not in the package"))
                continue
            got, n = digests[path][m.algorithm]
            if got != digest.lower():
                rep.add(Finding(path, "file-changed", f"listed in {m.path}", f"{m.algorithm} {digest}",
                                f"{m.algorithm} {got}", "the file's content differs from what the manifest recorded"))
            elif size is not None and size != n:
                rep.add(Finding(path, "file-size-changed", f"listed in {m.path}", f"{size} bytes", f"{n} bytes"))
        for rel in rels:
            if rel not in listed and rel not in own:
                rep.add(Finding(rel, "file-unlisted", f"not in {m.path}", f"listed in {m.path}", "not listed",
                                "a file the manifest does not list: its bytes are vouched for by nothing"))
        rep.facts.append(Fact(f"manifest {m.path}", Provenance.PACKAGE,
                              f"{len(listed)} entries ({m.algorithm}), columns read as the profile says"))


def _manifest_entries(view: PackageView, m, findings) -> list | None:
    """(location, path, digest, size|None) of every entry; None when unreadable (a finding)."""
    rel = m.path
    try:
        if rel.endswith(".csv"):
            header, rows, extra = _csv(view.store.read_text(rel), rel)
            records = [(f"row {i}", r) for i, r in enumerate(rows, 1)]
        else:
            from auditkit.profile.bounds import find_values

            doc, extra = view.store.read_json(rel), []
            lst = find_values(m.entries or "$.files", doc, 2, key="manifests.entries")
            lst = lst[0] if len(lst) == 1 else None
            if not isinstance(lst, list) or not all(isinstance(e, dict) for e in lst):
                findings.append(Finding(rel, "manifest-unreadable", m.entries or "$.files", "a list of objects",
                                        type(lst).__name__, "point `entries` at the manifest's list"))
                return None
            records = [(f"{m.entries or '$.files'}[{i}]", e) for i, e in enumerate(lst)]
    except AuditError as exc:
        findings.append(_store.as_finding(exc, rel, "manifest-unreadable", "a readable manifest"))
        return None
    findings.extend(extra)
    out = []
    for loc, r in records:
        cols = [m.path_column, m.sha_column] + ([m.bytes_column] if m.bytes_column else [])
        missing = [c for c in cols if c not in r]
        if missing:
            findings.append(Finding(rel, "manifest-unreadable", loc, ", ".join(cols), f"no {', '.join(missing)}",
                                    "the profile names fields this entry lacks"))
            continue
        path = str(r[m.path_column])
        why = _store.unsafe_reason(path)
        if why:
            findings.append(Finding(rel, "manifest-unsafe-path", loc, "a relative path inside the package", path,
                                    f"{why}: the entry is refused and never opened"))
            continue
        size = None
        if m.bytes_column:
            try:
                size = int(str(r[m.bytes_column]))
            except ValueError:
                findings.append(Finding(rel, "manifest-unreadable", loc, "an integer size", repr(r[m.bytes_column])))
        out.append((loc, path, str(r[m.sha_column]).strip(), size))
    return out


# --------------------------------------------------------------------------- tables

class _TableContext:
    """What the table generators read (the shape of `auditkit.tables._Package`), from the view:
    rows and matrix from the package, decisions replayed under the profile's rules."""

    def __init__(self, view: PackageView, decisions: dict[str, dict]):
        p = view.protocol
        self.protocol = p
        self.stage_order = {s.stage: i for i, s in enumerate(p.stages)}
        self.matrix = view.matrix_rows
        self.run_csvs = list(view.row_files)
        df = view.rows.copy()
        for c in ("training_seconds", "num_steps", "val_bpb"):
            if c not in df.columns:
                df[c] = ""
        self.rows = add_derived_columns(df)
        self.decisions = decisions
        self.decision_paths = [r for g in view.profile.gates for r in (x.path for x in g.recorded)]
        self.rules = {g: view.gates[g].rules for g in decisions}

    def gate_of_stage(self, stage: str) -> str | None:
        return gate_of_stage(self, stage)


def check_tables_profiled(package: str | Path, profile: str | Path | Profile) -> ProfiledReport:
    """Regenerate each table the profile maps to a generator and compare it with the authors'
    recorded table value by value (numbers within the table's tolerance), on the key columns
    the profile names. Raises AuditError when it cannot run."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    prof.require_rules()
    view = read_package(package, prof)
    decisions = {g.gate: g.replayed for g in replay_view(view, None) if g.replayed is not None}
    ctx = _TableContext(view, decisions)
    rep = ProfiledReport(command="tables --check --profile", target=str(package), facts=list(view.facts))
    rep.facts.append(Fact("decisions the tables use", Provenance.REPLAY,
                          "replayed from the package's rows under the profile's transcribed rules"))
    generated: dict[tuple, object] = {}
    planned = None
    for t in prof.tables:
        kind = TableKind(t.generator)
        if (kind, t.accounting) not in generated:
            if t.accounting == "planned" and planned is None:
                planned = _planned_context(ctx, rep)
            use = planned if t.accounting == "planned" else ctx
            generated[kind, t.accounting] = {x.id: x for x in GENERATORS[kind](use)}
        made = generated[kind, t.accounting]
        table = made.get(t.table)
        if table is None:
            raise AuditError(f"generator {t.generator} makes no table {t.table!r}", path=prof.source,
                             hint=f"it makes: {', '.join(made)}")
        _compare_table(view, t, table, rep)
    mapped = {t.path for t in prof.tables} | {r.path for g in prof.gates for r in g.recorded}
    for rel in sorted(view.files):
        if rel.startswith("analysis/") and rel.endswith((".csv", ".json")) and rel not in mapped:
            rep.not_checked.append(NotChecked(rel, "the profile maps it to no generator"))
    rep.checked = {"tables": len(prof.tables)}
    return rep


TIME_BUDGETS = {"seconds": 1.0, "s": 1.0, "time": 1.0, "minutes": 60.0, "hours": 3600.0}


def _planned_context(ctx: "_TableContext", rep: ProfiledReport) -> "_TableContext":
    """The table context with each run's training time at its planned budget (a crashed 5-minute run
    counts 5 minutes, as a compute budget written before the runs does). Runs whose budget is not a
    time (steps) keep their recorded training time, and the report says how many."""
    import copy

    out = copy.copy(ctx)
    df = ctx.rows.copy()
    scale = df["budget_kind"].map(lambda k: TIME_BUDGETS.get(str(k).lower())) if "budget_kind" in df else None
    value = pd.to_numeric(df["budget_value"], errors="coerce") if "budget_value" in df else None
    if scale is None or value is None:
        rep.not_checked.append(NotChecked("planned compute", "the rows carry no budget_kind and budget_value"))
        return ctx
    planned = value * pd.to_numeric(scale, errors="coerce")
    kept = int(planned.isna().sum())
    df["train_s"] = planned.fillna(df["train_s"]).astype(np.float64)
    out.rows = df
    rep.facts.append(Fact("planned compute", Provenance.PACKAGE,
                          "each run's training time taken at its planned budget (budget_kind, budget_value)"
                          + (f"; {kept} run(s) whose budget is not a time keep their recorded time" if kept else "")))
    return out


def _compare_table(view: PackageView, t, table, rep: ProfiledReport) -> None:
    rel = t.path
    if rel not in view.files:
        return  # profile-file-missing is verify's
    if not rel.endswith(".csv"):
        rep.not_checked.append(NotChecked(rel, "only CSV tables are compared through a profile"))
        return
    try:
        header, rows, extra = _csv(view.store.read_text(rel), rel)
    except AuditError as exc:
        rep.add(_store.as_finding(exc, rel, "table-unreadable", "a UTF-8 CSV table"))
        return
    rep.extend(extra)
    gen = parse_csv(table.csv_text(), table.id)[1]
    for col, vals in t.where:
        gen = [r for r in gen if r.get(col) in vals]
    gcols = set(table.columns)
    key_gen = [t.generated(k) for k in t.key]
    for k, g in zip(t.key, key_gen):
        if k not in header or g not in gcols:
            raise AuditError(f"table {rel}: key column {k!r} -> {g!r} is not in both tables", path=view.profile.source,
                             hint=f"recorded columns: {', '.join(header)}; generated: {', '.join(table.columns)}")
    compare = [(c, t.generated(c)) for c in header if c not in t.key and t.generated(c) in gcols]
    for c in header:
        if c not in t.key and t.generated(c) not in gcols:
            rep.not_checked.append(NotChecked(f"{rel} column {c}", f"generator {t.generator} makes no such column"))

    def norm(v: str) -> str:
        try:
            x = float(v)
        except ValueError:
            return v
        return repr(x) if math.isfinite(x) else v

    vmap = t.value_map()      # the authors' labels in their table -> the rows' (`linux-l40s` -> `linux`)

    def ours(c: str, v: str) -> str:
        return vmap.get(c, {}).get(v, v)

    want = {tuple(norm(r[g]) for g in key_gen): r for r in gen}
    seen = set()
    for i, r in enumerate(rows, 1):
        key = tuple(norm(ours(k, r[k])) for k in t.key)
        if key in seen:
            rep.add(Finding(rel, "table-row-duplicate", f"row {i}", "each key once", str(key)))
            continue
        seen.add(key)
        w = want.get(key)
        if w is None:
            rep.add(Finding(rel, "table-row-extra", f"row {i}", "a row the generator gives", str(dict(zip(t.key, key))),
                            "the recorded table has a row that regenerating it does not give"))
            continue
        for c, g in compare:
            a, b = ours(c, r[c]), w[g]
            try:
                fa, fb = float(a), float(b)
                bad = num_differs(fa, fb, t.tolerance + 1e-12)
            except ValueError:
                bad = a != b
            if bad:
                rep.add(Finding(rel, "table-value-differs", f"row {i}, column {c}", b, a,
                                "the recorded table is not what the package's rows give"))
    for key in sorted(set(want) - seen):
        rep.add(Finding(rel, "table-row-missing", "", f"a row for {dict(zip(t.key, key))}", "none",
                        "regenerating the table gives a row the authors' table lacks"))
    rep.facts.append(Fact(f"table {rel}", Provenance.PROFILE,
                          f"compared with generator {t.generator}/{t.table} on {', '.join(t.key)}: "
                          f"{', '.join(c for c, _ in compare)}"))

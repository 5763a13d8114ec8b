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

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from auditkit.findings import Finding
from auditkit.gates.rules import validate_rules
from auditkit.package.rows import RUN_COLUMNS
from auditkit.profile import _store
from auditkit.profile.model import ColumnRule, GateSpec, Profile, Provenance
from auditkit.profile.recorded import frozen_at, prose_freezes, read_recorded
from auditkit.profile.rows import read_matrix, read_rows
from auditkit.profile.values import Fact, Freeze, Recorded  # noqa: F401  (the view's parts, public here too)
from auditkit.package.protocol import Budget, Gate, Protocol, Stage



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

    matrix_ids, matrix_rows = read_matrix(store, profile, files, findings, facts)
    df, row_files, columns = read_rows(store, profile, files, set(matrix_ids), findings, facts)
    absent = [c for c in RUN_COLUMNS if c not in columns]
    gates = {}
    for g in profile.gates:
        freezes = prose_freezes(g, store, files, findings)
        dated = [f for f in freezes if f.day is not None]
        freeze = max(dated, key=lambda f: f.latest()) if dated else Freeze(None, "no date in the prose's file name or text")
        rules, problems = None, []
        if g.rules is not None:
            rules = dict(g.rules, frozen_at=frozen_at(freeze))
            problems = validate_rules(rules, f"{profile.source} [gates.{g.gate}.rules]",
                                      known_configs=set(matrix_ids) or None)
            if problems:
                rules = None
                findings["profile"] += problems
        rec = read_recorded(g, store, files, profile, columns, findings) if g.recorded else None
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

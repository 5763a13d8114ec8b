"""verify, replay and tables --check of a package read through a profile.

The same engine as for SPEC v1 packages (`auditkit.rules.decide_columns`, the
table generators of `auditkit.tables`) on the package's own bytes, converted
as the profile says; never a byte written into the package.  Every result is
a `ProfiledReport`: the findings, the facts it rests on with who vouches for
each (the package, the profile, or both), and what could not be checked or
compared, and why.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.errors import AuditError
from auditkit.findings import Finding, Report
from auditkit.profile import _store
from auditkit.profile.load import load_profile
from auditkit.profile.model import Profile, Provenance
from auditkit.profile.view import Fact, GateView, PackageView, Recorded, csv_rows as _csv, read_package
from auditkit.gates.engine import DuplicateRowError, decide_columns
from auditkit.derived.tables import GENERATORS, TableKind
from auditkit.package.manifest import MANIFEST_CSV, MANIFEST_JSON
from auditkit.package.store import parse_csv

ASSERTED = "asserted"


@dataclass(frozen=True)
class NotChecked:
    what: str
    why: str

    def to_dict(self) -> dict:
        return {"what": self.what, "why": self.why}


@dataclass
class ProfiledReport(Report):
    """A Report plus the facts it rests on and what it could not check."""

    facts: list[Fact] = field(default_factory=list)
    not_checked: list[NotChecked] = field(default_factory=list)
    gates: list = field(default_factory=list)   # GateResult, for replay

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["facts"] = [f.to_dict() for f in self.facts]
        d["not_checked"] = [n.to_dict() for n in self.not_checked]
        if self.gates:
            d["gates"] = [g.to_dict() for g in self.gates]
        return d

    def render_text(self) -> str:
        """Findings, then one line per kind of source (the JSON form has every fact in full),
        what was not checked (grouped by why), and the verdict."""
        lines = []
        for prov in Provenance:
            names = [f.name for f in self.facts if f.provenance is prov]
            if names:
                lines.append(f"from the {prov.value}: " + "; ".join(names))
        why: dict[str, list[str]] = {}
        for n in self.not_checked:
            why.setdefault(n.why, []).append(n.what)
        for reason, whats in why.items():
            lines.append(f"not checked ({reason}): " + "; ".join(whats))
        return "\n".join(lines + [super().render_text()])


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
    _prose(view, rep.findings)
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


def _prose(view: PackageView, findings: list, gate: str | None = None) -> None:
    for g in view.profile.gates:
        if gate is not None and g.gate != gate:
            continue
        for p in g.prose:
            got = view.sha(p.path)
            if got is not None and got != p.sha256:
                findings.append(Finding(p.path, "profile-prose-changed", f"[gates.{g.gate}].prose", p.sha256, got,
                                        "the prose changed since the profile transcribed it, so the transcribed "
                                        "rules no longer apply: re-read it, then update the rules and the sha256"))


# --------------------------------------------------------------------------- replay

@dataclass
class GateResult:
    gate: str
    replayed: dict | None = None
    recorded: Recorded | None = None
    candidates_from: str = ""
    freeze: str = ""
    compared: list[str] = field(default_factory=list)
    not_compared: list[NotChecked] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"gate": self.gate, "identical": self.identical, "candidates_from": self.candidates_from,
                "freeze": self.freeze, "compared": self.compared,
                "not_compared": [n.to_dict() for n in self.not_compared],
                "findings": [f.to_dict() for f in self.findings], "replayed": self.replayed}


def replay_profiled(package: str | Path, profile: str | Path | Profile, gate: str = "all", *,
                    require: tuple[str, ...] = ()) -> ProfiledReport:
    """Replay `gate` (or every gate, in profile order) of the package through the profile and
    compare with the authors' recorded decision as far as the profile maps it.
    Raises AuditError when it cannot run (rules still TODO, unknown gate, no package)."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    prof.require_rules()
    if gate != "all":
        prof.gate(gate)
    view = read_package(package, prof)
    rep = _replay_report(view, _replay_view(view, None if gate == "all" else gate), str(package))
    rep.extend(require_findings(view, require, None if gate == "all" else gate))
    return rep


def require_findings(view: PackageView, required, gate: str | None = None) -> list[Finding]:
    """`evidence-below-required` (the code `auditkit.evidence` uses) for each gate and each level
    it cannot meet: read through a profile, a gate has at most `asserted` — a date in its prose."""
    from auditkit.evidence.model import REQUIREMENTS

    unknown = [r for r in required if r not in REQUIREMENTS]
    if unknown:
        raise AuditError(f"unknown requirement {unknown[0]!r}", hint=f"choose from {', '.join(REQUIREMENTS)}")
    out = []
    for g in view.profile.gates:
        if gate is not None and g.gate != gate:
            continue
        fr = view.gates[g.gate].freeze
        have = f"{ASSERTED} {fr.shown()} ({fr.source})" if fr.day else "none: the prose names no date"
        for req in required:
            if req == ASSERTED and fr.day is not None:
                continue
            out.append(Finding(g.prose[-1].path, "evidence-below-required", f"gate {g.gate}", req, have,
                               f"the reviewer requires {req}: a package read through a profile has at most a "
                               "date someone wrote (asserted)"))
    return out


def _replay_view(view: PackageView, gate: str | None) -> list[GateResult]:
    """Replay the gates in profile order (up to `gate`, whose parents it needs); the gates asked for."""
    results: dict[str, GateResult] = {}
    for g in view.profile.gates:
        results[g.gate] = _replay_gate(view, view.gates[g.gate], results)
        if g.gate == gate:
            return [results[gate]]
    return list(results.values())


def _replay_report(view: PackageView, gates: list[GateResult], target: str) -> ProfiledReport:
    rep = ProfiledReport(command="replay-gate --profile", target=target, facts=list(view.facts))
    rep.gates = gates
    seen = set()
    for r in gates:
        rep.extend(x for x in r.findings if not (x in seen or seen.add(x)))   # a row finding once, not per gate
        if r.recorded is None:
            verdict = "replayed; the authors recorded no decision the profile maps"
        else:
            verdict = "identical as far as recorded" if r.identical else f"{len(r.findings)} difference(s)"
        rep.info[f"gate {r.gate}"] = verdict
        for n in r.not_compared:
            rep.not_checked.append(NotChecked(f"gate {r.gate}: {n.what}", n.why))
        prov = (Provenance.PACKAGE if r.candidates_from.startswith("package")
                else Provenance.PROFILE if r.candidates_from.startswith("profile") else Provenance.REPLAY)
        rep.facts.append(Fact(f"candidates of gate {r.gate}", prov, r.candidates_from))
    rep.checked = {"gates": len(gates)}
    return rep


def _replay_gate(view: PackageView, gv: GateView, done: dict[str, GateResult]) -> GateResult:
    g = gv.spec
    out = GateResult(g.gate, recorded=gv.recorded)
    f = out.findings
    where = f"{view.profile.source} [gates.{g.gate}.rules]"
    _prose(view, f, g.gate)
    mine = {p.path for p in g.prose} | {r.path for r in g.recorded}
    f.extend(x for x in view.all_findings("profile", "recorded") if x.path in mine)   # missing or unreadable
    if gv.rules is None:
        f.extend(gv.problems)
        return out
    rules = gv.rules
    ins = rules["inputs"]
    df = view.rows
    sel = df[df["stage"].isin(ins["stages"]) & df["host"].isin(ins["hosts"]) & df["seed"].isin(ins["seeds"])]
    files = sorted(set(sel["_file"]))
    f.extend(x for x in view.findings.get("rows", []) if x.path in files)
    if len(sel) == 0:
        f.append(Finding(where, "gate-no-rows", "$.inputs", "rows for the gate's stages, hosts and seeds", "none",
                         "a gate with no data decides nothing"))
    out.freeze = _freeze(gv, sel, f)

    cands = ins["candidates"]
    if cands == "matrix":
        f.extend(view.all_findings("matrix"))
        candidates, out.candidates_from = list(view.matrix_ids), f"package: the matrix {view.profile.matrix.path}"
    elif isinstance(cands, str):
        parent = cands.split(":", 1)[1]
        pr = done.get(parent)
        rec = view.gates[parent].recorded
        if rec is not None and rec.promoted is not None:
            candidates = list(rec.promoted[0])
            out.candidates_from = f"package: gate {parent}'s recorded promoted list ({rec.promoted[1]} {rec.promoted[2]})"
        elif pr is not None and pr.replayed is not None:
            candidates = list(pr.replayed["promoted"])
            out.candidates_from = f"replay: gate {parent}'s replayed promoted list (the authors recorded none)"
        else:
            f.append(Finding(where, "candidates-unresolved", "$.inputs.candidates", f"gate {parent}'s promoted list",
                             "neither recorded nor replayable"))
            return out
        f.extend(_chain(view, g.gate, parent, candidates, sel))
    else:
        candidates, out.candidates_from = list(cands), "profile: an explicit list in the transcribed rules"
    if not candidates:
        f.append(Finding(where, "gate-no-candidates", "$.inputs.candidates", "at least one candidate", "none"))
    cols = {"stage": sel["stage"].to_numpy(), "host": sel["host"].to_numpy(), "seed": sel["seed"].to_numpy(),
            "config_id": sel["config_id"].to_numpy(), "status": sel["status"].to_numpy(),
            "value": pd.to_numeric(sel[rules["metric"]["column"]] if rules["metric"]["column"] in sel.columns
                                   else pd.Series(np.nan, index=sel.index), errors="coerce").to_numpy(np.float64),
            "where": [f"{a} row {b}" for a, b in zip(sel["_file"], sel["_row"])]}
    try:
        decision = decide_columns(rules, cols, candidates)
    except DuplicateRowError as exc:
        f.append(Finding(exc.where[0].split(" row ")[0] if exc.where else where, "duplicate-run-row",
                         "; ".join(exc.where), "one row per candidate and cell", f"{exc.config_id} in {exc.cell}",
                         "two rows claim one cell: find out which run is genuine"))
        return out
    out.replayed = decision.to_json(
        rules_ref={"path": f"{view.profile.source}#gates.{g.gate}", "sha256": view.profile.sha256},
        inputs=[{"path": p, "sha256": view.sha(p)} for p in files], decided_at="")
    _compare(out, gv.recorded, view)
    return out


def _freeze(gv: GateView, sel: pd.DataFrame, f: list) -> str:
    """Freeze evidence from the prose: at most `asserted`, and it says so. Each prose file's freeze
    (a stated time, else a date) is compared with the input rows it governs — all of the gate's, or
    an addendum's seeds/stages — so an addendum dated after some inputs contradicts nothing it did
    not govern."""
    freezes = gv.freezes or ([gv.freeze] if gv.freeze.day is not None else [])
    if not freezes:
        return "none: the prose names no date, so nothing says the rules came before the data"
    starts_all = pd.to_datetime(sel["started_at"], utc=True, format="ISO8601", errors="coerce")
    heads, verdicts = [], []
    for fr in freezes:
        win = fr.window()
        mask = pd.Series(True, index=sel.index)
        scope_text = ""
        if fr.scope is not None:
            seeds, stages = fr.scope
            if seeds is not None:
                mask &= sel["seed"].isin(list(seeds))
                scope_text += f" seeds {', '.join(str(x) for x in seeds)}"
            if stages is not None:
                mask &= sel["stage"].isin(list(stages))
                scope_text += f" stages {', '.join(stages)}"
        heads.append(f"{fr.shown()} ({fr.source}{'; governs' + scope_text if scope_text else ''})")
        starts = starts_all[mask].dropna()
        if not len(starts):
            verdicts.append("none")
            continue
        first = starts.min().to_pydatetime()
        if first < win[0]:
            i = starts.index[int(np.argmin(starts.to_numpy()))]
            f.append(Finding(fr.path or gv.spec.prose[-1].path, "freeze-contradicted", f"[gates.{gv.spec.gate}].prose",
                             f"rules written before the data (asserted {fr.shown()})",
                             f"input rows started {first.isoformat()} ({sel['_file'].at[i]} row {int(sel['_row'].at[i])})",
                             "the prose is dated after data it decides on existed"
                             + ("" if fr.instant is not None else ", in any time zone")))
            verdicts.append("contradicted")
        elif first >= win[1]:
            verdicts.append("consistent")
        else:
            verdicts.append("undetermined")
    head = f"{ASSERTED} " + "; ".join(heads) + " (what someone wrote, not a timestamp anyone can check)"
    first_all = starts_all.dropna()
    if "contradicted" in verdicts:
        return head + "; contradicted by the rows"
    if not len(first_all) or all(v == "none" for v in verdicts):
        return head + "; no input row to compare"
    first = first_all.min().to_pydatetime()
    if all(v in ("consistent", "none") for v in verdicts):
        return head + f"; consistent: every input row started after the freeze it falls under ({first.isoformat()})"
    return head + f"; undetermined: the first input row started {first.isoformat()}, within that day somewhere"


def _chain(view: PackageView, gate: str, parent: str, candidates: list[str], sel: pd.DataFrame) -> list[Finding]:
    """The stages this gate adds (not read by the parent) ran exactly the parent's promoted list."""
    out = []
    pstages = set(view.gates[parent].rules["inputs"]["stages"]) if view.gates[parent].rules else set()
    for stage in sorted(set(sel["stage"]) - pstages):
        ran = sorted(set(sel.loc[sel["stage"] == stage, "config_id"]))
        if ran != sorted(candidates):
            files = sorted(set(sel.loc[sel["stage"] == stage, "_file"]))
            out.append(Finding(files[0], "chain-broken", f"stage {stage}",
                               f"the configurations gate {parent} promoted: {sorted(candidates)}", str(ran),
                               f"stage {stage} did not run exactly the candidates gate {parent} promoted"))
    return out


def _num_differs(a, b, tol: float) -> bool:
    if a is None or b is None:
        return a is not b
    return not (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol + 1e-12)


def _compare(out: GateResult, rec: Recorded | None, view: PackageView) -> None:
    """Every recorded field the profile maps, against the replay; the rest is listed as not compared."""
    rep = out.replayed
    f = out.findings
    nc = out.not_compared
    nc.append(NotChecked("rules hash", "the authors' decision names no rules hash; the profile pins the prose's sha256"))
    nc.append(NotChecked("input hashes", "the authors' decision names no input hashes; the manifest covers the files"))
    if rec is None:
        nc.append(NotChecked("the decision", "the profile names no recorded decision for this gate"))
        return
    tol = rec.tolerance

    def differ(path, loc, code, exp, got, msg="the transcribed rules applied to the raw rows give another value"):
        f.append(Finding(path, code, loc, str(exp), str(got), msg))

    by_id = {c["config_id"]: c for c in rep["candidates"]}
    if rec.promoted is not None:
        got, path, loc = rec.promoted
        if sorted(got) != sorted(rep["promoted"]):
            differ(path, loc, "promoted-differs", rep["promoted"], got,
                   "the transcribed rules applied to the raw rows promote a different list")
        elif rec.ordered and got != rep["promoted"]:
            differ(path, loc, "promoted-order-differs", rep["promoted"], got)
        out.compared.append("promoted" + (" (order too)" if rec.ordered else " (as a set)"))
        if not rec.ordered:
            nc.append(NotChecked("promoted order", "the profile does not say the recorded list is ranked"))
    else:
        nc.append(NotChecked("promoted list", "not recorded where the profile points"))
    seen_fields = set()
    if rec.candidates is not None:
        path, at = rec.candidates_at
        if sorted(rec.candidates) != sorted(by_id):
            differ(path, at, "candidates-differ", sorted(by_id), sorted(rec.candidates),
                   "the authors' decision lists other candidates than the rules select")
        for cid, fields in sorted(rec.candidates.items()):
            want = by_id.get(cid)
            if want is None:
                continue
            for fld, (v, p, loc) in fields.items():
                seen_fields.add(fld)
                if fld == "promoted":
                    w = cid in rep["promoted"]
                    if v != w:
                        differ(p, loc, "promoted-differs", w, v)
                elif fld in ("rank", "wins", "eligible"):
                    if v != want[fld]:
                        differ(p, loc, f"{fld}-differs", want[fld], v)
                elif _num_differs(v, want[fld], tol):
                    differ(p, loc, "value-differs", want[fld], v)
    out.compared += [f"candidates' {fld}" for fld in sorted(seen_fields)]
    unseen = [fld for fld in ("rank", "mean", "min", "max", "std", "wins", "eligible") if fld not in seen_fields]
    if unseen:
        nc.append(NotChecked("candidates' " + ", ".join(unseen), "not recorded where the profile points"))
    if rec.cells is not None:
        keys = {(c["config_id"], *k.split("/")): (c, k) for c in rep["candidates"] for k in c["cells"]}
        keys = {(a, h, int(s)): v for (a, h, s), v in keys.items()}
        for key, fields in sorted(rec.cells.items()):
            if key not in keys:
                differ(rec.cells_at[0], rec.cells_at[1], "cells-differ", "a cell of the gate",
                       f"{key[0]} {key[1]}/{key[2]}")
                continue
            cand, k = keys[key]
            cell = cand["cells"][k]
            for fld, (v, p, loc) in fields.items():
                if fld == "rank" and v != cell["rank"]:
                    differ(p, loc, "rank-differs", cell["rank"], v)
                elif fld == "val_bpb" and _num_differs(v, cell["val_bpb"], tol):
                    differ(p, loc, "value-differs", cell["val_bpb"], v)
        missing = sorted(set(keys) - set(rec.cells))
        if missing:
            differ(rec.cells_at[0], rec.cells_at[1], "cells-differ",
                   f"{len(keys)} cells", f"{len(rec.cells)} recorded; missing e.g. {missing[0]}")
        out.compared.append("per-cell values and ranks")
    else:
        nc.append(NotChecked("per-cell values and ranks", "not recorded where the profile points"))
    for i, ch in enumerate(rep["checks"]):
        got = rec.checks.get(i, {})
        label = f"check {i} ({ch['kind']} {ch['candidate']})"
        if "passed" in got:
            v, p, loc = got["passed"]
            if v is not ch["passed"]:
                differ(p, loc, "check-outcome-differs", ch["passed"], v)
        if "value" in got:
            v, p, loc = got["value"]
            if _num_differs(v, ch["value"], tol):
                differ(p, loc, "check-value-differs", ch["value"], v)
        for fld in ("passed", "value"):
            if fld in got:
                out.compared.append(f"{label} {fld}")
            else:
                nc.append(NotChecked(f"{label} {fld}", "not recorded where the profile points"))
    for i in sorted(set(rec.checks) - set(range(len(rep["checks"])))):
        differ(rec.sources[0], f"checks[{i}]", "checks-differ", f"{len(rep['checks'])} check(s)", f"a check {i}")


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
        df["val"] = pd.to_numeric(df["val_bpb"], errors="coerce").astype(np.float64)
        df["train_s"] = pd.to_numeric(df["training_seconds"], errors="coerce").fillna(0.0).astype(np.float64)
        df["steps"] = pd.to_numeric(df["num_steps"], errors="coerce").fillna(0).astype(np.int64)
        df["good"] = (df["status"] == "ok") & np.isfinite(df["val"])
        self.rows = df
        self.decisions = decisions
        self.decision_paths = [r for g in view.profile.gates for r in (x.path for x in g.recorded)]
        self.rules = {g: view.gates[g].rules for g in decisions}

    def gate_of_stage(self, stage: str) -> str | None:
        for g in self.protocol.gates:
            r = self.rules.get(g.gate)
            if r and stage in r["inputs"]["stages"]:
                return g.gate
        return None


def check_tables_profiled(package: str | Path, profile: str | Path | Profile) -> ProfiledReport:
    """Regenerate each table the profile maps to a generator and compare it with the authors'
    recorded table value by value (numbers within the table's tolerance), on the key columns
    the profile names. Raises AuditError when it cannot run."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    prof.require_rules()
    view = read_package(package, prof)
    decisions = {g.gate: g.replayed for g in _replay_view(view, None) if g.replayed is not None}
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
                bad = _num_differs(fa, fb, t.tolerance)
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

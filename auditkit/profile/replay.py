"""Replay of a package's gates read through a profile: the gate pipeline (`auditkit.gates`) on the
package's own rows, converted as the profile says, under the profile's transcribed rules; then
each recorded field the profile maps compared with the replay (`auditkit.gates.diff`'s number test,
at the profile's tolerance). Candidates of a ``promoted-by:`` gate are the parent's recorded list
where the profile maps one, else its replayed list. Never a byte written into the package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.findings import Finding
from auditkit.gates.chain import GateWalk, resolve_candidates, rules_parent
from auditkit.gates.diff import num_differs
from auditkit.gates.engine import DuplicateRowError
from auditkit.gates.pipeline import decide_rows, select_rows
from auditkit.profile.load import load_profile
from auditkit.profile.model import Profile, Provenance
from auditkit.profile.results import (ASSERTED, GateResult, NotChecked, ProfiledReport, prose_findings,
                                      require_findings)
from auditkit.profile.view import Fact, GateView, PackageView, Recorded, read_package


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
    rep = _replay_report(view, replay_view(view, None if gate == "all" else gate), str(package))
    rep.extend(require_findings(view, require, None if gate == "all" else gate))
    return rep


def replay_view(view: PackageView, gate: str | None) -> list[GateResult]:
    """Replay the gates in profile order (up to `gate`, whose parents it needs); the gates asked for.
    The profile lists a parent before the gates it promotes (`auditkit.profile.model`), so a cycle
    cannot be met; were one met, its gate's candidates would be unresolved."""
    follow: GateWalk[GateResult] = GateWalk(lambda name, w: _replay_gate(view, view.gates[name], w),
                                          lambda name, path: GateResult(name))
    results = []
    for g in view.profile.gates:
        results.append(follow(g.gate))
        if g.gate == gate:
            return [results[-1]]
    return results


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


def _matrix(view: PackageView, out: GateResult, f: list) -> list[str]:
    f.extend(view.all_findings("matrix"))
    out.candidates_from = f"package: the matrix {view.profile.matrix.path}"
    return list(view.matrix_ids)


def _parent_promoted(view: PackageView, follow: GateWalk[GateResult], parent: str,
                     out: GateResult) -> list[str] | None:
    """The parent gate's recorded promoted list where the profile maps one, else its replayed list."""
    rec = view.gates[parent].recorded
    if rec is not None and rec.promoted is not None:
        out.candidates_from = f"package: gate {parent}'s recorded promoted list ({rec.promoted[1]} {rec.promoted[2]})"
        return list(rec.promoted[0])
    pr = follow(parent)
    if pr.replayed is not None:
        out.candidates_from = f"replay: gate {parent}'s replayed promoted list (the authors recorded none)"
        return list(pr.replayed["promoted"])
    return None


def _replay_gate(view: PackageView, gv: GateView, follow: GateWalk[GateResult]) -> GateResult:
    g = gv.spec
    out = GateResult(g.gate, recorded=gv.recorded)
    f = out.findings
    where = f"{view.profile.source} [gates.{g.gate}.rules]"
    prose_findings(view, f, g.gate)
    mine = {p.path for p in g.prose} | {r.path for r in g.recorded}
    f.extend(x for x in view.all_findings("profile", "recorded") if x.path in mine)   # missing or unreadable
    if gv.rules is None:
        f.extend(gv.problems)
        return out
    rules = gv.rules
    ins = rules["inputs"]
    sel = select_rows(view.rows, rules)
    files = sorted(set(sel["_file"]))
    f.extend(x for x in view.findings.get("rows", []) if x.path in files)
    if len(sel) == 0:
        f.append(Finding(where, "gate-no-rows", "$.inputs", "rows for the gate's stages, hosts and seeds", "none",
                         "a gate with no data decides nothing"))
    out.freeze = _freeze(gv, sel, f)

    candidates = resolve_candidates(ins["candidates"], matrix=lambda: _matrix(view, out, f),
                                    promoted=lambda parent: _parent_promoted(view, follow, parent, out))
    if candidates is None:
        f.append(Finding(where, "candidates-unresolved", "$.inputs.candidates",
                         f"gate {rules_parent(rules)}'s promoted list", "neither recorded nor replayable"))
        return out
    parent = rules_parent(rules)
    if parent is not None:
        f.extend(_chain(view, g.gate, parent, candidates, sel))
    elif ins["candidates"] != "matrix":
        out.candidates_from = "profile: an explicit list in the transcribed rules"
    if not candidates:
        f.append(Finding(where, "gate-no-candidates", "$.inputs.candidates", "at least one candidate", "none"))
    metric = rules["metric"]["column"]
    rows = sel.assign(value=pd.to_numeric(sel[metric] if metric in sel.columns else pd.Series(np.nan, index=sel.index),
                                          errors="coerce").to_numpy(np.float64))
    try:
        decision = decide_rows(rules, rows, candidates)
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
    tol = rec.tolerance + 1e-12   # the profile's tolerance, and a float's last bits

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
                elif num_differs(v, want[fld], tol):
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
                elif fld == "val_bpb" and num_differs(v, cell["val_bpb"], tol):
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
            if num_differs(v, ch["value"], tol):
                differ(p, loc, "check-value-differs", ch["value"], v)
        for fld in ("passed", "value"):
            if fld in got:
                out.compared.append(f"{label} {fld}")
            else:
                nc.append(NotChecked(f"{label} {fld}", "not recorded where the profile points"))
    for i in sorted(set(rec.checks) - set(range(len(rep["checks"])))):
        differ(rec.sources[0], f"checks[{i}]", "checks-differ", f"{len(rep['checks'])} check(s)", f"a check {i}")

"""Replay gate decisions: orchestration of the gate pipeline over a SPEC package.

For each gate: its rules (`StoreSource`, through the store), the rows they select, its candidates
(`chain.resolve_candidates`; for ``promoted-by:`` the parent's *recorded* promoted list, the walk
over gates and its one cycle check being `chain.GateWalk`'s), the engine's decision
(`pipeline.decide_rows`), then the recorded decision (`recorded`) and every difference (`diff`).

`decide_gate` writes nothing and needs no MANIFEST or tables, so the protocol runner uses it
while a study runs; `replay_gate`/`replay_all` recompute every recorded decision of a finished
package and report each difference as a finding. Text: `auditkit.gates.render`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from auditkit.errors import AuditError
from auditkit.findings import Finding, Report
from auditkit.gates.chain import GateWalk, chain_bound, resolve_candidates, rules_parent
from auditkit.gates.diff import iter_differences
from auditkit.gates.documents import (gate_inputs, matrix_config_ids, package_protocol, package_store, paused_gc,
                                      protocol_gate, read_json)
from auditkit.gates.engine import Decision, DuplicateRowError
from auditkit.gates.rules import validate_rules
from auditkit.gates.pipeline import StoreSource, decide_rows, frozen_before, iso, select_rows
from auditkit.gates.recorded import iter_reference_findings, read_recorded
from auditkit.package.columns import concat_rows
from auditkit.errors import PackageDefect, defect
from auditkit.package.canonical import canonical_json_bytes

# rules findings after which the gate cannot be recomputed (the others are reported, and it is)
_UNREPLAYABLE = {"schema-invalid", "rules-chain-cycle", "rules-non-finite-threshold", "rules-unknown-check"}


# --------------------------------------------------------------------------- decide

def decide_gate(package_dir, gate: str, decided_at: str) -> dict:
    """The full decision document (SPEC section 6) of `gate`, from the package's rules and
    rows, hashes included. Writes nothing. Raises AuditError when it cannot decide
    (unknown gate, missing or invalid rules or inputs, two rows of one candidate in a cell)."""
    src = StoreSource(package_dir)
    g = protocol_gate(src.protocol, gate)
    rules = read_json(src.store, g.rules)
    chain = chain_bound(gate, src.rules_of) if rules_parent(rules) is not None else None
    bad = validate_rules(rules, g.rules, chain=chain)
    if bad:
        raise AuditError(f"rules are not valid: {bad[0]}", path=g.rules,
                         hint="a gate's rules must follow SPEC.md section 5")
    candidates = resolve_candidates(rules["inputs"]["candidates"],
                                    matrix=lambda: matrix_config_ids(src.store, src.protocol),
                                    promoted=lambda parent: recorded_promoted_list(src, parent))
    paths = gate_inputs(src.store, rules)
    df = concat_rows([src.frame(p, rules["metric"]["column"]) for p in paths])
    try:
        decision = decide_rows(rules, df, candidates)
    except DuplicateRowError as exc:
        raise AuditError(str(exc), path=paths[0] if len(paths) == 1 else None,
                         hint="each candidate has one row per (host, seed) cell; remove the extra row") from exc
    return decision.to_json(rules_ref={"path": g.rules, "sha256": src.store.sha256(g.rules)},
                            inputs=[{"path": p, "sha256": src.hashes[p]} for p in paths], decided_at=decided_at)


def recorded_promoted_list(src: StoreSource, parent: str) -> list[str]:
    """Gate `parent`'s recorded promoted list (AuditError for an unknown gate, PackageDefect for a
    decision that is unreadable or has no promoted list)."""
    g = protocol_gate(src.protocol, parent)
    promoted = read_json(src.store, g.decision_path).get("promoted")
    if not isinstance(promoted, list) or not all(isinstance(c, str) for c in promoted):
        raise defect(g.decision_path, "schema-invalid", "the decision has no promoted list", location="$.promoted",
                     expected="a list of config_ids", found=json.dumps(promoted)[:80])
    return list(promoted)


def write_decision(package_dir: str | Path, gate: str, decided_at: str, *, force: bool = False) -> tuple[Path, dict]:
    """Decide `gate` and write ``analysis/<gate>_decision.json``. Refuses (AuditError) to
    overwrite a recorded decision unless `force`."""
    pkg = Path(package_dir)
    protocol = package_protocol(pkg)
    rel = protocol_gate(protocol, gate).decision_path
    out = pkg / rel
    if os.path.lexists(out) and not force:
        raise AuditError("a decision is already recorded; the recorded decision is evidence and is not overwritten",
                         path=str(out), hint=f"replay it with: auditkit replay-gate {gate} --package {pkg}; "
                                             "to overwrite it anyway pass --force")
    doc = decide_gate(pkg, gate, decided_at)
    from auditkit.package.writes import write_files   # the one rule: no link under the package followed

    write_files(pkg, {rel: canonical_json_bytes(doc)}, force=True, what="decide")
    return out, doc


def decision_text(doc: dict) -> str:
    return canonical_json_bytes(doc).decode("utf-8")


# --------------------------------------------------------------------------- replay

@dataclass
class GateReplay:
    """One gate's replay: the recorded and replayed decisions and every difference.

    `replayed` is the replayed decision document; a replay of a package fills `decision` (the
    engine's result) instead and builds the document only when asked (`replayed_doc`): one
    object per run row is what a large gate cannot afford twice. `recorded` is the recorded
    document when it had to be parsed, None when it is byte for byte the canonical form of the
    replayed one (then `recorded_doc` rebuilds it) or unreadable."""

    gate: str
    rules_path: str = ""
    rules: dict | None = None
    recorded: dict | None = None
    replayed: dict | None = None
    findings: list[Finding] = field(default_factory=list)
    first_input_start: str | None = None  # the earliest started_at of the rows the gate selects
    decision: Decision | None = None
    recorded_promoted: list[str] | None = None  # the recorded promoted list, when readable
    _refs: dict = field(default_factory=dict)   # rules_ref, inputs, decided_at of the replayed document
    _canonical: bool = False                    # the recorded file is the canonical form of the replayed one
    uncertainty: object = None                  # auditkit.stats.uncertainty.GateUncertainty, when asked for

    @property
    def identical(self) -> bool:
        return not self.findings

    def replayed_doc(self) -> dict | None:
        if self.replayed is None and self.decision is not None:
            self.replayed = self.decision.to_json(**self._refs)
        return self.replayed

    def recorded_doc(self) -> dict | None:
        return self.recorded if self.recorded is not None or not self._canonical else self.replayed_doc()

    @property
    def replayed_promoted(self) -> list[str] | None:
        if self.decision is not None:
            return list(self.decision.promoted)
        return None if self.replayed is None else list(self.replayed["promoted"])

    def summary(self) -> dict:
        """The verdict and what the replay found, for `--json`: promoted list, ranks, checks and
        `frozen_at` beside the first input row's start (None where the gate could not be replayed)."""
        frozen = self.rules.get("frozen_at") if isinstance(self.rules, dict) else None
        before = None
        if frozen and self.first_input_start:
            try:
                before = bool(pd.Timestamp(frozen) < pd.Timestamp(self.first_input_start))
            except (ValueError, TypeError):
                before = None
        out = {"gate": self.gate, "verdict": "identical" if self.identical else "differs",
               "differences": len(self.findings), "frozen_at": frozen,
               "first_input_started_at": self.first_input_start, "frozen_before_data": before, "replayed": None}
        keys = ("kind", "candidate", "reference", "value", "threshold", "passed")
        if self.decision is not None:
            d = self.decision
            out["replayed"] = {"promoted": list(d.promoted), "ranks": {c.config_id: c.rank for c in d.candidates},
                               "eligible": {c.config_id: c.eligible for c in d.candidates},
                               "checks": [dict(zip(keys, (ch.kind, ch.candidate, ch.reference, ch.value, ch.threshold,
                                                          ch.passed))) for ch in d.checks]}
        elif self.replayed is not None:
            doc = self.replayed
            out["replayed"] = {"promoted": list(doc["promoted"]),
                               "ranks": {c["config_id"]: c.get("rank") for c in doc["candidates"]},
                               "eligible": {c["config_id"]: c["eligible"] for c in doc["candidates"]},
                               "checks": [{k: ch.get(k) for k in keys} for ch in doc["checks"]]}
        if self.uncertainty is not None:
            out["uncertainty"] = self.uncertainty.to_json()
        return out


@dataclass
class ReplayReport(Report):
    """A replay-gate Report whose JSON form also carries each gate's replayed decision (`gates`)."""

    gates: list[dict] = field(default_factory=list)  # `GateReplay.summary()` of each gate, in protocol order

    def to_dict(self) -> dict:
        return {**super().to_dict(), "gates": self.gates}


def replay_gate(package_dir, gate: str) -> GateReplay:
    """Replay one gate. Raises AuditError when it cannot run (no package, unknown gate) and
    PackageDefect (an AuditError carrying a finding) when protocol.json is defective;
    everything else is a finding."""
    src = StoreSource(package_dir)
    protocol_gate(src.protocol, gate)
    with paused_gc():
        return _replay_walk(src)(gate)


def replay_all(package_dir) -> list[GateReplay]:
    """Replay every gate of the package's protocol, in protocol order (raises as `replay_gate`)."""
    src = StoreSource(package_dir)
    if not src.protocol.gates:
        raise AuditError("the protocol defines no gate", path="protocol.json",
                         hint="a package without gates has nothing to replay")
    follow = _replay_walk(src)
    with paused_gc():
        return [follow(g.gate) for g in src.protocol.gates]


def replay_package(package_dir, gate: str, *, level: float | None = None) -> tuple[list[GateReplay], Report]:
    """`replay_all` (gate ``all``) or `replay_gate`, and their report.

    Raises AuditError ("could not check", exit 2) when protocol.json is defective: without it
    there are no gates to replay.  The defect itself is a finding about the package, and
    `verify` reports it as one.  With `level`, each gate's summary carries its `uncertainty` at that
    level (`attach_uncertainty`)."""
    try:
        replays = replay_all(package_dir) if gate == "all" else [replay_gate(package_dir, gate)]
    except PackageDefect as exc:
        raise AuditError(f"cannot replay without a usable protocol.json: {exc.finding}",
                         path=str(Path(package_dir) / exc.finding.path),
                         hint=f"run `auditkit verify {package_dir}` for every finding about the package") from None
    if level is not None:
        attach_uncertainty(package_dir, replays, level)
    return replays, replay_report(replays, str(package_dir))


def attach_uncertainty(package_dir, replays: list[GateReplay], level: float) -> None:
    """Set each replay's `uncertainty` (auditkit.stats.uncertainty) where its decision was recomputed;
    the checks of all `replays` are one family for Holm's adjustment. Per-document evaluation losses
    are read where the rows name them (SPEC v1.2); a gate whose files cannot be used says why."""
    from auditkit.package.evaldocs import gate_doc_losses
    from auditkit.stats.uncertainty import apply_holm, gate_uncertainty

    store = package_store(package_dir)
    done = []
    for r in replays:
        if r.decision is None or r.rules is None:
            continue
        docs, why = gate_doc_losses(store, r.rules, r.decision)
        u = gate_uncertainty(r.decision, r.rules, level, docs)
        if why:
            u.notes.append(why)
        r.uncertainty = u
        done.append(u)
    apply_holm(done)


def replay_report(replays: list[GateReplay], target: str) -> ReplayReport:
    """One report of every finding of `replays`, each once (a file two gates read is one finding
    per gate only where the findings differ), and each gate's `summary` for `--json`."""
    rep = ReplayReport(command="replay-gate", target=target)
    seen = set()
    for r in replays:
        for x in r.findings:
            if x not in seen:
                seen.add(x)
                rep.add(x)
    rep.checked = {"gates": len(replays)}
    rep.gates = [r.summary() for r in replays]
    rep.info = {f"gate {r.gate}": ("identical" if r.identical else f"{len(r.findings)} difference(s)")
                for r in replays}
    return rep


def _replay_walk(src: StoreSource) -> GateWalk[GateReplay]:
    def cycle(gate: str, path: tuple[str, ...]) -> GateReplay:
        return GateReplay(gate, findings=[Finding(path="protocol.json", code="chain-cycle", location="$.gates",
                                                  found=" -> ".join(path),
                                                  message="promoted-by gates form a cycle")])

    return GateWalk(lambda gate, follow: _replay_gate(src, follow, gate), cycle)


def _replay_gate(s: StoreSource, follow: GateWalk[GateReplay], gate: str) -> GateReplay:
    g = s.protocol.gate(gate)
    out = GateReplay(gate, rules_path=g.rules)
    f = out.findings
    dec_rel = g.decision_path

    # rules
    try:
        rules = s.json(g.rules)
    except PackageDefect as exc:
        f.append(exc.finding)
        return out
    parent = rules_parent(rules)
    chain = chain_bound(gate, s.rules_of, s.matrix()) if parent is not None else None
    bad = validate_rules(rules, g.rules, known_configs=s.matrix(), chain=chain)
    f.extend(bad)
    if any(x.code in _UNREPLAYABLE for x in bad):
        return out
    out.rules = rules
    if rules["gate"] != gate:
        f.append(Finding(g.rules, "rules-wrong-gate", "$.gate", gate, rules["gate"], "the rules name another gate"))

    # inputs, read (and hashed) through the store
    selected = gate_inputs(s.store, rules)
    present = [p for p in selected if s.store.kind(p) is not None]
    for p in selected:
        if p not in present:
            f.append(Finding(p, "input-missing", expected="a run CSV the rules select", found="no such file",
                             message=f"gate {gate} selects this host x stage, but the package holds no rows for it"))
    metric = rules["metric"]["column"]
    frames = []
    for p in list(present):
        try:
            frames.append(s.frame(p, metric))
        except PackageDefect as exc:
            f.append(exc.finding)
            present.remove(p)
    sel = select_rows(concat_rows(frames), rules)
    del frames
    if len(sel) == 0:
        f.append(Finding(g.rules, "gate-no-rows", "$.inputs", "rows for the gate's stages, hosts and seeds",
                         "none", "a gate with no data decides nothing"))
    f.extend(frozen_before(rules, sel, g.rules))
    if len(sel) and sel["started"].notna().any():
        out.first_input_start = iso(sel["started"].min())

    # candidates (for promoted-by: the parent's recorded promoted list), and the recomputed decision
    decision = None
    candidates, parent_replay = _candidates(s, follow, gate, g.rules, rules, f)
    if candidates is not None:
        if not candidates:
            f.append(Finding(g.rules, "gate-no-candidates", "$.inputs.candidates", "at least one candidate", "none",
                             "a gate with no candidates decides nothing"))
        try:
            decision = decide_rows(rules, sel, candidates)
        except DuplicateRowError as exc:
            first = exc.where[0].split(" row ")[0] if exc.where else g.rules
            f.append(Finding(first, "duplicate-run-row", "; ".join(exc.where), "one row per candidate and cell",
                             f"{exc.config_id} in {exc.cell}", "two runs of one candidate in one cell: the rules "
                             "cannot say which counts (SPEC 5.2); find out which run the recorded decision used"))
    del sel
    out.decision = decision
    if decision is not None and parent_replay is not None and parent_replay.replayed_promoted is not None \
            and parent_replay.replayed_promoted != candidates:
        f.append(Finding(dec_rel, "chain-broken-on-replay", "$.candidates",
                         f"gate {parent}'s replayed promoted list {parent_replay.replayed_promoted}",
                         f"its recorded list {candidates}",
                         f"gate {parent} does not replay to the candidates gate {gate} used"))

    # the recorded decision, and what it records about the rules and inputs
    rec = read_recorded(s.store, gate, dec_rel, decision, f)
    out._refs = {"rules_ref": {"path": g.rules, "sha256": s.sha(g.rules)},
                 "inputs": [{"path": p, "sha256": s.sha(p)} for p in present],
                 "decided_at": rec.meta["decided_at"] if rec is not None and rec.meta is not None else ""}
    if rec is None:
        return out
    out.recorded_promoted = rec.promoted
    if rec.meta is None:
        return out
    out.recorded, out._canonical = rec.doc, rec.doc is None
    f.extend(iter_reference_findings(s.sha, gate, g.rules, dec_rel, selected, present, rec.meta))
    if decision is None:
        return out
    if parent is not None:
        named = sorted(c.config_id for c in decision.candidates) if rec.doc is None else \
            sorted(c["config_id"] for c in rec.doc["candidates"])
        if named != sorted(candidates):
            f.append(Finding(dec_rel, "chain-broken", "$.candidates",
                             f"the promoted list of gate {parent}: {sorted(candidates)}", str(named),
                             f"gate {gate} must decide among exactly the candidates gate {parent} promoted"))
    if rec.doc is not None:
        f.extend(iter_differences(rec.doc, out.replayed_doc(), dec_rel, better=rules["metric"]["better"]))
    return out


def _candidates(s: StoreSource, follow: GateWalk[GateReplay], gate: str, rules_rel: str, rules: dict,
                f: list) -> tuple[list[str] | None, GateReplay | None]:
    """(the gate's candidates or None when they cannot be known, the parent gate's replay)."""
    parents: list[GateReplay] = []

    def promoted(parent: str) -> list[str] | None:
        protocol_gate(s.protocol, parent)
        parents.append(follow(parent))
        if parents[0].recorded_promoted is None:
            f.append(Finding(rules_rel, "candidates-unresolved", "$.inputs.candidates",
                             f"the promoted list gate {parent} recorded", "none readable",
                             f"gate {parent}'s recorded decision is missing or unreadable (reported for that gate), "
                             f"so the candidates of gate {gate} are not known"))
            return None
        return parents[0].recorded_promoted

    try:
        return resolve_candidates(rules["inputs"]["candidates"],
                                  matrix=lambda: matrix_config_ids(s.store, s.protocol), promoted=promoted), \
            (parents[0] if parents else None)
    except PackageDefect as exc:
        f.append(exc.finding)
    except AuditError as exc:
        f.append(Finding(exc.path or rules_rel, "candidates-unresolved", "$.inputs.candidates", "a resolvable list",
                         exc.message, exc.hint or ""))
    return None, None

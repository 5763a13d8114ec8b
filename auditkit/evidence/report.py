"""Freeze evidence in a command's report: what `verify` and `replay-gate` add per gate.

`add_freeze_evidence(report, package, gates, trust, required)` grades every
named gate (`level.package_evidence`), adds the findings (and one
`evidence-below-required` per unmet `--require`), and puts the per-gate
`freeze_evidence` objects into `report.info["freeze_evidence"]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from auditkit.errors import AuditError
from auditkit.package.store import PackageStore
from auditkit.evidence.events import path_problem
from auditkit.evidence.level import package_evidence
from auditkit.evidence.model import DirReader, GateRef, Trust
from auditkit.evidence.require import describe, require_findings
from auditkit.findings import Report


def gate_refs(package: str | Path, gates: Sequence[str] | None = None) -> list[GateRef]:
    """The package's gates (all, or those named) with their rules, decision and input CSVs."""
    from auditkit.package.rows import run_csv_path
    from auditkit.package.protocol import Gate

    root = Path(package)
    store = PackageStore(root)
    try:
        protocol = store.read_json("protocol.json")
        if not isinstance(protocol, dict):
            raise ValueError("not a JSON object")
    except (AuditError, ValueError) as exc:
        raise AuditError(f"cannot read protocol.json: {exc}", path=str(root)) from None
    stages = protocol.get("stages") if isinstance(protocol.get("stages"), list) else []
    anchored = {s.get("stage") for s in stages if isinstance(s, dict) and s.get("rng_seeds") == "anchored"
                and isinstance(s.get("stage"), str)}
    out = []
    listed = protocol.get("gates") if isinstance(protocol.get("gates"), list) else []
    # a gate entry that is not an object with a plain name is verify's finding (schema), not a crash here
    for g in (g for g in listed if isinstance(g, dict) and isinstance(g.get("gate"), str)):
        name = g["gate"]
        if gates is not None and name not in gates:
            continue
        rules_rel = g.get("rules") if isinstance(g.get("rules"), str) and g.get("rules") else \
            f"preanalysis/{name}.rules.json"
        if path_problem(rules_rel) or path_problem(f"analysis/{name}_decision.json"):
            continue  # a rules path or gate name that leaves the package: verify's schema finding, no evidence
        try:
            rules = store.read_json(rules_rel)
            ins = rules["inputs"]
            inputs = tuple(run_csv_path(h, s) for s in ins["stages"] for h in ins["hosts"]
                           if store.is_file(run_csv_path(h, s)))
            anchored_in = tuple(s for s in ins["stages"] if s in anchored)
        except (AuditError, ValueError, KeyError, TypeError):  # the gate's own checks report why
            rules, inputs, anchored_in = {}, (), ()
        out.append(GateRef(name, rules_rel, Gate(name, rules_rel).decision_path, inputs,
                           str(rules.get("frozen_at", "")) if isinstance(rules, dict) else "", anchored_in))
    return out


def add_freeze_evidence(report: Report, package: str | Path, gates: Sequence[str] | None = None,
                        trust: Trust | None = None, required: Sequence[str] = (), subject_sha256=None) -> None:
    """Grade the gates' freeze evidence into `report` (findings, info["freeze_evidence"], notes).
    `subject_sha256`: see `level.package_evidence`.

    Raises AuditError when evidence was asked for (`trust` or `required`) and
    the package is not a directory.
    """
    root = Path(package)
    asked = bool(required) or bool(trust and (trust.tsa_roots or trust.keys))
    if not root.is_dir() or PackageStore(root).kind("protocol.json") != "file":
        if asked:
            raise AuditError("freeze evidence is checked in a package directory, not an archive",
                             path=str(package), hint="extract the archive and give its directory")
        return
    try:
        refs = gate_refs(root, gates)
    except AuditError:  # a defective protocol.json: no gates to grade; the command's own checks report it
        return          # (verify: a finding, exit 1; replay-gate stops before, exit 2)
    ev = package_evidence(DirReader(root), refs, trust, subject_sha256)
    report.extend(ev.findings)
    report.extend(require_findings(ev, refs, list(required)))
    report.info["freeze_evidence"] = ev.gates
    if ev.present:
        report.info["evidence"] = {k: v for k, v in ev.package.items()}
    if ev.notes:
        report.info["evidence_notes"] = list(ev.notes)


def render_freeze_evidence(report: Report) -> None:
    """Turn the structured evidence in `report.info` into one readable line per gate (for text output)."""
    gates = report.info.pop("freeze_evidence", None)
    pkg = report.info.pop("evidence", None)
    notes = report.info.pop("evidence_notes", [])
    for gate, ev in (gates or {}).items():
        report.info[f"gate {gate} frozen"] = describe(ev)
    if pkg and pkg.get("attested"):
        trusted = pkg.get("signed_by") or []
        if trusted:
            report.info["package attestation"] = (f"signed by {', '.join(k[:16] for k in trusted)} "
                                                  f"(root {pkg.get('root', '?')})")
        else:   # not a finding: the signature was not checked against any key the reviewer trusts
            report.info["package attestation"] = (
                f"signed, by no key you trust (root {pkg.get('root', '?')}): not a failure; to check the "
                "signature, pass the authors' public key, obtained from them and not from the package: "
                "--trusted-key AUTHORS.pub.pem")
    for i, note in enumerate(notes, 1):
        report.info[f"evidence note {i}"] = note

"""What an audit through a profile reports: `ProfiledReport` (findings, the facts they rest on with
who vouches for each, what could not be checked and why), a replayed gate's `GateResult`, and the
two checks every profiled command shares: the prose the rules were transcribed from is unchanged
(`prose_findings`), and the freeze evidence a reviewer requires (`require_findings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditkit.errors import AuditError
from auditkit.findings import Finding, Report
from auditkit.profile.model import Provenance
from auditkit.profile.view import Fact, PackageView, Recorded

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


def prose_findings(view: PackageView, findings: list, gate: str | None = None) -> None:
    for g in view.profile.gates:
        if gate is not None and g.gate != gate:
            continue
        for p in g.prose:
            got = view.sha(p.path)
            if got is not None and got != p.sha256:
                findings.append(Finding(p.path, "profile-prose-changed", f"[gates.{g.gate}].prose", p.sha256, got,
                                        "the prose changed since the profile transcribed it, so the transcribed "
                                        "rules no longer apply: re-read it, then update the rules and the sha256"))


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

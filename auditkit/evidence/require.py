"""What the reviewer demands of the freeze evidence (`--require LEVEL`), and how one gate's
evidence reads in one line (`describe`).
"""

from __future__ import annotations

from typing import Sequence

from auditkit.evidence.model import REQUIREMENTS, EvidenceReport, GateRef, Level, asserted_evidence
from auditkit.findings import Finding


def meets(ev: dict, requirement: str) -> bool:
    """Does one gate's freeze_evidence meet `requirement` (one of REQUIREMENTS)?"""
    if requirement == "signed":
        return bool(ev.get("signed_by"))
    if requirement == "seeds-bound":
        return bool(ev.get("seeds_bound"))
    return Level(ev["level"]).rank >= Level(requirement).rank


def require_findings(report: EvidenceReport, gates: Sequence[GateRef], required: Sequence[str]) -> list[Finding]:
    """`evidence-below-required` for every gate whose evidence is weaker than each requirement."""
    unknown = [r for r in required if r not in REQUIREMENTS]
    if unknown:
        raise ValueError(f"unknown requirement {unknown[0]!r}; choose from {', '.join(REQUIREMENTS)}")
    out = []
    for g in gates:
        ev = report.gates.get(g.gate) or asserted_evidence(g)
        for req in required:
            if not meets(ev, req):
                # only the notes about this kind of evidence (a signature note says nothing of a token)
                notes = [n for n in ev.get("untrusted") or [] if any(w in n.lower() for w in _NOTE_WORDS[req])]
                why = "; ".join(notes) or _MISSING[req]
                out.append(Finding(g.rules, "evidence-below-required", f"gate {g.gate}", req, describe(ev),
                                   f"the reviewer requires {req}: {why}"))
    return out


_NOTE_WORDS = {"asserted": ("frozen_at",), "chained": ("chain", "event"),
               "timestamped": ("token", "tsa", "timestamp"), "signed": ("signature", "signed", "key"),
               "seeds-bound": ("seed", "anchor")}
_MISSING = {
    "asserted": "its rules record no frozen_at",
    "chained": "no intact event log orders its input rows after the freeze",
    "timestamped": "no timestamp token from a TSA you trust covers its rules (the study timestamps them with "
                   "`protocol run --tsa`; trust the TSA's root with --trusted-tsa)",
    "signed": "no attestation of it is signed by a key you trust (pass the authors' public key with --trusted-key)",
    "seeds-bound": "its run seeds are not bound to a seed anchor",
}


def describe(ev: dict) -> str:
    """One line: the level and flags, e.g. 'timestamped 2026-04-28T09:00:01Z by CN=TSA (3.2 s before the first input), signed by 1a2b3c4d5e6f7a8b'."""
    level = ev["level"]
    if level == Level.TIMESTAMPED.value:
        text = f"timestamped {ev['time']} by {ev['authority']}"
        if ev.get("lead_seconds") is not None:
            text += f" ({_duration(ev['lead_seconds'])} before the first input)"
    elif level == Level.CHAINED.value:
        text = "chained (the event log orders every input row after the freeze)"
    else:
        text = f"asserted (frozen_at {ev.get('frozen_at') or '?'}, the package's own claim)"
    if ev.get("signed_by"):
        text += ", signed by " + ", ".join(k[:16] for k in ev["signed_by"])
    if ev.get("seeds_bound"):
        text += ", seeds bound to anchor"
    return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

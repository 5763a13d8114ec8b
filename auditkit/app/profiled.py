"""The `--profile` ends of verify, replay-gate and tables --check, and `profile draft`: a package
auditkit did not write, read through a reviewer-written profile (docs/PROFILES.md)."""

from __future__ import annotations

from auditkit.app.outcome import Outcome
from auditkit.app.policy import EvidencePolicy
from auditkit.errors import AuditError


def refuse_with_profile(fmt: str) -> None:
    """SARIF and JUnit do not apply to a package read through a profile yet."""
    if fmt in ("sarif", "junit"):
        raise AuditError(f"--format {fmt} does not apply with --profile yet", hint="use --format text or json")


def verify_profiled(src, request, fmt: str) -> Outcome:
    """verify --profile: the package's files against the manifests the profile maps."""
    from auditkit.profile import verify_profiled as verify

    refuse_with_profile(fmt)
    if request.deep or request.max_members or request.max_bytes or request.policy.trusts_anything:
        raise AuditError("--deep, --max-members, --max-bytes and the trust options do not apply with --profile",
                         hint="a package read through a profile carries no checkpoints auditkit maps, and no "
                              "tokens or attestations; --require still applies")
    return Outcome("verify", verify(src.target, request.profile, require=request.policy.require))


def replay_profiled(src, gate: str, profile: str, policy: EvidencePolicy, fmt: str) -> Outcome:
    """replay-gate --profile: the engine's decision of each gate from the profiled rows, compared with
    what the authors recorded as far as the profile maps it."""
    from auditkit.profile import replay_profiled as replay

    refuse_with_profile(fmt)
    if policy.trusts_anything:
        raise AuditError("the trust options do not apply with --profile",
                         hint="a package read through a profile carries no tokens or attestations; "
                              "--require still applies")
    report = replay(str(src.root), profile, gate, require=policy.require)
    return Outcome("replay-gate", report, lines=[render_profiled_gate(g) + "\n" for g in report.gates])


def check_tables_profiled(src, profile: str, *, check: bool, out: str | None) -> Outcome:
    """tables --check --profile: the recorded tables the profile maps, regenerated from the rows."""
    from auditkit.profile import check_tables_profiled as check_tables

    if not check or out:
        raise AuditError("through a profile, tables are only checked: auditkit writes nothing for a package it "
                         "did not write", hint="add --check (and leave out --out)")
    return Outcome("tables", check_tables(str(src.root), profile))


def render_profiled_gate(g) -> str:
    """The engine's table of the replayed gate, then what was compared with the authors' record."""
    from auditkit.gates.render import render_gate
    from auditkit.gates.replay import GateReplay
    from auditkit.text import printable

    lines = [f"== gate {g.gate} (through the profile) =="]
    if g.replayed is not None:
        lines += render_gate(GateReplay(g.gate, replayed=g.replayed)).splitlines()[1:-1]
    lines.append(f"candidates from {g.candidates_from}")
    lines.append(f"freeze: {g.freeze}")
    if g.compared:
        lines.append("compared with the authors' record: " + "; ".join(g.compared))
    if g.recorded is None:
        lines.append(f"verdict: replayed — the authors recorded no decision the profile maps for gate {g.gate}")
    elif g.identical:
        lines.append(f"verdict: identical as far as the authors recorded — gate {g.gate}")
    else:
        lines.append(f"verdict: DIFFERS — {len(g.findings)} difference(s):")
        lines += [f"  {x}" for x in g.findings]
    return "\n".join(printable(line) for line in lines)


def draft(src, *, out: str | None = None, force: bool = False) -> Outcome:
    """A draft profile for the package from its own files (the rules left TODO): printed, or
    written to `out` (refused before the work when `out` cannot be written)."""
    from auditkit.app.outfile import guard_out_file
    from auditkit.package.writes import write_file
    from auditkit.profile.draft import draft_profile

    package = str(src.root)
    if out is not None:
        guard_out_file(out, package, force=force, name="the draft", what="profile draft")
    text = draft_profile(package)
    if out is None:
        return Outcome("profile draft", raw=text)
    write_file(out, text.encode("utf-8"), force=force, what="profile draft")
    todo = text.count('rules = "TODO"')
    return Outcome("profile draft", lines=[
        f"wrote {out}: a draft with {todo} gate(s) whose rules are TODO; transcribe them from the prose, "
        f"then: auditkit verify {src.given} --profile {out}"])

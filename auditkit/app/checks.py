"""The checks of a package auditkit wrote: `verify`, `replay_gate`, `decide` and `build_manifest`.

Each takes the opened package (`auditkit.package.source.PackageSource`) and plain values, and
returns an `Outcome`; the `--profile` variants are in `auditkit.app.profiled`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from auditkit.app.outcome import Outcome
from auditkit.app.policy import EvidencePolicy, add_evidence
from auditkit.errors import AuditError


def add_source_findings(report, src):
    """What fetching found (a served file whose hash did not match) joins the command's report, whose
    target is the package as the user named it."""
    report.extend(src.findings)
    report.target = src.given
    if src.found_at and not src.noted:
        report.info["found_at"] = src.found_at
    if src.notes and not src.noted:
        report.info["source_notes"] = list(src.notes)
    return report


@dataclass(frozen=True)
class VerifyRequest:
    """What `verify` is asked to do beyond the package: parallel reads, --deep (with its torch
    threads), the archive limits, the evidence policy, and a profile to read the package through."""

    jobs: int | None = None
    deep: bool = False
    threads: int | None = None
    max_members: int | None = None
    max_bytes: int | None = None
    policy: EvidencePolicy = EvidencePolicy()
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and not self.deep:
            raise AuditError("--threads applies with --deep only", hint="add --deep, or leave --threads out")


def verify(src, request: VerifyRequest, fmt: str, *, progress: Callable | None = None,
           say: Callable[[str], None] | None = None, say_tty: bool = False) -> Outcome:
    """Prove the package whole, unaltered and well formed, and grade its freeze evidence."""
    if request.profile:
        from auditkit.app.profiled import verify_profiled

        return verify_profiled(src, request, fmt)
    from auditkit.verify import verify_package

    report = verify_package(src.target, jobs=request.jobs, deep=request.deep, progress_factory=progress,
                            max_members=request.max_members, max_bytes=request.max_bytes,
                            deep_threads=request.threads, say=say, say_tty=say_tty,
                            beside=lambda r, scanned: add_evidence(r, src.target, None, request.policy,
                                                                   text=fmt != "json", subject_sha256=scanned))
    add_source_findings(report, src)
    notes = []
    if report.info.get("found_at") and fmt == "text":   # an archive streamed: found as it was read
        notes.append(f"note: package found at {report.info.pop('found_at')} inside {src.given}")
    return Outcome("verify", report, package=src.target, notes=notes)


def replay_gate(src, gate: str, fmt: str, *, policy: EvidencePolicy = EvidencePolicy(), level: float = 0.95,
                verbose: int = 0, quiet: bool = False, profile: str | None = None) -> Outcome:
    """Recompute GATE's decision (or every gate's, `all`) from the rules and raw rows, diff it with the
    record, and grade the freeze evidence."""
    package = str(src.root)
    if profile:
        from auditkit.app.profiled import replay_profiled

        return replay_profiled(src, gate, profile, policy, fmt)
    from auditkit.gates.replay import replay_package

    replays, report = replay_package(package, gate, level=level)
    if replays:  # none when protocol.json itself is defective (that is the report's finding)
        add_evidence(report, package, None if gate == "all" else [gate], policy, text=fmt != "json")
    report = add_source_findings(report, src)
    # one gate asked for: its whole table; all of them: one line each unless -v
    verbosity = -1 if quiet else verbose if gate == "all" else max(verbose, 1)
    lines = gate_tables(replays) if verbosity > 0 and fmt == "text" else []
    return Outcome("replay-gate", report, package=package, replays=replays, view="replay", verbosity=verbosity,
                   lines=lines)


def gate_tables(replays) -> list[str]:
    """Every replayed gate's candidates x cells table, each followed by why each candidate was promoted
    or eliminated (where the engine decided it) and a blank line."""
    from auditkit.gates.render import render_gate, render_why

    lines = []
    for r in replays:
        lines.append(render_gate(r))
        why = render_why(r)      # None where the engine did not decide the gate
        if why is not None:
            lines.append(why)
        lines.append("")
    return lines


def decide(src, gate: str, *, force: bool = False) -> Outcome:
    """Decide GATE from the package's frozen rules and raw rows; write analysis/GATE_decision.json."""
    from auditkit.gates.replay import write_decision
    from auditkit.clock import utc_now
    from auditkit.text import printable

    if src.kind != "directory":
        raise AuditError("decide writes the decision into the package, so it needs a package directory",
                         path=src.given, hint="give the package directory (an archive or URL is read-only)")
    package = str(src.root)
    path, doc = write_decision(package, gate, utc_now(), force=force)
    out = Outcome("decide", lines=[printable(f"decided gate {gate}: promoted {', '.join(doc['promoted']) or '(none)'}"),
                                   f"wrote {path}"])
    if (Path(package) / "MANIFEST.json").is_file():
        out.warnings.append(f"warning: {Path(package) / 'MANIFEST.json'} is now stale (it recorded the package before "
                            f"this decision); rebuild it with: auditkit manifest build {package}")
    return out


def build_manifest(package: str, *, force: bool = False) -> Outcome:
    """Write MANIFEST.json and MANIFEST.csv for the package directory."""
    from auditkit.package.manifest import build_manifest as build

    doc = build(package, require_protocol=not force)
    return Outcome("manifest build", lines=[f"wrote MANIFEST.json and MANIFEST.csv: {len(doc['files'])} files, "
                                            f"root {doc['root']}"])

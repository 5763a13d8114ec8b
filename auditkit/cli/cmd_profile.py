"""`--profile P.toml` on verify, replay-gate and tables --check, and `auditkit profile draft`.

A profile reads a package auditkit did not write (docs/PROFILES.md); these are
the thin command ends of `auditkit.profile`.  Each exits like every command:
0 all holds, 1 findings, 2 could not check.
"""

from __future__ import annotations

import sys

import click

from auditkit.cli.common import emit, fail, package_argument, package_source
from auditkit.errors import AuditError


def profile_option(f):
    """`--profile P.toml`: read the package through a reviewer-written profile."""
    return click.option("--profile", "profile", type=click.Path(dir_okay=False),
                        help="Read a package auditkit did not write through this profile (docs/PROFILES.md).")(f)


def verify_through(package: str, profile: str, as_json: bool, require=()) -> None:
    from auditkit.profile import verify_profiled

    try:
        report = verify_profiled(package, profile, require=tuple(require))
    except AuditError as exc:
        fail(exc, as_json)
    emit(report, as_json)


def replay_through(gate: str, package: str, profile: str, as_json: bool, require=()) -> None:
    from auditkit.profile import replay_profiled

    try:
        report = replay_profiled(package, profile, gate, require=tuple(require))
    except AuditError as exc:
        fail(exc, as_json)
    if not as_json:
        for g in report.gates:
            click.echo(render_profiled_gate(g) + "\n")
    emit(report, as_json)


def tables_through(package: str, profile: str, check: bool, out: str | None, as_json: bool) -> None:
    from auditkit.profile import check_tables_profiled

    if not check or out:
        fail(AuditError("through a profile, tables are only checked: auditkit writes nothing for a package it "
                        "did not write", hint="add --check (and leave out --out)"), as_json)
    try:
        report = check_tables_profiled(package, profile)
    except AuditError as exc:
        fail(exc, as_json)
    emit(report, as_json)


def render_profiled_gate(g) -> str:
    """The engine's table of the replayed gate, then what was compared with the authors' record."""
    from auditkit.gates.render import render_gate
    from auditkit.gates.replay import GateReplay

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
    from auditkit.text import printable

    return "\n".join(printable(line) for line in lines)


@click.group("profile")
def profile_group() -> None:
    """Profiles: read packages auditkit did not write (docs/PROFILES.md)."""


@profile_group.command("draft")
@package_argument
@click.option("--out", type=click.Path(dir_okay=False), help="Write the draft here (default: print it).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def profile_draft_cmd(package, package_opt, out, force) -> None:
    """Draft a profile for PACKAGE (a directory, an archive, a URL) from its own files; the rules are left TODO."""
    with package_source(package, package_opt, allow_foreign=True) as src:
        _draft(src.given, str(src.root), out, force)


def _draft(given: str, package: str, out, force) -> None:
    from auditkit.cli.outfile import check_out_file
    from auditkit.package.writes import refuse_inside, write_file
    from auditkit.profile.draft import draft_profile

    try:
        if out is not None:
            refuse_inside(out, package, what="the draft")
            check_out_file(out, force=force)  # a FIFO, a directory, an unwritable place: refused before the work
            write_file(out, b"", force=force, what="profile draft", dry_run=True)
        text = draft_profile(package)
        if out is None:
            sys.stdout.write(text)
            return
        write_file(out, text.encode("utf-8"), force=force, what="profile draft")
    except AuditError as exc:
        fail(exc)
    todo = text.count('rules = "TODO"')
    click.echo(f"wrote {out}: a draft with {todo} gate(s) whose rules are TODO; transcribe them from the prose, "
               f"then: auditkit verify {given} --profile {out}")


COMMANDS = [profile_group]

"""`auditkit decide` and `auditkit replay-gate`."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.cmd_evidence import evidence_options, with_freeze_evidence
from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import (add_source_findings, emit_as, fail, format_option, json_option, package_argument,
                                 package_source)
from auditkit.cli.common import output_format as _output_format
from auditkit.errors import AuditError


@click.command("decide")
@click.argument("gate")
@package_argument
@click.option("--force", is_flag=True, help="Overwrite a recorded decision (it is evidence: think twice).")
def decide_cmd(gate, package, package_opt, force) -> None:
    """Decide GATE from the package's frozen rules and raw rows; write analysis/GATE_decision.json."""
    from auditkit.gates.replay import write_decision
    from auditkit.package.store import utc_now

    with package_source(package, package_opt) as src:
        if src.kind != "directory":
            fail(AuditError("decide writes the decision into the package, so it needs a package directory",
                            path=src.given, hint="give the package directory (an archive or URL is read-only)"))
        package = str(src.root)
        try:
            path, doc = write_decision(package, gate, utc_now(), force=force)
        except AuditError as exc:
            fail(exc)
    click.echo(f"decided gate {gate}: promoted {', '.join(doc['promoted']) or '(none)'}")
    click.echo(f"wrote {path}")
    if (Path(package) / "MANIFEST.json").is_file():
        click.echo(f"warning: {Path(package) / 'MANIFEST.json'} is now stale (it recorded the package before this "
                   f"decision); rebuild it with: auditkit manifest build {package}", err=True)


@click.command("replay-gate")
@click.argument("gate", metavar="GATE|all")
@package_argument
@json_option
@format_option
@evidence_options
@profile_option
def replay_gate_cmd(gate, package, package_opt, as_json, output_format, trusted_tsa, trusted_keys, system_trust,
                    require, profile) -> None:
    """Recompute GATE's decision (or every gate's) from the rules and raw rows and diff it with the record."""
    fmt = _output_format(output_format, as_json)
    as_json = fmt == "json"
    with package_source(package, package_opt, as_json=as_json, allow_foreign=bool(profile)) as src:
        _replay(gate, src, as_json, fmt, trusted_tsa, trusted_keys, system_trust, require, profile)


def _replay(gate, src, as_json, fmt, trusted_tsa, trusted_keys, system_trust, require, profile) -> None:
    package = str(src.root)
    if profile:
        if fmt in ("sarif", "junit"):
            fail(AuditError(f"--format {fmt} does not apply with --profile yet", hint="use --format text or json"))
        from auditkit.cli.cmd_profile import replay_through

        if trusted_tsa or trusted_keys or system_trust:
            fail(AuditError("the trust options do not apply with --profile",
                            hint="a package read through a profile carries no tokens or attestations; "
                                 "--require still applies"), as_json)
        replay_through(gate, package, profile, as_json, require)
    from auditkit.gates.replay import render_gate, replay_package

    try:
        replays, report = replay_package(package, gate)
    except AuditError as exc:
        fail(exc, as_json)
    try:
        if replays:  # none when protocol.json itself is defective (that is the report's finding)
            with_freeze_evidence(report, package, None if gate == "all" else [gate], trusted_tsa, trusted_keys,
                                 system_trust, require, as_json)
    except AuditError as exc:
        fail(exc, as_json)
    if fmt == "text":
        from auditkit.report.reasons import reasons

        for r in replays:
            click.echo(render_gate(r))
            if r.decision is not None and r.rules is not None:   # the engine's result: no document built
                why = reasons(r.decision, r.rules)
                click.echo("why:\n" + "\n".join(f"  {c.config_id}: {why[c.config_id]}" for c in r.decision.candidates))
            click.echo()
    emit_as(add_source_findings(report, src), fmt, package=package, replays=replays)


COMMANDS = [decide_cmd, replay_gate_cmd]

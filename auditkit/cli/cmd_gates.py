"""`auditkit decide` and `auditkit replay-gate`."""

from __future__ import annotations

import click

from auditkit.cli.cmd_evidence import evidence_options, with_freeze_evidence
from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import emit, fail, json_option, package_option
from auditkit.errors import AuditError


@click.command("decide")
@click.argument("gate")
@package_option
@click.option("--force", is_flag=True, help="Overwrite a recorded decision (it is evidence: think twice).")
def decide_cmd(gate, package, force) -> None:
    """Decide GATE from the package's frozen rules and raw rows; write analysis/GATE_decision.json."""
    from auditkit.gates.replay import write_decision
    from auditkit.package.store import utc_now

    try:
        path, doc = write_decision(package, gate, utc_now(), force=force)
    except AuditError as exc:
        fail(exc)
    click.echo(f"decided gate {gate}: promoted {', '.join(doc['promoted']) or '(none)'}")
    click.echo(f"wrote {path}")


@click.command("replay-gate")
@click.argument("gate", metavar="GATE|all")
@package_option
@json_option
@evidence_options
@profile_option
def replay_gate_cmd(gate, package, as_json, trusted_tsa, trusted_keys, system_trust, require, profile) -> None:
    """Recompute GATE's decision (or every gate's) from the rules and raw rows and diff it with the record."""
    if profile:
        from auditkit.cli.cmd_profile import replay_through

        replay_through(gate, package, profile, as_json)
    from auditkit.gates.replay import render_gate, replay_all, replay_gate, replay_report

    try:
        replays = replay_all(package) if gate == "all" else [replay_gate(package, gate)]
    except AuditError as exc:
        fail(exc, as_json)
    report = replay_report(replays, package)
    try:
        with_freeze_evidence(report, package, None if gate == "all" else [gate], trusted_tsa, trusted_keys,
                             system_trust, require, as_json)
    except AuditError as exc:
        fail(exc, as_json)
    if not as_json:
        for r in replays:
            click.echo(render_gate(r) + "\n")
    emit(report, as_json)


COMMANDS = [decide_cmd, replay_gate_cmd]

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
    from auditkit.clock import utc_now

    with package_source(package, package_opt) as src:
        if src.kind != "directory":
            fail(AuditError("decide writes the decision into the package, so it needs a package directory",
                            path=src.given, hint="give the package directory (an archive or URL is read-only)"))
        package = str(src.root)
        try:
            path, doc = write_decision(package, gate, utc_now(), force=force)
        except AuditError as exc:
            fail(exc)
    from auditkit.text import printable

    click.echo(printable(f"decided gate {gate}: promoted {', '.join(doc['promoted']) or '(none)'}"))
    click.echo(f"wrote {path}")
    if (Path(package) / "MANIFEST.json").is_file():
        click.echo(f"warning: {Path(package) / 'MANIFEST.json'} is now stale (it recorded the package before this "
                   f"decision); rebuild it with: auditkit manifest build {package}", err=True)


@click.command("replay-gate")
@click.argument("gate", metavar="GATE|all")
@package_argument
@json_option
@format_option
@click.option("-v", "--verbose", count=True, help="Every gate's candidates x cells table and each candidate's reason.")
@click.option("-q", "--quiet", is_flag=True, help="Print the verdict line only (text).")
@evidence_options
@profile_option
@click.option("--level", type=click.FloatRange(0.5, 1.0, min_open=False, max_open=True), default=0.95,
              show_default=True, help="Level of the intervals and calls of the thresholded checks (docs/STATISTICS.md).")
def replay_gate_cmd(gate, package, package_opt, as_json, output_format, verbose, quiet, trusted_tsa, trusted_keys, system_trust,
                    require, profile, level) -> None:
    """Recompute GATE's decision (or every gate's) from the rules and raw rows and diff it with the record.

    \b
    For `all`, one line a gate unless -v (every gate's candidates x cells table and why each
    candidate was promoted or eliminated); one gate is shown whole; -q prints the verdict line alone.

    \b
    Examples:
      auditkit replay-gate all --package ancillary
      auditkit replay-gate stage2 --package ancillary -v
      auditkit replay-gate all --package ancillary --format sarif > replay.sarif

    \b
    Exit codes: 0 every gate replays to its recorded decision, 1 findings, 2 could not check."""
    fmt = _output_format(output_format, as_json)
    as_json = fmt == "json"
    with package_source(package, package_opt, as_json=as_json, allow_foreign=bool(profile)) as src:
        _replay(gate, src, as_json, fmt, verbose, quiet, trusted_tsa, trusted_keys, system_trust, require, profile,
                level)


def _replay(gate, src, as_json, fmt, verbose, quiet, trusted_tsa, trusted_keys, system_trust, require, profile,
            level) -> None:
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
    from auditkit.gates.replay import replay_package

    try:
        replays, report = replay_package(package, gate, level=level)
    except AuditError as exc:
        fail(exc, as_json)
    try:
        if replays:  # none when protocol.json itself is defective (that is the report's finding)
            with_freeze_evidence(report, package, None if gate == "all" else [gate], trusted_tsa, trusted_keys,
                                 system_trust, require, as_json)
    except AuditError as exc:
        fail(exc, as_json)
    report = add_source_findings(report, src)
    if fmt == "text":
        from auditkit.cli.output import render_replay_text

        # one gate asked for: its whole table; all of them: one line each unless -v
        render_replay_text(replays, report, -1 if quiet else verbose if gate == "all" else max(verbose, 1))
    emit_as(report, fmt, package=package, replays=replays)


COMMANDS = [decide_cmd, replay_gate_cmd]

"""`auditkit decide` and `auditkit replay-gate`."""

from __future__ import annotations

import sys

import click

from auditkit.cli.cmd_evidence import evidence_options
from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import chosen_format, format_option, json_option, package_argument, package_source
from auditkit.cli.output import emit


@click.command("decide")
@click.argument("gate")
@package_argument
@click.option("--force", is_flag=True, help="Overwrite a recorded decision (it is evidence: think twice).")
def decide_cmd(gate, package, package_opt, force) -> None:
    """Decide GATE from the package's frozen rules and raw rows; write analysis/GATE_decision.json."""
    from auditkit.app.checks import decide

    with package_source(package, package_opt) as src:
        outcome = decide(src, gate, force=force)
    sys.exit(emit(outcome))


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
def replay_gate_cmd(gate, package, package_opt, as_json, output_format, verbose, quiet, policy, profile, level) -> None:
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
    from auditkit.app.checks import replay_gate

    fmt = chosen_format(output_format, as_json)
    with package_source(package, package_opt, allow_foreign=bool(profile)) as src:
        outcome = replay_gate(src, gate, fmt, policy=policy, level=level, verbose=verbose, quiet=quiet, profile=profile)
        sys.exit(emit(outcome))


COMMANDS = [decide_cmd, replay_gate_cmd]

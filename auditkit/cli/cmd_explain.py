"""`auditkit explain CODE`: what a finding code means and what to do, from the catalogue."""

from __future__ import annotations

import sys

import click

from auditkit.cli.common import json_option
from auditkit.cli.output import emit


@click.command("explain")
@click.argument("code", required=False)
@json_option
def explain_cmd(code, as_json) -> None:
    """Say what finding CODE means and what to do about it (every code, without CODE).

    \b
    Examples:
      auditkit explain row-invalid
      auditkit explain            # every code, by family

    \b
    Exit codes: 0 the code is catalogued, 2 it is not (the nearest codes are suggested)."""
    from auditkit.app.review import explain

    sys.exit(emit(explain(code)))


COMMANDS = [explain_cmd]

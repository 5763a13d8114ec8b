"""What every command shares: exit codes, the error/report exits, and options declared once."""

from __future__ import annotations

import json
import sys

import click

from auditkit.errors import AuditError
from auditkit.findings import Report

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
DEFAULT_PACKAGE = "ancillary"


def fail(exc: AuditError, as_json: bool = False) -> None:
    """Report an AuditError (the check could not run) and exit 2."""
    if as_json:
        click.echo(json.dumps({"ok": False, "exit_code": EXIT_ERROR, **exc.to_dict()}, indent=2, sort_keys=True))
    else:
        click.echo(exc.diagnostics(), err=True)
    sys.exit(EXIT_ERROR)


def emit(report: Report, as_json: bool) -> None:
    """Print a report (text or JSON) and exit with its code."""
    click.echo(report.to_json() if as_json else report.render_text())
    sys.exit(report.exit_code)


def package_option(f):
    """`--package PATH` (default `ancillary`): the package a command reads."""
    return click.option("--package", "package", default=DEFAULT_PACKAGE, show_default=True,
                        type=click.Path(file_okay=False), help="The package directory.")(f)


def json_option(f):
    """`--json`: machine-readable output (errors too, with exit 2)."""
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)

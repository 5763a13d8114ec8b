"""`auditkit review`: the reviewer's whole job on one package in one command."""

from __future__ import annotations

import sys

import click

from auditkit.cli.cmd_evidence import evidence_options
from auditkit.cli.common import json_option, package_argument, package_source
from auditkit.cli.output import emit


@click.command("review")
@package_argument
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Also write report.html and review.json into this directory (outside the package).")
@click.option("--force", is_flag=True, help="Overwrite report.html / review.json in the --report directory.")
@click.option("--no-figures", is_flag=True, help="Do not regenerate the figures (no matplotlib needed).")
@json_option
@evidence_options
def review_cmd(package, package_opt, report_dir, force, no_figures, as_json, policy) -> None:
    """Verify PACKAGE, replay every gate, check its tables and figures, decide its claims: one summary.

    PACKAGE is a directory, an archive of any name (an arXiv e-print: the package is found under anc/),
    an https:// URL or an arXiv identifier.  Exit 0 when every check holds, 1 when any has findings,
    2 when a check could not run."""
    from auditkit.app.review import review

    with package_source(package, package_opt) as src:
        outcome = review(src, report_dir=report_dir, force=force, figures=not no_figures, policy=policy)
    sys.exit(emit(outcome))


COMMANDS = [review_cmd]

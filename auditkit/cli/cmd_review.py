"""`auditkit review`: the reviewer's whole job on one package in one command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from auditkit.cli.cmd_evidence import evidence_options, trust_from
from auditkit.cli.common import fail, json_option, package_argument, package_source
from auditkit.errors import AuditError


@click.command("review")
@package_argument
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Also write report.html and review.json into this directory (outside the package).")
@click.option("--force", is_flag=True, help="Overwrite report.html / review.json in the --report directory.")
@click.option("--no-figures", is_flag=True, help="Do not regenerate the figures (no matplotlib needed).")
@json_option
@evidence_options
def review_cmd(package, package_opt, report_dir, force, no_figures, as_json, trusted_tsa, trusted_keys, system_trust,
               require) -> None:
    """Verify PACKAGE, replay every gate, check its tables and figures, decide its claims: one summary.

    PACKAGE is a directory, an archive of any name (an arXiv e-print: the package is found under anc/),
    an https:// URL or an arXiv identifier.  Exit 0 when every check holds, 1 when any has findings,
    2 when a check could not run."""
    with package_source(package, package_opt, as_json=as_json) as src:
        try:
            if report_dir is not None and src.kind == "directory":
                dest, root = Path(report_dir).resolve(), Path(src.root).resolve()
                if dest == root or root in dest.parents:
                    raise AuditError("the report would be written into the package", path=report_dir,
                                     hint="write it outside the package: auditkit never writes into what it checks")
            from auditkit.clock import utc_now
            from auditkit.report.review import render_review, review_package, write_review

            data = review_package(src, figures=not no_figures, trust=trust_from(trusted_tsa, trusted_keys,
                                                                                system_trust),
                                  require=require, generated_at=utc_now())
            written = write_review(data, report_dir, force=force) if report_dir is not None else []
        except AuditError as exc:
            fail(exc, as_json)
    if as_json:
        click.echo(json.dumps({k: v for k, v in data.items() if k != "figures"}, indent=2, sort_keys=True,
                              default=str))
    else:
        click.echo(render_review(data))
        for p in written:
            click.echo(f"wrote {p}")
    sys.exit(data["exit_code"])


COMMANDS = [review_cmd]

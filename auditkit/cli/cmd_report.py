"""`auditkit claims` and `auditkit report`: the reviewer's view of a package."""

from __future__ import annotations

import sys

import click

from auditkit.cli.cmd_evidence import evidence_options
from auditkit.cli.common import chosen_format, format_option, json_option, package_argument, package_source
from auditkit.cli.output import emit


@click.command("claims")
@package_argument
@click.option("--claims", "claims_path", type=click.Path(dir_okay=False),
              help="A claims file (default: the package's claims.json).")
@json_option
@format_option
def claims_cmd(package, package_opt, claims_path, as_json, output_format) -> None:
    """Decide every claim of claims.json from the raw rows: held, not held, not checkable (exit 1 unless all hold)."""
    from auditkit.app.review import claims

    fmt = chosen_format(output_format, as_json)
    with package_source(package, package_opt) as src:
        sys.exit(emit(claims(src, fmt, claims_path=claims_path)))


@click.command("report")
@package_argument
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Write the page here (e.g. report.html).")
@click.option("--format", "page_format", type=click.Choice(("html", "md")), default="html", show_default=True,
              help="A self-contained HTML page, or Markdown.")
@click.option("--claims", "claims_path", type=click.Path(dir_okay=False),
              help="A claims file (default: the package's claims.json, when it has one).")
@click.option("--no-figures", is_flag=True, help="Leave the figures out of the page.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@evidence_options
def report_cmd(package, package_opt, out, page_format, claims_path, no_figures, force, policy) -> None:
    """Write the reviewer's report of PACKAGE: verdicts, root hash, gates, claims, robustness, figures.

    Exit 0 when every check holds, 1 when the page shows findings, 2 when it could not be made."""
    from auditkit.app.review import report_page

    with package_source(package, package_opt) as src:
        outcome = report_page(str(src.root), out, page_format=page_format, claims_path=claims_path,
                              figures=not no_figures, force=force, policy=policy)
        sys.exit(emit(outcome))


COMMANDS = [claims_cmd, report_cmd]

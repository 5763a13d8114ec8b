"""`auditkit claims` and `auditkit report`: the reviewer's view of a package."""

from __future__ import annotations

import sys

import click

from auditkit.cli.cmd_evidence import evidence_options, trust_from
from auditkit.cli.common import (add_source_findings, emit_as, fail, format_option, json_option, package_argument,
                                 package_source)
from auditkit.cli.common import output_format as _output_format
from auditkit.errors import AuditError


@click.command("claims")
@package_argument
@click.option("--claims", "claims_path", type=click.Path(dir_okay=False),
              help="A claims file (default: the package's claims.json).")
@json_option
@format_option
def claims_cmd(package, package_opt, claims_path, as_json, output_format) -> None:
    """Decide every claim of claims.json from the raw rows: held, not held, not checkable (exit 1 unless all hold)."""
    fmt = _output_format(output_format, as_json)
    with package_source(package, package_opt, as_json=fmt == "json") as src:
        _claims(src, claims_path, fmt)


def _claims(src, claims_path, fmt) -> None:
    from auditkit.report.claims import CLAIMS_FILE, claims_report, evaluate_claims, render_claims

    package = str(src.root)
    try:
        results = evaluate_claims(package, claims_path)
    except AuditError as exc:
        fail(exc, fmt == "json")
    report = add_source_findings(claims_report(results, package, claims_path or CLAIMS_FILE), src)
    if fmt == "json":
        report.info["results"] = [r.to_dict() for r in results]
    elif fmt == "text":
        click.echo(render_claims(results) + "\n")
    emit_as(report, fmt, package=package, claims=results, user_files=[claims_path] if claims_path else ())


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
def report_cmd(package, package_opt, out, page_format, claims_path, no_figures, force, trusted_tsa, trusted_keys,
               system_trust, require) -> None:
    """Write the reviewer's report of PACKAGE: verdicts, root hash, gates, claims, robustness, figures.

    Exit 0 when every check holds, 1 when the page shows findings, 2 when it could not be made."""
    with package_source(package, package_opt) as src:
        _report_page(str(src.root), out, page_format, claims_path, no_figures, force, trusted_tsa, trusted_keys,
                     system_trust, require)


def _report_page(package, out, page_format, claims_path, no_figures, force, trusted_tsa, trusted_keys, system_trust,
                 require) -> None:
    from auditkit.cli.outfile import check_out_file
    from auditkit.clock import utc_now
    from auditkit.package.writes import refuse_inside, write_file
    from auditkit.report.build import build_report
    from auditkit.report.html import render_html
    from auditkit.report.markdown import render_markdown

    try:
        refuse_inside(out, package, what="the report")
        check_out_file(out, force=force)  # a FIFO, a directory, an unwritable place: refused before the work
        write_file(out, b"", force=force, what="report", dry_run=True)   # refused before the work, not after
        data = build_report(package, claims=claims_path, trust=trust_from(trusted_tsa, trusted_keys, system_trust),
                            require=require, figures=not no_figures, generated_at=utc_now())
        text = render_html(data) if page_format == "html" else render_markdown(data)
        write_file(out, text.encode("utf-8"), force=force, what="report")
    except AuditError as exc:
        fail(exc)
    bad = [v["check"] for v in data["verdicts"] if v["ok"] is False]
    click.echo(f"wrote {out}: " + ("every check holds" if not bad else f"findings in {', '.join(bad)}")
               + f"; root {data['root']['computed']}")
    sys.exit(0 if not bad else 1)


COMMANDS = [claims_cmd, report_cmd]

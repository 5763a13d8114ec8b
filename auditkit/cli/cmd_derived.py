"""`auditkit tables`, `auditkit figures` and `auditkit counterfactual`."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import (add_source_findings, emit_as, fail, format_option, json_option, package_argument,
                                 package_source)
from auditkit.cli.common import output_format as _output_format
from auditkit.cli.render import counterfactual_table
from auditkit.derived.output import stale_manifest
from auditkit.errors import AuditError
from auditkit.findings import Report
from auditkit.errors import PackageDefect


def _defect(command: str, package, exc: PackageDefect, fmt: str) -> None:
    """A defective package file found while generating: a finding (exit 1), not "could not check"."""
    report = Report(command=command, target=str(package))
    report.add(exc.finding)
    emit_as(report, fmt, package=package)


def _format(output_format, as_json, check: bool, profile) -> str:
    """The format asked for; SARIF and JUnit report a check, so they need --check (and no profile)."""
    fmt = _output_format(output_format, as_json)
    if fmt in ("sarif", "junit") and (not check or profile):
        fail(AuditError(f"--format {fmt} reports a check: it needs --check" + (" and no --profile" if profile else ""),
                        hint="add --check, or use --format text or json"))
    return fmt


def _in_place_option(f):
    f = click.option("--force", is_flag=True, help="Replace files of other content already in --out.")(f)
    return click.option("--in-place", is_flag=True,
                        help="Rewrite the package's own files (its MANIFEST then no longer matches them).")(f)


def _report_written(written, what: str, as_json: bool) -> None:
    if as_json:
        from auditkit.cli.output import contract, dumps

        click.echo(dumps(contract({"ok": True, "exit_code": 0, what: list(written), "dest": str(written.dest),
                                   "changed": list(written.changed)}, what)))
    else:
        click.echo(f"wrote {len(written)} {what[:-1]} file(s) and {what[:-1]}_manifest.json under {written.dest} "
                   f"({len(written.changed)} changed)")
    if stale_manifest(written.dest, written.changed):
        click.echo(f"warning: {written.dest}/MANIFEST.json is now stale ({len(written.changed)} file(s) changed); "
                   f"rebuild it with: auditkit manifest build {written.dest}", err=True)


@click.command("tables")
@package_argument
@click.option("--out", type=click.Path(file_okay=False), help="Write the tables here (outside the package).")
@_in_place_option
@click.option("--check", is_flag=True, help="Regenerate in memory and compare with the recorded tables.")
@json_option
@format_option
@profile_option
def tables_cmd(package, package_opt, out, in_place, force, check, as_json, output_format, profile) -> None:
    """Regenerate the package's derived tables (CSV + JSON) and table_manifest.json."""
    fmt = _format(output_format, as_json, check, profile)
    as_json = fmt == "json"
    with package_source(package, package_opt, as_json=as_json, allow_foreign=bool(profile)) as src:
        _tables(src, out, in_place, force, check, as_json, fmt, profile)


def _writes_from(src, in_place: bool, as_json: bool) -> None:
    if in_place and src.kind != "directory":
        fail(AuditError("--in-place rewrites the package's own files, so it needs a package directory",
                        path=src.given, hint="an archive or URL is read-only: use --check, or --out DIR"), as_json)


def _tables(src, out, in_place, force, check, as_json, fmt, profile) -> None:
    package = str(src.root)
    if profile:
        from auditkit.cli.cmd_profile import tables_through

        tables_through(package, profile, check, out, as_json)
    from auditkit.derived.tables import check_tables, generate_tables

    _writes_from(src, in_place, as_json)
    try:
        if check:
            emit_as(add_source_findings(check_tables(package), src), fmt, package=package)
        written = generate_tables(package, out, in_place=in_place, force=force)
    except PackageDefect as exc:
        _defect("tables", package, exc, fmt)
    except AuditError as exc:
        fail(exc, as_json)
    _report_written(written, "tables", as_json)


@click.command("figures")
@package_argument
@click.option("--out", type=click.Path(file_okay=False), help="Write the figures here (outside the package).")
@_in_place_option
@click.option("--check", is_flag=True, help="Regenerate and compare with the recorded figures.")
@json_option
@format_option
def figures_cmd(package, package_opt, out, in_place, force, check, as_json, output_format) -> None:
    """Regenerate the package's figures (PNG) and figure_manifest.json."""
    fmt = _format(output_format, as_json, check, None)
    as_json = fmt == "json"
    with package_source(package, package_opt, as_json=as_json) as src:
        _figures(src, out, in_place, force, check, as_json, fmt)


def _figures(src, out, in_place, force, check, as_json, fmt) -> None:
    package = str(src.root)
    _writes_from(src, in_place, as_json)
    try:
        from auditkit.derived.figures import check_figures, generate_figures

        if check:
            emit_as(add_source_findings(check_figures(Path(package)), src), fmt, package=package)
        written = generate_figures(Path(package), Path(out) if out else None, in_place=in_place, force=force)
    except ImportError as exc:
        fail(AuditError(f"figures need matplotlib: {exc}", hint="pip install 'pretrain-auditkit[figures]'"), as_json)
    except PackageDefect as exc:
        _defect("figures", package, exc, fmt)
    except AuditError as exc:
        fail(exc, as_json)
    _report_written(written, "figures", as_json)


@click.command("counterfactual")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@json_option
def counterfactual_cmd(manifest_path, as_json) -> None:
    """Planned training GPU-hours of a protocol manifest, and each gate's continue-everything counterfactual."""
    from auditkit.derived.tables import manifest_counterfactual

    try:
        rows = manifest_counterfactual(manifest_path)
    except AuditError as exc:
        fail(exc, as_json)
    if as_json:
        from auditkit.cli.output import contract, dumps

        click.echo(dumps(contract({"ok": True, "exit_code": 0, "rows": rows}, "counterfactual")))
    else:
        click.echo(counterfactual_table(rows))


COMMANDS = [tables_cmd, figures_cmd, counterfactual_cmd]

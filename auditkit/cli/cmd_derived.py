"""`auditkit tables`, `auditkit figures` and `auditkit counterfactual`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import emit, fail, json_option, package_option
from auditkit.cli.render import counterfactual_table
from auditkit.errors import AuditError


@click.command("tables")
@package_option
@click.option("--out", type=click.Path(file_okay=False), help="Write tables here instead of the package.")
@click.option("--check", is_flag=True, help="Regenerate in memory and compare with the recorded tables.")
@json_option
@profile_option
def tables_cmd(package, out, check, as_json, profile) -> None:
    """Regenerate the package's derived tables (CSV + JSON) and table_manifest.json."""
    if profile:
        from auditkit.cli.cmd_profile import tables_through

        tables_through(package, profile, check, out, as_json)
    from auditkit.derived.tables import check_tables, generate_tables

    try:
        if check:
            emit(check_tables(package), as_json)
        entries = generate_tables(package, out)
    except AuditError as exc:
        fail(exc, as_json)
    click.echo(json.dumps({"ok": True, "tables": entries}, indent=2, sort_keys=True) if as_json
               else f"wrote {len(entries)} table file(s) and table_manifest.json under {out or package}")


@click.command("figures")
@package_option
@click.option("--out", type=click.Path(file_okay=False), help="Write figures here instead of the package.")
@click.option("--check", is_flag=True, help="Regenerate and compare with the recorded figures.")
@json_option
def figures_cmd(package, out, check, as_json) -> None:
    """Regenerate the package's figures (PNG) and figure_manifest.json."""
    try:
        from auditkit.derived.figures import check_figures, generate_figures

        if check:
            emit(check_figures(Path(package)), as_json)
        entries = generate_figures(Path(package), Path(out) if out else None)
    except ImportError as exc:
        fail(AuditError(f"figures need matplotlib: {exc}", hint="pip install 'auditkit[figures]'"), as_json)
    except AuditError as exc:
        fail(exc, as_json)
    click.echo(f"wrote {len(entries)} figure(s) and figure_manifest.json")


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
    click.echo(json.dumps(rows, indent=2, sort_keys=True) if as_json else counterfactual_table(rows))


COMMANDS = [tables_cmd, figures_cmd, counterfactual_cmd]

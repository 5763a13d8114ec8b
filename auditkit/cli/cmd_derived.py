"""`auditkit tables`, `auditkit figures` and `auditkit counterfactual`."""

from __future__ import annotations

import sys

import click

from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import chosen_format, format_option, json_option, package_argument, package_source
from auditkit.cli.output import emit


def _in_place_option(f):
    f = click.option("--force", is_flag=True, help="Replace files of other content already in --out.")(f)
    return click.option("--in-place", is_flag=True,
                        help="Rewrite the package's own files (its MANIFEST then no longer matches them).")(f)


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
    from auditkit.app.derived import refuse_format, tables

    refuse_format(chosen_format(output_format, as_json), check=check, profile=profile)
    with package_source(package, package_opt, allow_foreign=bool(profile)) as src:
        outcome = tables(src, out=out, in_place=in_place, force=force, check=check, profile=profile)
        sys.exit(emit(outcome))


@click.command("figures")
@package_argument
@click.option("--out", type=click.Path(file_okay=False), help="Write the figures here (outside the package).")
@_in_place_option
@click.option("--check", is_flag=True, help="Regenerate and compare with the recorded figures.")
@json_option
@format_option
def figures_cmd(package, package_opt, out, in_place, force, check, as_json, output_format) -> None:
    """Regenerate the package's figures (PNG) and figure_manifest.json."""
    from auditkit.app.derived import figures, refuse_format

    refuse_format(chosen_format(output_format, as_json), check=check)
    with package_source(package, package_opt) as src:
        outcome = figures(src, out=out, in_place=in_place, force=force, check=check)
        sys.exit(emit(outcome))


@click.command("counterfactual")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@json_option
def counterfactual_cmd(manifest_path, as_json) -> None:
    """Planned training GPU-hours of a protocol manifest, and each gate's continue-everything counterfactual."""
    from auditkit.app.derived import counterfactual

    sys.exit(emit(counterfactual(manifest_path)))


COMMANDS = [tables_cmd, figures_cmd, counterfactual_cmd]

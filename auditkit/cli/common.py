"""What every command shares: exit codes, the error/report exits, and options declared once."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

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


def package_argument(f):
    """The package a read-only command reads, named one way everywhere: `[PACKAGE]` positionally or
    `--package PACKAGE` (its alias); a directory, an archive of any name, an https:// URL or an arXiv
    identifier (docs/REMOTE.md); default `ancillary` in the current directory."""
    f = click.option("--package", "package_opt", default=None, metavar="PACKAGE",
                     help="The package (the same as the PACKAGE argument).")(f)
    return click.argument("package", required=False, metavar="[PACKAGE]")(f)


def package_named(package: str | None, package_opt: str | None, as_json: bool = False) -> tuple[str, bool]:
    """(the package named, whether it is the default); a usage error (exit 2) when two differ."""
    if package and package_opt and package != package_opt:
        fail(AuditError(f"two packages named: {package!r} and --package {package_opt!r}",
                        hint="name the package once, positionally or with --package"), as_json)
    name = package or package_opt
    return (name, False) if name else (DEFAULT_PACKAGE, True)


@contextmanager
def package_source(package: str | None, package_opt: str | None = None, *, as_json: bool = False,
                   stream_archive: bool = False, allow_foreign: bool = False):
    """The resolved `PackageSource` (auditkit.package.source) for the duration of a command: where the
    package was found is said on stderr; a snapshot of an archive is removed when the command ends."""
    from auditkit.package.source import open_source

    name, default = package_named(package, package_opt, as_json)
    try:
        src = open_source(name, stream_archive=stream_archive, allow_foreign=allow_foreign, default=default)
    except AuditError as exc:
        fail(exc, as_json)
    try:
        if src.note() and not as_json:      # with --json, the report carries them (`add_source_findings`)
            click.echo("\n".join(f"note: {line}" for line in src.note().splitlines()), err=True)
            src.noted = True
        yield src
    except SystemExit as exc:
        if exc.code != EXIT_ERROR or not src.findings or as_json:
            raise
        # the check could not run because a fetched file was refused: that refusal is the finding
        for f in src.findings:
            click.echo(str(f))
        click.echo(f"FAILED: {len(src.findings)} file(s) served at {src.given} are not those its MANIFEST lists "
                   f"(the error above follows from it)")
        sys.exit(EXIT_FINDINGS)
    finally:
        src.close()


def add_source_findings(report: Report, src) -> Report:
    """What fetching found (a served file whose hash did not match) joins the command's report, whose
    target is the package as the user named it."""
    report.extend(src.findings)
    report.target = src.given
    if src.found_at and not src.noted:
        report.info["found_at"] = src.found_at
    if src.notes and not src.noted:
        report.info["source_notes"] = list(src.notes)
    return report


def json_option(f):
    """`--json`: machine-readable output (errors too, with exit 2)."""
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


FORMATS = ("text", "json", "sarif", "junit")


def format_option(f):
    """`--format text|json|sarif|junit` (`--json` is `--format json`): how findings are printed.
    SARIF 2.1.0 for code scanning, JUnit XML for CI test reports."""
    return click.option("--format", "output_format", type=click.Choice(FORMATS), default=None,
                        help="Output format (default text; --json is the same as --format json).")(f)


def output_format(output_format: str | None, as_json: bool) -> str:
    """The one format asked for; a usage error (exit 2) when --json and another --format disagree."""
    if as_json and output_format not in (None, "json"):
        fail(AuditError(f"--json and --format {output_format} ask for two formats", hint="give one of them"))
    return "json" if as_json else (output_format or "text")


_LEAVE_AT_ONCE = [False]


def leave_at_once() -> None:
    """Let the console entry point end this process as soon as the command is done (`cli.main`):
    its output flushed, then `os._exit`, without the interpreter's teardown (freeing every module
    and object: about 10 ms, a tenth of what `verify`'s own checks cost).  Only for a command that
    writes nothing, started nothing that outlives it and holds no temporary file."""
    _LEAVE_AT_ONCE[0] = True


def may_leave_at_once() -> bool:
    return _LEAVE_AT_ONCE[0]


def emit_as(report: Report, fmt: str, *, package: str | None = None, replays=(), claims=()) -> None:
    """Print `report` in `fmt` and exit with its code. SARIF: one result per finding, the package
    directory (when it is one) as the root of the files' locations; JUnit: the report's findings,
    plus one case per replayed gate and check (`replays`) and per claim (`claims`)."""
    if fmt == "sarif":
        from pathlib import Path

        from auditkit.report.sarif import sarif_text

        base = package if package is not None and Path(package).is_dir() else None
        click.echo(sarif_text([report], package_dir=base), nl=False)
        sys.exit(report.exit_code)
    if fmt == "junit":
        from auditkit.report.junit import junit_xml

        click.echo(junit_xml(reports=[report], replays=replays, claims=claims), nl=False)
        sys.exit(report.exit_code)
    emit(report, fmt == "json")

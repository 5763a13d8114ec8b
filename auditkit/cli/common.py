"""What every command shares: exit codes, the one translation of errors, the package named, and options
declared once."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from auditkit.cli.output import OutputFormat
from auditkit.errors import AuditError

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
DEFAULT_PACKAGE = "ancillary"


EXIT_CLOSED_PIPE = 141   # 128 + SIGPIPE, as a shell reports a tool a closed pipe ended


class SourceRefused(AuditError):
    """A check could not run because a file served for the package was refused (its hash is not the
    one its MANIFEST lists): that refusal is the finding (exit 1), said after the error."""

    def __init__(self, cause: AuditError, findings, given: str):
        super().__init__(cause.message, path=cause.path, hint=cause.hint)
        self.cause, self.findings, self.given = cause, list(findings), given


def translate(exc: AuditError, command: str | None = None) -> int:
    """Print `exc` as the document of the format the command line asked for (`output.print_error`)
    and return the exit code: the one translation of an error, made by the command group."""
    from auditkit.cli.output import print_error

    if isinstance(exc, SourceRefused):
        print_error(exc.cause, command=command)
        for f in exc.findings:
            click.echo(str(f))
        click.echo(f"FAILED: {len(exc.findings)} file(s) served at {exc.given} are not those its MANIFEST lists "
                   f"(the error above follows from it)")
        return EXIT_FINDINGS
    print_error(exc, command=command)
    return EXIT_ERROR


def _json_flag(ctx, param, value):
    if value:
        from auditkit.cli.output import set_format

        set_format("json")   # an error before the command body still prints JSON
    return value


def package_argument(f):
    """The package a read-only command reads, named one way everywhere: `[PACKAGE]` positionally or
    `--package PACKAGE` (its alias); a directory, an archive of any name, an https:// URL or an arXiv
    identifier (docs/REMOTE.md); default `ancillary` in the current directory."""
    f = click.option("--package", "package_opt", default=None, metavar="PACKAGE",
                     help="The package (the same as the PACKAGE argument).")(f)
    return click.argument("package", required=False, metavar="[PACKAGE]")(f)


def package_named(package: str | None, package_opt: str | None) -> tuple[str, bool]:
    """(the package named, whether it is the default); a usage error (exit 2) when two differ."""
    if package and package_opt and package != package_opt:
        raise AuditError(f"two packages named: {package!r} and --package {package_opt!r}",
                         hint="name the package once, positionally or with --package")
    name = package or package_opt
    return (name, False) if name else (DEFAULT_PACKAGE, True)


@contextmanager
def package_source(package: str | None, package_opt: str | None = None, *, stream_archive: bool = False,
                   allow_foreign: bool = False):
    """The resolved `PackageSource` (auditkit.package.source) for the duration of a command: where the
    package was found is said on stderr (but with JSON, whose report carries it); a snapshot of an
    archive is removed when the command ends."""
    from auditkit.cli.output import current_format
    from auditkit.package.source import open_source

    as_json = current_format() is OutputFormat.JSON
    name, default = package_named(package, package_opt)
    src = open_source(name, stream_archive=stream_archive, allow_foreign=allow_foreign, default=default)
    try:
        if src.note() and not as_json:      # with --json, the report carries them (`add_source_findings`)
            click.echo("\n".join(f"note: {line}" for line in src.note().splitlines()), err=True)
            src.noted = True
        yield src
    except AuditError as exc:
        if not src.findings or as_json or isinstance(exc, SourceRefused):
            raise
        # the check could not run because a fetched file was refused: that refusal is the finding
        raise SourceRefused(exc, src.findings, src.given) from exc
    finally:
        src.close()


def json_option(f):
    """`--json`: machine-readable output (errors too, with exit 2), schemas/output/v1.json."""
    return click.option("--json", "as_json", is_flag=True, callback=_json_flag,
                        help="Machine-readable output (schemas/output/v1.json).")(f)


def _format_flag(ctx, param, value):
    if value:
        from auditkit.cli.output import current_format, set_format

        if current_format() != "json":   # --json wins (a disagreement is refused anyway)
            set_format(value)
    return value


FORMATS = tuple(f.value for f in OutputFormat)   # --format's choices: the one enum's values


def _sarif_root(ctx, param, value):
    ctx.find_root().meta["auditkit.sarif_root"] = value
    return value


def format_option(f):
    """`--format text|json|sarif|junit` (`--json` is `--format json`): how findings are printed.
    SARIF 2.1.0 for code scanning, JUnit XML for CI test reports; `--sarif-root DIR`: the
    directory SARIF URIs are relative to (default: the git checkout that holds the package)."""
    f = click.option("--sarif-root", type=click.Path(file_okay=False), expose_value=False, callback=_sarif_root,
                     help="SARIF URIs are relative to this directory (default: the top of the git checkout "
                          "that holds the package, else the package).")(f)
    return click.option("--format", "output_format", type=click.Choice(FORMATS), default=None,
                        help="Output format (default text; --json is the same as --format json). Every exit, "
                             "2 included, prints a whole document.", callback=_format_flag)(f)


def chosen_format(output_format: str | None, as_json: bool):
    """The one `OutputFormat` asked for (recorded for every document printed from here on); a usage
    error (exit 2) when --json and another --format disagree."""
    from auditkit.cli.output import set_format

    if as_json and output_format not in (None, "json"):
        set_format(output_format)
        raise AuditError(f"--json and --format {output_format} ask for two formats", hint="give one of them")
    fmt = OutputFormat("json" if as_json else (output_format or "text"))
    set_format(fmt)
    return fmt


_LEAVE_AT_ONCE = [False]


def leave_at_once() -> None:
    """Let the console entry point end this process as soon as the command is done (`cli.main`):
    its output flushed, then `os._exit`, without the interpreter's teardown (freeing every module
    and object: about 10 ms, a tenth of what `verify`'s own checks cost).  Only for a command that
    writes nothing, started nothing that outlives it and holds no temporary file."""
    _LEAVE_AT_ONCE[0] = True


def may_leave_at_once() -> bool:
    return _LEAVE_AT_ONCE[0]


def closed_stdout() -> None:
    """The reader of our stdout went away (`auditkit ... | head`): a normal end, not an error.
    Point stdout at /dev/null (so the interpreter's last flush cannot fail again) and exit 141
    (128 + SIGPIPE, what a shell shows for a tool a closed pipe stopped), quietly."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    os._exit(EXIT_CLOSED_PIPE)


_WRITE_ERRNOS = {"EROFS": "the file system is read-only", "EACCES": "permission denied",
                 "EPERM": "operation not permitted", "ENOSPC": "no space left on the device",
                 "EDQUOT": "the disk quota is exhausted"}


def unexpected_error(exc: BaseException, command: str | None) -> AuditError:
    """What the catch-all says for an exception no check turned into a finding or an AuditError:
    running out of memory, a path the system refuses (read-only, permissions, a full disk) are
    the user's to fix (with a hint); anything else is a bug in auditkit."""
    import errno
    import traceback

    cmd = f"`auditkit {command}`" if command else "auditkit"
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    at = ""
    if frames:   # where it happened, and the last of auditkit's own frames on the way there
        inner = frames[-1]
        at = f" (in {_short(inner.filename)}:{inner.lineno}, {inner.name}"
        own = next((f for f in reversed(frames) if "/auditkit/" in f.filename.replace("\\", "/")), None)
        if own is not None and own is not inner:
            at += f", reached from {_short(own.filename)}:{own.lineno}, {own.name}"
        at += ")"
    if isinstance(exc, MemoryError):
        return AuditError(f"{cmd} ran out of memory{at}",
                          hint="the process may use too little memory for this input (see `ulimit -v`, a "
                               "container limit); free memory or raise the limit and run it again")
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, "")
        if name in _WRITE_ERRNOS:
            target = exc.filename or "a file"
            hint = ("check its permissions: this user must be able to read what a command reads and write "
                    "where it writes (or choose another --out)") if name in ("EACCES", "EPERM") else \
                "choose a directory you can write to (e.g. another --out), or make room / make this one " \
                "writable, then run the command again"
            return AuditError(f"{cmd} cannot use {target}: {_WRITE_ERRNOS[name]}", path=exc.filename, hint=hint)
    return AuditError(f"could not check: {type(exc).__name__}: {exc}{at}",
                      hint="this is a bug in auditkit, not a finding about the package; please report it "
                           "with the command you ran")


def _short(filename: str) -> str:
    norm = filename.replace("\\", "/")
    i = norm.rfind("/auditkit/")
    return norm[i + 1:] if i >= 0 else norm

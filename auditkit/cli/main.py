"""The `auditkit` group: exit codes and the catch-all that keeps tracebacks away from users.

Exit codes: 0 everything holds, 1 findings, 2 the check could not run (usage,
unreadable input, broken schema, out of memory, a read-only or full target, or an
error auditkit did not expect), 130 on Ctrl-C (128 + the signal number for
SIGTERM/SIGHUP), 141 when the reader of stdout went away (`auditkit ... | head`).
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from auditkit import __version__
from auditkit.cli.common import EXIT_ERROR, closed_stdout, translate, unexpected_error
from auditkit.errors import AuditError

# Each command's module, imported when that command runs (a `verify` never loads the plotting,
# table or profile code); tests/test_codes.py checks this map against every module's COMMANDS.
COMMAND_MODULES = {
    "verify": "cmd_verify", "manifest": "cmd_verify",
    "decide": "cmd_gates", "replay-gate": "cmd_gates",
    "tables": "cmd_derived", "figures": "cmd_derived", "counterfactual": "cmd_derived",
    "run": "cmd_study", "protocol": "cmd_study",
    "timestamp": "cmd_evidence",
    "profile": "cmd_profile",
    "claims": "cmd_report", "report": "cmd_report",
    "explain": "cmd_explain",
    "review": "cmd_review",
}

# One whole sentence a command for `auditkit --help` (click would cut each docstring's first line
# mid-sentence, and would import every command's module to read it).
SUMMARIES = {
    "verify": "Prove a package is whole, unaltered and well formed.",
    "manifest": "Build a package's content-hashed MANIFEST.",
    "decide": "Decide one gate from its frozen rules and raw rows.",
    "replay-gate": "Recompute recorded gate decisions from the raw rows.",
    "tables": "Regenerate or check the derived tables.",
    "figures": "Regenerate or check the figures.",
    "counterfactual": "Planned GPU-hours of a protocol, gate by gate.",
    "run": "Train one cell with the bundled runner.",
    "protocol": "Run a staged study, or merge hosts' outputs.",
    "timestamp": "Anchor a package's content root at a TSA.",
    "profile": "Draft a profile for a package auditkit did not write.",
    "claims": "Decide a paper's claims from the raw rows.",
    "report": "Write the reviewer's report (HTML or Markdown).",
    "explain": "Say what a finding code means and what to do.",
    "review": "Run the whole review of a package in one command.",
}


class AuditGroup(click.Group):
    """The one place errors are translated: an AuditError becomes the whole error document of the
    format asked for (exit 2; `common.translate`), any unexpected exception becomes
    "could not check ... please report" (exit 2, never 1), and Ctrl-C exit 130.
    Commands are loaded lazily from COMMAND_MODULES."""

    def list_commands(self, ctx):
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def format_commands(self, ctx, formatter):
        rows = [(name, SUMMARIES.get(name) or self.get_command(ctx, name).get_short_help_str(200))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMAND_MODULES:
            module = importlib.import_module(f"auditkit.cli.{COMMAND_MODULES[name]}")
            for command in module.COMMANDS:
                self.commands.setdefault(command.name, command)
        return self.commands.get(name)

    def main(self, *args, **kwargs):
        kwargs.setdefault("standalone_mode", True)
        try:
            return super().main(*args, **kwargs)
        except AuditError as exc:   # raised before any command ran: no format was asked for yet
            sys.exit(translate(exc))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(128 + signal.SIGINT)

    def invoke(self, ctx):
        ctx.meta["auditkit.args"] = [*getattr(ctx, "_protected_args", ()), *ctx.args]   # for a usage error
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # before click turns it into Abort ("Aborted!", exit 1)
            click.echo("interrupted", err=True)
            sys.exit(128 + signal.SIGINT)
        except click.UsageError as exc:
            _usage_document(ctx, exc)
            raise
        except AuditError as exc:   # a command (or its package) could not be checked: translated once, here
            sys.exit(translate(exc, ctx.invoked_subcommand))
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except BrokenPipeError:  # the reader of our stdout is gone (`| head`): a normal end
            closed_stdout()
        except (Exception, MemoryError) as exc:  # noqa: BLE001 - the last line of defence: never a traceback, never exit 1
            from auditkit.cli.output import print_error

            try:
                print_error(unexpected_error(exc, ctx.invoked_subcommand))   # a whole document in the format asked for
            except BrokenPipeError:  # the error document itself met a closed stdout
                closed_stdout()
            sys.exit(EXIT_ERROR)


def _usage_document(ctx, exc: click.UsageError) -> None:
    """A usage error met before the command ran (a missing argument, a bad option value): when the
    command line asks for JSON, SARIF or JUnit, that format's whole error document goes to stdout
    (click still prints the usage message on stderr and exits 2)."""
    from auditkit.cli.output import command_name, error_document, format_in_args

    args = ctx.meta.get("auditkit.args", [])
    fmt = format_in_args(args)
    if fmt in (None, "text"):
        return
    sub = exc.ctx if exc.ctx is not None and exc.ctx is not ctx else None
    command = command_name(sub) if sub is not None else (args[0] if args else "auditkit")
    click.echo(error_document(fmt, command, AuditError(exc.format_message(), hint="see --help")))


@click.group(cls=AuditGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditkit")
def cli() -> None:
    """Make ML pretraining studies auditable: verify a study's ancillary package, replay its gate
    decisions from the raw rows, regenerate its tables and figures, decide its claims.

    \b
    Examples:
      auditkit verify ancillary/                      # whole, unaltered, well formed?
      auditkit replay-gate all --package ancillary    # do the decisions follow from the rows?
      auditkit claims --package ancillary             # do the paper's claims hold?
      auditkit report ancillary --out report.html     # everything, for a reviewer
      auditkit explain row-invalid                    # what a finding means, what to do

    \b
    Exit codes (every command): 0 every check passed, 1 findings, 2 could not check
    (usage, unreadable input); 130 on Ctrl-C. --format json|sarif|junit print a whole
    document on every exit (docs/CI.md). Shell completion: docs/CLI.md.
    """



def main() -> None:
    """The console entry point (`auditkit`, `python -m auditkit`)."""
    try:
        cli(prog_name="auditkit")
    except SystemExit as exc:
        from auditkit.cli.common import may_leave_at_once

        if may_leave_at_once() and isinstance(exc.code, (int, type(None))):
            _leave(exc.code or 0)
        try:   # a closed pipe found by the last flush: quiet too (the interpreter's would print)
            sys.stdout.flush()
        except BrokenPipeError:
            closed_stdout()
        except (OSError, ValueError):
            pass
        raise


def _leave(code: int) -> None:
    """os._exit(code) once stdout and stderr are flushed; where flushing fails (a closed pipe), the
    interpreter's own exit instead, which reports it as it always does."""
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        closed_stdout()
    except (OSError, ValueError):
        return
    os._exit(code)


if __name__ == "__main__":
    main()

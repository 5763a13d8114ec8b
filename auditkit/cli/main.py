"""The `auditkit` group: exit codes and the catch-all that keeps tracebacks away from users.

Exit codes: 0 everything holds, 1 findings, 2 the check could not run (usage,
unreadable input, broken schema, or an error auditkit did not expect), 130 on
Ctrl-C (128 + the signal number for SIGTERM/SIGHUP).
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from auditkit import __version__
from auditkit.cli.common import EXIT_ERROR, fail
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
    "review": "cmd_review",
}


class AuditGroup(click.Group):
    """Turns AuditError into a clean message (exit 2), any unexpected exception into
    "could not check ... please report" (exit 2, never 1), and Ctrl-C into exit 130.
    Commands are loaded lazily from COMMAND_MODULES."""

    def list_commands(self, ctx):
        return sorted(set(COMMAND_MODULES) | set(self.commands))

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
        except AuditError as exc:
            fail(exc)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(128 + signal.SIGINT)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # before click turns it into Abort ("Aborted!", exit 1)
            click.echo("interrupted", err=True)
            sys.exit(128 + signal.SIGINT)
        except (AuditError, click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback, never exit 1
            click.echo(f"error: could not check: {type(exc).__name__}: {exc}\n"
                       "hint: this is a bug in auditkit, not a finding about the package; please report it "
                       "with the command you ran", err=True)
            sys.exit(EXIT_ERROR)


@click.group(cls=AuditGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditkit")
def cli() -> None:
    """Make ML pretraining studies auditable."""



def main() -> None:
    """The console entry point (`auditkit`, `python -m auditkit`)."""
    try:
        cli(prog_name="auditkit")
    except SystemExit as exc:
        from auditkit.cli.common import may_leave_at_once

        if may_leave_at_once() and isinstance(exc.code, (int, type(None))):
            _leave(exc.code or 0)
        raise


def _leave(code: int) -> None:
    """os._exit(code) once stdout and stderr are flushed; where flushing fails (a closed pipe), the
    interpreter's own exit instead, which reports it as it always does."""
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


if __name__ == "__main__":
    main()

"""Every document a command prints, in every format, on every exit: the one place formats live.

- text: what a person reads (errors on stderr);
- json: the output contract, `schemas/output.schema.json` (docs/CI.md): every document carries
  `schema` (`OUTPUT_SCHEMA`), `command`, `ok` and `exit_code`; keys are snake_case words (no
  spaces or parentheses), also those of `checked` and `info`;
- sarif: SARIF 2.1.0 (`auditkit.report.sarif`), for code scanning;
- junit: JUnit XML (`auditkit.report.junit`), for CI test reports.

A command records the format it was asked for (`set_format`, called by `common.output_format`);
`error_document(fmt, command, error)` is the whole document of a command that could not check
(exit 2) in that format, and `print_error` prints it.  The group's last-resort handler
(`cli.main`) and `common.fail` both go through `print_error`, so a SARIF or JUnit consumer always
gets a parseable file, whatever went wrong.
"""

from __future__ import annotations

import json
import re
import sys

import click

from auditkit.errors import AuditError

OUTPUT_SCHEMA = "auditkit-output/1"
FORMATS = ("text", "json", "sarif", "junit")
_META = "auditkit.format"


def output_validator():
    """A jsonschema validator of the contract (`schemas/output/v1.json`); the `uncertainty` object
    of replay-gate is checked against `schemas/uncertainty.schema.json` where that schema ships
    (any object where it does not)."""
    from importlib import resources

    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    files = resources.files("auditkit.schemas")
    schema = json.loads(files.joinpath("output/v1.json").read_text("utf-8"))
    uncertainty_id = "https://auditkit.dev/schemas/uncertainty.schema.json"
    try:
        uncertainty = json.loads(files.joinpath("uncertainty.schema.json").read_text("utf-8"))
    except (OSError, ValueError):
        uncertainty = {"type": "object"}
    registry = Registry().with_resource(uncertainty_id, Resource.from_contents(uncertainty, default_specification=DRAFT202012))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


def json_key(key: str) -> str:
    """A report's key as the JSON contract spells it: 'root (recorded)' -> 'root_recorded'."""
    out = re.sub(r"[^0-9a-z]+", "_", str(key).lower()).strip("_")
    return out or "key"


def snake_keys(d: dict) -> dict:
    out: dict = {}
    for k, v in d.items():
        key = json_key(k)
        while key in out:   # two spellings of one key keep both values
            key += "_"
        out[key] = v
    return out


def contract(doc: dict, command: str) -> dict:
    """`doc` with the contract's fields: schema, command, snake_case `checked` and `info` keys."""
    doc = dict(doc)
    doc["schema"] = OUTPUT_SCHEMA
    doc.setdefault("command", command)
    for part in ("checked", "info"):
        if isinstance(doc.get(part), dict):
            doc[part] = snake_keys(doc[part])
    return doc


def dumps(doc: dict) -> str:
    from auditkit.report.sarif import _deep_clean

    return json.dumps(_deep_clean(doc), indent=2, sort_keys=True, default=str, ensure_ascii=False)


def report_json(report) -> str:
    return dumps(contract(report.to_dict(), report.command))


def command_name(ctx: click.Context | None = None) -> str:
    """The running command without the program name ('replay-gate', 'protocol run'), or 'auditkit'."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return "auditkit"
    path = ctx.command_path.split(" ", 1)
    return path[1] if len(path) > 1 else "auditkit"


def set_format(fmt: str) -> None:
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().meta[_META] = fmt


def current_format(default: str = "text") -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().meta.get(_META, default) if ctx is not None else default


def format_in_args(args) -> str | None:
    """The format a command line asks for (for a usage error met before the command ran)."""
    args = list(args)
    for i, a in enumerate(args):
        if a == "--json":
            return "json"
        if a == "--format" and i + 1 < len(args) and args[i + 1] in FORMATS:
            return args[i + 1]
        if a.startswith("--format=") and a.split("=", 1)[1] in FORMATS:
            return a.split("=", 1)[1]
    return None


def error_document(fmt: str, command: str, error: AuditError) -> str | None:
    """The whole stdout document of `command` when it could not check, in `fmt` (None for text:
    the message goes to stderr alone)."""
    if fmt == "json":
        return dumps({"schema": OUTPUT_SCHEMA, "command": command, "ok": False, "exit_code": 2,
                      **error.to_dict()})
    if fmt == "sarif":
        from auditkit.report.sarif import dump, error_log

        return dump(error_log(command, error)).rstrip("\n")
    if fmt == "junit":
        from auditkit.report.junit import error_xml

        return error_xml(command, error).rstrip("\n")
    return None


def print_error(error: AuditError, fmt: str | None = None, command: str | None = None) -> None:
    """Print `error` as the format's document (stdout) and as a message (stderr); no exit."""
    fmt = fmt or current_format()
    command = command or command_name()
    doc = error_document(fmt, command, error)
    if doc is not None:
        click.echo(doc)
    if fmt != "json":   # JSON is the whole answer; the others also tell the person at the terminal
        click.echo(error.diagnostics(), err=True)


def unexpected(exc: BaseException) -> AuditError:
    """The AuditError the last-resort handler reports for an exception auditkit did not expect."""
    return AuditError(f"could not check: {type(exc).__name__}: {exc}",
                      hint="this is a bug in auditkit, not a finding about the package; please report it with "
                           "the command you ran")


def emit_report(report, fmt: str, *, package=None, replays=(), claims=(), sarif_root=None,
                user_files=()) -> None:
    """Print `report` in `fmt` and exit with its code."""
    if fmt == "sarif":
        from auditkit.report.sarif import sarif_text

        try:
            text = sarif_text([report], package_dir=package, root=sarif_root, user_files=user_files)
        except AuditError as exc:
            print_error(exc, fmt)
            sys.exit(2)
        click.echo(text, nl=False)
    elif fmt == "junit":
        from auditkit.report.junit import junit_xml

        click.echo(junit_xml(reports=[report], replays=replays, claims=claims), nl=False)
    elif fmt == "json":
        click.echo(report_json(report))
    else:
        body, _, last = report.render_text().rpartition("\n")
        if body:
            click.echo(body)
        click.echo(paint(last, report.ok))   # the verdict line, coloured on a terminal
    sys.exit(report.exit_code)


# --- text for people -----------------------------------------------------------------------------

def paint(text: str, ok: bool | None) -> str:
    """`text` in green (ok) or red (not ok) on a terminal; plain where NO_COLOR is set (no-color.org)
    or stdout is not a terminal (click.echo strips the colour there too)."""
    import os

    if ok is None or os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return text
    return click.style(text, fg="green" if ok else "red", bold=True)


def verdict_line(report) -> str:
    """The last line of the report's text (OK: ... / FAILED: ...)."""
    return report.render_text().rsplit("\n", 1)[-1]


def replay_summary(replays, report) -> str:
    """One row per gate: candidates, promoted, checks, how it was frozen, the replay's verdict."""
    from tabulate import tabulate

    from auditkit.text import printable

    rows = []
    for r in replays:
        doc = r.replayed_doc() or r.recorded_doc() or {}
        promoted = list(doc.get("promoted") or [])
        shown = ", ".join(promoted[:3]) + (f", +{len(promoted) - 3}" if len(promoted) > 3 else "")
        checks = doc.get("checks") or []
        failed = sum(1 for c in checks if not c.get("passed"))
        check_text = "-" if not checks else f"{len(checks) - failed} pass" + (f", {failed} FAIL*" if failed else "")
        frozen = str(report.info.get(f"gate {r.gate} frozen", "-")).split(" ", 1)[0]
        rows.append([printable(r.gate), len(doc.get("candidates") or []) or "-",
                     printable(f"{len(promoted)}: {shown}") if promoted else "-",
                     check_text, frozen, paint("identical", True) if r.identical else paint("DIFFERS", False)])
    lines = [tabulate(rows, headers=["gate", "candidates", "promoted", "checks", "frozen", "replay"],
                      tablefmt="simple", disable_numparse=True)]
    if any("FAIL*" in row[3] for row in rows):
        lines.append("* FAIL is a check outcome the study recorded, not a problem of the package (the replay "
                     "column says whether the raw rows give the same)")
    return "\n".join(lines)


def render_replay_text(replays, report, verbosity: int) -> None:
    """replay-gate's text: the verdict line alone (-q), a table of the gates (default, about one line
    a gate), or every gate's candidates x cells table and the reasons (-v)."""
    if verbosity < 0:
        click.echo(paint(verdict_line(report), report.ok))
        sys.exit(report.exit_code)
    if verbosity > 0:
        from auditkit.gates.render import render_gate
        from auditkit.gates.reasons import reasons
        from auditkit.text import printable

        for r in replays:
            click.echo(render_gate(r))
            if r.decision is not None and r.rules is not None:   # the engine's result: no document built
                why = reasons(r.decision, r.rules)
                click.echo("why:\n" + "\n".join(printable(f"  {c.config_id}: {why[c.config_id]}")
                                                for c in r.decision.candidates))
            click.echo()
        text = report.render_text()
        hint = ""
    else:
        if replays:
            click.echo(replay_summary(replays, report))
        # the table says what these lines said, one a gate
        shown = {f"gate {r.gate}" for r in replays} | {f"gate {r.gate} frozen" for r in replays}
        saved, report.info = report.info, {k: v for k, v in report.info.items() if k not in shown}
        try:
            text = report.render_text()
        finally:
            report.info = saved
        hint = "(every gate's candidates x cells table and the reason for each candidate: -v)" if replays else ""
    body, _, last = text.rpartition("\n")
    if body:
        click.echo(body)
    if hint:
        click.echo(hint)
    click.echo(paint(last, report.ok))
    sys.exit(report.exit_code)

"""`auditkit explain CODE`: what a finding code means and what to do, from the catalogue."""

from __future__ import annotations

import click

from auditkit.cli.common import fail, json_option
from auditkit.errors import AuditError


@click.command("explain")
@click.argument("code", required=False)
@json_option
def explain_cmd(code, as_json) -> None:
    """Say what finding CODE means and what to do about it (every code, without CODE).

    \b
    Examples:
      auditkit explain row-invalid
      auditkit explain            # every code, by family

    \b
    Exit codes: 0 the code is catalogued, 2 it is not (the nearest codes are suggested)."""
    import difflib

    from auditkit.codes import CODES, lookup

    if code is None:
        if as_json:
            from auditkit.cli.output import contract, dumps

            click.echo(dumps(contract({"ok": True, "exit_code": 0, "codes": [_entry(c) for c in CODES]}, "explain")))
            return
        family = None
        for c in CODES:
            if c.family is not family:
                family = c.family
                click.echo(f"\n{family.heading}")
            click.echo(f"  {c.code}")
        click.echo("\nauditkit explain CODE says what one means and what to do (docs/FINDINGS.md lists them all).")
        return
    entry = lookup(code.strip().lower())
    if entry is None:
        near = difflib.get_close_matches(code, [c.code for c in CODES], n=3, cutoff=0.5)
        fail(AuditError(f"no finding code {code!r} in the catalogue",
                        hint=(f"did you mean: {', '.join(near)}? " if near else "")
                        + "auditkit explain (without a code) lists every one"), as_json)
    if as_json:
        from auditkit.cli.output import contract, dumps

        click.echo(dumps(contract({"ok": True, "exit_code": 0, "codes": [_entry(entry)]}, "explain")))
        return
    click.echo(f"{entry.code}  ({entry.family.heading})\n")
    click.echo(click.wrap_text(entry.meaning, width=88, initial_indent="What it means: ",
                               subsequent_indent="  "))
    click.echo()
    click.echo(click.wrap_text(entry.action, width=88, initial_indent="What to do:    ", subsequent_indent="  "))


def _entry(c) -> dict:
    return {"code": c.code, "family": c.family.value, "meaning": c.meaning, "action": c.action}


COMMANDS = [explain_cmd]

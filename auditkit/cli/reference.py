"""docs/CLI.md, generated from every command's --help (so the reference cannot go stale):

    python -m auditkit.cli.reference > docs/CLI.md

tests/test_cli_help.py fails when the file differs from what this prints."""

from __future__ import annotations

import click

_INTRO = """\
# Command-line reference

Generated from `auditkit --help` by `python -m auditkit.cli.reference > docs/CLI.md`; do not edit.
Exit codes, for every command: 0 every check passed, 1 findings, 2 could not check (usage,
unreadable input), 130 on Ctrl-C. `--format json|sarif|junit` (and `--json`) print a whole
document on every exit: see docs/CI.md for the JSON contract and SARIF for code scanning.
`auditkit explain CODE` says what a finding code means and what to do (docs/FINDINGS.md).

## Shell completion

click generates it; add one line to your shell's start-up file:

```bash
eval "$(_AUDITKIT_COMPLETE=bash_source auditkit)"     # ~/.bashrc
eval "$(_AUDITKIT_COMPLETE=zsh_source auditkit)"      # ~/.zshrc
_AUDITKIT_COMPLETE=fish_source auditkit | source      # ~/.config/fish/completions/auditkit.fish
```
"""


def _walk(cmd: click.Command, ctx: click.Context, path: list[str]):
    yield path, cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx, **sub.context_settings), [*path, name])


def render_markdown() -> str:
    from auditkit.cli.main import cli

    root = click.Context(cli, info_name="auditkit", terminal_width=100, max_content_width=100, **cli.context_settings)
    parts = [_INTRO]
    for path, cmd, ctx in _walk(cli, root, []):
        title = " ".join(["auditkit", *path])
        parts.append(f"## `{title}`\n\n```text\n{cmd.get_help(ctx).rstrip()}\n```\n")
    return "\n".join(parts)


def main() -> None:
    print(render_markdown(), end="")


if __name__ == "__main__":
    main()

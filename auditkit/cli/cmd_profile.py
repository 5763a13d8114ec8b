"""`--profile P.toml` on verify, replay-gate and tables --check, and `auditkit profile draft`.

A profile reads a package auditkit did not write (docs/PROFILES.md); the use cases are in
`auditkit.app.profiled`.  Each command exits like every command: 0 all holds, 1 findings,
2 could not check.
"""

from __future__ import annotations

import sys

import click

from auditkit.cli.common import package_argument, package_source
from auditkit.cli.output import emit


def profile_option(f):
    """`--profile P.toml`: read the package through a reviewer-written profile."""
    return click.option("--profile", "profile", type=click.Path(dir_okay=False),
                        help="Read a package auditkit did not write through this profile (docs/PROFILES.md).")(f)


@click.group("profile")
def profile_group() -> None:
    """Profiles: read packages auditkit did not write (docs/PROFILES.md)."""


@profile_group.command("draft")
@package_argument
@click.option("--out", type=click.Path(dir_okay=False), help="Write the draft here (default: print it).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def profile_draft_cmd(package, package_opt, out, force) -> None:
    """Draft a profile for PACKAGE (a directory, an archive, a URL) from its own files; the rules are left TODO."""
    from auditkit.app.profiled import draft

    with package_source(package, package_opt, allow_foreign=True) as src:
        outcome = draft(src, out=out, force=force)
    sys.exit(emit(outcome))


COMMANDS = [profile_group]

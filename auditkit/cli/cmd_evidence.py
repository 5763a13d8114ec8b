"""`auditkit timestamp`, and the freeze-evidence options `verify`, `replay-gate`, `report` and `review` share."""

from __future__ import annotations

import functools
import sys

import click

from auditkit.app.policy import REQUIREMENTS, EvidencePolicy
from auditkit.cli.output import emit

REQUIRE_CHOICES = REQUIREMENTS


def evidence_options(f):
    """--trusted-tsa, --trusted-key, --system-trust, --require: what the reviewer trusts and demands,
    passed to the command as one value, `policy` (an `EvidencePolicy`)."""
    @functools.wraps(f)
    def with_policy(*args, trusted_tsa, trusted_keys, system_trust, require, **kwargs):
        policy = EvidencePolicy(tuple(trusted_tsa), tuple(trusted_keys), system_trust, tuple(require))
        return f(*args, policy=policy, **kwargs)

    g = click.option("--require", "require", multiple=True, type=click.Choice(REQUIRE_CHOICES),
                     help="Evidence every gate must have, else a finding (repeatable).")(with_policy)
    g = click.option("--system-trust", is_flag=True,
                     help="Also trust the system's CA store for TSA certificates.")(g)
    g = click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False),
                     help="Public key (PEM) whose attestations you trust (repeatable).")(g)
    return click.option("--trusted-tsa", "trusted_tsa", multiple=True, type=click.Path(dir_okay=False),
                        help="Root CA (PEM) of a timestamp authority you trust (repeatable).")(g)


@click.command("timestamp")
@click.argument("package", type=click.Path(file_okay=False))
@click.option("--tsa", "tsa_urls", multiple=True, required=True, help="RFC 3161 TSA URL (repeatable).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True, max=3600),
              help="Seconds one exchange with a TSA may take in all (connect, send, answer).")
def timestamp_cmd(package, tsa_urls, timeout) -> None:
    """Anchor PACKAGE's content root at the TSAs: proof it existed by then (no more); rebuilds its MANIFEST."""
    from auditkit.app.study import timestamp

    sys.exit(emit(timestamp(package, tsa_urls, timeout=timeout)))


COMMANDS = [timestamp_cmd]

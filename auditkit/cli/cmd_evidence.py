"""`auditkit timestamp`, and the freeze-evidence options `verify` and `replay-gate` share."""

from __future__ import annotations

import click

from auditkit.cli.common import fail
from auditkit.errors import AuditError

REQUIRE_CHOICES = ("asserted", "chained", "timestamped", "signed", "seeds-bound")


def evidence_options(f):
    """--trusted-tsa, --trusted-key, --system-trust, --require: what the reviewer trusts and demands."""
    f = click.option("--require", "require", multiple=True, type=click.Choice(REQUIRE_CHOICES),
                     help="Evidence every gate must have, else a finding (repeatable).")(f)
    f = click.option("--system-trust", is_flag=True,
                     help="Also trust the system's CA store for TSA certificates.")(f)
    f = click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False),
                     help="Public key (PEM) whose attestations you trust (repeatable).")(f)
    f = click.option("--trusted-tsa", "trusted_tsa", multiple=True, type=click.Path(dir_okay=False),
                     help="Root CA (PEM) of a timestamp authority you trust (repeatable).")(f)
    return f


def trust_from(trusted_tsa, trusted_keys, system_trust):
    from auditkit.evidence.model import Trust

    return Trust.from_files(list(trusted_tsa), list(trusted_keys), system_store=system_trust)


def with_freeze_evidence(report, package, gates, trusted_tsa, trusted_keys, system_trust, require, as_json) -> None:
    """Add the gates' freeze evidence to `report` (for text output: one line per gate)."""
    from auditkit.evidence.report import add_freeze_evidence, render_freeze_evidence

    add_freeze_evidence(report, package, gates, trust_from(trusted_tsa, trusted_keys, system_trust), list(require))
    if not as_json:
        render_freeze_evidence(report)


@click.command("timestamp")
@click.argument("package", type=click.Path(file_okay=False))
@click.option("--tsa", "tsa_urls", multiple=True, required=True, help="RFC 3161 TSA URL (repeatable).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True, max=3600),
              help="Seconds one exchange with a TSA may take in all (connect, send, answer).")
def timestamp_cmd(package, tsa_urls, timeout) -> None:
    """Anchor PACKAGE's content root at the TSAs: proof it existed by then (no more); rebuilds its MANIFEST."""
    from auditkit.evidence.record import timestamp_package
    from auditkit.evidence.tsa import token_info
    from auditkit.package.store import PackageStore

    from auditkit.text import printable

    try:
        root, events = timestamp_package(package, list(tsa_urls), timeout=timeout)
        store = PackageStore(package)   # the tokens just written, read back as every package byte is
        infos = [token_info(store.read_bytes(str(ev.get("token")))) for ev in events]
    except AuditError as exc:
        fail(exc)
    except OSError as exc:  # the package directory cannot take the token (read-only, a file where a folder belongs)
        fail(AuditError(f"cannot record the timestamp: {exc.strerror or exc}", path=str(exc.filename or package),
                        hint="timestamp a package directory you can write to"))
    for ev, info in zip(events, infos):
        click.echo(printable(f"timestamped content root {root} at {info.gen_time.isoformat()} by {info.tsa_name} "
                             f"({ev.get('tsa')}): {ev.get('token')}"))
    click.echo("this shows the package's content existed by then; it says nothing of when its rules were frozen")


COMMANDS = [timestamp_cmd]

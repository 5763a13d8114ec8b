"""`auditkit verify` and `auditkit manifest build`."""

from __future__ import annotations

import sys

import click

from auditkit.cli.cmd_evidence import evidence_options, with_freeze_evidence
from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import emit, fail, json_option
from auditkit.errors import AuditError


def _progress_bar(total: int):
    from tqdm import tqdm

    from auditkit.verify import PROGRESS_MIN_BYTES

    if total < PROGRESS_MIN_BYTES:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc="verify", leave=False)


@click.command("verify")
@click.argument("package", type=click.Path())
@json_option
@click.option("--jobs", type=click.IntRange(1, 256), help="Files read in parallel (default: the machine's cores).")
@click.option("--deep", is_flag=True, help="Also re-evaluate every checkpoint's val_bpb (needs torch).")
@click.option("--max-members", type=int, help="Refuse archives with more members than this.")
@click.option("--max-bytes", type=int, help="Refuse archives whose members add up to more bytes than this.")
@evidence_options
@profile_option
def verify_cmd(package, as_json, jobs, deep, max_members, max_bytes, trusted_tsa, trusted_keys, system_trust,
               require, profile) -> None:
    """Prove PACKAGE (a directory, .tar, .tar.gz or .tgz) is whole, unaltered and well formed."""
    if profile:
        from auditkit.cli.cmd_profile import verify_through

        if deep or max_members or max_bytes:
            fail(AuditError("--deep, --max-members and --max-bytes do not apply with --profile"), as_json)
        verify_through(package, profile, as_json)
    from auditkit.verify import verify_package

    try:
        report = verify_package(package, jobs=jobs, deep=deep,
                                progress_factory=_progress_bar if sys.stderr.isatty() else None,
                                max_members=max_members, max_bytes=max_bytes)
        with_freeze_evidence(report, package, None, trusted_tsa, trusted_keys, system_trust, require, as_json)
    except AuditError as exc:
        fail(exc, as_json)
    emit(report, as_json)


@click.group("manifest")
def manifest_group() -> None:
    """Build a package's content-hashed MANIFEST."""


@manifest_group.command("build")
@click.argument("package", type=click.Path(file_okay=False))
def manifest_build_cmd(package) -> None:
    """Write MANIFEST.json and MANIFEST.csv for PACKAGE (no other file changes)."""
    from auditkit.package.manifest import build_manifest

    try:
        doc = build_manifest(package)
    except AuditError as exc:
        fail(exc)
    click.echo(f"wrote MANIFEST.json and MANIFEST.csv: {len(doc['files'])} files, root {doc['root']}")


COMMANDS = [verify_cmd, manifest_group]

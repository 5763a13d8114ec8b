"""`auditkit verify` and `auditkit manifest build`."""

from __future__ import annotations

import sys

import click

from auditkit.cli.cmd_evidence import evidence_options, with_freeze_evidence
from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import (add_source_findings, emit_as, fail, format_option, json_option, leave_at_once,
                                 package_argument, package_source)
from auditkit.cli.common import output_format as _output_format
from auditkit.errors import AuditError


def _progress_bar(total: int):
    from tqdm import tqdm

    from auditkit.verify import PROGRESS_MIN_BYTES

    if total < PROGRESS_MIN_BYTES:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc="verify", leave=False)


@click.command("verify")
@package_argument
@json_option
@format_option
@click.option("--jobs", type=click.IntRange(1, 256), help="Files read in parallel (default: the machine's cores).")
@click.option("--deep", is_flag=True, help="Also re-evaluate every checkpoint's val_bpb (needs torch).")
@click.option("--threads", type=click.IntRange(1, 1024),
              help="Torch threads for --deep (default: the cores not busy with other work; 1 on a busy machine).")
@click.option("--max-members", type=int, help="Refuse archives with more members than this.")
@click.option("--max-bytes", type=int, help="Refuse archives whose members add up to more bytes than this.")
@evidence_options
@profile_option
def verify_cmd(package, package_opt, as_json, output_format, jobs, deep, threads, max_members, max_bytes, trusted_tsa,
               trusted_keys, system_trust, require, profile) -> None:
    """Prove PACKAGE (a directory, an archive of any name, a URL) is whole, unaltered and well formed."""
    fmt = _output_format(output_format, as_json)
    as_json = fmt == "json"
    if threads is not None and not deep:
        fail(AuditError("--threads applies with --deep only", hint="add --deep, or leave --threads out"))
    with package_source(package, package_opt, as_json=as_json, stream_archive=not profile,
                        allow_foreign=bool(profile)) as src:
        _verify(src, as_json, fmt, jobs, deep, threads, max_members, max_bytes, trusted_tsa, trusted_keys,
                system_trust, require, profile)


def _verify(src, as_json, fmt, jobs, deep, threads, max_members, max_bytes, trusted_tsa, trusted_keys, system_trust,
            require, profile) -> None:
    package = src.target
    if profile:
        if fmt in ("sarif", "junit"):
            fail(AuditError(f"--format {fmt} does not apply with --profile yet", hint="use --format text or json"))
        from auditkit.cli.cmd_profile import verify_through

        if deep or max_members or max_bytes or trusted_tsa or trusted_keys or system_trust:
            fail(AuditError("--deep, --max-members, --max-bytes and the trust options do not apply with --profile",
                            hint="a package read through a profile carries no checkpoints auditkit maps, and no "
                                 "tokens or attestations; --require still applies"), as_json)
        verify_through(package, profile, as_json, require)
    from auditkit.verify import verify_package

    try:
        report = verify_package(package, jobs=jobs, deep=deep,
                                progress_factory=_progress_bar if sys.stderr.isatty() else None,
                                max_members=max_members, max_bytes=max_bytes, deep_threads=threads,
                                say=lambda line: click.echo(line, err=True), say_tty=sys.stderr.isatty(),
                                beside=lambda r: with_freeze_evidence(r, package, None, trusted_tsa, trusted_keys,
                                                                      system_trust, require, as_json))
    except AuditError as exc:
        fail(exc, as_json)
    add_source_findings(report, src)
    if report.info.get("found_at") and not as_json and fmt == "text":   # an archive streamed: found as it was read
        click.echo(f"note: package found at {report.info.pop('found_at')} inside {src.given}", err=True)
    if not deep:   # read only, nothing left running (--deep loads torch, whose exit handlers run); a snapshot
        leave_at_once()    # is removed on the way out of `package_source`, before the process leaves
    emit_as(report, fmt, package=package)


@click.group("manifest")
def manifest_group() -> None:
    """Build a package's content-hashed MANIFEST."""


@manifest_group.command("build")
@click.argument("package", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="List a directory that holds no protocol.json too.")
def manifest_build_cmd(package, force) -> None:
    """Write MANIFEST.json and MANIFEST.csv for PACKAGE (no other file changes; .git/ is never listed)."""
    from auditkit.package.manifest import build_manifest

    try:
        doc = build_manifest(package, require_protocol=not force)
    except AuditError as exc:
        fail(exc)
    click.echo(f"wrote MANIFEST.json and MANIFEST.csv: {len(doc['files'])} files, root {doc['root']}")


COMMANDS = [verify_cmd, manifest_group]

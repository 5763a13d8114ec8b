"""`auditkit verify` and `auditkit manifest build`."""

from __future__ import annotations

import os
import sys

import click

from auditkit.cli.cmd_evidence import evidence_options
from auditkit.cli.cmd_profile import profile_option
from auditkit.cli.common import chosen_format, format_option, json_option, leave_at_once, package_argument, package_source
from auditkit.cli.output import emit


def _progress_bar(total: int):
    from tqdm import tqdm

    from auditkit.verify import PROGRESS_MIN_BYTES

    if total < PROGRESS_MIN_BYTES:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc="verify", leave=False)


def one_blas_thread(environ=os.environ, modules=sys.modules) -> None:
    """Before numpy is imported: one OpenBLAS thread, unless the user set OPENBLAS_NUM_THREADS. verify does
    no linear algebra, and OpenBLAS starting a thread per core at numpy's import takes CPU time (70 ms on
    two cores) from the readers hashing the package."""
    if "numpy" not in modules:
        environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _say(line: str) -> None:
    click.echo(line, err=True)


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
def verify_cmd(package, package_opt, as_json, output_format, jobs, deep, threads, max_members, max_bytes, policy,
               profile) -> None:
    """Prove PACKAGE (a directory, an archive of any name, a URL) is whole, unaltered and well formed."""
    from auditkit.app.checks import VerifyRequest, verify

    if not deep:
        one_blas_thread()
    fmt = chosen_format(output_format, as_json)
    request = VerifyRequest(jobs, deep, threads, max_members, max_bytes, policy, profile)
    with package_source(package, package_opt, stream_archive=not profile, allow_foreign=bool(profile)) as src:
        outcome = verify(src, request, fmt, progress=_progress_bar if sys.stderr.isatty() else None, say=_say,
                         say_tty=sys.stderr.isatty())
        if not deep and not profile:   # read only, nothing left running (--deep loads torch, whose exit handlers
            leave_at_once()    # run); a snapshot is removed on the way out of `package_source`, before the process leaves
        sys.exit(emit(outcome))


@click.group("manifest")
def manifest_group() -> None:
    """Build a package's content-hashed MANIFEST."""


@manifest_group.command("build")
@click.argument("package", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="List a directory that holds no protocol.json too.")
def manifest_build_cmd(package, force) -> None:
    """Write MANIFEST.json and MANIFEST.csv for PACKAGE (no other file changes; .git/ is never listed)."""
    from auditkit.app.checks import build_manifest

    sys.exit(emit(build_manifest(package, force=force)))


COMMANDS = [verify_cmd, manifest_group]

"""Where `tables` and `figures` write, and how: never into a package unless told.

A package is evidence: regenerating its derived files in place changes them
under its MANIFEST (matplotlib alone makes different PNG bytes from version to
version).  So `output_dir` resolves the destination: `out` (a directory that is
not the package nor inside it), or the package itself only with `in_place`.
`write_outputs` writes by the one rule of `auditkit.package.writes`: only the files
whose bytes differ, an existing one replaced only with `--force` (or `--in-place`,
which says it), staged then committed, nothing below the destination followed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from auditkit.errors import AuditError
from auditkit.findings import Report
from auditkit.errors import PackageDefect
from auditkit.package.store import PackageStore, open_package
from auditkit.package.writes import write_files

MANIFEST_JSON = "MANIFEST.json"


class Written(list):
    """The manifest entries generated (a list), with where they went (`dest`) and the
    package-relative paths whose bytes changed there (`changed`)."""

    def __init__(self, entries, dest: Path, changed: list[str]):
        super().__init__(entries)
        self.dest = dest
        self.changed = list(changed)


def _inside(path: Path, root: Path) -> bool:
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def output_dir(package: str | Path, out: str | Path | None, *, in_place: bool, what: str) -> Path:
    """The directory `what` ("tables", "figures") is written to; AuditError (exit 2) when
    `package` is not one (no protocol.json), when the destination would be the package
    without `in_place`, or when both `out` and `in_place` are given."""
    package = Path(package)
    open_package(package)
    if out is not None and in_place:
        raise AuditError(f"{what}: give either --out DIR or --in-place, not both", path=str(out))
    if in_place:
        return package
    if out is None:
        raise AuditError(f"{what} would be written into the package itself ({package}); nothing was written",
                         path=str(package),
                         hint=f"write them elsewhere with --out DIR, check them with --check, or rewrite the "
                              f"package's own with --in-place (its MANIFEST then no longer matches)")
    if _inside(Path(out), package):
        raise AuditError(f"--out {out} is inside the package {package}; nothing was written", path=str(out),
                         hint="give a directory outside the package, or --in-place to rewrite the package's own")
    return Path(out)


def write_outputs(dest: Path, files: dict[str, bytes], *, force: bool = False, what: str = "write") -> list[str]:
    """Write `files` under `dest` by the one rule (`auditkit.package.writes.write_files`): files
    already byte-identical are left, another file there is replaced only with `force`; return the
    paths written.  AuditError (nothing written) when the rule refuses."""
    return write_files(dest, files, force=force, what=what,
                       force_hint="pass --force to replace them, or write to another --out directory")


def stale_manifest(dest: Path, changed: list[str]) -> bool:
    """True when files were changed in a directory whose MANIFEST recorded them otherwise."""
    return bool(changed) and os.path.isfile(dest / MANIFEST_JSON) and not os.path.islink(dest / MANIFEST_JSON)


def check_report(package: str | Path, command: str, body: Callable[[PackageStore, Report], None]) -> Report:
    """`body(store, report)` over the package: a defective package file it meets (a link, not
    UTF-8, not strict JSON, ...) is a finding; AuditError only when `package` is no package."""
    store = open_package(package)
    report = Report(command=command, target=str(package))
    try:
        body(store, report)
    except PackageDefect as exc:
        report.add(exc.finding)
    return report

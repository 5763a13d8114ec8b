"""The profile audit's reads, through the common store (`auditkit.package.store`).

`open_package` lists the regular files of a directory without following a
symlink (each symlink or special file is a finding, never read) and returns
the `PackageStore` every read then goes through: no-follow opens, strict
UTF-8, strict JSON (a repeated key, NaN or Infinity is refused and named).
`read_findings` turns a refused read into the finding the store made.
Nothing here writes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.findings import Finding
from auditkit.errors import PackageDefect
from auditkit.package.store import PackageStore, loads_strict, unsafe_reason

CHUNK = 1 << 20

__all__ = ["PackageStore", "PackageDefect", "loads_strict", "unsafe_reason", "open_package", "hash_file",
           "as_finding"]


def open_package(root: str | Path) -> tuple[PackageStore, list[str], list[Finding]]:
    """(store, every regular file's relative POSIX path sorted, a finding per symlink or special
    file). Raises AuditError when `root` is not a directory (a symlink to one included)."""
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        raise AuditError("package directory not found (or a symlink)", path=str(root),
                         hint="give the package's directory; archives are not read through a profile yet")
    store = PackageStore(root)
    files: list[str] = []
    problems: list[Finding] = []

    def _raise(exc: OSError):
        raise AuditError(f"cannot list the package: {exc}", path=str(root))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_raise):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                problems.append(Finding(rel, "symlink", "", "a regular file", "a symbolic link",
                                        "the link is not followed and its target is not checked"))
                if name in dirnames:
                    dirnames.remove(name)
            elif name in filenames and not stat.S_ISREG(mode):
                problems.append(Finding(rel, "not-regular-file", "", "a regular file", "a special file",
                                        "the entry is not read"))
            elif name in filenames:
                if unsafe_reason(rel):
                    problems.append(Finding(rel, "unsafe-path", "", "a plain relative path", unsafe_reason(rel)))
                else:
                    files.append(rel)
    return store, sorted(files), problems


def hash_file(store: PackageStore, rel: str, algorithm: str = "sha256") -> tuple[str, int]:
    """Hex digest and size of `rel`, read in 1 MiB chunks through the store."""
    h = hashlib.new(algorithm)
    n = 0
    with store.open(rel) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def as_finding(exc: AuditError, rel: str, code: str, expected: str) -> Finding:
    """The store's own finding for a refused read, else one built from the error."""
    if isinstance(exc, PackageDefect):
        return exc.finding
    return Finding(rel, code, "", expected, exc.message, exc.hint or "")

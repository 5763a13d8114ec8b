"""Safe, read-only access to a package a profile describes (private).

Until the common store (`auditkit.package.store`) lands this module does the
few reads the profile audit needs: list the regular files of a directory
without following a symlink, open one of them with ``O_NOFOLLOW``, hash it in
1 MiB reads, and parse JSON strictly (a repeated key, ``NaN`` or
``Infinity`` is a finding, never silently accepted).  Nothing here writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.findings import Finding

CHUNK = 1 << 20
DOC_CAP = 64 * 1024 * 1024  # documents parsed in memory up to this size


@dataclass(frozen=True)
class FileInfo:
    path: str      # package-relative POSIX path
    sha256: str
    bytes: int


def list_files(root: Path) -> tuple[dict[str, Path], list[Finding]]:
    """Every regular file under `root` (relative POSIX path -> absolute path), and a finding
    for each symlink or special file (never followed, never read). Raises AuditError when
    `root` is not a directory or cannot be listed."""
    if root.is_symlink() or not root.is_dir():
        raise AuditError("package directory not found (or a symlink)", path=str(root),
                         hint="give the package's directory; archives are not read through a profile yet")
    files: dict[str, Path] = {}
    problems: list[Finding] = []

    def _raise(exc: OSError):
        raise AuditError(f"cannot list the package: {exc}", path=str(root))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_raise):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                problems.append(Finding(rel, "unsafe-entry", "", "a regular file", "a symlink",
                                        "the link is not followed and its target is not checked"))
                if name in dirnames:
                    dirnames.remove(name)
            elif name in filenames and not stat.S_ISREG(st.st_mode):
                problems.append(Finding(rel, "unsafe-entry", "", "a regular file", "a special file",
                                        "the entry is not read"))
            elif name in filenames:
                files[rel] = full
    return files, problems


def _open(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def hash_file(path: Path, algorithm: str = "sha256") -> tuple[str, int]:
    """Hex digest and size, read in 1 MiB chunks. Raises OSError."""
    h = hashlib.new(algorithm)
    n = 0
    with os.fdopen(_open(path), "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def read_bytes(path: Path, rel: str) -> bytes:
    """The whole file (a document: at most DOC_CAP bytes). Raises AuditError."""
    try:
        with os.fdopen(_open(path), "rb") as f:
            data = f.read(DOC_CAP + 1)
    except OSError as exc:
        raise AuditError(f"cannot read the file: {exc}", path=rel) from exc
    if len(data) > DOC_CAP:
        raise AuditError(f"document larger than {DOC_CAP} bytes is not parsed", path=rel)
    return data


def read_text(path: Path, rel: str) -> str:
    """UTF-8 text (a leading byte-order mark is dropped). Raises AuditError."""
    try:
        return read_bytes(path, rel).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AuditError(f"not UTF-8 text: {exc}", path=rel) from exc


def strict_json(text: str, rel: str) -> tuple[object, list[Finding]]:
    """Parse JSON; a repeated key or a NaN/Infinity constant is a finding (the document is
    still returned, the last repeated value kept). Raises AuditError when it does not parse."""
    findings: list[Finding] = []

    def pairs(items):
        seen: dict = {}
        for k, v in items:
            if k in seen:
                findings.append(Finding(rel, "json-duplicate-key", f"key {k!r}", "each key once in an object",
                                        "a repeated key", "JSON readers disagree on which value wins"))
            seen[k] = v
        return seen

    def constant(name):
        findings.append(Finding(rel, "json-non-finite", "", "finite numbers", name,
                                "NaN and Infinity are not JSON"))
        return float("nan")

    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except ValueError as exc:
        raise AuditError(f"not readable JSON: {exc}", path=rel) from exc
    return doc, findings

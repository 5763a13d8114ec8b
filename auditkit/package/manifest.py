"""Content-hashed MANIFEST (SPEC section 9): build it, and its pure parts.

`MANIFEST.json` lists every other file of the package, sorted by POSIX path,
with sha256 and size; `root` is the sha256 of the `sha256sum`-format lines
``"<sha256>  <path>\\n"`` in that order, so one hash names the whole package.
`MANIFEST.csv` holds the same entries (``path,sha256,bytes``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.store import PackageStore
from auditkit.package.writes import write_files
from auditkit.package.hashing import sha256_fileobj
from auditkit.package.listing import NEVER_LISTED_DIRS, list_entries
from auditkit.package.scanned import unsafe_reason

MANIFEST_JSON = "MANIFEST.json"
MANIFEST_CSV = "MANIFEST.csv"
MANIFEST_FILES = (MANIFEST_JSON, MANIFEST_CSV)


@dataclass(frozen=True, order=True)
class Entry:
    path: str
    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


def root_hash(entries) -> str:
    """sha256 of ``"<sha256>  <path>\\n"`` over `entries` in path order."""
    text = "".join(f"{e.sha256}  {e.path}\n" for e in sorted(entries, key=lambda e: e.path))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()     # one update: the same bytes, in one piece


def manifest_json_text(entries) -> str:
    entries = sorted(entries, key=lambda e: e.path)
    doc = {"schema": "auditkit/manifest/v1", "algorithm": "sha256",
           "files": [e.to_json() for e in entries], "root": root_hash(entries)}
    return json.dumps(doc, indent=2) + "\n"


def manifest_csv_text(entries) -> str:
    lines = ["path,sha256,bytes"]
    for e in sorted(entries, key=lambda e: e.path):
        path = e.path
        if any(c in path for c in ',"\n\r'):
            path = '"' + path.replace('"', '""') + '"'
        lines.append(f"{path},{e.sha256},{e.bytes}")
    return "\n".join(lines) + "\n"


def list_package_files(root: Path) -> list[str]:
    """Every regular file under `root` (POSIX relative paths, sorted), manifests and
    `.git/` directories excluded.

    Raises AuditError on a symlink or special file: a package must hold neither.
    """
    out = []

    def _raise(prefix: str, exc: OSError):
        raise AuditError(f"cannot list the package: {exc}", path=str(root))

    for rel, mode in list_entries(root, on_error=_raise):
        if stat.S_ISLNK(mode):
            if rel.rsplit("/", 1)[-1] in NEVER_LISTED_DIRS and (root / rel).is_dir():
                continue        # a link named .git to a directory: version control, not listed
            raise AuditError(f"{rel} is a symlink; a package must hold only regular files",
                             path=str(root), hint="replace the link by the file it points to")
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise AuditError(f"{rel} is not a regular file", path=str(root))
        why = unsafe_reason(rel)
        if why:
            raise AuditError(f"{rel!r} cannot be listed: {why}", path=str(root),
                             hint="rename the file: the MANIFEST line format needs a plain relative path")
        if rel not in MANIFEST_FILES:
            out.append(rel)
    return sorted(out)


def manifest_entries(root: str | Path, jobs: int | None = None) -> list[Entry]:
    """The MANIFEST entries of the files under `root` now (reads every file once; writes nothing)."""
    root = Path(root)
    if not root.is_dir():
        raise AuditError("not a package directory", path=str(root), hint="give the directory that holds protocol.json")
    files = list_package_files(root)
    jobs = jobs or os.cpu_count() or 1
    store = PackageStore(root)   # each file opened as every package byte is: no link followed, regular only

    def one(rel: str) -> Entry:
        try:
            with store.open(rel) as f:
                digest, n = sha256_fileobj(f)    # size and hash from the same read
        except AuditError as exc:   # replaced by a link or FIFO since it was listed
            raise AuditError(f"{rel}: {exc.message}", path=str(root), hint=exc.hint) from None
        return Entry(rel, digest, n)

    from concurrent.futures import ThreadPoolExecutor   # here: verify, which imports this module, needs none

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, files))


def build_manifest(root: str | Path, jobs: int | None = None, *, require_protocol: bool = False) -> dict:
    """Write MANIFEST.json and MANIFEST.csv for the package directory `root`; return the JSON doc.

    Never changes any other file; the two are staged and committed together
    (`auditkit.package.writes`): when either cannot be written neither changes. Raises
    AuditError if `root` is not a directory, holds a symlink or special file (a
    MANIFEST that is one is never written through), or (with `require_protocol`)
    holds no protocol.json.
    """
    root = Path(root)
    if require_protocol and root.is_dir() and PackageStore(root).kind("protocol.json") != "file":
        raise AuditError("not a package directory (no protocol.json); no MANIFEST was written", path=str(root),
                         hint="give the package directory (the one holding protocol.json); to list a directory "
                              "that is not a package anyway: auditkit manifest build --force")
    entries = manifest_entries(root, jobs)
    text = manifest_json_text(entries)
    # rebuilding its MANIFEST is what the command is for: replacing the old one needs no --force
    write_files(root, {MANIFEST_JSON: text.encode("utf-8"), MANIFEST_CSV: manifest_csv_text(entries).encode("utf-8")},
                force=True, what="manifest build")
    return json.loads(text)

"""Where the package is inside what the user named, and whether it is one auditkit reads.

What the user typed (`is_remote`, `ARXIV_ID`), an archive by its magic bytes (`archive_kind`),
a package below the top (`locate_in_directory`, `prefix_in_names`: ``anc/`` first, then
``ancillary/``, then the shallowest directory holding ``protocol.json`` or ``MANIFEST.json``), a
package in its authors' own layout (`ForeignLayout`, refused with the `auditkit profile draft`
command), and the resolved `PackageSource`.  Nothing here opens an archive or fetches a URL:
`package.local` and `package.remote` do, and `package.source.open_source` chooses between them.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from auditkit.errors import AuditError
from auditkit.findings import Finding

MARKS = ("protocol.json", "MANIFEST.json")
PREFERRED = ("anc", "ancillary")
SEARCH_DEPTH = 3
SEARCH_DIRS = 2000          # directories looked at while searching below the top, at most
SPEC_MANIFEST = "auditkit/manifest/"
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")  # read as archives even when damaged
ARXIV_ID = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5}(?:v\d+)?|[a-z-]+(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?)$", re.I)


class ForeignLayout(AuditError):
    """The package is in its authors' own layout: read it through a profile (exit 2)."""


@dataclass
class PackageSource:
    """A resolved package. `root`: the directory to read (None while `verify` streams `archive`);
    `found_at`: the package's place inside what was given ('' at its top); `findings`: what
    fetching found (a served file whose hash did not match the MANIFEST)."""

    given: str
    kind: str                                  # "directory", "archive" or "remote"
    root: Path | None = None
    archive: Path | None = None
    found_at: str = ""
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    noted: bool = False                        # the notes were said already (on stderr)
    _cleanup: list[Path] = field(default_factory=list, repr=False)

    @property
    def target(self) -> str:
        """What the reader opens: the directory, or the archive `verify` streams."""
        return str(self.root if self.root is not None else self.archive)

    def note(self) -> str:
        """'package found at anc/ inside 2606.11387', or '' when the package is what was given."""
        lines = list(self.notes)
        if self.found_at:
            lines.append(f"package found at {self.found_at} inside {self.given}")
        return "\n".join(lines)

    def close(self) -> None:
        """Remove the snapshot directories this source created (nothing else)."""
        while self._cleanup:
            shutil.rmtree(self._cleanup.pop(), ignore_errors=True)

    def __enter__(self) -> "PackageSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- what the user typed ---------------------------------------------------------

def is_remote(given: str) -> bool:
    """A URL (`scheme://`) or an arXiv identifier (`arxiv:2606.11387`, or a bare one that is no path here)."""
    if "://" in given:
        return True
    return bool(ARXIV_ID.match(given)) and (given.lower().startswith("arxiv:") or not os.path.lexists(given))


def archive_kind(path: Path) -> str | None:
    """'gzip', 'bzip2', 'xz' or 'tar' from the file's first bytes, whatever its name; None otherwise."""
    import stat

    try:   # non-blocking and regular files only: a FIFO or device named as a package is never waited on
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, 512)
    except OSError:
        return None
    finally:
        os.close(fd)
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head[257:262] == b"ustar" or (len(head) == 512 and _tar_checksum_ok(head)):
        return "tar"
    return None


def _tar_checksum_ok(block: bytes) -> bool:
    """An old (v7) tar header: its checksum field matches the header's bytes."""
    try:
        recorded = int(block[148:156].replace(b"\0", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    return recorded == sum(block[:148]) + 8 * 32 + sum(block[156:512])


# --- finding a package below the top ---------------------------------------------

def prefix_in_names(names) -> str | None:
    """The package's place among archive member `names` ('' at the top, 'anc/', ...), or None.
    A directory holding protocol.json or MANIFEST.json: the top first, then anc/, ancillary/, then
    the shallowest (alphabetically first among equals)."""
    dirs: set[str] = set()
    for n in names:
        p = PurePosixPath(n)
        if p.name in MARKS:
            dirs.add("" if str(p.parent) == "." else p.parent.as_posix() + "/")
    if not dirs:
        return None
    if "" in dirs:
        return ""
    for pref in PREFERRED:
        if pref + "/" in dirs:
            return pref + "/"
    return min(dirs, key=lambda d: (d.count("/"), d))


def _has_mark(d: Path) -> bool:
    return any(os.path.lexists(d / m) for m in MARKS)


def locate_in_directory(root: Path) -> str | None:
    """The package's place below directory `root` ('' at the top, 'anc/', ...), or None.
    Links are never followed; hidden directories are not searched."""
    if _has_mark(root):
        return ""
    for pref in PREFERRED:
        d = root / pref
        if _is_real_dir(d) and _has_mark(d):
            return pref + "/"
    level, seen = [root], 0
    for _ in range(SEARCH_DEPTH):
        nxt: list[Path] = []
        for d in level:
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
                    continue
                seen += 1
                if seen > SEARCH_DIRS:
                    return None
                sub = Path(e.path)
                if _has_mark(sub):
                    return sub.relative_to(root).as_posix() + "/"
                nxt.append(sub)
        level = nxt
    return None


def _is_real_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(p).st_mode)
    except OSError:
        return False


# --- the authors' own layout -------------------------------------------------------

def is_spec_manifest(doc) -> bool:
    """A SPEC MANIFEST.json (v1 as first published, or later): auditkit's schema, or a `files` list of
    entries with `path` and `sha256`."""
    if not isinstance(doc, dict):
        return False
    if str(doc.get("schema", "")).startswith(SPEC_MANIFEST):
        return True
    files = doc.get("files")
    return isinstance(files, list) and bool(files) and all(
        isinstance(e, dict) and "path" in e and "sha256" in e for e in files[:50])


def draft_command(given: str) -> str:
    return f"auditkit profile draft {_quoted(given)} --out profile.toml"


def _quoted(s: str) -> str:
    import shlex

    return shlex.quote(s)


def foreign_layout(given: str, where: str, why: str) -> ForeignLayout:
    return ForeignLayout(
        f"this package is in its authors' own layout ({why}): auditkit reads such a package through a "
        f"profile, not file by file against the SPEC format",
        path=given,
        hint=f"draft a profile from its own files, transcribe the rules, then check through it:\n"
             f"    {draft_command(where)}\n"
             f"    auditkit verify {_quoted(where)} --profile profile.toml   (docs/PROFILES.md)")


def refuse_foreign_directory(given: str, root: Path, shown: str | None = None) -> None:
    """ForeignLayout when directory `root` (the package's place) has no protocol.json and no SPEC MANIFEST;
    `shown`: the name the suggested commands use (default: `root`)."""
    shown = str(root) if shown is None else shown
    if os.path.lexists(root / "protocol.json"):
        return
    manifest = root / "MANIFEST.json"
    if not os.path.lexists(manifest):
        raise foreign_layout(given, shown, "no protocol.json and no MANIFEST.json")
    from auditkit.errors import PackageDefect
    from auditkit.package.store import PackageStore

    try:
        doc = PackageStore(root).read_json("MANIFEST.json")
    except PackageDefect:
        return        # a damaged MANIFEST of a SPEC package is a finding the checks report
    if not is_spec_manifest(doc):
        raise foreign_layout(given, shown, "no protocol.json, and its MANIFEST.json is not auditkit's")


def refuse_foreign_documents(given: str, where: str, manifest: bytes | None, has_protocol: bool) -> None:
    """ForeignLayout for an archive's package whose documents were read while it was streamed."""
    if has_protocol:
        return
    if manifest is None:
        raise foreign_layout(given, where, "no protocol.json and no MANIFEST.json")
    from auditkit.errors import PackageDefect
    from auditkit.package.store import loads_strict

    try:
        doc = loads_strict(manifest, "MANIFEST.json")
    except PackageDefect:
        return
    if not is_spec_manifest(doc):
        raise foreign_layout(given, where, "no protocol.json, and its MANIFEST.json is not auditkit's")


_MANIFEST_LIKE = re.compile(r"manifest|checksum|sha256sum|md5sum", re.I)


def holds_data(d: Path) -> bool:
    """A directory that looks like a study's package in another layout: a manifest-like file at its top
    (`MANIFEST.csv`, `checksums.txt`, `SHA256SUMS`) or CSV files at most two levels down."""
    try:
        top = os.listdir(d)
    except OSError:
        return False
    if any(_MANIFEST_LIKE.search(n) for n in top):
        return True
    n = 0
    for here, dirs, files in os.walk(d):
        depth = Path(here).relative_to(d).parts
        dirs[:] = [x for x in dirs if not x.startswith(".")] if len(depth) < 2 else []
        if any(f.endswith(".csv") for f in files):
            return True
        n += len(files)
        if n > 2000:
            break
    return False

"""Where a package comes from: the one resolver every command names its package through.

`open_source(given)` turns what the user typed — a directory, an archive of any
name (recognised by its magic bytes: gzip, bzip2, xz or tar, e.g. arXiv's
extension-less e-print ``2606.11387``), an ``https://`` URL of a package
directory, or an arXiv identifier — into a `PackageSource`: the directory the
readers open (`root`), or for `verify` the archive it streams (`archive`), and
where inside what was given the package was found (`found_at`: ``anc/`` of an
e-print, say).

- A package below the top is looked for ``anc/`` first, then ``ancillary/``,
  then the shallowest directory (at most `SEARCH_DEPTH` down) holding
  ``protocol.json`` or ``MANIFEST.json``; the commands say where they found it.
- A package in its authors' own layout (no ``protocol.json``, no SPEC
  MANIFEST) is refused at once with the `auditkit profile draft` command
  (`ForeignLayout`, exit 2), not checked file by file as if tampered with.
- An archive read by a command other than `verify` is read in one streamed,
  bounded pass (the archive budget: members, inflated bytes, ratio) into a
  private snapshot directory (mode 0700) that is removed when the command
  ends; `verify` streams the archive itself and never writes a byte.
- A URL is fetched through `auditkit.package.remote` into the content-addressed
  cache; every file's hash is checked against the MANIFEST before it is used.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
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
_ARXIV_ID = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5}(?:v\d+)?|[a-z-]+(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?)$", re.I)


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
    return bool(_ARXIV_ID.match(given)) and (given.lower().startswith("arxiv:") or not os.path.lexists(given))


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
    from auditkit.package.store import PackageDefect, PackageStore

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
    from auditkit.package.store import PackageDefect, loads_strict

    try:
        doc = loads_strict(manifest, "MANIFEST.json")
    except PackageDefect:
        return
    if not is_spec_manifest(doc):
        raise foreign_layout(given, where, "no protocol.json, and its MANIFEST.json is not auditkit's")


# --- the resolver --------------------------------------------------------------------

def open_source(given: str | os.PathLike, *, stream_archive: bool = False, allow_foreign: bool = False,
                default: bool = False) -> PackageSource:
    """Resolve what the user named (see the module docstring). `stream_archive`: leave an archive to
    be streamed (`verify`); otherwise it is read into a private snapshot removed by `close()`.
    `allow_foreign`: a package in its authors' layout is returned, not refused (`--profile`).
    `default`: the name is the default `ancillary`, not one the user typed (said so when missing).
    Raises AuditError (exit 2) when there is no package to read."""
    given = os.fspath(given)
    if is_remote(given):
        from auditkit.package.remote import fetch_source

        return fetch_source(given, stream_archive=stream_archive, allow_foreign=allow_foreign)
    return open_local(Path(given), given, stream_archive=stream_archive, allow_foreign=allow_foreign,
                      default=default)


def open_local(path: Path, given: str, *, stream_archive: bool = False, allow_foreign: bool = False,
               default: bool = False, notes: list[str] | None = None) -> PackageSource:
    notes = list(notes or [])
    try:
        st = os.stat(path)
    except FileNotFoundError:
        hint = ("give the package: a directory, an archive (any name), an https:// URL or an arXiv identifier"
                + ("; `ancillary` is only the default, relative to the current directory" if default else ""))
        raise AuditError("no such package: no such file or directory" + (" (the default package name)" if default
                                                                           else ""),
                         path=given, hint=hint) from None
    except OSError as exc:
        raise AuditError(f"cannot open: {exc.strerror}", path=given) from None
    if stat.S_ISDIR(st.st_mode):
        where = locate_in_directory(path)
        if where is None:
            if not allow_foreign and _holds_data(path):
                raise foreign_layout(given, given, "no protocol.json and no MANIFEST.json")
            if allow_foreign:
                return PackageSource(given, "directory", root=path, notes=notes)
            raise AuditError("not a package: this directory holds neither MANIFEST.json nor protocol.json, nor "
                             f"does any directory up to {SEARCH_DEPTH} levels below it", path=given,
                             hint="give the package's top directory, the one that holds MANIFEST.json and "
                                  "protocol.json (an e-print's anc/, say); nothing was read")
        root = path / where if where else path
        if not allow_foreign:
            refuse_foreign_directory(given, root, str(root) if where else given)
        return PackageSource(given, "directory", root=root, found_at=where, notes=notes)
    if not stat.S_ISREG(st.st_mode):
        raise AuditError("not a directory or a regular file", path=given,
                         hint="give the package directory or an archive of it")
    kind = archive_kind(path) or ("named" if path.name.endswith(ARCHIVE_SUFFIXES) else None)
    if kind is None:
        raise AuditError("not a package directory, and not an archive: its first bytes are not gzip, bzip2, xz "
                         "or tar", path=given,
                         hint="give the package directory, or a .tar/.tar.gz of it (any name: auditkit reads the "
                              "magic bytes)")
    if stream_archive:
        return PackageSource(given, "archive", archive=path, notes=notes)
    return snapshot_archive(path, given, allow_foreign=allow_foreign, notes=notes)


_MANIFEST_LIKE = re.compile(r"manifest|checksum|sha256sum|md5sum", re.I)


def _holds_data(d: Path) -> bool:
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


def snapshot_archive(path: Path, given: str, *, allow_foreign: bool = False,
                     notes: list[str] | None = None) -> PackageSource:
    """Read the archive once, streamed and bounded, into a private directory (0700) that `close()`
    removes; the package inside is then located there."""
    from auditkit.package.archive import read_members

    tmp = Path(tempfile.mkdtemp(prefix="auditkit-pkg-"))
    src = PackageSource(given, "archive", archive=path, notes=list(notes or []), _cleanup=[tmp])
    try:
        for name, f in read_members(path):
            dest = tmp.joinpath(*name.split("/"))
            try:
                dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            except (FileExistsError, NotADirectoryError):
                continue      # a member that is also another member's directory: `verify` reports the archive
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        where = locate_in_directory(tmp)
        if where is None:
            raise AuditError("not a package: the archive holds no protocol.json or MANIFEST.json at its top or "
                             f"up to {SEARCH_DEPTH} directories down", path=given,
                             hint="give the archive of a package (an arXiv e-print holds it under anc/)")
        src.root = tmp / where if where else tmp
        # `tar czf pkg.tgz pkg` holds one top directory: the package itself, not one found below the top
        src.found_at = "" if where.count("/") == 1 and len(os.listdir(tmp)) == 1 else where
        if not allow_foreign:
            refuse_foreign_directory(given, src.root, given)
    except OSError as exc:
        src.close()
        raise AuditError(f"cannot read the archive into a private snapshot: {exc.strerror or exc}", path=given,
                         hint="check the space in the temporary directory (TMPDIR)") from None
    except BaseException:
        src.close()
        raise
    return src

"""A package on this machine: a directory (the package found at its top or below it), or an
archive of any name, streamed by `verify` or read once, bounded, into a private snapshot directory
(mode 0700) that `PackageSource.close()` removes.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.locate import (ARCHIVE_SUFFIXES, SEARCH_DEPTH, PackageSource, archive_kind, foreign_layout,
                                     holds_data, locate_in_directory, refuse_foreign_directory)


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
            if not allow_foreign and holds_data(path):
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

"""Read a package — a directory or a .tar/.tar.gz/.tgz of one — file by file, streaming.

Every file is read once, in 1 MiB chunks, by `scanned.scan_file`: the chunks are
hashed and handed to the consumer that the file's kind needs (small JSON/CSV
documents are kept for parsing, checkpoints are checked as they stream).
Archives are read in one pass and never extracted, with bounded work: the
member count, the inflated bytes and the inflation ratio are capped as the
stream is read (`_Budget`).  Symlinks, special files, absolute paths, `..`
and undecodable names are findings, never read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable, Iterator

from auditkit.errors import AuditError
from auditkit.package.listing import NEVER_LISTED_DIRS
from auditkit.package.scanned import (CHUNK, PackageScan, default_max_bytes, default_max_members, printable_name,
                                      read_first, scan_document, scan_file, unsafe_reason, wants_content)
from auditkit.errors import PackageDefect
from auditkit.package.store import PackageStore

def scan_package(path: str | Path, *, jobs: int | None = None, keep_checkpoints: bool = False,
                 progress: Callable[[int], None] | None = None, total_hint: Callable[[int], None] | None = None,
                 max_members: int | None = None, max_bytes: int | None = None, max_ratio: int | None = None,
                 on_documents: Callable[[PackageScan], None] | None = None,
                 processes: bool | None = False, on_started: Callable[[bool], None] | None = None) -> PackageScan:
    """Read every file of the package once. Raises AuditError when the package cannot be read at all.

    `total_hint(n)` is called once with the bytes to read (for a directory: the
    files' sizes; for an archive: its size on disk) before reading starts.
    A directory's JSON/CSV documents outside source/ (`read_first`) are read first;
    `on_documents(scan)` is then called in the caller's thread (once, as soon as all of
    them are in) while the readers go on with the other files.  `processes`: read a directory in forked
    processes (True), in threads (False), or choose (None: processes for a large
    package where forking is safe).  `on_started(in_processes)` is called once the readers
    run (after any fork: a thread it starts is not copied into a reader).
    """
    path = Path(path)
    if path.is_dir():
        return _scan_dir(path, jobs or os.cpu_count() or 1, keep_checkpoints, progress, total_hint, on_documents,
                         processes, on_started)
    if path.is_file() and (path.name.endswith((".tar", ".tar.gz", ".tgz")) or _is_archive(path)):
        from auditkit.package.archive import scan_tar   # tarfile and the compressors only for an archive

        if on_started:
            on_started(False)
        if total_hint:
            total_hint(path.stat().st_size)
        return scan_tar(path, keep_checkpoints, progress,
                         default_max_members() if max_members is None else max_members,
                         default_max_bytes() if max_bytes is None else max_bytes, max_ratio)
    if not path.exists():
        raise AuditError("no such package", path=str(path), hint="give a package directory or a .tar/.tar.gz/.tgz of one")
    raise AuditError("not a package directory or a .tar/.tar.gz/.tgz archive", path=str(path))


def _is_archive(path: Path) -> bool:
    """An archive by its magic bytes, whatever its name (arXiv serves e-prints with none)."""
    from auditkit.package.locate import archive_kind

    return archive_kind(path) is not None


def _walk(root: Path, out: PackageScan) -> Iterator[tuple[str, int]]:
    """(relative path, size) of the regular files under `root`; symlinks, special files and unsafe
    or non-UTF-8 names become problems, never read.  os.scandir: one lstat per entry, none followed.
    A version-control directory (`.git`, at any depth) is not part of a package: `manifest build`
    never lists it, and this walk does not enter it either."""
    stack = [("", str(root), False)]      # (prefix, directory, whether a directory on the way may be unsafe)
    while stack:
        prefix, d, above = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG or not prefix:
                raise
            # a directory nested past PATH_MAX (thousands of levels): a finding at it, the rest is still checked
            out.problems.append(("unsafe-path", printable_name(prefix.rstrip("/")), _TOO_DEEP))
            continue
        for e in entries:
            if e.name in NEVER_LISTED_DIRS:
                continue
            rel = prefix + e.name
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:
                    raise
                out.problems.append(("unsafe-path", printable_name(rel), _TOO_DEEP))
                continue
            if printable_name(rel) != rel:
                out.problems.append(("name-not-utf8", printable_name(rel),
                                     "a name that is not UTF-8: it cannot be listed in a MANIFEST"))
            elif stat.S_ISLNK(st.st_mode):
                out.problems.append(("symlink", rel, f"a symbolic link to {printable_name(os.readlink(e.path))}"))
            elif stat.S_ISDIR(st.st_mode):
                stack.append((rel + "/", e.path, above or _may_be_unsafe(e.name, not prefix)))
            elif not stat.S_ISREG(st.st_mode):
                out.problems.append(("special-file", rel, f"{_kind(st.st_mode)}, not a regular file"))
            elif (above or _may_be_unsafe(e.name, not prefix)) and (why := unsafe_reason(rel)) is not None:
                out.problems.append(("unsafe-path", rel, why))
            else:
                yield rel, st.st_size


_TOO_DEEP = "nested deeper than a path can name (PATH_MAX): not read"


def _may_be_unsafe(name: str, top: bool) -> bool:
    """Whether a listed `name` could make a path unsafe (`unsafe_reason` then decides): UTF-8 is
    checked before, and a listed name holds no '/' or NUL and is never '.' or '..', so only a
    backslash, a line break, or a drive-like 'C:' at the top is left.  (Asked per name: a full
    `unsafe_reason` of each of thousands of paths was a fifth of the walk.)"""
    return "\\" in name or "\n" in name or "\r" in name or (top and name[1:2] == ":")


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")


PROCESS_MIN_BYTES = 32 << 20   # below this, forking readers costs more than it saves


def _scan_dir(root: Path, jobs: int, keep: bool, progress, total_hint, on_documents=None,
              processes: bool | None = None, on_started=None) -> PackageScan:
    """Every regular file under `root`, each opened through the store (`PackageStore.open`: every path
    component opened without following a link, the file non-blocking, refused unless regular), so a
    link or FIFO swapped in after the listing is refused, never followed or waited on.

    Readers are `jobs` threads, or `jobs` forked processes (`procread`) when `processes` is True, or
    when it is None and the package is large enough and forking is safe here (never with `keep`)."""
    from auditkit.package import procread

    out = PackageScan()
    try:
        store = PackageStore(root)
        # the documents the checks consume first (their checks overlap the rest), then the other files
        # largest first (readers finish together), then the other documents (source/'s), small files
        # that fill in at the end for whichever reader is behind
        items = sorted(_walk(root, out), key=lambda t: (not read_first(t[0]), wants_content(t[0]), -t[1], t[0]))
    except OSError as exc:
        raise AuditError(f"cannot list the package: {exc}", path=str(root)) from exc
    total = sum(s for _, s in items)
    if total_hint:
        total_hint(total)

    def one(item, progress=progress):
        rel, _ = item
        try:
            fd, size = store.open_fd(rel)
        except PackageDefect as exc:
            if exc.finding.code == "missing-file":
                raise AuditError(f"{rel} disappeared while it was being verified", path=str(root),
                                 hint="verify a package that nothing is writing to") from None
            code = "special-file" if exc.finding.code == "not-regular-file" else exc.finding.code
            return (code, rel, f"{exc.finding.found or exc.finding.message} (found when opening it)")
        except AuditError as exc:
            raise AuditError(f"cannot read {rel}: {exc.message}", path=str(root)) from exc
        try:
            if wants_content(rel):
                return scan_document(rel, fd, size, progress, parse=not read_first(rel))
            with os.fdopen(fd, "rb") as f:
                fd = -1
                return scan_file(rel, f, keep=keep, progress=progress, mapped=procread.in_worker())
        except OSError as exc:
            raise AuditError(f"cannot read {rel}: {exc}", path=str(root)) from exc
        finally:
            if fd >= 0:
                os.close(fd)

    n_first = sum(1 for rel, _ in items if read_first(rel))
    first_in, handed = 0, False

    def land(results: list) -> None:
        nonlocal first_in, handed
        for fs in results:
            if isinstance(fs, tuple):
                out.problems.append(fs)
                first_in += read_first(fs[1])
            else:
                out.files[fs.path] = fs
                first_in += read_first(fs.path)
        if not handed and first_in == n_first and on_documents is not None:
            handed = True
            on_documents(out)

    if processes is None:
        processes = not keep and total >= PROCESS_MIN_BYTES and procread.available()
    if processes and not keep and procread.available():
        # the reader processes take the rest at once, largest first; this process reads the documents
        # the checks consume meanwhile and checks them while the readers hash.  Where a core is left
        # over (fewer readers than cores) it then reads the other documents too, from the queue's back
        # (as it always read every document; never a file that is not one).
        with procread.Readers(_batches(items[n_first:]), max(1, jobs), one, progress) as readers:
            if on_started:
                on_started(True)
            land([])
            for batch in _batches(items[:n_first]):
                land([one(item) for item in batch])
            if readers.n < _cores():
                while (j := readers.take_back(lambda batch: all(wants_content(rel) for rel, _ in batch))) is not None:
                    land([one(item) for item in readers.batches[j]])
                    readers.collect(lambda i, results: land(results), block=False)
            readers.collect(lambda i, results: land(results))
    else:
        if on_started:
            on_started(False)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            batches = _batches(items[:n_first]) + _batches(items[n_first:])
            for results in pool.map(lambda batch: [one(item) for item in batch], batches):
                land(results)
    if not handed and on_documents is not None:
        on_documents(out)
    return out


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _batches(items: list, max_files: int = 64, max_bytes: int = 4 * CHUNK) -> list[list]:
    """Small files grouped so that one task reads many (a task costs more than reading a small file);
    a large file is a task of its own.  Order is kept."""
    out: list[list] = []
    cur: list = []
    size = 0
    for item in items:
        if cur and (len(cur) >= max_files or size + item[-1] > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(item)
        size += item[-1]
    if cur:
        out.append(cur)
    return out

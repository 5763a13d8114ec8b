"""Read a package — a directory or a .tar/.tar.gz/.tgz of one — file by file, streaming.

Every file is read once, in 1 MiB chunks, by `scan_file`: the chunks are
hashed and handed to the consumer that the file's kind needs (small JSON/CSV
documents are kept for parsing, checkpoints are checked as they stream).
Archives are read in one pass and never extracted.  Symlinks, special files,
absolute paths and `..` are refused, and so are archives beyond a member
count or total size cap.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import tempfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

from auditkit.package.checkpoint import CheckpointScan, CheckpointScanner
from auditkit.errors import AuditError
from auditkit.package.store import PackageDefect, PackageStore

CHUNK = 1 << 20
DOC_CAP = 64 * 1024 * 1024       # JSON/CSV documents parsed in memory up to this size (beyond: a finding)
SPOOL_IN_MEMORY = 16 * 1024 * 1024  # --deep keeps checkpoints in a spooled temp file (outside the package)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise AuditError(f"{name} must be an integer", hint=f"unset it or give a number such as {default}") from None


def default_max_members() -> int:
    return _env_int("AUDITKIT_MAX_MEMBERS", 200_000)


def default_max_bytes() -> int:
    return _env_int("AUDITKIT_MAX_BYTES", 64 * 1024 ** 3)


@dataclass
class FileScan:
    path: str
    sha256: str
    bytes: int
    content: bytes | None = None          # kept for .json/.csv documents up to DOC_CAP
    checkpoint: CheckpointScan | None = None
    spool: object | None = None           # with keep: the checkpoint's bytes, in a temp file outside the package

    def read_spool(self) -> bytes | None:
        """The kept bytes (once), then the temp file is closed."""
        if self.spool is None:
            return None
        f, self.spool = self.spool, None
        try:
            f.seek(0)
            return f.read()
        finally:
            f.close()


@dataclass
class PackageScan:
    files: dict[str, FileScan] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (code, path, found)


def unsafe_reason(name: str) -> str | None:
    """Why a package-relative path is unsafe, or None."""
    if not name or "\x00" in name:
        return "empty or NUL in the path"
    if printable_name(name) != name:
        return "a name that is not UTF-8"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or name.startswith("\\"):
        return "absolute path"
    if "\\" in name:
        return "backslash in the path"
    if "\n" in name or "\r" in name:
        return "line break in the path"
    if ".." in name.split("/"):
        return "'..' in the path"
    return None


def wants_content(rel: str) -> bool:
    return rel.endswith((".json", ".csv"))


_local = threading.local()


def _buffer() -> memoryview:
    """This thread's 1 MiB read buffer: allocated once, not once per file (thousands of small files)."""
    view = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(CHUNK))
    return view


def scan_file(rel: str, f: BinaryIO, *, keep: bool = False, progress: Callable[[int], None] | None = None) -> FileScan:
    """Hash `f` in 1 MiB reads and, from the same bytes, keep a small document or check a checkpoint."""
    h = hashlib.sha256()
    n = 0
    is_ckpt = rel.endswith(".safetensors")
    scanner = CheckpointScanner() if is_ckpt else None
    keep_doc = wants_content(rel)
    spool = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) if keep and is_ckpt else None
    parts: list[bytes] = []
    view = _buffer()
    readinto = getattr(f, "readinto", None)
    while True:
        if readinto is not None:
            k = readinto(view)
            if not k:
                break
            chunk = view[:k]
        else:
            data = f.read(CHUNK)
            if not data:
                break
            k = len(data)
            chunk = memoryview(data)
        h.update(chunk)
        n += k
        if scanner is not None:
            scanner.feed(chunk)
        if spool is not None:
            spool.write(chunk)
        if keep_doc:
            if n <= DOC_CAP:
                parts.append(bytes(chunk))
            elif parts:
                parts = []
        if progress:
            progress(k)
    content = b"".join(parts) if keep_doc and n <= DOC_CAP else None
    return FileScan(rel, h.hexdigest(), n, content, scanner.finish() if scanner else None, spool)


def scan_package(path: str | Path, *, jobs: int | None = None, keep_checkpoints: bool = False,
                 progress: Callable[[int], None] | None = None, total_hint: Callable[[int], None] | None = None,
                 max_members: int | None = None, max_bytes: int | None = None,
                 on_documents: Callable[[PackageScan], None] | None = None,
                 processes: bool | None = False, on_started: Callable[[], None] | None = None) -> PackageScan:
    """Read every file of the package once. Raises AuditError when the package cannot be read at all.

    `total_hint(n)` is called once with the bytes to read (for a directory: the
    files' sizes; for an archive: its size on disk) before reading starts.
    A directory's JSON/CSV documents are read first; `on_documents(scan)` is then
    called in the caller's thread (once, as soon as every document is in) while the
    readers go on with the other files.  `processes`: read a directory in forked
    processes (True), in threads (False), or choose (None: processes for a large
    package where forking is safe).  `on_started(in_processes)` is called once the readers
    run (after any fork: a thread it starts is not copied into a reader).
    """
    path = Path(path)
    if path.is_dir():
        return _scan_dir(path, jobs or os.cpu_count() or 1, keep_checkpoints, progress, total_hint, on_documents,
                         processes, on_started)
    if path.is_file() and path.name.endswith((".tar", ".tar.gz", ".tgz")):
        if on_started:
            on_started(False)
        if total_hint:
            total_hint(path.stat().st_size)
        return _scan_tar(path, keep_checkpoints, progress,
                         default_max_members() if max_members is None else max_members,
                         default_max_bytes() if max_bytes is None else max_bytes)
    if not path.exists():
        raise AuditError("no such package", path=str(path), hint="give a package directory or a .tar/.tar.gz/.tgz of one")
    raise AuditError("not a package directory or a .tar/.tar.gz/.tgz archive", path=str(path))


def printable_name(name: str) -> str:
    """`name` as text that can be printed: bytes that are not UTF-8 (kept by the file system
    decoder as surrogates) shown as ``\\xNN``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def _walk(root: Path, out: PackageScan) -> Iterator[tuple[str, int]]:
    """(relative path, size) of the regular files under `root`; symlinks, special files and unsafe
    or non-UTF-8 names become problems, never read.  os.scandir: one lstat per entry, none followed."""
    stack = [("", str(root))]
    while stack:
        prefix, d = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = prefix + e.name
            st = e.stat(follow_symlinks=False)
            if printable_name(rel) != rel:
                out.problems.append(("name-not-utf8", printable_name(rel),
                                     "a name that is not UTF-8: it cannot be listed in a MANIFEST"))
            elif stat.S_ISLNK(st.st_mode):
                out.problems.append(("symlink", rel, f"a symbolic link to {printable_name(os.readlink(e.path))}"))
            elif stat.S_ISDIR(st.st_mode):
                stack.append((rel + "/", e.path))
            elif not stat.S_ISREG(st.st_mode):
                out.problems.append(("special-file", rel, f"{_kind(st.st_mode)}, not a regular file"))
            elif (why := unsafe_reason(rel)) is not None:
                out.problems.append(("unsafe-path", rel, why))
            else:
                yield rel, st.st_size


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
        # documents first (their checks overlap the rest), then largest first: readers finish together
        items = sorted(_walk(root, out), key=lambda t: (not wants_content(t[0]), -t[1], t[0]))
    except OSError as exc:
        raise AuditError(f"cannot list the package: {exc}", path=str(root)) from exc
    total = sum(s for _, s in items)
    if total_hint:
        total_hint(total)

    def one(item, progress=progress):
        rel, _ = item
        try:
            f = store.open(rel)
        except PackageDefect as exc:
            if exc.finding.code == "missing-file":
                raise AuditError(f"{rel} disappeared while it was being verified", path=str(root),
                                 hint="verify a package that nothing is writing to") from None
            code = "special-file" if exc.finding.code == "not-regular-file" else exc.finding.code
            return (code, rel, f"{exc.finding.found or exc.finding.message} (found when opening it)")
        except AuditError as exc:
            raise AuditError(f"cannot read {rel}: {exc.message}", path=str(root)) from exc
        with f:
            try:
                return scan_file(rel, f, keep=keep, progress=progress)
            except OSError as exc:
                raise AuditError(f"cannot read {rel}: {exc}", path=str(root)) from exc

    n_docs = sum(1 for rel, _ in items if wants_content(rel))
    batches = _batches(items[:n_docs]) + _batches(items[n_docs:])
    docs_in, handed = 0, False

    def land(results: list) -> None:
        nonlocal docs_in, handed
        for fs in results:
            if isinstance(fs, tuple):
                out.problems.append(fs)
                docs_in += wants_content(fs[1])
            else:
                out.files[fs.path] = fs
                docs_in += wants_content(fs.path)
        if not handed and docs_in == n_docs and on_documents is not None:
            handed = True
            on_documents(out)

    if processes is None:
        processes = not keep and total >= PROCESS_MIN_BYTES and procread.available()
    if processes and not keep and procread.available():
        procread.read_batches(batches, max(1, jobs), one, progress=progress, on_batch=lambda i, results: land(results),
                              on_started=(lambda: on_started(True)) if on_started else None)
    else:
        if on_started:
            on_started(False)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for results in pool.map(lambda batch: [one(item) for item in batch], batches):
                land(results)
    if not handed and on_documents is not None:
        on_documents(out)
    return out


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


def _scan_tar(path: Path, keep: bool, progress, max_members: int, max_bytes: int) -> PackageScan:
    """One pass over the members, in archive order; nothing is written to disk.

    An archive made with `tar czf pkg.tgz pkg` holds one top directory: when
    MANIFEST.json is not at the top but every file sits under one directory,
    that directory is the package root and is stripped.
    """
    out = PackageScan()
    count = total = 0
    scans: dict[str, FileScan] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for m in tar:
                count += 1
                if count > max_members:
                    raise AuditError(f"archive holds more than {max_members} members", path=str(path),
                                     hint="a package this large is refused; raise --max-members "
                                          "(or AUDITKIT_MAX_MEMBERS) if it is genuine")
                name = m.name
                why = unsafe_reason(name)
                if why:
                    out.problems.append(("unsafe-path", name, why))
                    continue
                name = PurePosixPath(name).as_posix()
                if m.isdir() or name in (".", ""):
                    continue
                if m.issym() or m.islnk():
                    out.problems.append(("symlink", name, f"a link to {m.linkname}"))
                    continue
                if not m.isfile():
                    out.problems.append(("special-file", name, "not a regular file"))
                    continue
                total += m.size
                if total > max_bytes:
                    raise AuditError(f"archive members add up to more than {max_bytes} bytes", path=str(path),
                                     hint="raise --max-bytes (or AUDITKIT_MAX_BYTES) if the package is genuinely "
                                          "this large")
                if name in scans:
                    out.problems.append(("archive-duplicate-member", name,
                                         "the same path twice in the archive (the later copy would win on extraction)"))
                    continue
                f = tar.extractfile(m)
                scans[name] = scan_file(name, f, keep=keep, progress=progress)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        for fs in scans.values():
            fs.read_spool()
        raise AuditError(f"cannot read the archive: {exc}", path=str(path),
                         hint="check that the file is a complete .tar, .tar.gz or .tgz") from exc
    tops = {n.split("/", 1)[0] for n in scans}
    prefix = ""
    if "MANIFEST.json" not in scans and len(tops) == 1 and all("/" in n for n in scans):
        prefix = tops.pop() + "/"
    for name, fs in scans.items():
        fs.path = name[len(prefix):]      # the suffix, which chose how the file was read, is unchanged
        out.files[fs.path] = fs
    out.problems = [(c, n[len(prefix):] if prefix and c != "unsafe-path" and n.startswith(prefix) else n, why)
                    for c, n, why in out.problems]   # an unsafe member keeps its name as the archive spells it
    return out

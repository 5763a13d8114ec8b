"""Read a package — a directory or a .tar/.tar.gz/.tgz of one — file by file, streaming.

Every file is read once, in 1 MiB chunks, by `scan_file`: the chunks are
hashed and handed to the consumer that the file's kind needs (small JSON/CSV
documents are kept for parsing, checkpoints are checked as they stream).
Archives are read in one pass and never extracted, with bounded work: the
member count, the inflated bytes and the inflation ratio are capped as the
stream is read (`_Budget`).  Symlinks, special files, absolute paths, `..`
and undecodable names are findings, never read.
"""

from __future__ import annotations

import hashlib
import io
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
    # tarfile parses a header in ~20-50 us: 50,000 members are refused within a few seconds, and a
    # package of a thousand runs holds a few thousand files
    return _env_int("AUDITKIT_MAX_MEMBERS", 50_000)


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


def scan_document(rel: str, fd: int, size: int, progress: Callable[[int], None] | None = None) -> FileScan:
    """`scan_file` for a JSON/CSV document of `size` bytes (as fstat said) at `fd`: read whole with one
    read for its size and one to see its end (a file that grew meanwhile is read to its end)."""
    if size > DOC_CAP:
        with os.fdopen(os.dup(fd), "rb") as f:
            return scan_file(rel, f, progress=progress)
    parts = [os.read(fd, size + 1)]
    while parts[-1]:
        parts.append(os.read(fd, CHUNK))
    data = b"".join(parts) if len(parts) > 2 else parts[0]
    n = len(data)
    if progress and n:
        progress(n)
    return FileScan(rel, hashlib.sha256(data).hexdigest(), n, data if n <= DOC_CAP else None)


def scan_package(path: str | Path, *, jobs: int | None = None, keep_checkpoints: bool = False,
                 progress: Callable[[int], None] | None = None, total_hint: Callable[[int], None] | None = None,
                 max_members: int | None = None, max_bytes: int | None = None, max_ratio: int | None = None,
                 on_documents: Callable[[PackageScan], None] | None = None,
                 processes: bool | None = False, on_started: Callable[[bool], None] | None = None) -> PackageScan:
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
                         default_max_bytes() if max_bytes is None else max_bytes, max_ratio)
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


NEVER_LISTED_DIRS = (".git",)  # a version-control directory is not part of the package


def _walk(root: Path, out: PackageScan) -> Iterator[tuple[str, int]]:
    """(relative path, size) of the regular files under `root`; symlinks, special files and unsafe
    or non-UTF-8 names become problems, never read.  os.scandir: one lstat per entry, none followed.
    A version-control directory (`.git`, at any depth) is not part of a package: `manifest build`
    never lists it, and this walk does not enter it either."""
    stack = [("", str(root))]
    while stack:
        prefix, d = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name in NEVER_LISTED_DIRS:
                continue
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
                return scan_document(rel, fd, size, progress)
            with os.fdopen(fd, "rb") as f:
                fd = -1
                return scan_file(rel, f, keep=keep, progress=progress)
        except OSError as exc:
            raise AuditError(f"cannot read {rel}: {exc}", path=str(root)) from exc
        finally:
            if fd >= 0:
                os.close(fd)

    n_docs = sum(1 for rel, _ in items if wants_content(rel))
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
        # the reader processes take the large files at once; this process reads the documents meanwhile
        # (and checks them while the readers hash)
        rest = items[n_docs:]
        large = _batches(rest)
        with procread.Readers(large, max(1, jobs), one, progress) as readers:
            if on_started:
                on_started(True)
            for batch in _batches(items[:n_docs]):
                land([one(item) for item in batch])
            readers.collect(lambda i, results: land(results))
    else:
        if on_started:
            on_started(False)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            batches = _batches(items[:n_docs]) + _batches(items[n_docs:])
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


# -- archives: one pass, never extracted, bounded work ------------------------------------------

ARCHIVE_META_CAP = 1 << 20          # a pax or GNU long-name header larger than this is refused unread
RATIO_FLOOR = 64 * CHUNK            # the inflation-ratio cap applies once this much has come out
GZIP_READ = 256 * 1024              # compressed bytes read ahead: the ratio cap acts by RATIO_FLOOR at 200:1


class _Budget:
    """The work one archive may cost, checked after every read as the stream is consumed.

    `raw`: bytes read from the archive file; `produced`: bytes out of the
    decompressor (the tar stream, headers and skipped members included);
    `content`: member bytes handed to the readers (a sparse member's holes
    included, which the stream never holds).  Past `max_bytes` out, or past
    `max_ratio` times the bytes read once `RATIO_FLOOR` is out, the archive is
    refused (AuditError, exit 2): a gzip bomb or a sparse member claiming a
    huge size stops within a few seconds, not after the whole claim was hashed.
    """

    def __init__(self, path: Path, max_bytes: int, max_ratio: int):
        self.path, self.max_bytes, self.max_ratio = path, max_bytes, max_ratio
        self.raw = self.produced = self.content = 0

    def check(self) -> None:
        out = max(self.produced, self.content)
        if out > self.max_bytes:
            raise AuditError(f"archive inflates to more than {self.max_bytes} bytes (refused after reading "
                             f"{self.raw} bytes of it)", path=str(self.path),
                             hint="raise --max-bytes (or AUDITKIT_MAX_BYTES) if the package is genuinely this large")
        if out > RATIO_FLOOR and out > self.max_ratio * self.raw:
            raise AuditError(f"archive inflates more than {self.max_ratio}:1 ({out} bytes out of the first "
                             f"{self.raw}): a decompression or sparse-file bomb", path=str(self.path),
                             hint="genuine package files do not compress this well; if this one does, set "
                                  "AUDITKIT_MAX_RATIO higher")


class _CountedRaw(io.RawIOBase):
    """The archive file as the decompressor reads it: counts the bytes read."""

    def __init__(self, f, budget: _Budget):
        self._f, self._budget = f, budget

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = self._f.readinto(b)
        self._budget.raw += k
        return k


class _Produced(io.RawIOBase):
    """The decompressed tar stream, read in pieces of up to CHUNK (tarfile reads it through a 1 MiB
    io.BufferedReader); the budget is checked after every piece."""

    def __init__(self, f, budget: _Budget):
        self._f, self._budget = f, budget

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = self._f.readinto(b)
        self._budget.produced += k
        self._budget.check()
        return k


class _Content:
    """One member's bytes as `scan_file` reads them: counted (sparse holes too), the budget checked per read."""

    def __init__(self, f, budget: _Budget):
        self._f, self._budget = f, budget

    def readinto(self, view) -> int:
        k = self._f.readinto(view)
        self._budget.content += k
        self._budget.check()
        return k


class _Gunzip(io.RawIOBase):
    """The concatenated members of a gzip file, as `gzip` reads them (zero padding between members allowed,
    anything else after a member an error), inflated by zlib in reads of up to 1 MiB of output.

    zlib checks each member's header, CRC-32 and length (wbits 31).  Not `gzip.GzipFile`: on Python 3.11
    it inflates 8 KiB of input per call, which costs a fifth more CPU on a large archive.
    """

    def __init__(self, raw):
        self._raw, self._d, self._in, self._eof = raw, None, b"", False     # _d None: between members

    def readable(self) -> bool:
        return True

    def _more(self) -> bool:
        if not self._eof:
            data = self._raw.read(GZIP_READ)
            self._in += data
            self._eof = not data
        return bool(self._in)

    def readinto(self, b) -> int:
        while True:
            if self._d is None:                       # between members: zeros, then a member or the end
                while True:
                    self._in = self._in.lstrip(b"\0")
                    if self._in or not self._more():
                        break
                if not self._in:
                    return 0
                self._d = zlib.decompressobj(31)
            if not self._in and not self._more():
                raise EOFError("the gzip stream ends inside a member")
            out = self._d.decompress(self._in, len(b))
            if self._d.eof:
                self._in, self._d = self._d.unused_data, None
            else:
                self._in = self._d.unconsumed_tail
            if out:
                b[:len(out)] = out
                return len(out)


_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
               tarfile.SOLARIS_XHDTYPE)


class _HeaderTooLarge(Exception):
    """Raised inside tarfile's header parsing (which passes it on unchanged); becomes an AuditError."""


class _CappedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or GNU long-name header into memory whole: refuse one beyond ARCHIVE_META_CAP first.

    `_proc_member` is tarfile's dispatch on the member type, which its source names the entry point to
    override in a subclass; it is called for every header, extended ones included."""

    def _proc_member(self, tar):
        if self.type in _META_TYPES and self.size > ARCHIVE_META_CAP:
            raise _HeaderTooLarge(f"the extended header at byte {self.offset} declares {self.size} bytes "
                                  f"(at most {ARCHIVE_META_CAP})")
        return super()._proc_member(tar)


def _decompressed(raw: _CountedRaw, magic: bytes):
    """The tar stream inside the archive file: gzip, bzip2 or xz by their magic bytes, else plain tar."""
    import bz2
    import lzma

    if magic.startswith(b"\x1f\x8b"):
        return _Gunzip(raw)
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def _shown(name: str) -> str:
    """A member name fit to print: as is when plain, else escaped (control characters, undecodable bytes)."""
    if name.isprintable() and not any("\ud800" <= c <= "\udfff" for c in name):
        return name
    return ascii(name)[1:-1]


def _open_tar(stream) -> tarfile.TarFile:
    """The TarFile over the decompressed stream (tarfile reads the first member here)."""
    try:
        return tarfile.open(fileobj=stream, mode="r|", tarinfo=_CappedTarInfo)
    except ValueError as exc:         # tarfile lets this through on a malformed sparse map
        raise tarfile.ReadError(f"malformed member header: {exc}") from None


def _next_member(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    try:
        return tar.next()
    except ValueError as exc:
        raise tarfile.ReadError(f"malformed member header: {exc}") from None


def default_max_ratio() -> int:
    return _env_int("AUDITKIT_MAX_RATIO", 200)


def _scan_tar(path: Path, keep: bool, progress, max_members: int, max_bytes: int,
              max_ratio: int | None = None) -> PackageScan:
    """One pass over the members, in archive order; nothing is written to disk.

    Work is bounded as the stream is read (`_Budget`): members beyond
    `max_members`, inflated bytes beyond `max_bytes` (declared sizes are
    counted before a member is read, produced bytes as they come) and an
    inflation ratio beyond `max_ratio` are refused with AuditError (exit 2).
    Links, special files, unsafe or undecodable names, duplicates and data
    hidden after the end-of-archive marker are problems; no member is extracted.

    An archive made with `tar czf pkg.tgz pkg` holds one top directory: when
    MANIFEST.json is not at the top but every file sits under one directory,
    that directory is the package root and is stripped.
    """
    import lzma

    out = PackageScan()
    count = total = 0
    scans: dict[str, FileScan] = {}
    budget = _Budget(path, max_bytes, default_max_ratio() if max_ratio is None else max_ratio)
    try:
        with open(path, "rb", buffering=0) as f:
            magic = f.read(6)
            f.seek(0)
            stream = _decompressed(_CountedRaw(f, budget), magic)
            produced = io.BufferedReader(_Produced(stream, budget), CHUNK)
            with stream, produced, _open_tar(produced) as tar:
                while (m := _next_member(tar)) is not None:
                    tar.members.clear()       # stream mode keeps every member otherwise: memory per member
                    count += 1
                    if count > max_members:
                        raise AuditError(f"archive holds more than {max_members} members", path=str(path),
                                         hint="a package this large is refused; raise --max-members "
                                              "(or AUDITKIT_MAX_MEMBERS) if it is genuine")
                    name = m.name
                    why = unsafe_reason(name)
                    if why is None and name != _shown(name):
                        why = ("bytes that are not UTF-8 in the name" if any("\udc80" <= c <= "\udcff" for c in name)
                               else "a control character in the name")
                    if why:
                        out.problems.append(("unsafe-path", _shown(name), why))
                        continue
                    name = PurePosixPath(name).as_posix()
                    if m.isdir() or name in (".", ""):
                        continue
                    if m.issym() or m.islnk():
                        kind = "symbolic" if m.issym() else "hard"
                        out.problems.append(("symlink", name, f"a {kind} link to {_shown(m.linkname)}"))
                        continue
                    if not m.isfile():
                        out.problems.append(("special-file", name, "not a regular file"))
                        continue
                    total += m.size
                    if total > max_bytes:
                        raise AuditError(f"archive members add up to more than {max_bytes} bytes", path=str(path),
                                         hint="raise --max-bytes (or AUDITKIT_MAX_BYTES) if the package is "
                                              "genuinely this large")
                    if name in scans:
                        out.problems.append(("archive-duplicate-member", name,
                                             "the same path twice in the archive (the later copy would win on "
                                             "extraction)"))
                        continue
                    scans[name] = scan_file(name, _Content(tar.extractfile(m), budget), keep=keep,
                                            progress=progress)
                # after the end-of-archive marker only zeros may follow: members there are hidden
                # from this pass but seen by `tar --ignore-zeros`
                while chunk := tar.fileobj.read(CHUNK):
                    if chunk.strip(b"\0"):
                        out.problems.append(("archive-trailing-data", path.name,
                                             "data after the end-of-archive marker (hidden members?)"))
                        break
    except BaseException as exc:
        for fs in scans.values():     # --deep's spooled checkpoints: their temporary files go now
            fs.read_spool()
        if isinstance(exc, _HeaderTooLarge):
            raise AuditError(f"cannot read the archive: {exc}", path=str(path),
                             hint="a pax or GNU long-name header this large is not a package's; the archive is "
                                  "hostile or damaged") from None
        if isinstance(exc, (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)):
            raise AuditError(f"cannot read the archive: {exc}", path=str(path),
                             hint="check that the file is a complete .tar, .tar.gz or .tgz") from exc
        raise
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

"""What reading one file of a package yields, and the limits of reading: the hashing loop
(`scan_file`, `scan_document`), its results (`FileScan`, `PackageScan`) and the rules for names
(`unsafe_reason`, `printable_name`).  Shared by the directory reader (`package.scan`) and the
archive reader (`package.archive`), neither of which the other needs.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import threading
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from auditkit.errors import AuditError
from auditkit.package.checkpoint import CheckpointScan, CheckpointScanner
from auditkit.errors import PackageDefect
from auditkit.package.store import loads_strict

CHUNK = 1 << 20
MAP_WINDOW = 32 << 20            # a mapped read maps this much of a file at a time (RSS stays bounded)
MAP_MIN = 4 << 20                # smaller files are read: a mapping costs more than it saves
DOC_CAP = 64 * 1024 * 1024       # JSON/CSV documents parsed in memory up to this size (beyond: a finding)
SPOOL_IN_MEMORY = 16 * 1024 * 1024  # --deep keeps checkpoints in a spooled temp file (outside the package)


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise AuditError(f"{name} must be an integer", hint=f"unset it or give a number such as {default}") from None


def default_max_members() -> int:
    # tarfile parses a header in ~20-50 us: 50,000 members are refused within a few seconds, and a
    # package of a thousand runs holds a few thousand files
    return env_int("AUDITKIT_MAX_MEMBERS", 50_000)


def default_max_bytes() -> int:
    return env_int("AUDITKIT_MAX_BYTES", 64 * 1024 ** 3)


@dataclass
class FileScan:
    path: str
    sha256: str
    bytes: int
    content: bytes | None = None          # kept for .json/.csv documents up to DOC_CAP
    checkpoint: CheckpointScan | None = None
    spool: object | None = None           # with keep: the checkpoint's bytes, in a temp file outside the package
    parsed: tuple | None = None           # a JSON document parsed strictly where it was read: its findings

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
    found_at: str = ""                    # an archive's package below its top ('anc/' of an e-print)


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


SOURCE_DIR = "source/"


def read_first(rel: str) -> bool:
    """A document the checks consume (any JSON/CSV outside source/): read before the other files,
    by the process that checks, so that its checks run while the rest is read.  A source
    snapshot's documents are only hashed and, JSON, parsed for strictness where they are read
    (`FileScan.parsed`), wherever that is."""
    return wants_content(rel) and not rel.startswith(SOURCE_DIR)


_local = threading.local()


def _buffer() -> memoryview:
    """This thread's 1 MiB read buffer: allocated once, not once per file (thousands of small files)."""
    view = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(CHUNK))
    return view


def _hash_mapped(fd: int, size: int, h, scanner, progress) -> int:
    """Hash the first `size` bytes of file `fd` through read-only mappings of MAP_WINDOW bytes (no copy
    into a buffer: a sixth of hashing's CPU), feeding `scanner` the same bytes in CHUNK slices.
    A file that shrinks while mapped raises SIGBUS: only a forked reader process may call this."""
    off = 0
    while off < size:
        length = min(MAP_WINDOW, size - off)
        with mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=off) as m:
            view = memoryview(m)
            try:
                for i in range(0, length, CHUNK):
                    chunk = view[i:i + CHUNK]
                    h.update(chunk)
                    if scanner is not None:
                        scanner.feed(chunk)
                    chunk.release()
            finally:
                view.release()
        off += length
        if progress:
            progress(length)
    return off


def scan_file(rel: str, f: BinaryIO, *, keep: bool = False, progress: Callable[[int], None] | None = None,
              mapped: bool = False) -> FileScan:
    """Hash `f` in 1 MiB reads and, from the same bytes, keep a small document or check a checkpoint.
    `mapped`: a large plain file opened from disk is hashed through mappings (`_hash_mapped`), then
    read on from where they ended (a file that grew meanwhile is hashed whole, as reads would)."""
    h = hashlib.sha256()
    n = 0
    is_ckpt = rel.endswith(".safetensors")
    scanner = CheckpointScanner() if is_ckpt else None
    keep_doc = wants_content(rel)
    spool = None
    if keep and is_ckpt:
        import tempfile

        spool = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)
    parts: list[bytes] = []
    view = _buffer()
    readinto = getattr(f, "readinto", None)
    if mapped and not keep_doc and spool is None and isinstance(f, io.BufferedReader) \
            and isinstance(f.raw, io.FileIO) and f.tell() == 0:
        size = os.fstat(f.fileno()).st_size
        if size >= MAP_MIN:
            n = _hash_mapped(f.fileno(), size, h, scanner, progress)
            f.seek(n)
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


def scan_document(rel: str, fd: int, size: int, progress: Callable[[int], None] | None = None,
                  parse: bool = False) -> FileScan:
    """`scan_file` for a JSON/CSV document of `size` bytes (as fstat said) at `fd`, with one read for
    its size and one to see its end.  A file that is larger than fstat said (it grew meanwhile, or
    a read came back short) is read again from its start by `scan_file`, in chunks, keeping no more
    than DOC_CAP of it.  `parse`: a JSON document is also parsed strictly here, its findings kept
    as `parsed`."""
    data = os.read(fd, size + 1) if size <= DOC_CAP else b""
    if size > DOC_CAP or len(data) > size or os.read(fd, 1):
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(fd), "rb") as f:
            fs = scan_file(rel, f, progress=progress)
    else:
        if progress and data:
            progress(len(data))
        fs = FileScan(rel, hashlib.sha256(data).hexdigest(), len(data), data)
    if parse and fs.content is not None and rel.endswith(".json"):
        try:
            loads_strict(fs.content, rel)
            fs.parsed = ()
        except PackageDefect as exc:
            fs.parsed = (exc.finding,)
    return fs


def printable_name(name: str) -> str:
    """`name` as text that can be printed: bytes that are not UTF-8 (kept by the file system
    decoder as surrogates) shown as ``\\xNN``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")

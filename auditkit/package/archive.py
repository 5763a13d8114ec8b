"""Read a .tar/.tar.gz/.tgz package in one pass, never extracted, with bounded work.

The member count, the inflated bytes and the inflation ratio are capped as the
stream is read (`_Budget`): a gzip or sparse-member bomb or a many-member tar is
refused (exit 2) within seconds.  Each member is read by `scanned.scan_file`, as a
directory's files are.  Imported only when an archive is read.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from auditkit.errors import AuditError
from auditkit.package.scanned import CHUNK, FileScan, PackageScan, env_int, scan_file, unsafe_reason

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


class _Metered(io.RawIOBase):
    """A readable stream over `f` whose reads are charged to `budget` (by `readinto`)."""

    def __init__(self, f, budget: _Budget):
        self._f, self._budget = f, budget

    def readable(self) -> bool:
        return True


class _CountedRaw(_Metered):
    """The archive file as the decompressor reads it: counts the bytes read."""

    def readinto(self, b) -> int:
        k = self._f.readinto(b)
        self._budget.raw += k
        return k


class _Produced(_Metered):
    """The decompressed tar stream, read in pieces of up to CHUNK (tarfile reads it through a 1 MiB
    io.BufferedReader); the budget is checked after every piece."""

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
    return env_int("AUDITKIT_MAX_RATIO", 200)


@contextmanager
def _streamed_tar(path: Path, budget: "_Budget"):
    """The archive at `path` as a stream-mode TarFile, decompressed by its magic bytes, every byte
    read and produced charged to `budget`."""
    with open(path, "rb", buffering=0) as f:
        magic = f.read(6)
        f.seek(0)
        stream = _decompressed(_CountedRaw(f, budget), magic)
        produced = io.BufferedReader(_Produced(stream, budget), CHUNK)
        with stream, produced, _open_tar(produced) as tar:
            yield tar


def _counted_members(tar, path: Path, max_members: int, hint: str):
    """The members of a stream-mode `tar`, one at a time; AuditError past `max_members`."""
    count = 0
    while (m := _next_member(tar)) is not None:
        tar.members.clear()       # stream mode keeps every member otherwise: memory per member
        count += 1
        if count > max_members:
            raise AuditError(f"archive holds more than {max_members} members", path=str(path), hint=hint)
        yield m


def scan_tar(path: Path, keep: bool, progress, max_members: int, max_bytes: int,
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
    total = 0
    scans: dict[str, FileScan] = {}
    budget = _Budget(path, max_bytes, default_max_ratio() if max_ratio is None else max_ratio)
    try:
        with _streamed_tar(path, budget) as tar:
            for m in _counted_members(tar, path, max_members,
                                      "a package this large is refused; raise --max-members "
                                      "(or AUDITKIT_MAX_MEMBERS) if it is genuine"):
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
    if not any(prefix + m in scans for m in ("MANIFEST.json", "protocol.json")):
        # a package below the top (an arXiv e-print's anc/): only its files are the package's
        from auditkit.package.locate import prefix_in_names

        below = prefix_in_names(list(scans) + [n for c, n, _ in out.problems if c != "unsafe-path"])
        if below:
            prefix = out.found_at = below
            for name in [n for n in scans if not n.startswith(below)]:
                fs = scans.pop(name)
                fs.read_spool()
            out.problems = [p for p in out.problems if p[0] in ("unsafe-path", "archive-trailing-data")
                            or p[1].startswith(below)]
    for name, fs in scans.items():
        fs.path = name[len(prefix):]      # the suffix, which chose how the file was read, is unchanged
        out.files[fs.path] = fs
    out.problems = [(c, n[len(prefix):] if prefix and c != "unsafe-path" and n.startswith(prefix) else n, why)
                    for c, n, why in out.problems]   # an unsafe member keeps its name as the archive spells it
    return out


def read_members(path: Path, max_members: int | None = None, max_bytes: int | None = None,
                 max_ratio: int | None = None):
    """(name, file object) of every regular member with a safe name, in archive order: one streamed pass,
    bounded as `scan_tar` is (members, inflated bytes, ratio: AuditError past them).  Links, special
    files, unsafe names and duplicates are left out (`verify` reports them).  For the commands that read a
    package from an archive (`auditkit.package.source.snapshot_archive`)."""
    import lzma

    from auditkit.package.scanned import default_max_bytes, default_max_members

    max_members = default_max_members() if max_members is None else max_members
    max_bytes = default_max_bytes() if max_bytes is None else max_bytes
    budget = _Budget(path, max_bytes, default_max_ratio() if max_ratio is None else max_ratio)
    seen: set[str] = set()
    total = 0
    try:
        with _streamed_tar(path, budget) as tar:
            for m in _counted_members(tar, path, max_members,
                                      "raise AUDITKIT_MAX_MEMBERS if the package is genuinely this large"):
                name = m.name
                if unsafe_reason(name) or name != _shown(name) or not m.isfile():
                    continue
                name = PurePosixPath(name).as_posix()
                if name in seen or name in (".", ""):
                    continue
                seen.add(name)
                total += m.size
                if total > max_bytes:
                    raise AuditError(f"archive members add up to more than {max_bytes} bytes", path=str(path),
                                     hint="raise AUDITKIT_MAX_BYTES if the package is genuinely this large")
                yield name, _ContentReader(tar.extractfile(m), budget)
    except _HeaderTooLarge as exc:
        raise AuditError(f"cannot read the archive: {exc}", path=str(path),
                         hint="the archive is hostile or damaged") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise AuditError(f"cannot read the archive: {exc}", path=str(path),
                         hint="check that the file is a complete tar, tar.gz, tar.bz2 or tar.xz") from None


class _ContentReader(_Content):
    """A member's bytes for `shutil.copyfileobj` (`read`), charged to the budget as `_Content` is."""

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(CHUNK if n is None or n < 0 else n)
        self._budget.content += len(data)
        self._budget.check()
        return data

"""Hostile archives: bounded work, never extraction.

Each archive is built in tmp_path in well under a second, by streaming
(compressed blocks of zeros are made once and repeated: a 10 GiB bomb is a few
MB on disk at most, never GBs).  Each goes through `auditkit verify ARCHIVE`:
the exit code (2 for a refused archive, 1 for findings), the archive or member
named, no traceback, the work bounded by counts (members read, bytes inflated:
never seconds, which a loaded machine stretches), and not one byte written next
to the archive or in the working directory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
import tarfile
import zlib
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import pkgbuild  # noqa: E402
from fixtures.cli_untouched import Work, run_untouched  # noqa: E402
from auditkit.errors import AuditError  # noqa: E402
from auditkit.package.archive import ARCHIVE_META_CAP, RATIO_FLOOR, _Gunzip  # noqa: E402
from auditkit.package.scan import (default_max_members,  # noqa: E402
                                   scan_package)

GiB = 1 << 30
BLOCK = 8 << 20                      # zeros compressed once, repeated


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> bytes:
    """The minimal package's members under pkg/ as raw tar blocks, without the end-of-archive marker."""
    pkg = pkgbuild.build(tmp_path_factory.mktemp("hostile-tar") / "pkg")
    buf = io.BytesIO()
    tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT)
    for p in sorted(pkg.rglob("*")):
        if p.is_file():
            tar.add(p, arcname="pkg/" + p.relative_to(pkg).as_posix())
    return buf.getvalue()               # not closed: no end marker yet, more members can follow


def header(name: str, size: int = 0, type=tarfile.REGTYPE, linkname: str = "", **kw) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mtime = size, type, linkname, 0
    for k, v in kw.items():
        setattr(info, k, v)
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")


def member(name: str, data: bytes) -> bytes:
    return header(name, len(data)) + data + b"\0" * (-len(data) % 512)


END = b"\0" * 1024


@lru_cache(maxsize=None)
def zeros_compressed(kind: str) -> bytes:
    """BLOCK zeros as one complete gzip member / bzip2 stream / xz stream: repeating it is a valid file."""
    z = bytes(BLOCK)
    return {"gz": lambda: gzip.compress(z, 6, mtime=0), "bz2": lambda: bz2.compress(z, 9),
            "xz": lambda: lzma.compress(z, preset=0)}[kind]()


def compress(kind: str, data: bytes) -> bytes:
    return {"gz": lambda: gzip.compress(data, 6, mtime=0), "bz2": lambda: bz2.compress(data),
            "xz": lambda: lzma.compress(data)}[kind]()


def write(path: Path, *parts: bytes) -> Path:
    with open(path, "wb") as f:
        for part in parts:
            f.write(part)
    return path


MiB = 1 << 20


def verify(tmp_path: Path, archive: Path, *extra: str) -> tuple[int, str, Work]:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return run_untouched(["verify", str(archive), *extra], [archive.parent], cwd)


def refused(tmp_path, archive, words: str, *extra: str, inflated: int = 8 * MiB, members: int = 64) -> str:
    """Refused (exit 2) naming `archive` and `words`, after inflating at most `inflated` bytes and
    reading at most `members` members."""
    code, out, work = verify(tmp_path, archive, *extra)
    assert code == 2, out
    assert str(archive) in out and words in out, out
    assert work.inflated <= inflated and work.members <= members, work
    return out


# -- bombs: refused (exit 2) by the caps, checked as the stream is read ----------------------------

@pytest.mark.parametrize("kind,suffix", [("gz", "tgz"), ("bz2", "tar"), ("xz", "tar")])
def test_a_decompression_bomb_is_refused_after_bounded_work(kind, suffix, members, tmp_path):
    """A member declaring 10 GiB of zeros: the archive is a few MB (bzip2: 13 KB); refused at the ratio cap."""
    copies = 10 * GiB // BLOCK
    head = compress(kind, members + header("pkg/big.bin", 10 * GiB))
    archive = write(tmp_path / f"bomb.{suffix}", head, zeros_compressed(kind) * copies)
    assert archive.stat().st_size < 12 << 20
    out = refused(tmp_path, archive, "inflates more than 200:1", inflated=RATIO_FLOOR + 16 * MiB)
    assert "bomb" in out


def test_a_bomb_within_the_ratio_stops_at_the_byte_cap(members, tmp_path):
    """Past the byte cap, whatever the ratio: a plain (uncompressed) stream of 3 MB against --max-bytes 2 MB,
    hidden in a member whose name is refused (so its declared size is never counted, only its bytes read)."""
    archive = write(tmp_path / "big.tar", members, member("../skipped.bin", os.urandom(3 << 20)), END)
    out = refused(tmp_path, archive, "inflates to more than 2000000 bytes", "--max-bytes", "2000000",
                  inflated=2000000 + 2 * MiB)
    assert "--max-bytes" in out


def gnu_sparse(name: str, realsize: int, stored: bytes) -> bytes:
    """An old-GNU sparse member ('S'): one data region of len(stored) at offset 0, then a hole to `realsize`."""
    h = bytearray(header(name, len(stored), tarfile.GNUTYPE_SPARSE))
    h[386:398] = b"%011o\0" % 0                  # sparse[0].offset
    h[398:410] = b"%011o\0" % len(stored)        # sparse[0].numbytes
    h[482] = 0                                   # isextended
    h[483:495] = b"%011o\0" % realsize if realsize < 8 ** 11 else b"\x80" + realsize.to_bytes(11, "big")
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + stored + b"\0" * (-len(stored) % 512)


def test_a_sparse_member_claiming_40_gib_is_refused_after_bounded_work(members, tmp_path):
    """Below the 64 GiB byte cap, so its holes (zeros never stored) are what the ratio cap stops."""
    archive = write(tmp_path / "sparse.tar", members, gnu_sparse("pkg/holes.bin", 40 * GiB, b"x" * 512), END)
    with tarfile.open(archive) as t:            # the archive is what it claims: 40 GiB of content
        m = t.getmember("pkg/holes.bin")
        assert m.issparse() and m.size == 40 * GiB
    assert archive.stat().st_size < len(members) + 4096
    refused(tmp_path, archive, "sparse-file bomb", inflated=RATIO_FLOOR + 16 * MiB)


def test_a_sparse_member_claiming_2_60_bytes_is_refused_before_reading(members, tmp_path):
    archive = write(tmp_path / "sparse.tar", members, gnu_sparse("pkg/holes.bin", 2 ** 60, b"x" * 512), END)
    refused(tmp_path, archive, "members add up to more than")


def test_a_pax_size_of_10_30_bytes_is_refused_before_reading(members, tmp_path):
    info = tarfile.TarInfo("pkg/huge.bin")
    info.size = 10 ** 30                       # beyond the 12-byte field: written as a pax "size" record
    archive = write(tmp_path / "pax.tar", members, info.tobuf(format=tarfile.PAX_FORMAT), END)
    refused(tmp_path, archive, "members add up to more than")


@pytest.mark.parametrize("type", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_an_extended_header_of_8_gib_is_refused_unread(type, members, tmp_path):
    """tarfile would read a pax or long-name header into memory whole: refused from its declared size."""
    bomb = header("././@LongLink" if type == tarfile.GNUTYPE_LONGNAME else "pax", 8 * GiB, type)
    archive = write(tmp_path / "meta.tgz", compress("gz", members + bomb), zeros_compressed("gz") * 4)
    out = refused(tmp_path, archive, f"(at most {ARCHIVE_META_CAP})")
    assert "extended header" in out


@lru_cache(maxsize=None)
def many_headers(n: int) -> bytes:
    """`n` distinct empty-file members, made from one header by patching the name and the checksum."""
    template = bytearray(header("x"))
    out = []
    for i in range(n):
        h = template[:]
        h[0:100] = (b"pkg/m%07d" % i).ljust(100, b"\0")
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
        out.append(bytes(h))
    return b"".join(out)


def test_a_many_member_archive_is_refused_after_cap_plus_one_members(members, tmp_path):
    n = default_max_members() + 1
    archive = write(tmp_path / "many.tgz", compress("gz", members + many_headers(n) + END))
    refused(tmp_path, archive, f"more than {n - 1} members", members=n, inflated=n * 512 + 8 * MiB)


def test_the_member_cap_is_checked_as_members_come(members, tmp_path):
    """A lower cap stops earlier: the members are counted one by one, not after the whole archive was read."""
    archive = write(tmp_path / "many.tar", members, many_headers(2000), END)
    refused(tmp_path, archive, "more than 20 members", "--max-members", "20", members=21)


def test_the_ratio_cap_is_an_env_setting(members, tmp_path, monkeypatch):
    archive = write(tmp_path / "zeros.tgz", compress("gz", members + member("pkg/z.bin", bytes(RATIO_FLOOR + BLOCK))
                                                     + END))
    code, out, _ = verify(tmp_path, archive)
    assert code == 2 and "inflates more than 200:1" in out
    monkeypatch.setenv("AUDITKIT_MAX_RATIO", "5000")
    code, out, _ = verify(tmp_path, archive)
    assert code == 1 and "pkg/z.bin" not in out and "z.bin: file-unlisted" in out, out
    monkeypatch.setenv("AUDITKIT_MAX_RATIO", "many")
    code, out, _ = verify(tmp_path, archive)
    assert code == 2 and "AUDITKIT_MAX_RATIO must be an integer" in out


def test_the_budget_is_spent_as_the_stream_is_read(members, tmp_path):
    """The refusal comes after about RATIO_FLOOR bytes of a 10 GiB claim: the caps are not checked at the end."""
    from auditkit.package import archive as scan_mod

    archive = write(tmp_path / "bomb.tgz", compress("gz", members + header("pkg/big.bin", 10 * GiB)),
                    zeros_compressed("gz") * (10 * GiB // BLOCK))
    seen = []
    real = scan_mod._Budget.check
    scan_mod._Budget.check = lambda self: seen.append(max(self.produced, self.content)) or real(self)
    try:
        with pytest.raises(AuditError, match="200:1"):
            scan_package(archive)
    finally:
        scan_mod._Budget.check = real
    assert RATIO_FLOOR < seen[-1] < RATIO_FLOOR + 2 * (1 << 20)


# -- members that must never be extracted: findings (exit 1) ------------------------------------------

LINKS_AND_SPECIALS = [
    (header("pkg/link", 0, tarfile.SYMTYPE, "/etc/passwd"), "link: symlink", "a symbolic link to /etc/passwd"),
    (header("pkg/hard", 0, tarfile.LNKTYPE, "/etc/shadow"), "hard: symlink", "a hard link to /etc/shadow"),
    (header("pkg/up", 0, tarfile.SYMTYPE, "../../.."), "up: symlink", "a symbolic link to ../../.."),
    (header("pkg/tty", 0, tarfile.CHRTYPE, devmajor=4, devminor=1), "tty: special-file", "not a regular file"),
    (header("pkg/disk", 0, tarfile.BLKTYPE, devmajor=8, devminor=0), "disk: special-file", "not a regular file"),
    (header("pkg/fifo", 0, tarfile.FIFOTYPE), "fifo: special-file", "not a regular file"),
    (member("../escape.txt", b"x"), "../escape.txt: unsafe-path", "'..'"),
    (member("pkg/../../up.txt", b"x"), "pkg/../../up.txt: unsafe-path", "'..'"),
    (member("/etc/cron.d/evil", b"x"), "/etc/cron.d/evil: unsafe-path", "absolute"),
    (member("C:/evil.txt", b"x"), "C:/evil.txt: unsafe-path", "absolute"),
    (member("pkg/back\\slash", b"x"), "pkg/back\\slash: unsafe-path", "backslash"),
    (member("pkg/esc\x1b[2Jape", b"x"), "pkg/esc\\x1b[2Jape: unsafe-path", "control character"),
    (member("pkg/caf\udce9.txt", b"x"), "pkg/caf\\udce9.txt: unsafe-path", "not UTF-8"),
    (member("pkg/README.txt", b"a second copy\n"), "README.txt: archive-duplicate-member", "the later copy"),
    (member("pkg/./README.txt", b"a third copy\n"), "README.txt: archive-duplicate-member", "the later copy"),
]


@pytest.mark.parametrize("extra,line,why", LINKS_AND_SPECIALS, ids=[x[1].split(":")[0] for x in LINKS_AND_SPECIALS])
def test_links_special_files_and_unsafe_names_are_findings_never_extracted(extra, line, why, members, tmp_path):
    archive = write(tmp_path / "p.tar", members, extra, END)
    code, out, work = verify(tmp_path, archive)
    assert code == 1 and work.inflated <= 8 * MiB and work.members <= 64, out
    hit = [x for x in out.splitlines() if x.startswith(line)]
    assert hit and why in hit[0], out
    assert "README.txt: file-changed" not in out      # the first copy of a duplicate is the one verified


def test_the_clean_archive_verifies(members, tmp_path):
    archive = write(tmp_path / "p.tar", members, END)
    code, out, _ = verify(tmp_path, archive)
    assert code == 0, out


def test_a_member_hidden_after_the_end_marker_is_a_finding(members, tmp_path):
    archive = write(tmp_path / "p.tgz", compress("gz", members + END + member("pkg/hidden.txt", b"surprise\n") + END))
    code, out, _ = verify(tmp_path, archive)
    assert code == 1 and "p.tgz: archive-trailing-data" in out, out


def test_zero_padding_after_the_end_marker_is_fine(members, tmp_path):
    archive = write(tmp_path / "p.tgz", compress("gz", members + END + bytes(20 * 512)))
    assert verify(tmp_path, archive)[0] == 0


@pytest.mark.parametrize("name,blob,words", [
    ("crc.tgz", None, "incorrect data check"),
    ("random.tar", os.urandom(4096), "cannot read the archive"),
    ("empty.tgz", b"", "cannot read the archive"),
    ("cut-xz.tar", "cut-xz", "cannot read the archive"),
    ("cut-bz2.tar", "cut-bz2", "cannot read the archive"),
    ("sparse-map.tar", "sparse-map", "malformed member header"),
])
def test_a_damaged_archive_is_exit_2(name, blob, words, members, tmp_path):
    if blob is None:                  # flip one byte of the gzip trailer's CRC
        data = bytearray(compress("gz", members + END))
        data[-8] ^= 0xFF
        blob = bytes(data)
    elif blob == "cut-xz":
        blob = compress("xz", members + END)[:-100]
    elif blob == "cut-bz2":
        blob = compress("bz2", members + END)[:-100]
    elif blob == "sparse-map":          # a pax GNU.sparse 1.0 member whose map is not numbers
        info = tarfile.TarInfo("pkg/s")
        info.size = 512
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "pkg/s",
                            "GNU.sparse.realsize": "100"}
        blob = members + info.tobuf(format=tarfile.PAX_FORMAT) + b"zz\nyy\n".ljust(512, b"\0") + END
    refused(tmp_path, write(tmp_path / name, blob), words)


def test_an_archive_inside_the_archive_is_a_file_never_opened(members, tmp_path):
    inner = compress("gz", header("pkg/big.bin", 10 * GiB)) + zeros_compressed("gz") * 64
    archive = write(tmp_path / "p.tar", members, member("pkg/inner.tgz", inner), END)
    code, out, work = verify(tmp_path, archive)
    assert code == 1 and "inner.tgz: file-unlisted" in out, out
    assert work.inflated <= 8 * MiB, work                    # the outer stream only: 10 GiB if it were opened


# -- the gzip reader against the gzip module ------------------------------------------------------------

def gunzip_all(data: bytes, read: int) -> bytes:
    r = _Gunzip(io.BytesIO(data))
    buf = bytearray(read)
    out = []
    while k := r.readinto(memoryview(buf)):
        assert k <= read
        out.append(bytes(buf[:k]))
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(payloads=st.lists(st.one_of(st.binary(max_size=3000), st.integers(0, 300_000).map(bytes)), max_size=4),
       padding=st.lists(st.integers(0, 1100), min_size=4, max_size=4),
       damage=st.one_of(st.none(), st.tuples(st.sampled_from(["cut", "flip", "junk"]), st.integers(0, 10 ** 6))),
       read=st.sampled_from([997, 65536, 1 << 20]))
def test_gunzip_reads_what_the_gzip_module_reads(payloads, padding, damage, read):
    """Concatenated members, zero padding, truncation, a flipped byte or junk after a member: the same bytes out,
    or an error where the gzip module raises one."""
    data = b"".join(gzip.compress(p, 6, mtime=0) + b"\0" * z for p, z in zip(payloads, padding))
    if damage and data:
        how, at = damage
        at %= len(data)
        data = {"cut": data[:at], "flip": data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1:],
                "junk": data + b"junk"}[how]
    try:
        want = gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        want = None
    try:
        got = gunzip_all(data, read)
    except (OSError, EOFError, zlib.error):
        got = None
    assert got == want


@lru_cache(maxsize=None)
def small_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("pkg/MANIFEST.json", b"{}"), ("pkg/a.csv", b"x,y\n1,2\n"), ("pkg/b/c.txt", b"c" * 700)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@settings(max_examples=300, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), min_size=1, max_size=6),
       gz=st.booleans())
def test_a_damaged_header_is_read_or_refused_never_a_crash(flips, gz, tmp_path_factory):
    """Bytes changed anywhere in the headers of a small archive: a scan, or AuditError (exit 2), nothing else."""
    data = bytearray(small_tar())
    for at, x in flips:
        data[at % len(data)] ^= x
    blob = compress("gz", bytes(data)) if gz else bytes(data)
    path = tmp_path_factory.getbasetemp() / "fuzz.tgz"
    path.write_bytes(blob)
    try:
        scan_package(path)
    except AuditError:
        pass

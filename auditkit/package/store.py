"""The one store every command reads a package through.

Reading (`PackageStore`):

- regular files only: a symlink is never followed (every path component is
  opened with ``O_NOFOLLOW`` relative to its parent directory's descriptor),
  a FIFO, socket or device is refused before it could block (``O_NONBLOCK``
  then ``fstat``), nothing outside the package root is reachable (``..`` and
  absolute paths are refused);
- strict text: UTF-8 only (a BOM or an invalid byte names the file and offset);
- strict JSON (`loads_strict`): duplicate keys, ``NaN``/``Infinity``, numbers
  that overflow to infinity, integers too long to parse and nesting deeper
  than `MAX_JSON_DEPTH` are refused, naming the file and the key;
- one CSV reader (`read_csv`).

A read that fails because the *package* is defective raises `PackageDefect`
(an `AuditError` that carries a `Finding`): commands report it as a finding
(exit 1), not as "could not check" (exit 2).

Writing lives beside it: `auditkit.package.atomic` (the atomic writers and the
one rename), `auditkit.package.canonical` (the one JSON form auditkit writes)
and `auditkit.clock` (the one clock).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import stat
import threading
from pathlib import Path

from auditkit.errors import AuditError, defect
from auditkit.package.jsonscan import MAX_INT_DIGITS, MAX_JSON_DEPTH, json_depth, may_need_number_hooks

MAX_DOC_BYTES = 64 * 1024 * 1024  # a JSON/CSV document larger than this is not read whole
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


# --- paths ---------------------------------------------------------------------

def unsafe_reason(name: str) -> str | None:
    """Why a package-relative path may not be used (absolute, `..`, empty part, NUL), or None."""
    if not name or "\x00" in name:
        return "empty path or NUL byte"
    if name[0] == "/" or name[1:2] == ":" and name[0].isascii() and name[0].isalpha() or "\\" in name:
        return "absolute or Windows-style path"
    if _BAD_PARTS.intersection(name.split("/")):
        return "'..', '.' or an empty component"
    return None


_BAD_PARTS = frozenset(("", ".", ".."))


def _refuse_kind(rel: str, mode: int) -> None:
    kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else
            "a directory" if stat.S_ISDIR(mode) else "not a regular file")
    raise defect(rel, "not-regular-file", f"{kind}, not a regular file: auditkit reads regular files only",
                 expected="a regular file", found=kind,
                 hint="a package holds regular files; find out why this one is not (it is not followed or read)")


class PackageStore:
    """Read-only, no-follow access to the files under one package root."""

    DIR_CACHE = 64   # directory descriptors kept open (the directories of a package's files)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            st = os.stat(self.root)
        except OSError as exc:
            raise AuditError(f"cannot open the package: {exc.strerror}", path=str(root)) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise AuditError("not a package directory", path=str(root))
        # rel dir -> an fd opened component by component without following a link.  Reused for the
        # next file of the same directory: one openat per file instead of one per path component.
        # A directory swapped for a link after it was opened is never followed either: the fd
        # still names the directory that was there.
        self._dirs: dict[str, int] = {}
        self._lock = threading.Lock()
        # what one command parsed from this package's bytes and several of its steps read
        # (`auditkit.package.columns.shared_run_frame`): kept with the hash of the bytes parsed
        self.parsed: dict = {}

    def close(self) -> None:
        with self._lock:
            fds, self._dirs = list(self._dirs.values()), {}
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _dir_fd(self, rel: str, parts: list[str]) -> int:
        """The cached fd of directory parts[:-1] of `rel` (the lock is held)."""
        key = "/".join(parts[:-1])
        fd = self._dirs.get(key)
        if fd is not None:
            return fd
        dfd = os.open(self.root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nfd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dfd)
                except OSError as exc:
                    self._explain(rel, "/".join(parts[: i + 1]), exc, dfd, part)
                os.close(dfd)
                dfd = nfd
        except BaseException:
            os.close(dfd)
            raise
        if len(self._dirs) >= self.DIR_CACHE:
            os.close(self._dirs.pop(next(iter(self._dirs))))
        self._dirs[key] = dfd
        return dfd

    # -- opening --------------------------------------------------------------
    def open_fd(self, rel: str) -> tuple[int, int]:
        """(fd, size) of the regular file `rel`, opened as `open` does; the caller closes the fd."""
        why = unsafe_reason(rel)
        if why:
            raise defect(rel, "unsafe-path", f"unsafe path ({why})", hint="a package path is relative and stays inside it")
        parts = rel.split("/")
        with self._lock:
            dfd = self._dir_fd(rel, parts)
            try:
                fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=dfd)
            except OSError as exc:
                self._explain(rel, rel, exc, dfd, parts[-1])
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            _refuse_kind(rel, st.st_mode)
        # O_NONBLOCK stays set: it has no effect on a regular file (and saves two fcntl calls a file)
        return fd, st.st_size

    @staticmethod
    def _explain(rel: str, where: str, exc: OSError, dfd: int, name: str):
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                mode = os.lstat(name, dir_fd=dfd).st_mode
            except OSError:
                mode = 0
            if stat.S_ISLNK(mode) or exc.errno == errno.ELOOP:
                raise defect(rel, "symlink", f"{where} is a symbolic link: auditkit never follows one",
                             expected="a regular file", found="a symbolic link",
                             hint="a package holds regular files; a link could point anywhere") from None
            _refuse_kind(where, mode)
        if exc.errno == errno.ENOENT:
            raise defect(rel, "missing-file", "no such file in the package", expected="the file", found="nothing",
                         hint="the package does not hold a file another part of it refers to") from None
        raise AuditError(f"cannot read: {exc.strerror}", path=rel) from None

    def open(self, rel: str):
        """A binary file object for the regular file `rel` (PackageDefect otherwise)."""
        return os.fdopen(self.open_fd(rel)[0], "rb")

    # -- queries ------------------------------------------------------------------
    def kind(self, rel: str) -> str | None:
        """'file', 'dir', 'other' (symlink, FIFO, ...) or None (absent), without following links."""
        if unsafe_reason(rel):
            return "other"
        p = self.root / rel
        try:
            for parent in reversed(p.relative_to(self.root).parents[:-1]):
                if not stat.S_ISDIR(os.lstat(self.root / parent).st_mode):
                    return "other"
            mode = os.lstat(p).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"

    def is_file(self, rel: str) -> bool:
        return self.kind(rel) == "file"

    def listdir(self, rel: str) -> list[tuple[str, str]]:
        """(name, kind) of each entry of the package directory `rel` ("" for the root), sorted by
        name; kind as `kind` says it ('file', 'dir', 'other'), no link followed.  The directory and
        every one above it are opened without following a link (PackageDefect for a link, a file
        or nothing there)."""
        if rel:
            why = unsafe_reason(rel)
            if why:
                raise defect(rel, "unsafe-path", f"unsafe path ({why})",
                             hint="a package path is relative and stays inside it")
        parts = (rel.split("/") if rel else []) + [""]
        with self._lock:
            dfd = self._dir_fd(rel or ".", parts)
            # scandir on a descriptor reads a duplicate of it, rewound: the cached fd stays usable
            with os.scandir(dfd) as it:
                out = [(e.name, "file" if e.is_file(follow_symlinks=False) else
                        "dir" if e.is_dir(follow_symlinks=False) else "other") for e in it]
        return sorted(out)

    # -- reading ------------------------------------------------------------------
    def read_bytes(self, rel: str, cap: int = MAX_DOC_BYTES) -> bytes:
        with self.open(rel) as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise defect(rel, "file-too-large", f"larger than {cap} bytes, the most auditkit reads as one document",
                         expected=f"<= {cap} bytes", found=f"> {cap} bytes")
        return data

    def read_text(self, rel: str) -> str:
        return decode_utf8(self.read_bytes(rel), rel)

    def read_json(self, rel: str):
        return loads_strict(self.read_bytes(rel), rel)

    def read_csv(self, rel: str) -> tuple[list[str], list[dict[str, str]]]:
        return parse_csv(self.read_text(rel), rel)

    def sha256(self, rel: str) -> str:
        from auditkit.package.hashing import sha256_fileobj

        with self.open(rel) as f:
            return sha256_fileobj(f)[0]


def open_package(path: str | Path, *, what: str = "package") -> PackageStore:
    """The store of a package directory; AuditError (exit 2) if `path` holds no `protocol.json`."""
    if not os.path.lexists(path):
        raise AuditError(f"no such {what} directory", path=str(path),
                         hint="give the directory that holds protocol.json (with --package PATH where it is an "
                              f"option; a relative path is read from {os.getcwd()})")
    store = PackageStore(path) if os.path.isdir(path) else None
    if store is None:
        raise AuditError(f"not a directory: a {what} is the directory that holds protocol.json", path=str(path),
                         hint="give the package's directory (with --package PATH where it is an option)")
    if store.kind("protocol.json") != "file":
        raise AuditError(f"not a {what} directory (no protocol.json)", path=str(path),
                         hint="give the directory that holds protocol.json (with --package PATH where it is an option)")
    return store


# --- strict text, JSON and CSV -------------------------------------------------

def decode_utf8(data: bytes, rel: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        raise defect(rel, "text-bom", "starts with a UTF-8 byte-order mark", expected="UTF-8 without BOM",
                     found="BOM", hint="the file was rewritten by an editor or tool that adds a BOM")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise defect(rel, "text-not-utf8", f"not UTF-8 text (invalid byte at offset {exc.start})",
                     location=f"byte {exc.start}", expected="UTF-8", found=repr(data[exc.start:exc.start + 4]),
                     hint="package text files are UTF-8; find out which tool wrote this one") from None


class _Strict(ValueError):
    def __init__(self, code: str, message: str, key: str = ""):
        super().__init__(message)
        self.code, self.key = code, key


def _pairs(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):      # a key twice: name the first one repeated
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise _Strict("json-duplicate-key", f"key {k!r} appears twice in one object", k)
            seen.add(k)
    return out


def _constant(name):
    raise _Strict("json-non-finite", f"{name} is not JSON (no NaN or Infinity)", name)


def _float(text):
    x = float(text)
    if not math.isfinite(x):
        shown = f"{text[:20]}{'...' if len(text) > 20 else ''}"
        raise _Strict("json-non-finite", f"number {shown} overflows to infinity", shown)
    return x


def _int(text):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Strict("json-number-too-long", f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


# built once (json.loads with hooks builds a decoder per call); decoders keep no state between calls
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)
_DECODER_WITH_NUMBER_HOOKS = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant,
                                              parse_float=_float, parse_int=_int)


_VALUE_CODES = ("json-non-finite", "json-number-too-long")


class _Refused:
    """A number the strict reader refuses, left in place by `_locate_refused_value`."""


def _refused(_text):
    return _Refused()


def _lenient_float(text):
    x = float(text)
    return x if math.isfinite(x) else _Refused()


def _lenient_int(text):
    return _Refused() if len(text.lstrip("-")) > MAX_INT_DIGITS else int(text)


_LOCATING_DECODER = json.JSONDecoder(parse_constant=_refused, parse_float=_lenient_float, parse_int=_lenient_int)


def _locate_refused_value(text: str) -> str:
    """The JSON path (`$.checks[1].threshold`) of the first refused number in `text`, "" if not found.
    Run only once a document was refused (a second parse, with the refused values kept as markers);
    depth was bounded before the first parse."""
    try:
        doc = _LOCATING_DECODER.decode(text)
    except (ValueError, RecursionError):
        return ""
    from auditkit.findings import json_location

    stack = [(doc, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Refused):
            return json_location(path)
        if isinstance(value, dict):
            stack.extend((v, path + [k]) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((v, path + [i]) for i, v in reversed(list(enumerate(value))))
    return ""


def loads_strict(data: bytes | str, rel: str):
    """Parse JSON strictly (see the module docstring); PackageDefect naming `rel` and the key."""
    if isinstance(data, bytes):
        text = decode_utf8(data, rel)
        raw = data
    else:
        text, raw = data, data.encode("utf-8", "surrogatepass")
    # as many brackets in all as the limit allows cannot nest deeper than it: no need to tokenize
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise defect(rel, "json-too-deep", f"nested deeper than {MAX_JSON_DEPTH} levels",
                     expected=f"<= {MAX_JSON_DEPTH} levels", found=f"> {MAX_JSON_DEPTH}")
    decoder = _DECODER_WITH_NUMBER_HOOKS if may_need_number_hooks(raw) else _DECODER
    try:
        if text.startswith("\ufeff"):     # as json.loads: a BOM is not JSON
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return decoder.decode(text)
    except _Strict as exc:
        if exc.code in _VALUE_CODES:     # a refused number: named by the JSON path of the value
            where = _locate_refused_value(text)
            raise defect(rel, exc.code, str(exc), location=where, found=exc.key or str(exc),
                         expected="a finite JSON number",
                         hint="JSON has no NaN or Infinity, and a number that overflows a double has no value; "
                              "write the intended finite number") from None
        raise defect(rel, exc.code, str(exc), location=exc.key,
                     hint="a strict JSON reader refuses this; a second value for a key could hide a forged one") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        where = f"line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise defect(rel, "json-invalid", f"not valid JSON: {getattr(exc, 'msg', exc)}", location=where,
                     hint="the file is damaged or not JSON") from None


def csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows (dicts of strings) of CSV `text`: auditkit's one CSV parser (strict quoting).
    Raises csv.Error; `parse_csv` (a package's file) and `rows.read_csv_text` (any text) say whose."""
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    header = list(reader.fieldnames or [])
    return header, [dict(r) for r in reader]


def parse_csv(text: str, rel: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows (dicts of strings) of CSV `text` (PackageDefect if it is not CSV)."""
    try:
        return csv_rows(text)
    except csv.Error as exc:
        raise defect(rel, "csv-unreadable", f"not a readable CSV: {exc}") from None

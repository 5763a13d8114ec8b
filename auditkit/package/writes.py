"""The one rule for every file a command writes, and the one way it writes a set of files.

The rule (docs/SAFETY-io.md, "What auditkit reads and writes"):

- a file that does not exist yet is created; one that holds the very bytes
  the command would write is left as it is;
- a file that exists with other bytes is replaced only with ``--force``
  (``--in-place`` and ``manifest build`` say it by what they are: they rewrite
  the package's own derived files and its MANIFEST); without it the command
  stops with exit 2 naming the file, and nothing at all is written;
- a symbolic link, directory, FIFO or device where a file (or a directory on
  the way to it) would go is never written through or over, ``--force`` or not.

`write_files(dest, files, force=...)` applies it to a set of files under one
directory, staged then committed: every check runs and every new file is
written and synced to a temporary beside its target before the first target
changes; the targets are then renamed into place, and should a rename fail the
ones already done are put back (the old file, or no file).  Every directory
under `dest` is opened without following a link, relative to its parent's
descriptor, so a link planted after the checks is not followed either.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.atomic import TEMP_PREFIX, fsync_dir, rename
from auditkit.package.store import unsafe_reason

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_READ_CAP = 1 << 30   # a target larger than this is "other bytes" without being read


def _kind(mode: int) -> str:
    return ("a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else
            "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")


def _refuse(where: Path, found: str, *, what: str) -> AuditError:
    return AuditError(f"{what}: {found} is where auditkit would write {where}; nothing was written", path=str(where),
                      hint="auditkit never writes through or over a link, directory or special file "
                           "(--force or not): remove it, or choose another output")


def _cannot(where: Path, exc: OSError, *, what: str) -> AuditError:
    hint = ("the directory is not writable by you: choose another output" if exc.errno in (errno.EACCES, errno.EPERM,
                                                                                            errno.EROFS)
            else "free some space, or choose another output" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "look at the path and its permissions")
    return AuditError(f"{what}: cannot write {where}: {exc.strerror}; nothing was written", path=str(where), hint=hint)


@dataclass
class _Plan:
    rel: str
    data: bytes
    parts: list[str]
    exists: bool = False
    tmp: str = ""
    backup: str = ""
    done: bool = False
    dirs: list[str] = field(default_factory=list)


class _Dirs:
    """Directory descriptors under `dest`, each opened without following a link."""

    def __init__(self, dest: Path, *, what: str):
        self.dest, self.what = dest, what
        self.fds: dict[str, int] = {}
        self.created: list[str] = []      # directories this call made, parents first

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def get(self, key: str, *, create: bool) -> int | None:
        """fd of directory `key` ("" = dest); None when absent and not `create`."""
        if key in self.fds:
            return self.fds[key]
        if key == "":
            fd = os.open(self.dest, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        else:
            parent, _, name = key.rpartition("/")
            pfd = self.get(parent, create=create)
            if pfd is None:
                return None
            try:
                fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=pfd)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(name, 0o755, dir_fd=pfd)
                self.created.append(key)
                fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=pfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    try:
                        found = _kind(os.lstat(name, dir_fd=pfd).st_mode)
                    except OSError:
                        found = "something other than a directory"
                    raise _refuse(self.dest / key, found, what=self.what) from None
                raise
        self.fds[key] = fd
        return fd

    def remove_created(self) -> None:
        for key in reversed(self.created):
            parent, _, name = key.rpartition("/")
            fd = self.fds.pop(key, None)
            if fd is not None:
                os.close(fd)
            try:
                os.rmdir(name, dir_fd=self.fds[parent])
            except (OSError, KeyError):
                pass      # not empty (another writer's file): left, as everything not ours is


def _same_bytes(dfd: int, name: str, data: bytes) -> bool:
    fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data) or st.st_size > _READ_CAP:
            return False
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(len(data) + 1) == data
    finally:
        os.close(fd)


def write_files(dest: str | Path, files: dict[str, bytes], *, force: bool = False, what: str = "write",
                force_hint: str = "pass --force to replace them, or choose another output",
                dry_run: bool = False) -> list[str]:
    """Write `files` ({relative POSIX path: bytes}) under the directory `dest` by the one rule
    (module docstring); return the paths whose bytes changed, sorted.  Raises AuditError
    (exit 2) naming the file when the rule refuses or the system cannot write — and then
    nothing under `dest` changed.  `dest` itself is created when missing (and may be a link
    the user gave); below it nothing is followed.  `dry_run`: only the checks, before the
    content is known (any existing file counts as other bytes), so a command refuses before
    it works rather than after."""
    dest = Path(dest)
    for rel in files:
        why = unsafe_reason(rel)
        if why:
            raise AuditError(f"{what}: unsafe output path {rel!r} ({why}); nothing was written", path=str(dest))
    if dry_run and not os.path.lexists(dest):
        return sorted(files)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise _refuse(dest, "something other than a directory", what=what) from None
    except OSError as exc:
        raise _cannot(dest, exc, what=what) from None
    dirs = _Dirs(dest, what=what)
    plans: list[_Plan] = []
    at = [""]    # the file being worked on, for the message of an OSError
    try:
        try:
            # 1. check every target: nothing is created or changed before all pass
            conflicts = []
            for rel in sorted(files):
                parts = rel.split("/")
                p = _Plan(rel, files[rel], parts)
                at[0] = rel
                dfd = dirs.get("/".join(parts[:-1]), create=False)
                if dfd is not None:
                    try:
                        mode = os.lstat(parts[-1], dir_fd=dfd).st_mode
                    except FileNotFoundError:
                        mode = None
                    if mode is not None:
                        if not stat.S_ISREG(mode):
                            raise _refuse(dest / rel, _kind(mode), what=what)
                        if not dry_run and _same_bytes(dfd, parts[-1], p.data):
                            continue
                        p.exists = True
                        conflicts.append(rel)
                plans.append(p)
            if conflicts and not force:
                more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
                raise AuditError(f"{what}: the file exists with other bytes: {dest / conflicts[0]}{more}; "
                                 "nothing was written",
                                 path=str(dest / conflicts[0]), hint=force_hint)
            if dry_run:
                return sorted(p.rel for p in plans)
            # 2. stage: directories and synced temporaries beside their targets
            tag = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"   # short: a long file name still fits
            for i, p in enumerate(plans):
                at[0] = p.rel
                dfd = dirs.get("/".join(p.parts[:-1]), create=True)
                p.tmp = f"{tag}-{i}"
                fd = os.open(p.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644, dir_fd=dfd)
                try:
                    view = memoryview(p.data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if p.exists:   # the old file, kept under a second name until every rename is done
                    p.backup = f"{tag}-{i}.old"
                    os.link(p.parts[-1], p.backup, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            # 3. commit
            for p in plans:
                at[0] = p.rel
                dfd = dirs.fds["/".join(p.parts[:-1])]
                rename(p.tmp, p.parts[-1], dir_fd=dfd, sync=False)
                p.done, p.tmp = True, ""
        except OSError as exc:
            _roll_back(plans, dirs)
            raise _cannot(dest / at[0], exc, what=what) from None
        except BaseException:
            _roll_back(plans, dirs)
            raise
        for p in plans:
            dfd = dirs.fds["/".join(p.parts[:-1])]
            if p.backup:
                os.unlink(p.backup, dir_fd=dfd)
        for fd in set(dirs.fds.values()):
            fsync_dir(fd)
    finally:
        dirs.close()
    return sorted(p.rel for p in plans)


def _roll_back(plans: list[_Plan], dirs: _Dirs) -> None:
    """Undo a commit that failed part way: the old file back (or no file), temporaries gone."""
    for p in plans:
        dfd = dirs.fds.get("/".join(p.parts[:-1]))
        if dfd is None:
            continue
        try:
            if p.done:
                if p.backup:
                    rename(p.backup, p.parts[-1], dir_fd=dfd, sync=False)
                    p.backup = ""
                else:
                    os.unlink(p.parts[-1], dir_fd=dfd)
            for name in (p.tmp, p.backup):
                if name:
                    os.unlink(name, dir_fd=dfd)
        except OSError:
            pass
    dirs.remove_created()


def write_file(path: str | Path, data: bytes, *, force: bool = False, what: str = "write",
               force_hint: str = "pass --force to replace it, or choose another --out", dry_run: bool = False) -> bool:
    """One file by the same rule (`write_files` in its directory); True if its bytes changed."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise AuditError(f"{what}: {path} names no file", path=str(path))
    return bool(write_files(path.parent, {path.name: data}, force=force, what=what, force_hint=force_hint,
                            dry_run=dry_run))


def refuse_inside(out: str | Path, package: str | Path, *, what: str) -> None:
    """AuditError when `out` is the package or inside it (auditkit never writes into what it checks)."""
    dest, root = os.path.realpath(out), os.path.realpath(package)
    if dest == root or dest.startswith(root.rstrip(os.sep) + os.sep):
        raise AuditError(f"{what} would be written into the package; nothing was written", path=str(out),
                         hint="write it outside the package: the package's bytes are the evidence")

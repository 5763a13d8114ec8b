"""How auditkit puts bytes on disk so that a kill at any moment leaves the old state or the new one.

- `rename` is the library's one atomic rename: a file replaced (``os.replace``) or a staged
  directory moved into place without replacing anything, then an fsync of the directory so the
  rename survives a power cut.  Every writer below, `package.writes`, the fetch cache and the
  study's scratch root use it.
- `atomic_write_bytes` / `atomic_write_text`: a synced temporary beside the target (created
  exclusively, named `TEMP_PREFIX<pid>-...`), then `rename`.
- `create_exclusive`: the file only if nothing is there yet (a hard link of a synced temporary).
- `remove_stale_temporaries`: the temporaries a killed writer left behind.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

TEMP_PREFIX = ".auditkit-tmp-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: what a rename that may not replace its target fails with when something is there
_TAKEN = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR)


def fsync_dir(d: str | Path | int) -> None:
    """fsync a directory (a path, or an open descriptor), so the renames in it survive a power cut
    (best effort: a file system that cannot is left as it is)."""
    if isinstance(d, int):
        try:
            os.fsync(d)
        except OSError:
            pass
        return
    try:
        fd = os.open(d, os.O_RDONLY | _DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rename(src: str | Path, dst: str | Path, *, dir_fd: int | None = None, replace: bool = True,
           sync: bool = True) -> bool:
    """Move `src` to `dst` in one atomic step; the one rename of the library.

    `replace=True` (a file): whatever file is at `dst` is replaced.  `replace=False` (a directory
    staged whole): nothing at `dst` is ever replaced; returns False, moving nothing, when a file,
    link or non-empty directory is there already (the caller then uses or refuses what it finds).
    With `dir_fd`, `src` and `dst` are names in that directory.  `sync`: fsync the directory that
    holds `dst` afterwards (a caller renaming several files into one directory syncs once, with
    `fsync_dir`, after the last).  True when `src` was moved.
    """
    fds = {} if dir_fd is None else {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}
    if replace:
        os.replace(src, dst, **fds)
    else:
        if os.path.lexists(dst) if dir_fd is None else _lexists_at(dst, dir_fd):
            return False
        try:
            os.rename(src, dst, **fds)
        except OSError as exc:
            if exc.errno in _TAKEN:
                return False
            raise
    if sync:
        fsync_dir(dir_fd if dir_fd is not None else Path(dst).parent)
    return True


def _lexists_at(name, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _synced_temporary(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name, created exclusively: never truncates a file this call did not make (another
    # thread's or process's temporary, or whatever a stale name points at)
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a synced temporary beside it and a rename: never half-written."""
    path = Path(path)
    tmp = _synced_temporary(path, data)
    try:
        rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def create_exclusive(path: str | Path, data: bytes) -> bool:
    """Create `path` with `data` only if it does not exist yet; True if this call created it."""
    path = Path(path)
    tmp = _synced_temporary(path, data)
    try:
        os.link(tmp, path)
        fsync_dir(path.parent)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(out: str | Path) -> int:
    """Delete temporary files a killed writer left behind under `out`: regular files named
    `TEMP_PREFIX<pid>-...` whose writer process is gone.  A live writer's temporary (another
    auditkit writing into the same directory) and anything not named so is left alone."""
    n = 0
    for p in Path(out).rglob(f"{TEMP_PREFIX}*"):
        pid = p.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)) or p.is_symlink() or not p.is_file():
            continue
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


def _process_alive(pid: int) -> bool:
    """True unless no process `pid` exists here (a reused pid keeps a temporary: the safe side)."""
    if pid == os.getpid():
        return False        # this process is not writing one while it cleans up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True

"""Where protocol cells run: the executor seam.

A *cell task* is one training run (candidate x seed x host x stage).  An
executor takes cell tasks and yields finished `CellResult`s as they complete;
the protocol loop (`auditkit.study.run`) writes rows and checkpoints in
the package itself, so every executor lands results the same way.

- `LocalExecutor` runs cells one after another in runner subprocesses here.
- `DaskExecutor` (see `auditkit.study.dask_executor`) sends each cell to a worker of
  the cell's host on a Dask cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from auditkit.errors import AuditError
from auditkit.package.atomic import rename
from auditkit.package.protocol import Budget


@dataclass(frozen=True)
class CellTask:
    run_id: str
    host: str
    stage: str
    config_id: str
    seed: int
    budget: Budget
    matrix_row: dict
    device: str = "cpu"
    threads: int = 1
    timeout: float | None = None
    settings: dict = field(default_factory=dict)
    rng_seed: int | None = None   # anchored stages: the seed it trains with (`seed` stays its identity)


@dataclass(frozen=True)
class CellResult:
    task: CellTask
    summary: dict                 # the runner's summary.json (validated by run_cell)
    checkpoint: bytes | None      # checkpoint.safetensors bytes, or None


class Executor(Protocol):
    name: str

    def run(self, tasks: Iterable[CellTask]) -> Iterator[CellResult]:
        """Run every task; yield each result as soon as it is done (any order)."""


SCRATCH_ROOT_PREFIX = "auditkit.scratch-"   # not `auditkit-`: older auditkits delete any such directory
ROOT_MARKER = ".auditkit-scratch-root"
ROOT_LOCK = ".root.lock"
CELL_PREFIX = "cell-"
LOCK_SUFFIX = ".lock"
_MARKER_TEXT = b"auditkit scratch root: auditkit creates and removes cell-* directories here, nothing else\n"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _user_tag() -> str:
    if hasattr(os, "getuid"):
        return str(os.getuid())
    import getpass

    return "".join(c for c in getpass.getuser() if c.isalnum() or c in "-_") or "user"


def scratch_root(tmp: str | Path | None = None) -> Path:
    """The one directory auditkit keeps its scratch in: `$TMPDIR/auditkit.scratch-<uid>/`.

    Made on first use with mode 0700 and a marker file written before it gets its name (a
    temporary directory renamed into place), so a root without the marker was never
    auditkit's.  Raises AuditError, touching nothing, when that name is taken by anything
    else: a symlink, a file, a directory of another user, one others may write to, or one
    without the marker.
    """
    tmp = Path(tmp or tempfile.gettempdir())
    root = tmp / f"{SCRATCH_ROOT_PREFIX}{_user_tag()}"
    if not os.path.lexists(root):
        staging = Path(tempfile.mkdtemp(prefix=f".{SCRATCH_ROOT_PREFIX}new-", dir=tmp))   # mode 0700
        try:
            fd = os.open(staging / ROOT_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
            try:
                os.write(fd, _MARKER_TEXT)
            finally:
                os.close(fd)
            try:
                rename(staging, root, replace=False)   # moves nothing onto a root another auditkit made meanwhile
            except OSError:
                pass
        finally:
            if staging.exists():            # ours, holding only the marker we just wrote
                (staging / ROOT_MARKER).unlink(missing_ok=True)
                os.rmdir(staging)
    _check_root(root)
    return root


def _check_root(root: Path) -> None:
    import stat

    hint = (f"auditkit keeps its scratch in {root} and will not use or change a directory it did not "
            "make; move that one away, or point TMPDIR at another temporary directory")
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise AuditError(f"cannot use the scratch directory: {exc.strerror}", path=str(root), hint=hint) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise AuditError("the scratch directory's name is taken by something that is not a directory "
                         "(a symlink or a file)", path=str(root), hint=hint)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise AuditError(f"the scratch directory belongs to another user (uid {st.st_uid})", path=str(root),
                         hint=hint)
    if hasattr(os, "getuid") and st.st_mode & 0o077:
        raise AuditError(f"the scratch directory is open to other users (mode {stat.S_IMODE(st.st_mode):o}, "
                         "auditkit makes it 700)", path=str(root), hint=hint)
    try:
        fd = os.open(root / ROOT_MARKER, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError:
        raise AuditError(f"the scratch directory has no {ROOT_MARKER} marker: auditkit did not make it",
                         path=str(root), hint=hint) from None
    try:
        mst = os.fstat(fd)
        ok = stat.S_ISREG(mst.st_mode) and os.read(fd, len(_MARKER_TEXT) + 1) == _MARKER_TEXT
    finally:
        os.close(fd)
    if not ok:
        raise AuditError(f"the scratch directory's {ROOT_MARKER} is not the marker auditkit writes",
                         path=str(root), hint=hint)


@contextmanager
def _root_locked(root: Path) -> Iterator[None]:
    """Hold the root's lock: creating a cell directory and sweeping never interleave."""
    fd = os.open(root / ROOT_LOCK, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        _lock(fd, blocking=True)
        yield
    finally:
        os.close(fd)


@contextmanager
def scratch_directory(run_id: str, tmp: str | Path | None = None) -> Iterator[Path]:
    """A fresh `cell-<run_id>-*` directory in the scratch root (`scratch_root`), removed on exit.

    Beside it, `cell-<run_id>-*.lock` is locked (flock) for as long as this process lives: a
    later run (`remove_stale_scratch`, called first) removes the directory of a run that was
    killed, and only that.  Nothing outside the scratch root is ever touched.
    """
    root = scratch_root(tmp)
    remove_stale_scratch(tmp)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)[:80]
    with _root_locked(root):   # a sweep never sees the directory without its lock held
        work = Path(tempfile.mkdtemp(prefix=f"{CELL_PREFIX}{safe}-", dir=root))
        lock = work.with_name(work.name + LOCK_SUFFIX)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
        except BaseException:
            os.rmdir(work)          # the empty directory just made
            raise
        try:
            _lock(fd, blocking=True)
        except BaseException:
            os.close(fd)
            _remove_cell(work, lock)
            raise
    try:
        yield work
    finally:
        try:
            _remove_cell(work, lock)
        finally:
            os.close(fd)


def _remove_cell(work: Path, lock: Path) -> bool:
    """Remove a cell directory, then its lock file (kept while any of the directory is left, so
    a later sweep tries again); True when both are gone."""
    shutil.rmtree(work, ignore_errors=True)
    if os.path.lexists(work):
        return False
    lock.unlink(missing_ok=True)
    return True


def _lock(fd: int, *, blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here, so nothing is ever taken for stale
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def remove_stale_scratch(tmp: str | Path | None = None) -> int:
    """Remove the cell directories of runs that were killed; return how many.

    Looks only inside the scratch root (`scratch_root`), and there only at `cell-*.lock` files:
    one whose lock is free (its run died) has its `cell-*` directory and then itself removed.
    Anything else in the root, and everything outside it, is left alone.
    """
    import stat

    root = scratch_root(tmp)
    removed = 0
    with _root_locked(root):
        for lock in sorted(root.glob(f"{CELL_PREFIX}*{LOCK_SUFFIX}")):
            try:
                fd = os.open(lock, os.O_RDWR | _NOFOLLOW | _CLOEXEC)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or not _lock(fd, blocking=False):
                    continue    # not ours, or its run is alive
                now = os.lstat(lock)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    continue    # its run finished and removed it while we waited
                work = lock.with_name(lock.name[:-len(LOCK_SUFFIX)])
                wst = os.lstat(work) if os.path.lexists(work) else None
                if wst is not None and not stat.S_ISDIR(wst.st_mode):
                    continue    # not a directory auditkit made: leave it
                removed += _remove_cell(work, lock) and wst is not None
            except OSError:
                continue
            finally:
                os.close(fd)
    return removed


def execute_cell(task: CellTask, *, keep_checkpoint: bool = True,
                 stop: Callable[[], bool] | None = None) -> CellResult:
    """Run one cell in a runner subprocess in a scratch directory (always removed afterwards).

    Never raises for a bad run; raises what interrupts it (`Stopped`, `CellCancelled` when
    `stop()` turns true) after the runner is killed and the scratch directory removed.
    """
    from auditkit.study.runs import run_cell

    with scratch_directory(task.run_id) as work:
        summary = run_cell(matrix_row=task.matrix_row, seed=task.seed, budget=task.budget,
                           out_dir=work, run_id=task.run_id, device=task.device,
                           threads=task.threads, timeout=task.timeout, settings=dict(task.settings), stop=stop,
                           rng_seed=task.rng_seed)
        ckpt = work / "checkpoint.safetensors"
        data = ckpt.read_bytes() if keep_checkpoint and summary.get("status") == "ok" and ckpt.is_file() else None
        return CellResult(task, summary, data)


class LocalExecutor:
    """Cells one after another on this machine (runner subprocesses)."""

    name = "local"

    def __init__(self, keep_checkpoint=lambda task: True):
        self.keep_checkpoint = keep_checkpoint

    def run(self, tasks: Iterable[CellTask]) -> Iterator[CellResult]:
        for task in tasks:
            yield execute_cell(task, keep_checkpoint=self.keep_checkpoint(task))

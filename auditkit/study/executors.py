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
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from auditkit.study.spec import Budget


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


SCRATCH_PREFIX = "auditkit-"
LOCK_NAME = ".lock"
STALE_UNLOCKED_SECONDS = 600  # a scratch directory with no lock file (older auditkit) untouched this long


@contextmanager
def scratch_directory(run_id: str) -> Iterator[Path]:
    """A fresh `auditkit-<run_id>-*` directory in the system temporary directory, removed on exit.

    It holds a lock file locked for as long as its owner lives, so `remove_stale_scratch`
    (called first) can tell a directory whose owner was killed from one in use.
    """
    remove_stale_scratch()
    # made under a hidden name, locked, then renamed: the cleaner never sees it unlocked
    work = Path(tempfile.mkdtemp(prefix=f".{SCRATCH_PREFIX}{run_id}-"))
    fd = None
    try:
        fd = os.open(work / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        _lock(fd, blocking=True)
        final = work.with_name(work.name[1:])
        os.rename(work, final)
        work = final
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if fd is not None:
            os.close(fd)


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
    """Remove scratch directories left by killed runs (their lock is free); return how many."""
    tmp = Path(tmp or tempfile.gettempdir())
    removed = 0
    try:
        candidates = [p for p in tmp.iterdir() if p.name.startswith((SCRATCH_PREFIX, "." + SCRATCH_PREFIX))]
    except OSError:
        return 0
    for d in candidates:
        try:
            st = d.lstat()
            if not d.is_dir() or d.is_symlink() or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
                continue
            lock = d / LOCK_NAME
            if lock.exists() and not d.name.startswith("."):  # a hidden one is still being set up: age only
                fd = os.open(lock, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
                try:
                    if not _lock(fd, blocking=False):
                        continue  # its owner is alive
                    shutil.rmtree(d, ignore_errors=True)
                finally:
                    os.close(fd)
            else:
                newest = max([st.st_mtime] + [p.stat().st_mtime for p in d.iterdir() if p.is_file()])
                if time.time() - newest < STALE_UNLOCKED_SECONDS:
                    continue
                shutil.rmtree(d, ignore_errors=True)
            removed += not d.exists()
        except OSError:
            continue
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

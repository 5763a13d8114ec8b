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

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol

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


def execute_cell(task: CellTask, *, keep_checkpoint: bool = True) -> CellResult:
    """Run one cell in a runner subprocess in a scratch directory; never raises for a bad run."""
    from auditkit.study.runs import run_cell

    work = Path(tempfile.mkdtemp(prefix=f"auditkit-{task.run_id}-"))
    try:
        summary = run_cell(matrix_row=task.matrix_row, seed=task.seed, budget=task.budget,
                           out_dir=work, run_id=task.run_id, device=task.device,
                           threads=task.threads, timeout=task.timeout, settings=dict(task.settings),
                           rng_seed=task.rng_seed)
        ckpt = work / "checkpoint.safetensors"
        data = ckpt.read_bytes() if keep_checkpoint and summary.get("status") == "ok" and ckpt.is_file() else None
        return CellResult(task, summary, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class LocalExecutor:
    """Cells one after another on this machine (runner subprocesses)."""

    name = "local"

    def __init__(self, keep_checkpoint=lambda task: True):
        self.keep_checkpoint = keep_checkpoint

    def run(self, tasks: Iterable[CellTask]) -> Iterator[CellResult]:
        for task in tasks:
            yield execute_cell(task, keep_checkpoint=self.keep_checkpoint(task))

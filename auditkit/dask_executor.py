"""Run protocol cells on a Dask cluster, one worker pool per protocol host.

Host labels map to workers by worker name: a worker named ``windows`` or
``windows-<anything>`` serves host ``windows``.  Each cell is one task that
needs one accelerator slot — ``resources={"GPU": 1}`` on a host whose profile
says ``device = "cuda"``, else ``{"CPU": 1}`` — and may run only on its host's
workers.  The worker runs the runner and returns the summary and checkpoint
bytes; the client lands rows and checkpoints in the package exactly as the
local executor does, so a lost worker's cell is rerun by Dask (up to
``retries``) and its row is written once.

Start real workers like this (one per accelerator; Linux and Windows alike)::

    dask scheduler --port 8786
    dask worker tcp://SCHED:8786 --name linux-0 --nthreads 1 --resources "GPU=1"
    dask worker tcp://SCHED:8786 --name windows-0 --nthreads 1 --resources "GPU=1"
"""

from __future__ import annotations

from typing import Iterable, Iterator

from auditkit.errors import AuditError
from auditkit.executors import CellResult, CellTask, execute_cell


def workers_for_host(worker_names: dict[str, str], host: str) -> list[str]:
    """Addresses of the workers whose name is `host` or starts with `host-`."""
    return sorted(addr for addr, name in worker_names.items()
                  if str(name) == host or str(name).startswith(host + "-"))


def slot_for(task: CellTask) -> dict[str, int]:
    return {"GPU": 1} if task.device.startswith("cuda") else {"CPU": 1}


def _run_on_worker(task: CellTask, keep_checkpoint: bool) -> CellResult:
    return execute_cell(task, keep_checkpoint=keep_checkpoint)


class DaskExecutor:
    """Cells as Dask tasks pinned to their host's workers."""

    name = "dask"

    def __init__(self, client, keep_checkpoint=lambda task: True, retries: int = 2):
        self.client = client
        self.keep_checkpoint = keep_checkpoint
        self.retries = retries

    @classmethod
    def connect(cls, scheduler: str, manifest=None, **kwargs) -> "DaskExecutor":
        try:
            from distributed import Client
        except ImportError as exc:
            raise AuditError("the dask executor needs dask.distributed",
                             hint="pip install 'auditkit[dask]'") from exc
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise AuditError(f"cannot reach the Dask scheduler at {scheduler}: {exc}",
                             hint="start it with `dask scheduler` and check the address") from exc
        return cls(client, **kwargs)

    def _worker_names(self) -> dict[str, str]:
        info = self.client.scheduler_info()
        return {addr: w.get("name", addr) for addr, w in info.get("workers", {}).items()}

    def run(self, tasks: Iterable[CellTask]) -> Iterator[CellResult]:
        from distributed import as_completed

        tasks = list(tasks)
        if not tasks:
            return
        names = self._worker_names()
        futures = []
        for task in tasks:
            workers = workers_for_host(names, task.host)
            if not workers:
                raise AuditError(f"no Dask worker serves host {task.host!r}",
                                 hint=f"start one named {task.host} or {task.host}-0; workers now: "
                                      f"{sorted(map(str, names.values())) or 'none'}")
            futures.append(self.client.submit(
                _run_on_worker, task, self.keep_checkpoint(task), key=f"cell-{task.run_id}",
                workers=workers, allow_other_workers=False, resources=slot_for(task),
                retries=self.retries, pure=False))
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as exc:  # the cell failed on every try: record it as failed
                task = tasks[futures.index(fut)]
                yield CellResult(task, _failed_summary(task, exc), None)


def _failed_summary(task: CellTask, exc: Exception) -> dict:
    from auditkit.runs import failed_summary

    return failed_summary(run_id=task.run_id, config_id=task.config_id, seed=task.seed,
                          budget=task.budget, reason=f"dask: {type(exc).__name__}: {exc}")

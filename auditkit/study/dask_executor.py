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

import uuid
from typing import Iterable, Iterator

from auditkit.errors import AuditError
from auditkit.study.executors import CellResult, CellTask, execute_cell


def workers_for_host(worker_names: dict[str, str], host: str) -> list[str]:
    """Addresses of the workers whose name is `host` or starts with `host-`."""
    return sorted(addr for addr, name in worker_names.items()
                  if str(name) == host or str(name).startswith(host + "-"))


def slot_for(task: CellTask) -> dict[str, int]:
    return {"GPU": 1} if task.device.startswith("cuda") else {"CPU": 1}


def _run_on_worker(task: CellTask, keep_checkpoint: bool, cancel_event: str | None = None) -> CellResult:
    """One cell on a worker; the runner is killed as soon as the client sets `cancel_event`
    (a running Dask task cannot be interrupted from outside, so it polls)."""
    stop = None
    if cancel_event:
        from distributed import Event

        event = Event(cancel_event)
        stop = event.is_set
    return execute_cell(task, keep_checkpoint=keep_checkpoint, stop=stop)


class DaskExecutor:
    """Cells as Dask tasks pinned to their host's workers."""

    name = "dask"

    def __init__(self, client, keep_checkpoint=lambda task: True, retries: int = 2,
                 repin_interval: float = 2.0):
        self.client = client
        self.repin_interval = repin_interval
        self.keep_checkpoint = keep_checkpoint
        self.retries = retries

    @classmethod
    def connect(cls, scheduler: str, manifest=None, timeout: str = "20s", **kwargs) -> "DaskExecutor":
        try:
            from distributed import Client
        except ImportError as exc:
            raise AuditError("the dask executor needs dask.distributed",
                             hint="pip install 'pretrain-auditkit[dask]'") from exc
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise AuditError(f"cannot reach the Dask scheduler at {scheduler}: {exc}",
                             hint="start it with `dask scheduler` and check the address") from exc
        return cls(client, **kwargs)

    def _worker_names(self) -> dict[str, str]:
        info = self.client.scheduler_info()
        return {addr: w.get("name", addr) for addr, w in info.get("workers", {}).items()}

    def _submit(self, task: CellTask, workers: list[str], attempt: int, cancel_event: str):
        return self.client.submit(
            _run_on_worker, task, self.keep_checkpoint(task), cancel_event, key=f"cell-{task.run_id}-{attempt}",
            workers=workers, allow_other_workers=False, resources=slot_for(task),
            retries=self.retries, pure=False)

    def _cancel(self, futures, cancel_event: str) -> None:
        """Cancel queued cells and tell running ones to kill their runner (best effort)."""
        from distributed import Event

        try:
            Event(cancel_event, client=self.client).set()
        finally:
            self.client.cancel(list(futures))

    def _workers_or_fail(self, names: dict[str, str], host: str) -> list[str]:
        workers = workers_for_host(names, host)
        if not workers:
            raise AuditError(f"no Dask worker serves host {host!r}",
                             hint=f"start one named {host} or {host}-0; workers now: "
                                  f"{sorted(map(str, names.values())) or 'none'}")
        return workers

    def run(self, tasks: Iterable[CellTask]) -> Iterator[CellResult]:
        """Yield each cell's result as it completes.

        Dask turns a worker *name* restriction into the worker's address when a
        task is submitted, and a restarted worker comes back on a new address:
        a task pinned only to dead addresses would wait forever.  So while
        waiting, every few seconds the host's live workers are looked up again
        and any task whose pinned workers have all gone is resubmitted to the
        ones serving its host now (its row is still landed once, by the client).

        If the run stops early (the caller's signal or error, or it closes this
        generator), every cell not yet yielded is cancelled: queued ones are
        dropped and running ones kill their runner (`_run_on_worker`).
        """
        tasks = list(tasks)
        if not tasks:
            return
        names = self._worker_names()
        for task in tasks:
            self._workers_or_fail(names, task.host)
        cancel_event = f"auditkit-cancel-{uuid.uuid4().hex}"
        pending = {}  # future -> (task, pinned addresses, attempt)
        try:
            for task in tasks:
                workers = workers_for_host(names, task.host)
                pending[self._submit(task, workers, 0, cancel_event)] = (task, workers, 0)
            yield from self._collect(pending, cancel_event)
        finally:
            if pending:  # stopped early (a signal, an error, the caller closed us): cancel the rest
                self._cancel(pending, cancel_event)

    def _collect(self, pending: dict, cancel_event: str) -> Iterator[CellResult]:
        from distributed import wait

        while pending:
            try:
                done, _ = wait(list(pending), timeout=self.repin_interval, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in this interval
                done = set()
            for fut in done:
                task, _, _ = pending.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:  # the cell failed on every try: record it as failed
                    result = CellResult(task, _failed_summary(task, exc), None)
                yield result
            if done:
                continue
            alive = self._worker_names()
            for fut, (task, pinned, attempt) in list(pending.items()):
                if fut.status != "pending" or any(a in alive for a in pinned):
                    continue
                now = workers_for_host(alive, task.host)
                if not now:
                    continue  # no worker for this host yet: keep waiting for one to (re)join
                fut.cancel()
                del pending[fut]
                pending[self._submit(task, now, attempt + 1, cancel_event)] = (task, now, attempt + 1)


def _failed_summary(task: CellTask, exc: Exception) -> dict:
    from auditkit.study.runs import failed_summary

    return failed_summary(run_id=task.run_id, config_id=task.config_id, seed=task.seed,
                          budget=task.budget, reason=f"dask: {type(exc).__name__}: {exc}")

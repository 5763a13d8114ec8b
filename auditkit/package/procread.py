"""Read a package directory's files in worker processes, so the checks run beside them.

`scan_file` hashes in 1 MiB reads; hashlib releases the GIL while it hashes, but
everything else a process does between two chunks — parsing and validating the
documents, the checks, imports — needs it.  Here each reader is a process of its own
(forked: it starts at once, with the modules already imported), so the parent's
checks never hold a reader back, and `jobs` readers use `jobs` cores.

The parent deals out batches of files (documents first, then the rest largest
first) through a queue; each worker opens its files through the package store (no
link followed, nothing but regular files), scans them and sends the `FileScan`s back
on its own pipe.  Fork is used only where it is safe and cheap: on Linux, from a
process that runs no other thread (a fork copies one thread; a lock another thread
held would stay locked in the child).  Elsewhere the caller reads in threads.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from multiprocessing.connection import wait
from typing import Callable

from auditkit.errors import AuditError

PROGRESS_EVERY = 64 << 20   # a worker reports progress every this many bytes


def available() -> bool:
    """True when readers can be forked safely here and now."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and threading.active_count() == 1)


def _warm_numpy() -> None:
    try:
        import numpy  # noqa: F401 - the checkpoint scanner's first float chunk needs it
    except ImportError:
        pass


def _worker(batches, tasks, conn, read_one: Callable, want_progress: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's: it stops the workers
    threading.Thread(target=_warm_numpy, daemon=True).start()
    pending = 0

    def progress(k: int) -> None:
        nonlocal pending
        pending += k
        if pending >= PROGRESS_EVERY:
            conn.send(("progress", pending))
            pending = 0

    try:
        while (i := tasks.get()) is not None:
            conn.send(("batch", i, [read_one(item, progress if want_progress else None) for item in batches[i]]))
        if pending:
            conn.send(("progress", pending))
        conn.send(("done",))
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which raises it
        try:
            conn.send(("error", exc if isinstance(exc, AuditError) else AuditError(f"a reader failed: {exc!r}")))
        except Exception:  # noqa: BLE001 - the parent sees the pipe close instead
            pass
    finally:
        conn.close()


def read_batches(batches: list[list], jobs: int, read_one: Callable, *, progress: Callable[[int], None] | None,
                 on_batch: Callable[[int, list], None], on_started: Callable[[], None] | None = None) -> None:
    """Run `read_one(item, progress)` for every item of every batch in `jobs` forked workers;
    `on_batch(i, results)` is called in this process as batches come back, in any order;
    `on_started()` once every worker runs.  Raises the first worker's AuditError; stops every
    worker on any exit."""
    ctx = multiprocessing.get_context("fork")
    tasks = ctx.SimpleQueue()
    for i in range(len(batches)):
        tasks.put(i)
    n = max(1, min(jobs, len(batches)))
    for _ in range(n):
        tasks.put(None)
    workers, conns = [], []
    try:
        for _ in range(n):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(batches, tasks, send, read_one, progress is not None), daemon=True)
            p.start()
            send.close()
            workers.append(p)
            conns.append(recv)
        if on_started:
            on_started()
        live = list(conns)
        while live:
            for conn in wait(live):
                try:
                    msg = conn.recv()
                except EOFError:
                    live.remove(conn)
                    raise AuditError("a reader process ended without finishing its files",
                                     hint="run again; if it persists, run with --jobs 1 and report it") from None
                if msg[0] == "batch":
                    on_batch(msg[1], msg[2])
                elif msg[0] == "progress":
                    if progress is not None:
                        progress(msg[1])
                elif msg[0] == "error":
                    raise msg[1]
                else:   # done
                    live.remove(conn)
                    conn.close()
    finally:
        for p in workers:
            if p.is_alive():
                p.terminate()
        for p in workers:
            p.join()
        for conn in conns:
            conn.close()
        tasks.close()

"""Read a package directory's files in worker processes, so the checks run beside them.

`scan_file` hashes in 1 MiB reads; hashlib releases the GIL while it hashes, but
everything else a process does between two chunks — parsing and validating the
documents, the checks, imports — needs it.  Here each reader is a process of its own
(forked: it starts at once, with the modules already imported), so the parent's
checks never hold a reader back, and `jobs` readers use `jobs` cores.

Each worker takes the next batch of files nobody has taken yet from the front of a
shared double-ended queue (the batches largest first, so the workers finish together);
the parent may take batches from its back meanwhile (`take_back`: the small files,
read in the parent while it has nothing else to do).  A worker opens its files through
the package store (no link followed, nothing but regular files), scans them and
sends the `FileScan`s back on its own pipe.  Fork is used only where it is safe and cheap: on Linux, from a
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


def _worker(batches, ends, conn, read_one: Callable, want_progress: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's: it stops the workers
    pending = 0

    def progress(k: int) -> None:
        nonlocal pending
        pending += k
        if pending >= PROGRESS_EVERY:
            conn.send(("progress", pending))
            pending = 0

    try:
        while True:
            with ends.get_lock():                     # the next batch nobody has taken, from the front
                i = ends[0]
                if i >= ends[1]:
                    break
                ends[0] = i + 1
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


class Readers:
    """`jobs` forked workers that run `read_one(item, progress)` over every item of `batches`.

    Entering forks them (they start at once); `take_back(accept)` gives this process the index of
    the last batch nobody has taken (None: none left, or not one `accept` takes), to read itself; `collect(on_batch)` hands
    each batch's results to `on_batch(i, results)` in this process as they come back, in any order,
    and raises the first worker's AuditError (`collect(on_batch, block=False)`: only those already
    back); leaving stops and reaps every worker, whatever happened."""

    def __init__(self, batches: list[list], jobs: int, read_one: Callable, progress: Callable[[int], None] | None):
        self.batches, self.read_one, self.progress = batches, read_one, progress
        self.n = max(1, min(jobs, len(batches))) if batches else 0
        self.workers: list = []
        self.conns: list = []
        self.live: list = []
        self.ends = None

    def __enter__(self) -> "Readers":
        ctx = multiprocessing.get_context("fork")
        self.ends = ends = ctx.Array("q", [0, len(self.batches)])   # [front, back): batches nobody has taken
        try:
            for _ in range(self.n):
                recv, send = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_worker, args=(self.batches, ends, send, self.read_one,
                                                      self.progress is not None), daemon=True)
                p.start()
                send.close()
                self.workers.append(p)
                self.conns.append(recv)
                self.live.append(recv)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def take_back(self, accept: Callable[[list], bool] = lambda batch: True) -> int | None:
        """The last batch nobody has taken, now taken by this process (None: there is none, or
        `accept(batch)` is false for it)."""
        if self.ends is None:
            return None
        with self.ends.get_lock():
            j = self.ends[1] - 1
            if j < self.ends[0] or not accept(self.batches[j]):
                return None
            self.ends[1] = j
        return j

    def collect(self, on_batch: Callable[[int, list], None], block: bool = True) -> None:
        live = self.live
        while live:
            ready = wait(live, None if block else 0)
            if not ready:
                return
            for conn in ready:
                try:
                    msg = conn.recv()
                except EOFError:
                    raise AuditError("a reader process ended without finishing its files",
                                     hint="run again; if it persists, run with --jobs 1 and report it") from None
                if msg[0] == "batch":
                    on_batch(msg[1], msg[2])
                elif msg[0] == "progress":
                    if self.progress is not None:
                        self.progress(msg[1])
                elif msg[0] == "error":
                    raise msg[1]
                else:   # done
                    live.remove(conn)

    def __exit__(self, *exc) -> None:
        for p in self.workers:
            if p.is_alive():
                p.terminate()
        for p in self.workers:
            p.join()
        for conn in self.conns:
            conn.close()

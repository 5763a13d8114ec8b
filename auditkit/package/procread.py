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
the package store (no link followed, nothing but regular files), scans them and sends
the `FileScan`s back on a pipe of its own.

Plain `os.fork`, pipes and pickle, not `multiprocessing` (whose import and process
start cost about 10 ms, a tenth of what verify's checks cost): the queue's two ends
live in a shared anonymous mapping, guarded by a lock that is a pipe holding one byte.
Fork is used only where it is safe and cheap: on Linux, from a process that runs no
other thread (a fork copies one thread; a lock another thread held would stay locked
in the child).  Elsewhere the caller reads in threads.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import signal
import struct
import sys
import threading
from typing import Callable

from auditkit.errors import AuditError

PROGRESS_EVERY = 64 << 20   # a worker reports progress every this many bytes
_LENGTH = struct.Struct("<Q")   # each message: its pickled length, then the pickle
_ENDS = struct.Struct("<qq")    # the queue: [front, back) of the batches nobody has taken


_IN_WORKER = False


def in_worker() -> bool:
    """True in a forked reader process: a fault there (a mapped file that shrank: SIGBUS) ends that
    process alone, which the parent reports (`Readers.collect`), never the command."""
    return _IN_WORKER


def available() -> bool:
    """True when readers can be forked safely here and now."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1


class _Queue:
    """The indices [front, back) of the batches nobody has taken, shared by forked processes: two
    integers in an anonymous shared mapping, and a lock that is a pipe holding one byte (reading
    it takes the lock, writing it back gives it up)."""

    def __init__(self, n: int):
        self.mem = mmap.mmap(-1, _ENDS.size)          # MAP_SHARED | MAP_ANONYMOUS: survives fork, shared
        _ENDS.pack_into(self.mem, 0, 0, n)
        self.lock_r, self.lock_w = os.pipe()
        os.write(self.lock_w, b"L")

    def take(self, front: bool, accept: Callable[[int], bool] | None = None,
             waiting: Callable[[], None] | None = None) -> int | None:
        """Take the index at the front (or, `accept`ing it, the back); None when none is left.
        `waiting()` is called every 0.1 s while another process holds the lock (it may raise)."""
        if waiting is not None:
            while not select.select([self.lock_r], [], [], 0.1)[0]:
                waiting()
        os.read(self.lock_r, 1)
        try:
            lo, hi = _ENDS.unpack_from(self.mem, 0)
            if lo >= hi:
                return None
            if front:
                _ENDS.pack_into(self.mem, 0, lo + 1, hi)
                return lo
            if accept is not None and not accept(hi - 1):
                return None
            _ENDS.pack_into(self.mem, 0, lo, hi - 1)
            return hi - 1
        finally:
            os.write(self.lock_w, b"L")

    def close(self) -> None:
        for fd in (self.lock_r, self.lock_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.mem.close()


def _send(fd: int, msg) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _worker(batches, queue: _Queue, fd: int, read_one: Callable, want_progress: bool) -> None:
    pending = 0

    def progress(k: int) -> None:
        nonlocal pending
        pending += k
        if pending >= PROGRESS_EVERY:
            _send(fd, ("progress", pending))
            pending = 0

    try:
        while (i := queue.take(front=True)) is not None:
            _send(fd, ("batch", i, [read_one(item, progress if want_progress else None) for item in batches[i]]))
        if pending:
            _send(fd, ("progress", pending))
        _send(fd, ("done",))
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which raises it
        try:
            _send(fd, ("error", exc if isinstance(exc, AuditError) else AuditError(f"a reader failed: {exc!r}")))
        except Exception:  # noqa: BLE001 - the parent sees the pipe close instead
            pass


def _died(how: str) -> AuditError:
    return AuditError(f"a reader process ended without finishing its files{how}",
                      hint="verify a package that nothing is writing to; run again, and if it persists, run "
                           "with --jobs 1 and report it")


class Readers:
    """`jobs` forked workers that run `read_one(item, progress)` over every item of `batches`.

    Entering forks them (they start at once); `take_back(accept)` gives this process the index of
    the last batch nobody has taken (None: none left, or not one `accept` takes), to read itself;
    `collect(on_batch)` hands each batch's results to `on_batch(i, results)` in this process as they
    come back, in any order, and raises the first worker's AuditError (`collect(on_batch,
    block=False)`: only those already back); leaving stops and reaps every worker, whatever happened."""

    def __init__(self, batches: list[list], jobs: int, read_one: Callable, progress: Callable[[int], None] | None):
        self.batches, self.read_one, self.progress = batches, read_one, progress
        self.n = max(1, min(jobs, len(batches))) if batches else 0
        self.pids: dict[int, int] = {}          # the read end of a worker's pipe -> its pid
        self.live: dict[int, bytearray] = {}    # read ends not yet finished -> bytes received, not yet a message
        self.queue: _Queue | None = None

    def __enter__(self) -> "Readers":
        self.queue = _Queue(len(self.batches))
        sys.stdout.flush()                      # nothing buffered is written twice by a child
        sys.stderr.flush()
        try:
            for _ in range(self.n):
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:                    # the worker: never returns into the caller's code
                    global _IN_WORKER
                    _IN_WORKER = True
                    code = 0
                    try:
                        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's
                        os.close(r)
                        for other in self.pids:
                            os.close(other)
                        _worker(self.batches, self.queue, w, self.read_one, self.progress is not None)
                    except BaseException:  # noqa: BLE001 - reported on the pipe where it could be
                        code = 1
                    finally:
                        os._exit(code)
                os.close(w)
                self.pids[r] = pid
                self.live[r] = bytearray()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def take_back(self, accept: Callable[[list], bool] = lambda batch: True) -> int | None:
        """The last batch nobody has taken, now taken by this process (None: there is none, or
        `accept(batch)` is false for it)."""
        if self.queue is None:
            return None
        return self.queue.take(front=False, accept=lambda j: accept(self.batches[j]), waiting=self._all_alive)

    def _all_alive(self) -> None:
        """AuditError when a worker has died (it may have held the queue's lock)."""
        for fd, pid in self.pids.items():
            if pid > 0 and os.waitpid(pid, os.WNOHANG)[0] == pid:
                self.pids[fd] = -1
                raise _died("")

    def collect(self, on_batch: Callable[[int, list], None], block: bool = True) -> None:
        poller = select.poll()
        for fd in self.live:
            poller.register(fd, select.POLLIN)
        while self.live:
            ready = poller.poll(None if block else 0)
            if not ready:
                return
            for fd, _ in ready:
                data = os.read(fd, 1 << 20)
                if not data:
                    poller.unregister(fd)
                    self._ended(fd)
                    continue
                buf = self.live[fd]
                buf += data
                while len(buf) >= _LENGTH.size:
                    (n,) = _LENGTH.unpack_from(buf, 0)
                    if len(buf) < _LENGTH.size + n:
                        break
                    msg = pickle.loads(buf[_LENGTH.size:_LENGTH.size + n])
                    del buf[:_LENGTH.size + n]
                    if msg[0] == "batch":
                        on_batch(msg[1], msg[2])
                    elif msg[0] == "progress":
                        if self.progress is not None:
                            self.progress(msg[1])
                    elif msg[0] == "error":
                        raise msg[1]
                    else:   # done
                        poller.unregister(fd)
                        del self.live[fd]
                        break

    def _ended(self, fd: int) -> None:
        """A worker's pipe closed before it said it was done: it died (killed, or out of memory)."""
        pid = self.pids.get(fd)
        how = ""
        try:
            _, status = os.waitpid(pid, 0)
            self.pids[fd] = -1
            if os.WIFSIGNALED(status):
                how = f" (killed by {signal.Signals(os.WTERMSIG(status)).name}"
                how += ": a file it was reading shrank or could not be read)" if os.WTERMSIG(status) == signal.SIGBUS \
                    else ")"
        except (ChildProcessError, ValueError, TypeError):
            pass
        raise _died(how)

    def __exit__(self, *exc) -> None:
        for fd, pid in self.pids.items():
            if pid > 0:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for fd, pid in self.pids.items():
            if pid > 0:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            os.close(fd)
        self.pids, self.live = {}, {}
        if self.queue is not None:
            self.queue.close()
            self.queue = None

"""Stop a study cleanly on SIGINT, SIGTERM and SIGHUP.

`stop_on_signals()` turns each of them, in the main thread, into a `Stopped`
exception (a `KeyboardInterrupt`), so whatever runs unwinds through its
cleanup: `run_cell` kills the runner's process group, the cell's scratch
directory is removed, and the command exits ``128 + signal number`` (130, 143,
129).  Signals that arrive while the first one is being handled are recorded,
not raised again, so a second Ctrl-C cannot cut the cleanup short.

`critical()` defers them while a finished cell lands (its checkpoint, then its
row): a stop never falls between the two.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal; `exit_code` is 128 + its number."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    active = 0          # nesting depth of stop_on_signals
    deferring = 0       # nesting depth of critical()
    pending: int | None = None
    raised = False      # a Stopped is already unwinding


_state = _State()


def _handler(signum, frame) -> None:
    if _state.raised:
        return  # already stopping: let the cleanup finish
    if _state.deferring:
        _state.pending = _state.pending or signum
        return
    _state.raised = True
    raise Stopped(signum)


@contextmanager
def stop_on_signals():
    """Within this block SIGINT/SIGTERM/SIGHUP raise `Stopped` (main thread only; elsewhere a
    no-op).  A signal that was ignored (``nohup``: SIGHUP) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a signal ignored on purpose (nohup, a background job) stays ignored
    old = {s: signal.signal(s, _handler) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    _state.active += 1
    try:
        yield
    finally:
        _state.active -= 1
        for s, h in old.items():
            signal.signal(s, h)
        if not _state.active:
            _state.pending, _state.raised = None, False


@contextmanager
def critical():
    """Defer a stop until this block is done (then raise it).  Signals reach the main thread
    only, so elsewhere (a Dask worker's thread) this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.deferring and _state.pending is not None and not _state.raised:
            signum, _state.pending = _state.pending, None
            _state.raised = True
            raise Stopped(signum)

"""Run a module as a child that dies with its parent (used by `run_cell` for the runner).

    python -m auditkit.study.child PARENT_PID MODULE [ARGS...]

On Linux the kernel sends this process SIGTERM when the process that started
it dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``); the handler then kills
this process's whole process group (the runner is started as a session
leader, so that is the runner and anything it started).  If the parent is
already gone when the guard is set, it exits at once.  Elsewhere the module
just runs.  Then MODULE runs as ``python -m MODULE ARGS...`` would run it.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Ask for SIGTERM when `parent_pid` dies; False where the OS has no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False

    def _kill_group(signum, frame):
        try:
            if os.getpgid(0) == os.getpid():   # our own group: the runner and its children
                os.killpg(0, signal.SIGKILL)
        finally:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, _kill_group)
    if os.getppid() != parent_pid:   # the parent died before the guard was set
        _kill_group(signal.SIGTERM, None)
    return True


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m auditkit.study.child PARENT_PID MODULE [ARGS...]")
    die_with_parent(int(argv[0]))
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The runner's files: where its caches live and the one atomic writer every file it writes goes through.

`atomic_write(path, data)` writes `data` to a temporary `.NAME.tmp-PID` beside `path`, syncs it,
renames it over `path` and syncs the directory: a reader (or a runner killed part way) sees the
old file or the new one, never half of one.  The run's outputs (summary.json,
checkpoint.safetensors, eval_docs.csv) and the caches (generated corpora, trained tokenizers,
floors) are all written this way; `auditkit.study.runs` removes a killed runner's temporaries by
that name.  Like the rest of the runner this imports nothing of auditkit: the runner is a
stand-alone script, copied into every package it trains (auditkit's own writer is
`auditkit.package.store`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where the runner caches what it can rebuild: `$AUDITKIT_CACHE`, or ~/.cache/auditkit."""
    return Path(os.environ.get("AUDITKIT_CACHE", Path.home() / ".cache" / "auditkit"))


def temporary_path(path: Path) -> Path:
    """The temporary `atomic_write` writes `path` through: `.NAME.tmp-PID` in the same directory."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably (temporary, fsync, rename, directory fsync).
    Raises OSError; the temporary is removed when the write fails part way."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""Files the user names on the command line (a profile, a key, a root certificate): read once, bounded.

`read_user_file` opens without blocking and reads only a regular file, at most `cap` bytes, so a
FIFO, `/dev/zero` or a device named by mistake is refused at once instead of hanging the command
or filling memory. (A package's own files go through `package.store`, which is stricter still.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from auditkit.errors import AuditError


def read_user_file(path: str | Path, what: str, cap: int, hint: str = "") -> bytes:
    """The bytes of the regular file `path`; AuditError naming it (and `what` it should be) otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AuditError(f"cannot read the {what}: {exc.strerror or exc}", path=str(path), hint=hint or None) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AuditError(f"the {what} is not a regular file (a FIFO, a device or a directory?)", path=str(path),
                             hint=hint or f"give the {what} as a file")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise AuditError(f"the {what} is larger than {cap} bytes; not a {what}", path=str(path), hint=hint or None)
    return data

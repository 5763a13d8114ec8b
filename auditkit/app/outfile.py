"""An --out FILE is checked before the work that fills it, not after (`guard_out_file`, one guard
for `report` and `profile draft`).

`check_out_file(out, force=...)` refuses, with exit 2 and a hint, a target auditkit cannot or
must not replace — a directory, a FIFO, a socket or a device (not even with --force: replacing
one would take away what the user had there), an existing file without --force — and a target in
a directory it cannot write, found by creating and removing a probe file of its own there. So a
report that takes seconds to build never ends in "cannot write" (or a FIFO that blocks it).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from auditkit.errors import AuditError


def check_out_file(out: str | Path, *, force: bool) -> None:
    """Raise AuditError unless `out` can be written (replaced only with `force`, and only a regular file or link)."""
    out = Path(out)
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise AuditError(f"cannot use this --out: {exc.strerror}", path=str(out),
                         hint="choose an --out in a directory you can write") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise AuditError("--out is a directory", path=str(out), hint="give a file name, e.g. report.html")
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            raise AuditError(f"--out is {kind}, not a file auditkit may replace (not even with --force)",
                             path=str(out), hint="choose another --out: a regular file")
        if not force:
            raise AuditError("the file exists", path=str(out), hint="choose another --out, or pass --force")
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:  # the folders it will create go under this one
        parent = parent.parent
    if not parent.is_dir():
        raise AuditError(f"{parent} is not a directory", path=str(out), hint="choose an --out in a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".auditkit-probe-")
    except OSError as exc:
        raise AuditError(f"cannot write in {parent}: {exc.strerror}", path=str(out),
                         hint="choose an --out in a directory you can write") from None
    os.close(fd)
    os.unlink(probe)  # exactly the file mkstemp made (O_EXCL): nothing else is touched


def guard_out_file(out: str | Path, package: str | Path, *, force: bool, name: str, what: str) -> None:
    """Refuse, before the work that fills it, an --out inside the package (`name`: what it would hold,
    "the report"), one auditkit cannot or must not replace, or one `write_file` would refuse (`what`)."""
    from auditkit.package.writes import refuse_inside, write_file

    refuse_inside(out, package, what=name)
    check_out_file(out, force=force)  # a FIFO, a directory, an unwritable place: refused before the work
    write_file(out, b"", force=force, what=what, dry_run=True)

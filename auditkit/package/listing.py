"""The file listing of a package directory on disk: every entry, parents first, no link followed.

`list_entries` is the one walk that `manifest build` (`manifest.list_package_files`, which refuses a
link or special file) and the evidence reader (`evidence.model.DirReader.files`, which leaves
them out) both list through; each applies its own rule to what it yields.  Names and `lstat`
modes only: nothing is read, and a link is yielded, never entered.  Verify's scan-once reader
(`package.scan`) keeps a walk of its own, tuned for speed, that turns what it meets into findings.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Iterator

NEVER_LISTED_DIRS = (".git",)  # a version-control directory is not part of the package


def list_entries(root: str | Path, under: str = "", *,
         on_error: Callable[[str, OSError], None]) -> Iterator[tuple[str, int]]:
    """(package path, lstat mode) of every entry below the folder `under` of `root` ("" for all),
    depth first with a stack (a directory 1,200 levels deep is listed like any other), a
    directory's entries in name order and all of them before any of its subdirectories'.  A
    directory named in NEVER_LISTED_DIRS is neither yielded nor entered; a link is yielded with
    its own mode and never entered.  A directory that cannot be listed is passed to
    `on_error(prefix, exc)` (prefix "" for the first one), which raises or returns to go on."""
    root = Path(root)
    under = under.rstrip("/")
    stack = [under + "/" if under else ""]
    while stack:
        prefix = stack.pop()
        try:
            with os.scandir(root / prefix if prefix else root) as it:
                entries = sorted(((e.name, e.stat(follow_symlinks=False).st_mode) for e in it))
        except OSError as exc:
            on_error(prefix, exc)
            continue
        subdirs = []
        for name, mode in entries:
            if stat.S_ISDIR(mode):
                if name in NEVER_LISTED_DIRS:
                    continue
                subdirs.append(f"{prefix}{name}/")
            yield prefix + name, mode
        stack.extend(reversed(subdirs))

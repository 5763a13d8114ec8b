"""Where a package comes from: the one resolver every command names its package through.

`open_source(given)` turns what the user typed — a directory, an archive of any
name (recognised by its magic bytes: gzip, bzip2, xz or tar, e.g. arXiv's
extension-less e-print ``2606.11387``), an ``https://`` URL of a package
directory, or an arXiv identifier — into a `PackageSource`: the directory the
readers open (`root`), or for `verify` the archive it streams (`archive`), and
where inside what was given the package was found (`found_at`: ``anc/`` of an
e-print, say).

- A package below the top is looked for ``anc/`` first, then ``ancillary/``,
  then the shallowest directory (at most `SEARCH_DEPTH` down) holding
  ``protocol.json`` or ``MANIFEST.json``; the commands say where they found it.
- A package in its authors' own layout (no ``protocol.json``, no SPEC
  MANIFEST) is refused at once with the `auditkit profile draft` command
  (`ForeignLayout`, exit 2), not checked file by file as if tampered with.
- An archive read by a command other than `verify` is read in one streamed,
  bounded pass (the archive budget: members, inflated bytes, ratio) into a
  private snapshot directory (mode 0700) that is removed when the command
  ends; `verify` streams the archive itself and never writes a byte.
- A URL is fetched through `auditkit.package.remote` into the content-addressed
  cache; every file's hash is checked against the MANIFEST before it is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from auditkit.package.local import open_local
from auditkit.package.locate import PackageSource, is_remote


def open_source(given: str | os.PathLike, *, stream_archive: bool = False, allow_foreign: bool = False,
                default: bool = False) -> PackageSource:
    """Resolve what the user named (see the module docstring). `stream_archive`: leave an archive to
    be streamed (`verify`); otherwise it is read into a private snapshot removed by `close()`.
    `allow_foreign`: a package in its authors' layout is returned, not refused (`--profile`).
    `default`: the name is the default `ancillary`, not one the user typed (said so when missing).
    Raises AuditError (exit 2) when there is no package to read."""
    given = os.fspath(given)
    if is_remote(given):
        from auditkit.package.remote import fetch_source

        return fetch_source(given, stream_archive=stream_archive, allow_foreign=allow_foreign)
    return open_local(Path(given), given, stream_archive=stream_archive, allow_foreign=allow_foreign,
                      default=default)

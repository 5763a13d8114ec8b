"""Packages named by a URL or an arXiv identifier: fetched, hashed as they arrive, cached by content.

    auditkit verify https://example.org/pkg/        # a package directory: its MANIFEST.json lists the files
    auditkit review arxiv:2606.11387                # the e-print (the package under anc/)

A package directory's ``MANIFEST.json`` is fetched first; every file it lists
is streamed into a temporary file in the cache and hashed as the bytes arrive,
and kept (under ``blobs/sha256/``) only once its sha256 and size match the
entry: a file that does not is a `remote-file-mismatch` finding and is never
read by a check.  Reading stops one byte past the declared size, so an endless
body costs at most that.  A file already in the cache is not fetched again; when
the host cannot be reached, the MANIFEST fetched last time for the URL is used
(said so), so a second audit works offline.

Limits (environment variables, docs/REMOTE.md): a file's bytes
(``AUDITKIT_REMOTE_MAX_FILE``), the package's (``AUDITKIT_REMOTE_MAX_TOTAL``),
a MANIFEST's (``AUDITKIT_REMOTE_MAX_DOC``), redirects (5, never from https to
http), the wait for any one read (``AUDITKIT_REMOTE_TIMEOUT``) and a deadline
per file (``AUDITKIT_REMOTE_DEADLINE`` seconds plus one per MiB declared).  TLS
is verified; a URL's user, password and query never appear in a message, a
report or the cache's index.  Nothing is written outside the cache
(``AUDITKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/auditkit``, else
``~/.cache/auditkit``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.findings import Finding
from auditkit.package.fetchcache import Cache, Limits
from auditkit.package.transport import (FsspecFetcher, HttpFetcher, NotFound, check_url, fail, fetch_document,
                                        redact, stream)

ARXIV_EPRINT = "https://arxiv.org/e-print/"
FSSPEC_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "hf")     # through fsspec and the store's client (extra `remote`)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ARXIV_URL = re.compile(r"^https?://(?:export\.)?arxiv\.org/(?:abs|e-print|src|pdf)/([^?#]+?)(?:\.pdf)?/?$", re.I)


# --- a package directory -------------------------------------------------------------

def _entries(doc, url: str) -> list[tuple[str, str, int]]:
    from auditkit.package.store import unsafe_reason

    out = []
    for i, e in enumerate(doc.get("files") or []):
        path, sha, size = (e.get("path"), e.get("sha256"), e.get("bytes")) if isinstance(e, dict) else (None,) * 3
        if (not isinstance(path, str) or unsafe_reason(path) or path in ("MANIFEST.json", "MANIFEST.csv")
                or not isinstance(sha, str) or not _HEX64.match(sha) or not isinstance(size, int)
                or isinstance(size, bool) or size < 0):
            raise AuditError(f"MANIFEST.json entry {i} is not a safe path with a sha256 and a size: {str(e)[:120]}",
                             path=redact(url), hint="auditkit fetches only what a well-formed MANIFEST lists")
        out.append((path, sha, size))
    return out


def fetch_package(url: str, *, cache: Cache | None = None, limits: Limits | None = None):
    """Fetch the package directory at `url` (https, or an fsspec URL) into the cache: (MANIFEST bytes,
    MANIFEST.csv bytes or None, entries, findings, notes). Raises AuditError (exit 2) when it cannot be
    fetched."""
    from auditkit.package.locate import foreign_layout, is_spec_manifest
    from auditkit.errors import PackageDefect
    from auditkit.package.store import loads_strict

    cache = cache or Cache()
    limits = limits or Limits.from_env()
    base = url if url.endswith("/") else url + "/"
    fetcher = HttpFetcher(base, limits) if base.split("://")[0].lower() in ("http", "https") else FsspecFetcher(base, limits)
    shown = fetcher.shown
    notes: list[str] = []
    ref = cache.read_ref(shown)
    try:
        manifest, msha = fetch_document(fetcher, "MANIFEST.json", limits, cache)
    except NotFound:
        raise AuditError("no MANIFEST.json at this address", path=shown,
                         hint="give the address of the package directory (the one that holds MANIFEST.json), or "
                              "of an archive of it") from None
    except AuditError as exc:
        if ref is None or not cache.has(str(ref.get("manifest", ""))):
            raise
        manifest, msha = cache.blob(ref["manifest"]).read_bytes(), ref["manifest"]
        notes.append(f"offline: {exc.message}; using the MANIFEST.json fetched from {shown} at {ref.get('at')}")
        ref = dict(ref, offline=True)
    try:
        doc = loads_strict(manifest, "MANIFEST.json")
    except PackageDefect as exc:
        raise AuditError(f"its MANIFEST.json cannot be read: {exc.finding.message}", path=shown,
                         hint="auditkit fetches only what a readable MANIFEST lists") from None
    if not is_spec_manifest(doc):
        exc = foreign_layout(shown, "DIR", "its MANIFEST.json is not auditkit's")
        exc.hint = "download the package to a directory DIR, then: " + exc.hint
        raise exc
    entries = _entries(doc, base)
    total = sum(size for _, _, size in entries)
    if total > limits.total_bytes:
        raise AuditError(f"the MANIFEST lists {total} bytes, more than the {limits.total_bytes} allowed", path=shown,
                         hint="AUDITKIT_REMOTE_MAX_TOTAL raises the limit if the package is genuinely this large")
    csv = None
    if ref is not None and ref.get("manifest") == msha and ref.get("csv") and cache.has(ref["csv"]):
        csv = cache.blob(ref["csv"]).read_bytes()
    elif not (ref or {}).get("offline"):
        try:
            csv, _ = fetch_document(fetcher, "MANIFEST.csv", limits, cache)
        except NotFound:
            csv = None
    findings: list[Finding] = []
    todo = [(p, s, n) for p, s, n in entries if not cache.has(s, n)]
    if todo and (ref or {}).get("offline"):
        raise AuditError(f"{len(todo)} file(s) of the package are not in the cache, and the host cannot be reached",
                         path=shown, hint="fetch it once while online (the cache is " + str(cache.root) + ")")

    def one(item):
        path, sha, size = item
        if size > limits.file_bytes:
            raise AuditError(f"{path}: the MANIFEST lists {size} bytes, more than the {limits.file_bytes} allowed",
                             path=shown, hint="AUDITKIT_REMOTE_MAX_FILE raises the limit")
        f, tmp = cache.temporary()
        try:
            with f:
                got, n = fetcher.get(path, f, size, limits.file_deadline(size))
            if got != sha or n != size:
                more = "more than" if n > size else f"{n} of"
                return Finding(path, "remote-file-mismatch", "", f"sha256 {sha}, {size} bytes",
                               f"sha256 {got}, {more} {size} bytes" if n != size else f"sha256 {got}",
                               f"the file served at {fetcher.where(path)} is not the one MANIFEST.json lists; "
                               f"it was not kept")
            cache.keep(tmp, sha)
            return None
        except NotFound:
            return None           # verify reports it as a missing file
        finally:
            tmp.unlink(missing_ok=True)

    with ThreadPoolExecutor(max_workers=max(1, min(limits.workers, len(todo) or 1))) as pool:
        findings = [f for f in pool.map(one, todo) if f is not None]
    cache.write_ref(shown, {"manifest": msha, "csv": hashlib.sha256(csv).hexdigest() if csv is not None else None,
                            "at": _now()})
    return manifest, csv, entries, findings, notes


def _now() -> str:
    from auditkit.clock import utc_now

    return utc_now()


def build_tree(cache: Cache, manifest: bytes, csv: bytes | None, entries) -> Path:
    """A private directory (under the cache's work/) holding the package as fetched: the files whose
    hash matched, linked (or copied) from the cache; removed by the caller."""
    tree = cache.workdir()
    try:
        (tree / "MANIFEST.json").write_bytes(manifest)
        if csv is not None:
            (tree / "MANIFEST.csv").write_bytes(csv)
        for path, sha, size in entries:
            if not cache.has(sha, size):
                continue
            dest = tree.joinpath(*path.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cache.blob(sha), dest)
            except OSError:
                shutil.copyfile(cache.blob(sha), dest)
    except BaseException:
        shutil.rmtree(tree, ignore_errors=True)
        raise
    return tree


# --- what the user typed ----------------------------------------------------------------

def arxiv_id(given: str) -> str | None:
    """The arXiv identifier in `arxiv:ID`, a bare ID, or an arxiv.org abs/e-print/src/pdf URL."""
    from auditkit.package.locate import ARXIV_ID

    m = ARXIV_ID.match(given)
    if m:
        return m.group(1)
    m = _ARXIV_URL.match(given)
    if m and ARXIV_ID.match(m.group(1)):
        return m.group(1)
    return None


def fetch_archive(url: str, cache: Cache, limits: Limits) -> tuple[Path, list[str]]:
    """An archive (an e-print) fetched whole into the cache, by its sha256; offline, the copy fetched last."""
    from auditkit.package.scanned import default_max_bytes

    shown = redact(url)
    ref = cache.read_ref(shown)
    cap = min(limits.total_bytes, default_max_bytes())
    f, tmp = cache.temporary()
    try:
        with f:
            sha, n = stream(url, f, limits, cap=cap, deadline=limits.file_deadline(cap))
        if n > cap:
            raise fail(url, f"more than {cap} bytes", "AUDITKIT_REMOTE_MAX_TOTAL raises the limit")
        cache.keep(tmp, sha)
    except NotFound:
        raise
    except AuditError as exc:
        if ref is None or not cache.has(str(ref.get("archive", ""))):
            raise
        return cache.blob(ref["archive"]), [f"offline: {exc.message}; using the copy fetched at {ref.get('at')}"]
    finally:
        tmp.unlink(missing_ok=True)
    cache.write_ref(shown, {"archive": sha, "at": _now()})
    return cache.blob(sha), []


def fetch_source(given: str, *, stream_archive: bool = False, allow_foreign: bool = False):
    """The `PackageSource` of a URL or an arXiv identifier (see the module docstring)."""
    from auditkit.package.local import open_local
    from auditkit.package.locate import PackageSource

    limits = Limits.from_env()
    scheme = given.split("://", 1)[0].lower() if "://" in given else ""
    if scheme and scheme not in ("http", "https") + FSSPEC_SCHEMES:
        raise AuditError(f"auditkit does not fetch {scheme}:// addresses", path=redact(given),
                         hint="give an https:// address of the package directory, an s3:// or hf:// prefix, or "
                              "an arXiv identifier; or download the package and give its directory")
    cache = Cache()
    if scheme in FSSPEC_SCHEMES:
        manifest, csv, entries, findings, notes = fetch_package(given, cache=cache, limits=limits)
        tree = build_tree(cache, manifest, csv, entries)
        return PackageSource(redact(given), "remote", root=tree, findings=findings, notes=notes, _cleanup=[tree])
    ident = arxiv_id(given) if (not scheme or "arxiv.org/" in given.lower()) else None
    if ident is not None:
        url = os.environ.get("AUDITKIT_ARXIV_URL", ARXIV_EPRINT) + ident
        path, notes = fetch_archive(url, cache, limits)
        src = open_local(path, given, stream_archive=stream_archive, allow_foreign=allow_foreign,
                         notes=[f"e-print of arXiv:{ident} from {redact(url)}"] + notes)
        src.given = given
        return src
    check_url(given)
    path_part = urllib.parse.urlsplit(given).path
    if path_part.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        path, notes = fetch_archive(given, cache, limits)
        return open_local(path, given, stream_archive=stream_archive, allow_foreign=allow_foreign, notes=notes)
    manifest, csv, entries, findings, notes = fetch_package(given, cache=cache, limits=limits)
    tree = build_tree(cache, manifest, csv, entries)
    return PackageSource(redact(given), "remote", root=tree, findings=findings, notes=notes, _cleanup=[tree])

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
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.findings import Finding
from auditkit.package.atomic import rename

CHUNK = 1 << 20
ARXIV_EPRINT = "https://arxiv.org/e-print/"
FSSPEC_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "hf")     # through fsspec and the store's client (extra `remote`)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ARXIV_URL = re.compile(r"^https?://(?:export\.)?arxiv\.org/(?:abs|e-print|src|pdf)/([^?#]+?)(?:\.pdf)?/?$", re.I)


def _env_num(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise AuditError(f"{name} must be a number", hint=f"unset it or give a number such as {default:g}") from None
    if value <= 0:
        raise AuditError(f"{name} must be positive", hint=f"unset it or give a number such as {default:g}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one fetch may cost. Bytes are per file, per package and per MANIFEST; seconds are per read
    (`timeout`) and per file (`deadline` plus one second per MiB the file declares)."""

    file_bytes: int = 64 << 30
    total_bytes: int = 256 << 30
    doc_bytes: int = 64 << 20
    redirects: int = 5
    timeout: float = 30.0
    deadline: float = 300.0
    workers: int = 4

    @classmethod
    def from_env(cls) -> "Limits":
        d = cls()
        return cls(file_bytes=int(_env_num("AUDITKIT_REMOTE_MAX_FILE", d.file_bytes)),
                   total_bytes=int(_env_num("AUDITKIT_REMOTE_MAX_TOTAL", d.total_bytes)),
                   doc_bytes=int(_env_num("AUDITKIT_REMOTE_MAX_DOC", d.doc_bytes)),
                   timeout=_env_num("AUDITKIT_REMOTE_TIMEOUT", d.timeout),
                   deadline=_env_num("AUDITKIT_REMOTE_DEADLINE", d.deadline))

    def file_deadline(self, size: int | None) -> float:
        return self.deadline + (size or 0) / (1 << 20)


# --- the cache ---------------------------------------------------------------------

def cache_dir() -> Path:
    """AUDITKIT_CACHE_DIR, else $XDG_CACHE_HOME/auditkit, else ~/.cache/auditkit."""
    explicit = os.environ.get("AUDITKIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "auditkit"


class Cache:
    """Content-addressed: `blobs/sha256/ab/<sha256>` (a file is there only once its hash was checked),
    `refs/<sha256 of the redacted URL>.json` (what a URL served last), `work/` (temporaries)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir()
        try:
            for d in ("blobs/sha256", "refs", "work"):
                (self.root / d).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise AuditError(f"cannot use the cache directory: {exc.strerror}", path=str(self.root),
                             hint="set AUDITKIT_CACHE_DIR to a directory you can write") from None

    def blob(self, sha: str) -> Path:
        return self.root / "blobs" / "sha256" / sha[:2] / sha

    def has(self, sha: str, size: int | None = None) -> bool:
        p = self.blob(sha)
        try:
            st = os.lstat(p)
        except OSError:
            return False
        return st.st_mode & 0o170000 == 0o100000 and (size is None or st.st_size == size)

    def temporary(self):
        fd, name = tempfile.mkstemp(dir=self.root / "work", prefix="fetch-")
        return os.fdopen(fd, "wb"), Path(name)

    def keep(self, tmp: Path, sha: str) -> Path:
        dest = self.blob(sha)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(tmp, 0o444)
        rename(tmp, dest)
        return dest

    def ref_path(self, url: str) -> Path:
        return self.root / "refs" / (hashlib.sha256(url.encode("utf-8")).hexdigest() + ".json")

    def read_ref(self, url: str) -> dict | None:
        try:
            doc = json.loads(self.ref_path(url).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def write_ref(self, url: str, doc: dict) -> None:
        from auditkit.package.atomic import atomic_write_text

        atomic_write_text(self.ref_path(url), json.dumps({"url": url, **doc}, indent=2, sort_keys=True) + "\n")

    def workdir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root / "work", prefix="tree-"))


# --- URLs ---------------------------------------------------------------------------

def redact(url: str) -> str:
    """The URL without user, password, query or fragment: what messages and the cache's index show."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = p.hostname or ""
    if p.port:
        host += f":{p.port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


def _loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _check_url(url: str) -> None:
    p = urllib.parse.urlsplit(url)
    if p.scheme == "https" and p.hostname:
        return
    if p.scheme == "http" and _loopback(p.hostname):
        return
    raise AuditError(f"refused URL {redact(url)}: auditkit fetches https:// (http:// only from this machine)",
                     hint="give the https:// address of the package directory")


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, limit: int):
        super().__init__()
        self.max_redirections = limit
        self.max_repeats = 1

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        newurl = urllib.parse.urljoin(req.full_url, newurl)
        try:
            _check_url(newurl)
        except AuditError:
            raise urllib.error.HTTPError(redact(newurl), code, "redirected to a URL auditkit does not fetch "
                                         "(https downgraded to http?)", headers, fp) from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(limits: Limits):
    ctx = ssl.create_default_context()          # certificates and host names verified
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), _Redirects(limits.redirects))


class NotFound(AuditError):
    """The server answered 404/410: the file is not there."""


def _fail(url: str, what: str, hint: str = "") -> AuditError:
    return AuditError(f"cannot fetch {redact(url)}: {what}", path=redact(url),
                      hint=hint or "check the address; a file auditkit cannot fetch is not checked (exit 2)")


def stream(url: str, out, limits: Limits, *, cap: int, deadline: float, opener=None) -> tuple[str, int]:
    """Write the body at `url` to `out`, hashing it as it arrives: (sha256, bytes). Stops once more
    than `cap` bytes came (returns cap + 1 bytes' hash, for the caller to refuse). AuditError on
    any transport failure: a redirect loop or too many, an HTTP error, a stalled read, the deadline."""
    _check_url(url)
    opener = opener or _opener(limits)
    start = time.monotonic()
    req = urllib.request.Request(url, headers={"User-Agent": "auditkit", "Accept-Encoding": "identity"})
    h, n = hashlib.sha256(), 0
    try:
        with opener.open(req, timeout=limits.timeout) as resp:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n <= cap:
                if time.monotonic() - start > deadline:
                    raise _fail(url, f"not complete after {deadline:g} seconds (the deadline per file)",
                                "the server is too slow or sends without end; AUDITKIT_REMOTE_DEADLINE raises it")
                k = resp.readinto(view[:min(CHUNK, cap + 1 - n)])
                if not k:
                    break
                h.update(view[:k])
                out.write(view[:k])
                n += k
    except AuditError:
        raise
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise NotFound(f"not found at {redact(url)} (HTTP {exc.code})", path=redact(url)) from None
        if 300 <= exc.code < 400:
            raise _fail(url, f"a redirect loop, more than {limits.redirects} redirects, or a redirect to an "
                             f"address auditkit does not fetch (HTTP {exc.code})") from None
        raise _fail(url, f"HTTP {exc.code} {exc.msg}") from None
    except (socket.timeout, TimeoutError):
        raise _fail(url, f"no byte for {limits.timeout:g} seconds (a stalled server)",
                    "try again later; AUDITKIT_REMOTE_TIMEOUT sets the wait for one read") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _fail(url, f"no answer for {limits.timeout:g} seconds") from None
        raise _fail(url, f"{reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise _fail(url, f"{type(exc).__name__}: {exc}") from None
    return h.hexdigest(), n


class HttpFetcher:
    """Files below an http(s) package directory."""

    def __init__(self, base: str, limits: Limits):
        self.base, self.limits, self.opener = base, limits, _opener(limits)
        self.shown = redact(base)

    def where(self, rel: str) -> str:
        return redact(self.base + rel)

    def get(self, rel: str, out, cap: int, deadline: float) -> tuple[str, int]:
        return stream(self.base + urllib.parse.quote(rel), out, self.limits, cap=cap, deadline=deadline,
                      opener=self.opener)


class FsspecFetcher:
    """Files below an object-store or hub prefix (`s3://bucket/pkg/`, `hf://datasets/org/name/pkg/`),
    through fsspec and the store's own client (the `remote` extra). Credentials come from the client's
    own configuration (environment, profiles); the endpoint from fsspec's (FSSPEC_S3_ENDPOINT_URL)."""

    def __init__(self, url: str, limits: Limits):
        try:
            import fsspec
        except ImportError:
            raise AuditError(f"{url.split('://')[0]}:// needs fsspec", hint="pip install 'pretrain-auditkit[remote]'") from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise AuditError(f"cannot read {redact(url)}: {exc}", path=redact(url),
                             hint="pip install 'pretrain-auditkit[remote]' (fsspec with s3fs and huggingface_hub)") from None
        self.root, self.limits = root.rstrip("/"), limits
        self.shown = redact(url if url.endswith("/") else url + "/")

    def where(self, rel: str) -> str:
        return self.shown + rel

    def get(self, rel: str, out, cap: int, deadline: float) -> tuple[str, int]:
        start, h, n = time.monotonic(), hashlib.sha256(), 0
        try:
            with self.fs.open(f"{self.root}/{rel}", "rb") as f:
                while n <= cap:
                    if time.monotonic() - start > deadline:
                        raise _fail(self.where(rel), f"not complete after {deadline:g} seconds (the deadline per file)")
                    data = f.read(min(CHUNK, cap + 1 - n))
                    if not data:
                        break
                    h.update(data)
                    out.write(data)
                    n += len(data)
        except AuditError:
            raise
        except FileNotFoundError:
            raise NotFound(f"not found at {self.where(rel)}", path=self.where(rel)) from None
        except Exception as exc:  # noqa: BLE001 - a store client's own errors: could not fetch, exit 2
            raise _fail(self.where(rel), f"{type(exc).__name__}: {str(exc)[:200]}") from None
        return h.hexdigest(), n


def fetch_document(fetcher, rel: str, limits: Limits, cache: Cache) -> tuple[bytes, str]:
    """A small document (a MANIFEST) fetched whole, at most `limits.doc_bytes`: (bytes, sha256); kept in the cache."""
    f, tmp = cache.temporary()
    try:
        with f:
            sha, n = fetcher.get(rel, f, limits.doc_bytes, limits.file_deadline(limits.doc_bytes))
        if n > limits.doc_bytes:
            raise _fail(fetcher.where(rel), f"more than {limits.doc_bytes} bytes (a MANIFEST is not this large)",
                        "the server sends without end or this is not a MANIFEST; AUDITKIT_REMOTE_MAX_DOC raises it")
        data = tmp.read_bytes()
        cache.keep(tmp, sha)
        return data, sha
    finally:
        tmp.unlink(missing_ok=True)


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
    from auditkit.package.source import foreign_layout, is_spec_manifest
    from auditkit.package.store import PackageDefect, loads_strict

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
    from auditkit.package.source import _ARXIV_ID

    m = _ARXIV_ID.match(given)
    if m:
        return m.group(1)
    m = _ARXIV_URL.match(given)
    if m and _ARXIV_ID.match(m.group(1)):
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
            raise _fail(url, f"more than {cap} bytes", "AUDITKIT_REMOTE_MAX_TOTAL raises the limit")
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
    from auditkit.package.source import PackageSource, open_local

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
    _check_url(given)
    path_part = urllib.parse.urlsplit(given).path
    if path_part.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        path, notes = fetch_archive(given, cache, limits)
        return open_local(path, given, stream_archive=stream_archive, allow_foreign=allow_foreign, notes=notes)
    manifest, csv, entries, findings, notes = fetch_package(given, cache=cache, limits=limits)
    tree = build_tree(cache, manifest, csv, entries)
    return PackageSource(redact(given), "remote", root=tree, findings=findings, notes=notes, _cleanup=[tree])

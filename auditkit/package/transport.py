"""Fetching one file: over https (TLS verified, redirects bounded and never downgraded, a URL's
user, password and query never shown) or from an object store through fsspec; hashed as the bytes
arrive, stopped one byte past the cap and at a deadline (`stream`, `HttpFetcher`, `FsspecFetcher`,
`fetch_document`).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from auditkit.errors import AuditError
from auditkit.package.fetchcache import Cache, Limits

CHUNK = 1 << 20


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


def check_url(url: str) -> None:
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
            check_url(newurl)
        except AuditError:
            raise urllib.error.HTTPError(redact(newurl), code, "redirected to a URL auditkit does not fetch "
                                         "(https downgraded to http?)", headers, fp) from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener_for(limits: Limits):
    ctx = ssl.create_default_context()          # certificates and host names verified
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), _Redirects(limits.redirects))


class NotFound(AuditError):
    """The server answered 404/410: the file is not there."""


def fail(url: str, what: str, hint: str = "") -> AuditError:
    return AuditError(f"cannot fetch {redact(url)}: {what}", path=redact(url),
                      hint=hint or "check the address; a file auditkit cannot fetch is not checked (exit 2)")


def stream(url: str, out, limits: Limits, *, cap: int, deadline: float, opener=None) -> tuple[str, int]:
    """Write the body at `url` to `out`, hashing it as it arrives: (sha256, bytes). Stops once more
    than `cap` bytes came (returns cap + 1 bytes' hash, for the caller to refuse). AuditError on
    any transport failure: a redirect loop or too many, an HTTP error, a stalled read, the deadline."""
    check_url(url)
    opener = opener or opener_for(limits)
    start = time.monotonic()
    req = urllib.request.Request(url, headers={"User-Agent": "auditkit", "Accept-Encoding": "identity"})
    h, n = hashlib.sha256(), 0
    try:
        with opener.open(req, timeout=limits.timeout) as resp:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n <= cap:
                if time.monotonic() - start > deadline:
                    raise fail(url, f"not complete after {deadline:g} seconds (the deadline per file)",
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
            raise fail(url, f"a redirect loop, more than {limits.redirects} redirects, or a redirect to an "
                             f"address auditkit does not fetch (HTTP {exc.code})") from None
        raise fail(url, f"HTTP {exc.code} {exc.msg}") from None
    except (socket.timeout, TimeoutError):
        raise fail(url, f"no byte for {limits.timeout:g} seconds (a stalled server)",
                    "try again later; AUDITKIT_REMOTE_TIMEOUT sets the wait for one read") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise fail(url, f"no answer for {limits.timeout:g} seconds") from None
        raise fail(url, f"{reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise fail(url, f"{type(exc).__name__}: {exc}") from None
    return h.hexdigest(), n


class HttpFetcher:
    """Files below an http(s) package directory."""

    def __init__(self, base: str, limits: Limits):
        self.base, self.limits, self.opener = base, limits, opener_for(limits)
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
                        raise fail(self.where(rel), f"not complete after {deadline:g} seconds (the deadline per file)")
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
            raise fail(self.where(rel), f"{type(exc).__name__}: {str(exc)[:200]}") from None
        return h.hexdigest(), n


def fetch_document(fetcher, rel: str, limits: Limits, cache: Cache) -> tuple[bytes, str]:
    """A small document (a MANIFEST) fetched whole, at most `limits.doc_bytes`: (bytes, sha256); kept in the cache."""
    f, tmp = cache.temporary()
    try:
        with f:
            sha, n = fetcher.get(rel, f, limits.doc_bytes, limits.file_deadline(limits.doc_bytes))
        if n > limits.doc_bytes:
            raise fail(fetcher.where(rel), f"more than {limits.doc_bytes} bytes (a MANIFEST is not this large)",
                        "the server sends without end or this is not a MANIFEST; AUDITKIT_REMOTE_MAX_DOC raises it")
        data = tmp.read_bytes()
        cache.keep(tmp, sha)
        return data, sha
    finally:
        tmp.unlink(missing_ok=True)

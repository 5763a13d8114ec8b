"""RFC 3161 timestamps: request them over HTTP, store them, verify them offline.

A token proves that some bytes existed by the token's `genTime`, as far as the
reviewer trusts the timestamp authority (TSA) that signed it.  So a token only
counts when its signature chains to a root certificate the *reviewer* names
(`trusted`), never to one the package carries: anyone can run a TSA with a
made-up clock.  Parsing and the signature/chain check are `rfc3161-client`'s
(pyca/cryptography and OpenSSL underneath); this module decides what a result
means for the package.

Stored form, for a subject (a file's bytes or an event-log line):
`evidence/timestamps/<label>.<k>.tsr`, the TSA's TimeStampResp in DER as it
answered, and `<label>.<k>.chain.pem`, the certificates the token carries
(PEM; informational, never trusted). A `timestamped` event in the log names
both, the subject and its sha256.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Sequence

from auditkit.errors import AuditError

SHA256_OID = "2.16.840.1.101.3.4.2.1"
TSQ_TYPE = "application/timestamp-query"
TSR_TYPE = "application/timestamp-reply"
MAX_RESPONSE_BYTES = 1 << 20


class TokenStatus(str, enum.Enum):
    """What a token proves about the bytes it is checked against."""

    TRUSTED = "trusted"          # imprint matches; signature chains to a root the reviewer trusts
    UNTRUSTED = "untrusted"      # imprint matches; chains to no trusted root (its own, or none checkable)
    OTHER_BYTES = "other-bytes"  # the token is over different bytes
    INVALID = "invalid"          # not a granted RFC 3161 token, or its signature/chain does not verify


@dataclass(frozen=True)
class TokenInfo:
    gen_time: datetime
    accuracy_seconds: float | None
    tsa_name: str
    serial_number: int
    policy: str
    imprint_sha256: str

    @property
    def latest_time(self) -> datetime:
        """The latest moment the token may have been made: genTime + its resolution + the stated accuracy.

        rfc3161-client reports genTime to the second (a fraction the TSA wrote
        is dropped), so a genTime without a fraction is read as "some time in
        that second".
        """
        resolution = 0.0 if self.gen_time.microsecond else 1.0
        try:
            return self.gen_time + timedelta(seconds=resolution + (self.accuracy_seconds or 0.0))
        except OverflowError:  # a token dated 9999-12-31 (or a huge accuracy): later than any time there is
            return datetime.max.replace(tzinfo=self.gen_time.tzinfo)


@dataclass(frozen=True)
class TokenCheck:
    status: TokenStatus
    info: TokenInfo | None
    detail: str = ""


# --- requesting ---------------------------------------------------------------

def build_request(data: bytes):
    """A TimeStampReq over sha256(`data`) with a random nonce, asking for the TSA's certificate."""
    import rfc3161_client as rc

    return (rc.TimestampRequestBuilder().data(data).hash_algorithm(rc.HashAlgorithm.SHA256)
            .nonce(nonce=True).cert_request(cert_request=True).build())


def request_token(url: str, data: bytes, timeout: float = 30.0) -> bytes:
    """Ask the TSA at `url` for a token over sha256(`data`); return its TimeStampResp (DER).

    `timeout` bounds the whole exchange (connect, request, headers and body), not each read: a
    TSA that answers one byte at a time is cut off when it is spent. Raises AuditError naming the
    TSA when it cannot be reached, does not answer in time, answers with an HTTP error, something
    that is not HTTP or not a timestamp response, a rejection, or a token for other bytes or
    another nonce.
    """
    import http.client
    import urllib.error

    import rfc3161_client as rc

    if not isinstance(url, str) or not re.match(r"^https?://[^/?#\s]+", url):
        raise AuditError(f"not an http(s) URL: {url!r}", hint="give the TSA's URL, e.g. --tsa https://tsa.example/tsr")
    if not (timeout > 0 and timeout < float("inf")):
        raise AuditError(f"the TSA timeout must be a positive number of seconds, not {timeout!r}",
                         hint="e.g. --timeout 30")
    req = build_request(data)
    wait = f"check the URL and the network (the exchange may take {timeout:g} s in all; see --timeout)"
    deadline = _Deadline(timeout)
    try:
        body = _post(url, req.as_bytes(), timeout, deadline)
    except urllib.error.HTTPError as exc:
        raise AuditError(f"the TSA answered HTTP {exc.code} {_clean(exc.reason)}", path=url,
                         hint="check the URL; a TSA takes POSTed RFC 3161 requests") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError and ssl.SSLError are OSErrors
        if deadline.expired.is_set():
            raise AuditError(f"the TSA did not answer within {timeout:g} s", path=url, hint=wait) from None
        if isinstance(exc, (ValueError, http.client.InvalidURL)):  # e.g. a port that is not a number
            raise AuditError(f"not a usable http(s) URL: {_clean(exc)}", path=url,
                             hint="give the TSA's URL, e.g. --tsa https://tsa.example/tsr") from None
        if isinstance(exc, http.client.HTTPException):
            raise AuditError(f"the TSA's answer is not valid HTTP ({type(exc).__name__}: {_clean(exc)})",
                             path=url, hint="check the URL: it should name an RFC 3161 timestamp service") from None
        why = getattr(exc, "reason", None) or exc
        raise AuditError(f"cannot reach the TSA: {_clean(why)}", path=url, hint=wait) from None
    finally:
        deadline.cancel()
    if deadline.expired.is_set():  # the answer may have been cut short when the time was up
        raise AuditError(f"the TSA did not answer within {timeout:g} s", path=url, hint=wait)
    if len(body) > MAX_RESPONSE_BYTES:
        raise AuditError("the TSA's answer is larger than 1 MiB; not a timestamp response", path=url)
    try:
        parsed = rc.decode_timestamp_response(body)
    except ValueError as exc:
        raise AuditError(f"the TSA's answer is not an RFC 3161 response: {_clean(exc)}", path=url) from None
    if rc.PKIStatus(parsed.status) not in (rc.PKIStatus.GRANTED, rc.PKIStatus.GRANTED_WITH_MODS):
        why = "; ".join(parsed.status_string) if parsed.status_string else f"status {parsed.status}"
        raise AuditError(f"the TSA refused the request: {_clean(why)}", path=url)
    if parsed.tst_info.nonce != req.nonce:
        raise AuditError("the TSA's token does not carry the request's nonce (a replayed answer?)", path=url)
    if parsed.tst_info.message_imprint.message != hashlib.sha256(data).digest():
        raise AuditError("the TSA's token is over other bytes than those sent", path=url)
    return body


def _clean(text) -> str:
    """What a server said, fit for one line of a message (no control characters, at most 200 characters)."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= 200 else text[:197] + "..."


class _Deadline:
    """Cuts every socket registered with it (shutdown) once `seconds` have passed since it was made."""

    def __init__(self, seconds: float):
        import threading

        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._socks: list = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def register(self, sock) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired.is_set():
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired.set()
            for sock in self._socks:
                _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock) -> None:
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)  # a blocked recv returns at once
    except OSError:
        pass


def _post(url: str, body: bytes, timeout: float, deadline: _Deadline) -> bytes:
    """POST `body` to `url` (urllib: proxies from the environment, redirects) and read at most
    MAX_RESPONSE_BYTES + 1 bytes of the answer; every connection it opens is cut at `deadline`."""
    import http.client
    import urllib.request

    def connection(base):
        class Connection(base):
            def connect(self):
                super().connect()
                deadline.register(self.sock)
        return Connection

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(connection(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(connection(http.client.HTTPSConnection), req, context=self._context)

    opener = urllib.request.build_opener(Http(), Https())
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": TSQ_TYPE, "Accept": TSR_TYPE})
    with opener.open(request, timeout=timeout) as resp:  # noqa: S310 - the user's URL
        return resp.read(MAX_RESPONSE_BYTES + 1)


# --- reading and checking -----------------------------------------------------

def load_certificates(paths: Sequence[str | Path]) -> list:
    """Every certificate in the given PEM files (the reviewer's trust anchors). Raises AuditError naming a bad file."""
    if not paths:
        return []  # (cryptography takes a while to import: not for nothing)
    from cryptography import x509

    from auditkit.evidence import read_trust_file

    out = []
    for p in paths:
        data = read_trust_file(p, "certificate file")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise AuditError(f"not a PEM certificate file: {exc}", path=str(p),
                             hint="give the TSA's root CA certificate in PEM form") from None
        out.extend(certs)
    return out


def system_roots() -> list:
    """The certificates of the system's default CA bundle (empty when there is none)."""
    import ssl

    from cryptography import x509

    cafile = ssl.get_default_verify_paths().cafile
    if not cafile or not Path(cafile).is_file():
        return []
    try:
        return x509.load_pem_x509_certificates(Path(cafile).read_bytes())
    except ValueError:
        return []


def token_certificates(token: bytes) -> list:
    """The certificates a TimeStampResp carries (empty if it does not parse)."""
    import rfc3161_client as rc
    from cryptography import x509

    try:
        parsed = rc.decode_timestamp_response(token)
        return [x509.load_der_x509_certificate(c) for c in sorted(parsed.signed_data.certificates)]
    except ValueError:
        return []


def certificates_pem(certs: Sequence) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def token_info(token: bytes) -> TokenInfo:
    """What a TimeStampResp says (unverified). Raises ValueError if it is not a granted token."""
    import rfc3161_client as rc

    parsed = rc.decode_timestamp_response(token)
    if rc.PKIStatus(parsed.status) not in (rc.PKIStatus.GRANTED, rc.PKIStatus.GRANTED_WITH_MODS):
        raise ValueError(f"status {parsed.status}, not granted")
    tst = parsed.tst_info
    imprint = tst.message_imprint
    if imprint.hash_algorithm.dotted_string != SHA256_OID:
        raise ValueError(f"message imprint uses {imprint.hash_algorithm.dotted_string}, not sha256")
    acc = tst.accuracy
    accuracy = None
    if acc is not None:
        accuracy = (acc.seconds or 0) + (acc.millis or 0) / 1e3 + (acc.micros or 0) / 1e6
    return TokenInfo(gen_time=tst.gen_time, accuracy_seconds=accuracy, tsa_name=_tsa_name(parsed),
                     serial_number=tst.serial_number, policy=tst.policy.dotted_string,
                     imprint_sha256=imprint.message.hex())


def _tsa_name(parsed) -> str:
    from cryptography import x509

    name = parsed.tst_info.name
    if name is not None:
        value = getattr(name, "value", name)
        return value.rfc4514_string() if isinstance(value, x509.Name) else str(value)
    signer = _signer_certificate(parsed, [])
    return signer.subject.rfc4514_string() if signer is not None else "(unnamed TSA)"


def _signer_certificate(parsed, carried: Sequence):
    from cryptography import x509

    certs = [x509.load_der_x509_certificate(c) for c in parsed.signed_data.certificates] + list(carried)
    for si in parsed.signed_data.signer_infos:
        for c in certs:
            if c.issuer == si.issuer and c.serial_number == si.serial_number:
                return c
    return None


def _self_signed(cert) -> bool:
    return cert.issuer == cert.subject


def check_token(token: bytes, data_sha256: str, trusted: Sequence = (), carried: Sequence = ()) -> TokenCheck:
    """Check a stored TimeStampResp against the sha256 (hex) of the bytes it should cover (`_check_token`).

    Never raises on bad input: a token whose DER, certificates or fields cannot be read (the parsers
    raise ValueError, TypeError, KeyError, InvalidVersion... on malformed input) is INVALID, naming why.
    """
    import warnings

    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.x509 import InvalidVersion

    try:
        with warnings.catch_warnings():  # e.g. a certificate with a negative serial: it is judged, not warned of
            warnings.simplefilter("ignore")
            return _check_token(token, data_sha256, trusted, carried)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, InvalidVersion, UnsupportedAlgorithm) as exc:
        return TokenCheck(TokenStatus.INVALID, None,
                          f"not a well-formed RFC 3161 token: {type(exc).__name__}: {_short(str(exc))}")


def _check_token(token: bytes, data_sha256: str, trusted: Sequence = (), carried: Sequence = ()) -> TokenCheck:
    """Check a stored TimeStampResp against the sha256 (hex) of the bytes it should cover.

    `trusted`: root certificates the reviewer trusts (the only trust anchors).
    `carried`: certificates the package carries (the stored chain); they may
    help build a path from the TSA's certificate up to a trusted root, but a
    self-signed one among them is never used as an anchor for TRUSTED — only
    to tell an UNTRUSTED token (valid signature, unknown root) from an INVALID
    one. Never raises on bad input: a token that does not parse is INVALID.
    """
    import rfc3161_client as rc

    try:
        info = token_info(token)
        parsed = rc.decode_timestamp_response(token)
    except ValueError as exc:
        return TokenCheck(TokenStatus.INVALID, None, f"not a granted RFC 3161 sha256 timestamp: {exc}")
    if info.imprint_sha256 != data_sha256:
        return TokenCheck(TokenStatus.OTHER_BYTES, info,
                          f"the token is over sha256 {info.imprint_sha256}, not {data_sha256}")
    digest = bytes.fromhex(data_sha256)
    embedded = token_certificates(token)
    # intermediates: only certificates that are not self-signed (a self-signed one would be an anchor)
    helpers = _unique([c for c in list(carried) + embedded if not _self_signed(c)], exclude=trusted)
    trust_error = "no trusted TSA root was given"
    if trusted:
        try:
            _verifier(_unique(trusted), helpers).verify(parsed, digest)
            return TokenCheck(TokenStatus.TRUSTED, info, "")
        except (rc.VerificationError, ValueError) as exc:
            trust_error = str(exc)
    own_roots = _unique([c for c in list(carried) + embedded if _self_signed(c)])
    if not own_roots:
        return TokenCheck(TokenStatus.UNTRUSTED, info,
                          f"does not chain to a trusted root ({_short(trust_error)}); "
                          "the package carries no root to check its signature against")
    try:
        _verifier(own_roots, helpers).verify(parsed, digest)
    except (rc.VerificationError, ValueError) as exc:
        return TokenCheck(TokenStatus.INVALID, info, f"the signature does not verify: {_short(str(exc))}")
    roots = ", ".join(sorted(r.subject.rfc4514_string() for r in own_roots))
    return TokenCheck(TokenStatus.UNTRUSTED, info,
                      f"valid signature by {info.tsa_name}, chaining to {roots}, which is not among the trusted roots")


def _verifier(roots: Sequence, intermediates: Sequence):
    import rfc3161_client as rc

    return rc.VerifierBuilder(roots=list(roots), intermediates=list(intermediates)).build()


def _unique(certs: Sequence, exclude: Sequence = ()) -> list:
    seen = set(exclude)
    out = []
    for c in certs:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _short(text: str, limit: int = 200) -> str:
    reasons = re.findall(r'(?:reason|data): "([^"]+)"', text)  # OpenSSL's error stack: keep its reasons
    text = "; ".join(r.strip() for r in reasons if r.strip()) or text
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- recording ----------------------------------------------------------------

def record_timestamps(package: str | Path, events, *, subject: str, data: bytes, urls: Sequence[str],
                      label: str, timeout: float = 30.0) -> list:
    """Timestamp `data` at every TSA in `urls`; store each token and its certificates; log a `timestamped` event.

    `subject` names what `data` is (a package path, or ``evidence/events.jsonl#<seq>``
    for an event line); `label` names the stored files
    (``evidence/timestamps/<label>.<k>.tsr``, k = 0, 1, ...: the first free index).
    `events` is an `events.EventLog`. Returns the appended events. Raises
    AuditError when a TSA fails (nothing is logged for it).
    """
    from auditkit.evidence import TIMESTAMPS_DIR
    from auditkit.clock import format_utc
    from auditkit.evidence.canonical import sha256_hex
    from auditkit.package.atomic import create_exclusive

    if not re.fullmatch(r"[A-Za-z0-9._-]+", label):
        raise ValueError(f"token label {label!r} must be a plain file name")
    package = Path(package)
    out = []
    for url in urls:
        token = request_token(url, data, timeout)
        info = token_info(token)
        k = 0
        while True:
            rel = f"{TIMESTAMPS_DIR}/{label}.{k}.tsr"
            if create_exclusive(package / rel, token):
                break
            k += 1
        chain_rel = rel[: -len(".tsr")] + ".chain.pem"
        made = [rel]
        try:
            if create_exclusive(package / chain_rel, certificates_pem(token_certificates(token))):
                made.append(chain_rel)
            out.append(events.append("timestamped", subject=subject, sha256=sha256_hex(data), token=rel,
                                     token_sha256=sha256_hex(token), chain=chain_rel, tsa=url,
                                     gen_time=format_utc(info.gen_time)))
        except BaseException:   # no event for them: the files this call created go (nothing else)
            for r in made:
                (package / r).unlink(missing_ok=True)
            raise
    return out

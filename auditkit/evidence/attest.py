"""Signed attestations: DSSE envelopes carrying in-toto Statement v1, signed with securesystemslib and
checked with `auditkit.evidence.keys` (the same key ids and verification, without importing
securesystemslib's signers).

Two predicates, named under auditkit's namespace (the one its JSON Schemas'
`$id`s use):

- `https://auditkit.dev/attestation/gate-decision/v1`, one per decision, in
  `evidence/attestations/<gate>.decision.dsse.json`. Subject: the decision file
  (its package path and sha256). Predicate: `gate`, `rules` {path, sha256},
  `inputs` [{path, sha256}] (as the decision records them), `decided_at`,
  `engine` {name, version}.
- `https://auditkit.dev/attestation/package/v1`, one per finalized package, in
  `evidence/attestations/package.dsse.json`. Subjects: every file of the
  package except `MANIFEST.json`, `MANIFEST.csv` and `evidence/**`. Predicate:
  `root` (SPEC section 9's root over exactly those files), `events_head` (the
  sha256 of the event log's `package-finalized` line, which pins the log up to
  there), `engine`.

Keys are PEM files: a PKCS#8 Ed25519 or ECDSA P-256 private key to sign, the
SubjectPublicKeyInfo public key to verify. A key id is securesystemslib's
default (sha256 of the key's canonical securesystemslib JSON form). The signer's
public key is stored in `evidence/keys/<keyid>.pub.pem`, so a reviewer can see
which key signed; it is never trusted for being there.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from auditkit.errors import AuditError
from auditkit.evidence.canonical import canonical_json
from auditkit.evidence.events import path_problem
from auditkit.package.store import loads_strict

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
DECISION_PREDICATE = "https://auditkit.dev/attestation/gate-decision/v1"
PACKAGE_PREDICATE = "https://auditkit.dev/attestation/package/v1"


# --- keys -----------------------------------------------------------------------

def load_signer(path: str | Path):
    """A securesystemslib CryptoSigner for an unencrypted Ed25519 or ECDSA P-256 PEM private key."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    from cryptography.exceptions import UnsupportedAlgorithm

    data = _read(path, "private key")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise AuditError("the private key is encrypted", path=str(path),
                         hint="give an unencrypted PKCS#8 PEM key (e.g. openssl pkey -in K -out K2)") from None
    except UnsupportedAlgorithm as exc:  # e.g. a curve OpenSSL does not know
        raise AuditError(f"unsupported key: {exc}", path=str(path),
                         hint="sign with an Ed25519 or ECDSA P-256 key") from None
    except ValueError as exc:
        raise AuditError(f"not a PEM private key: {exc}", path=str(path)) from None
    ok = isinstance(key, ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1))
    if not ok:
        raise AuditError(f"unsupported key type {type(key).__name__}", path=str(path),
                         hint="sign with an Ed25519 or ECDSA P-256 key")
    return CryptoSigner(key)


def load_public_key(path: str | Path):
    """The `keys.PublicKey` of a PEM public key (Ed25519 or ECDSA P-256), with securesystemslib's key id."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from auditkit.evidence.keys import from_crypto

    from cryptography.exceptions import UnsupportedAlgorithm

    data = _read(path, "public key")
    try:
        key = load_pem_public_key(data)
    except UnsupportedAlgorithm as exc:  # e.g. a curve OpenSSL does not know
        raise AuditError(f"unsupported key: {exc}", path=str(path),
                         hint="trust Ed25519 or ECDSA P-256 keys") from None
    except ValueError as exc:
        raise AuditError(f"not a PEM public key: {exc}", path=str(path),
                         hint="give the public half (SubjectPublicKeyInfo PEM) of the signing key") from None
    ok = isinstance(key, ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1))
    if not ok:
        raise AuditError(f"unsupported key type {type(key).__name__}", path=str(path),
                         hint="trust Ed25519 or ECDSA P-256 keys")
    return from_crypto(key)


def public_key_pem(signer) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return signer.public_key._crypto_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _read(path, what: str) -> bytes:
    from auditkit.evidence import read_trust_file

    return read_trust_file(path, what)


# --- statements and envelopes -----------------------------------------------------

def statement(subjects: Sequence[tuple[str, str]], predicate_type: str, predicate: dict) -> dict:
    """An in-toto Statement v1 over (name, sha256) subjects."""
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": n, "digest": {"sha256": d}} for n, d in subjects],
            "predicateType": predicate_type, "predicate": predicate}


def engine() -> dict:
    from auditkit import __version__

    return {"name": "auditkit", "version": __version__}


def decision_statement(decision_path: str, decision_sha256: str, decision: dict) -> dict:
    """The gate-decision statement for a recorded decision document."""
    return statement([(decision_path, decision_sha256)], DECISION_PREDICATE, {
        "gate": decision.get("gate"), "rules": decision.get("rules"), "inputs": decision.get("inputs"),
        "decided_at": decision.get("decided_at"), "engine": engine()})


def package_statement(files: Sequence[tuple[str, str]], root: str, events_head: str) -> dict:
    return statement(files, PACKAGE_PREDICATE, {"root": root, "events_head": events_head, "engine": engine()})


def sign(stmt: dict, signers: Sequence) -> dict:
    """A DSSE envelope (JSON form) over the canonical JSON of `stmt`, signed by every signer."""
    from securesystemslib.dsse import Envelope

    env = Envelope(canonical_json(stmt), PAYLOAD_TYPE, {})
    for s in signers:
        env.sign(s)
    return env.to_dict()


def envelope_bytes(envelope: dict) -> bytes:
    return (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode("utf-8")


@dataclass
class EnvelopeCheck:
    """What an envelope proves: its statement, who trusted signed it, and what is wrong with it."""

    statement: dict | None = None
    signed_by: list[str] = field(default_factory=list)     # key ids of trusted keys whose signature verifies
    untrusted: list[str] = field(default_factory=list)     # notes on signatures by keys not trusted
    bad: list[str] = field(default_factory=list)           # key ids whose signature does not verify
    error: str = ""                                        # why the envelope could not be read
    error_at: str = ""                                     # where: a JSON path in the envelope or its payload

    @property
    def ok(self) -> bool:
        return not self.error and not self.bad


def check_envelope(doc, trusted: Sequence, carried: Sequence = ()) -> EnvelopeCheck:
    """Check every signature of a DSSE envelope (JSON form) and parse its in-toto statement.

    `trusted`: `keys.PublicKey`s the reviewer trusts; `carried`: keys the package
    carries (used only to tell a valid signature by an untrusted key from a
    broken one). A signature counts as *signed_by* only under a trusted key;
    one whose key id names a trusted or carried key and does not verify under
    it is *bad*; any other is *untrusted*. Never raises on bad input.
    """
    from auditkit.evidence.keys import pae as dsse_pae

    out = EnvelopeCheck()
    where = "$"
    try:
        if not isinstance(doc, dict) or not isinstance(doc.get("signatures"), list):
            raise ValueError("not a DSSE envelope (payload, payloadType, signatures)")
        sigs = []
        for i, s in enumerate(doc["signatures"]):
            where = f"$.signatures[{i}]"
            if not isinstance(s, dict) or not isinstance(s.get("sig"), str):
                raise ValueError("a signature entry has no sig")
            if not isinstance(s.get("keyid", ""), str):
                raise ValueError("a signature's keyid is not a string")
            where = f"$.signatures[{i}].sig"
            sigs.append((s.get("keyid", ""), dsse_b64decode(s["sig"])))
        where = "$.payloadType"
        if not isinstance(doc.get("payloadType"), str):
            raise ValueError("payloadType is not a string")
        where = "$.payload"
        if not isinstance(doc.get("payload"), str):
            raise ValueError("payload is not a string")
        payload = dsse_b64decode(doc["payload"])
    except ValueError as exc:
        out.error, out.error_at = f"{exc}", where
        return out
    if doc["payloadType"] != PAYLOAD_TYPE:
        out.error = f"payloadType is {doc['payloadType']!r}, not {PAYLOAD_TYPE!r}"
        return out
    if not sigs:
        out.error = "the envelope carries no signature"
        return out
    pae = dsse_pae(doc["payloadType"], payload)
    for keyid, sig in sigs:
        by_id = [k for k in trusted if k.keyid == keyid]
        verified = _verifying_key(by_id or list(trusted), sig, pae)  # DSSE: key ids are hints only
        if verified is not None:
            if verified.keyid not in out.signed_by:
                out.signed_by.append(verified.keyid)
            continue
        if by_id:
            out.bad.append(keyid)
            continue
        carried_by_id = [k for k in carried if k.keyid == keyid]
        if carried_by_id and _verifying_key(carried_by_id, sig, pae) is None:
            out.bad.append(keyid)
        elif carried_by_id:
            out.untrusted.append(f"{keyid} (valid signature by a key the package carries; not a trusted key)")
        else:
            out.untrusted.append(f"{keyid or '(no key id)'} (not a trusted key)")
    try:  # the strict reader: a payload nested 200,000 deep, a duplicate key or NaN is refused, not recursed into
        stmt = loads_strict(payload, "payload")
    except AuditError as exc:
        finding = getattr(exc, "finding", None)
        out.error = f"the payload is not strict JSON: {finding.message if finding else exc}"
        out.error_at = "$.payload" + (f" ({finding.location})" if finding and finding.location else "")
        return out
    at, problem = _statement_problem(stmt)
    if problem:
        out.error, out.error_at = problem, f"payload {at}"
        return out
    out.statement = stmt
    return out


def _verifying_key(keys: Sequence, sig: bytes, pae: bytes):
    """The first of `keys` under which `sig` verifies, or None."""
    return next((key for key in keys if key.verifies(sig, pae)), None)


def _statement_problem(stmt) -> tuple[str, str]:
    """(JSON path, why) the payload is not a Statement auditkit can check, or ("", "")."""
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        return "$._type", f"the payload is not an in-toto Statement v1 (_type {STATEMENT_TYPE})"
    subj = stmt.get("subject")
    if not isinstance(subj, list) or not subj:
        return "$.subject", "the statement has no subjects"
    for i, s in enumerate(subj):
        if not (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict)
                and isinstance(s["digest"].get("sha256"), str)):
            return f"$.subject[{i}]", "a subject lacks a name or a sha256 digest"
        why = path_problem(s["name"])
        if why:  # an absolute path, '..', or a name no file can have: never looked up outside the package
            return f"$.subject[{i}].name", f"the subject {_shown(s['name'])} {why}"
    if not isinstance(stmt.get("predicateType"), str) or not isinstance(stmt.get("predicate"), dict):
        return "$.predicate", "the statement has no predicateType or predicate"
    return _predicate_problem(stmt["predicateType"], stmt["predicate"])


#: the predicates' fields auditkit reads, and what each must hold ("sha256", "path", "text")
_PREDICATE_FIELDS = {
    PACKAGE_PREDICATE: {"root": "sha256", "events_head": "sha256"},
    DECISION_PREDICATE: {"rules": {"path": "path", "sha256": "sha256"}},
}


def _predicate_problem(predicate_type: str, pred: dict) -> tuple[str, str]:
    """(JSON path, why) a field auditkit reads holds the wrong kind of value (a list where a
    digest belongs); an absent field is not a problem here (the checks report what it lacks)."""
    for key, kind in _PREDICATE_FIELDS.get(predicate_type, {}).items():
        at = f"$.predicate.{key}"
        if key not in pred:
            continue
        if isinstance(kind, dict):
            if not isinstance(pred.get(key), dict):
                return at, f"{key} is not an object"
            for sub, sub_kind in kind.items():
                why = _value_problem(pred[key].get(sub), sub_kind) if sub in pred[key] else ""
                if why:
                    return f"{at}.{sub}", f"{key}.{sub} {why}"
        else:
            why = _value_problem(pred.get(key), kind)
            if why:
                return at, f"{key} {why}"
    if predicate_type == DECISION_PREDICATE:
        inputs = pred.get("inputs", [])
        if not isinstance(inputs, list):
            return "$.predicate.inputs", "inputs is not an array"
        for i, ref in enumerate(inputs):
            if not isinstance(ref, dict):
                return f"$.predicate.inputs[{i}]", "an input is not an object"
            for sub, sub_kind in (("path", "path"), ("sha256", "sha256")):
                why = _value_problem(ref.get(sub), sub_kind)
                if why:
                    return f"$.predicate.inputs[{i}].{sub}", f"an input's {sub} {why}"
    return "", ""


def _value_problem(value, kind: str) -> str:
    from auditkit.evidence.events import field_problem

    return field_problem({"sha256": "sha256", "path": "path"}[kind], value)


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def dsse_b64decode(text: str) -> bytes:
    """Bytes of a DSSE base64 field: the standard or the URL-safe alphabet (the DSSE spec allows
    either), one alphabet per field, padding optional. Raises ValueError on anything else
    (mixed alphabets, misplaced padding, characters outside both, bits left over)."""
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    body = text.rstrip("=")
    pad = len(text) - len(body)
    if pad and (pad > 2 or len(text) % 4):
        raise ValueError("misplaced base64 padding")
    if len(body) % 4 == 1:
        raise ValueError("not base64: its length cannot be that of any bytes")
    if not body.isascii():
        raise ValueError("not base64: a character outside both base64 alphabets")
    standard, urlsafe = any(c in "+/" for c in body), any(c in "-_" for c in body)
    if standard and urlsafe:
        raise ValueError("not base64: it mixes the standard (+/) and URL-safe (-_) alphabets")
    if urlsafe:
        body = body.translate(_URLSAFE_TO_STANDARD)
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None
    if base64.b64encode(data).decode("ascii").rstrip("=") != body:
        raise ValueError("not base64 in canonical form (bits left over at the end)")
    return data


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def subjects_of(stmt: dict) -> dict[str, str]:
    return {s["name"]: s["digest"]["sha256"] for s in stmt["subject"]}


# --- recording ----------------------------------------------------------------------

def write_envelope(package: str | Path, rel: str, stmt: dict, signers: Sequence, *, replace: bool = False) -> dict:
    """Sign `stmt`, store the envelope at `rel` and each signer's public key under evidence/keys/."""
    from auditkit.evidence import KEYS_DIR
    from auditkit.package.atomic import atomic_write_bytes, create_exclusive

    package = Path(package)
    env = sign(stmt, signers)
    for s in signers:
        key_rel = f"{KEYS_DIR}/{s.public_key.keyid}.pub.pem"
        if not (package / key_rel).exists():
            create_exclusive(package / key_rel, public_key_pem(s))
    if replace:
        atomic_write_bytes(package / rel, envelope_bytes(env))
    elif not create_exclusive(package / rel, envelope_bytes(env)):
        raise AuditError("an attestation is already recorded here", path=str(package / rel),
                         hint="attestations are never overwritten")
    return env


def carried_keys(read_paths: dict[str, bytes]) -> list:
    """The `keys.PublicKey`s of the public keys a package carries (unreadable ones skipped)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from auditkit.evidence.keys import from_crypto

    out = []
    for rel, data in sorted(read_paths.items()):
        try:
            out.append(from_crypto(load_pem_public_key(data)))
        except (ValueError, TypeError, UnsupportedAlgorithm):  # a curve nobody knows, a key type
            continue                                           # securesystemslib has no scheme for
    return out

"""Signed attestations: DSSE envelopes carrying in-toto Statement v1, via securesystemslib.

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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from auditkit.errors import AuditError
from auditkit.evidence.canonical import canonical_json

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

    data = _read(path, "private key")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise AuditError("the private key is encrypted", path=str(path),
                         hint="give an unencrypted PKCS#8 PEM key (e.g. openssl pkey -in K -out K2)") from None
    except ValueError as exc:
        raise AuditError(f"not a PEM private key: {exc}", path=str(path)) from None
    ok = isinstance(key, ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1))
    if not ok:
        raise AuditError(f"unsupported key type {type(key).__name__}", path=str(path),
                         hint="sign with an Ed25519 or ECDSA P-256 key")
    return CryptoSigner(key)


def load_public_key(path: str | Path):
    """A securesystemslib SSlibKey for a PEM public key (Ed25519 or ECDSA P-256)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    data = _read(path, "public key")
    try:
        key = load_pem_public_key(data)
    except ValueError as exc:
        raise AuditError(f"not a PEM public key: {exc}", path=str(path),
                         hint="give the public half (SubjectPublicKeyInfo PEM) of the signing key") from None
    ok = isinstance(key, ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1))
    if not ok:
        raise AuditError(f"unsupported key type {type(key).__name__}", path=str(path),
                         hint="trust Ed25519 or ECDSA P-256 keys")
    return SSlibKey.from_crypto(key)


def public_key_pem(signer) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return signer.public_key._crypto_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _read(path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AuditError(f"cannot read the {what}: {exc.strerror or exc}", path=str(path)) from None


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

    @property
    def ok(self) -> bool:
        return not self.error and not self.bad


def check_envelope(doc, trusted: Sequence, carried: Sequence = ()) -> EnvelopeCheck:
    """Check every signature of a DSSE envelope (JSON form) and parse its in-toto statement.

    `trusted`: SSlibKey objects the reviewer trusts; `carried`: keys the package
    carries (used only to tell a valid signature by an untrusted key from a
    broken one). A signature counts as *signed_by* only under a trusted key;
    one whose key id names a trusted or carried key and does not verify under
    it is *bad*; any other is *untrusted*. Never raises on bad input.
    """
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import Signature

    out = EnvelopeCheck()
    try:
        if not isinstance(doc, dict) or not isinstance(doc.get("signatures"), list):
            raise ValueError("not a DSSE envelope (payload, payloadType, signatures)")
        sigs = []
        for s in doc["signatures"]:
            if not isinstance(s, dict) or not isinstance(s.get("sig"), str):
                raise ValueError("a signature entry has no sig")
            sigs.append(Signature(str(s.get("keyid", "")), base64.b64decode(s["sig"], validate=True).hex()))
        env = Envelope(base64.b64decode(doc["payload"], validate=True), str(doc["payloadType"]), {})
    except (KeyError, ValueError, TypeError) as exc:
        out.error = f"{exc}"
        return out
    if env.payload_type != PAYLOAD_TYPE:
        out.error = f"payloadType is {env.payload_type!r}, not {PAYLOAD_TYPE!r}"
        return out
    if not sigs:
        out.error = "the envelope carries no signature"
        return out
    pae = env.pae()
    for sig in sigs:
        by_id = [k for k in trusted if k.keyid == sig.keyid]
        verified = _verifying_key(by_id or list(trusted), sig, pae)  # DSSE: key ids are hints only
        if verified is not None:
            if verified.keyid not in out.signed_by:
                out.signed_by.append(verified.keyid)
            continue
        if by_id:
            out.bad.append(sig.keyid)
            continue
        carried_by_id = [k for k in carried if k.keyid == sig.keyid]
        if carried_by_id and _verifying_key(carried_by_id, sig, pae) is None:
            out.bad.append(sig.keyid)
        elif carried_by_id:
            out.untrusted.append(f"{sig.keyid} (valid signature by a key the package carries; not a trusted key)")
        else:
            out.untrusted.append(f"{sig.keyid or '(no key id)'} (not a trusted key)")
    try:
        stmt = json.loads(env.payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        out.error = f"the payload is not JSON: {exc}"
        return out
    problem = _statement_problem(stmt)
    if problem:
        out.error = problem
        return out
    out.statement = stmt
    return out


def _verifying_key(keys: Sequence, sig, pae: bytes):
    from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError

    for key in keys:
        probe = type(sig)(key.keyid, sig.signature)
        try:
            key.verify_signature(probe, pae)
            return key
        except (UnverifiedSignatureError, VerificationError, ValueError):
            continue
    return None


def _statement_problem(stmt) -> str:
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        return f"the payload is not an in-toto Statement v1 (_type {STATEMENT_TYPE})"
    subj = stmt.get("subject")
    if not isinstance(subj, list) or not subj:
        return "the statement has no subjects"
    for s in subj:
        if not (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict)
                and isinstance(s["digest"].get("sha256"), str)):
            return "a subject lacks a name or a sha256 digest"
    if not isinstance(stmt.get("predicateType"), str) or not isinstance(stmt.get("predicate"), dict):
        return "the statement has no predicateType or predicate"
    return ""


def subjects_of(stmt: dict) -> dict[str, str]:
    return {s["name"]: s["digest"]["sha256"] for s in stmt["subject"]}


# --- recording ----------------------------------------------------------------------

def write_envelope(package: str | Path, rel: str, stmt: dict, signers: Sequence, *, replace: bool = False) -> dict:
    """Sign `stmt`, store the envelope at `rel` and each signer's public key under evidence/keys/."""
    from auditkit.evidence import KEYS_DIR
    from auditkit.package.store import atomic_write_bytes, create_exclusive

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
    """SSlibKey objects for the public keys a package carries (unreadable ones skipped)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    out = []
    for rel, data in sorted(read_paths.items()):
        try:
            out.append(SSlibKey.from_crypto(load_pem_public_key(data)))
        except (ValueError, TypeError):
            continue
    return out

"""Public keys on the read side: a key's id, DSSE's pre-authentication encoding, and whether a signature
verifies, with `cryptography` alone.

securesystemslib signs (`attest.sign`, `attest.load_signer`); reading an envelope needs only what is
here. Importing `securesystemslib.signer` imports every signer it has, and each of those imports its
cloud SDK when one happens to be installed (boto3 alone costs 0.15 s of CPU), on every `verify` of a
package that carries an attestation, while the readers hash the package. The key ids and the
verification are securesystemslib's: `tests/test_evidence_keys.py` checks both against it, and a key type
this module does not handle is handed to securesystemslib itself (`from_crypto`), so nothing verifies
differently.

- key id: sha256 (hex) of the OLPC canonical JSON of {keytype, scheme, keyval: {public}}, where
  `public` is the raw key in hex (Ed25519) or its SubjectPublicKeyInfo PEM (ECDSA, RSA);
- schemes: `ed25519`; `ecdsa-sha2-nistp256|384|521` (DER signatures over SHA-256|384|512);
  `rsassa-pss-sha256` (MGF1 SHA-256, any salt length);
- PAE: ``DSSEv1 <len(type)> <type> <len(body)> <body>`` (lengths in ASCII decimal).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class PublicKey:
    """A public key as DSSE signatures name it (`keyid`) and check against it (`verifies`)."""

    keyid: str
    keytype: str
    scheme: str
    crypto: object        # the `cryptography` public key

    def verifies(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding

        try:
            if self.scheme == "ed25519":
                self.crypto.verify(signature, data)
            elif self.keytype == "ecdsa":
                digest = {"ecdsa-sha2-nistp256": hashes.SHA256, "ecdsa-sha2-nistp384": hashes.SHA384,
                          "ecdsa-sha2-nistp521": hashes.SHA512}[self.scheme]
                self.crypto.verify(signature, data, ec.ECDSA(digest()))
            else:   # rsassa-pss-sha256
                self.crypto.verify(signature, data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO),
                                   hashes.SHA256())
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


class _SslibKey:
    """A key type this module does not handle (an ML-DSA key), verified by securesystemslib."""

    def __init__(self, key):
        self.key = key
        self.keyid = key.keyid

    def verifies(self, signature: bytes, data: bytes) -> bool:
        from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
        from securesystemslib.signer import Signature

        try:
            self.key.verify_signature(Signature(self.keyid, signature.hex()), data)
        except (UnverifiedSignatureError, VerificationError, ValueError):
            return False
        return True


_CURVES = {"secp256r1": "ecdsa-sha2-nistp256", "secp384r1": "ecdsa-sha2-nistp384",
           "secp521r1": "ecdsa-sha2-nistp521"}


def from_crypto(key) -> PublicKey | _SslibKey:
    """The PublicKey of a `cryptography` public key. ValueError for a key neither this module nor
    securesystemslib has a scheme for (a curve outside P-256/384/521, DSA)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(key, ed25519.Ed25519PublicKey):
        return _key("ed25519", "ed25519", key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex(), key)
    pem = None
    if isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise ValueError(f"unsupported curve {key.curve.name!r}")
        return _key("ecdsa", _CURVES[key.curve.name], pem, key)
    if isinstance(key, rsa.RSAPublicKey):
        return _key("rsa", "rsassa-pss-sha256", pem, key)
    from securesystemslib.exceptions import Error
    from securesystemslib.signer import SSlibKey

    try:
        return _SslibKey(SSlibKey.from_crypto(key))     # ValueError for what it has no scheme for
    except Error as exc:
        raise ValueError(str(exc)) from None


def _key(keytype: str, scheme: str, public: str, crypto) -> PublicKey:
    body = (f'{{"keytype":{_canonical(keytype)},"keyval":{{"public":{_canonical(public)}}},'
            f'"scheme":{_canonical(scheme)}}}')
    return PublicKey(hashlib.sha256(body.encode("utf-8")).hexdigest(), keytype, scheme, crypto)


def _canonical(text: str) -> str:
    """A string in OLPC canonical JSON: quoted, only backslash and quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a signature signs."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)

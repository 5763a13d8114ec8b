"""The read side's keys (`auditkit.evidence.keys`) against securesystemslib, the reference: the same key
ids, the same verdict on every signature, the same DSSE pre-authentication encoding; and reading an
envelope imports none of securesystemslib's signers (nor the cloud SDKs they pull in)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa, x25519
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey

from auditkit.evidence import attest, keys
from fixtures.evidence import keys as key_files  # noqa: F401 - fixture

PRIVATE = {
    "ed25519": lambda: ed25519.Ed25519PrivateKey.generate(),
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "rsa": lambda: rsa.generate_private_key(65537, 2048),
}


def _reference_verifies(ref: SSlibKey, sig: bytes, data: bytes) -> bool:
    from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError

    try:
        ref.verify_signature(Signature(ref.keyid, sig.hex()), data)
    except (UnverifiedSignatureError, VerificationError):
        return False
    return True


@pytest.mark.parametrize("kind", sorted(PRIVATE))
def test_key_ids_and_verdicts_are_securesystemslibs(kind):
    private = PRIVATE[kind]()
    ref = SSlibKey.from_crypto(private.public_key())
    ours = keys.from_crypto(private.public_key())
    assert isinstance(ours, keys.PublicKey) and ours.keyid == ref.keyid and ours.scheme == ref.scheme
    data = keys.pae(attest.PAYLOAD_TYPE, b'{"a": 1}')
    sig = bytes.fromhex(CryptoSigner(private).sign(data).signature)
    forged = bytearray(sig)
    forged[len(forged) // 2] ^= 1
    for signature, payload in ((sig, data), (sig, data + b" "), (bytes(forged), data), (b"", data)):
        assert ours.verifies(signature, payload) == _reference_verifies(ref, signature, payload)
    assert ours.verifies(sig, data) and not ours.verifies(sig, data + b" ")
    other = keys.from_crypto(PRIVATE[kind]().public_key())
    assert other.keyid != ours.keyid and not other.verifies(sig, data)


@pytest.mark.parametrize("payload_type,payload", [("http://example.com/HelloWorld", b"hello world"),
                                                  (attest.PAYLOAD_TYPE, b""), ("t\u00e9", "\u00e9\n".encode())])
def test_pae_is_the_envelopes(payload_type, payload):
    assert keys.pae(payload_type, payload) == Envelope(payload, payload_type, {}).pae()


def test_a_key_type_this_module_lacks_is_securesystemslibs():
    private = mldsa.MLDSA44PrivateKey.generate()
    ours, ref = keys.from_crypto(private.public_key()), SSlibKey.from_crypto(private.public_key())
    assert not isinstance(ours, keys.PublicKey) and ours.keyid == ref.keyid
    sig = bytes.fromhex(CryptoSigner(private).sign(b"abc").signature)
    assert ours.verifies(sig, b"abc") and not ours.verifies(sig, b"abd")


def _pem(pub) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_a_key_without_a_scheme_is_refused_and_skipped_when_carried():
    k256 = ec.generate_private_key(ec.SECP256K1()).public_key()     # a curve neither has a scheme for
    xkey = x25519.X25519PrivateKey.generate().public_key()          # not a signing key
    for pub in (k256, xkey):
        with pytest.raises(ValueError):
            keys.from_crypto(pub)
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    carried = attest.carried_keys({"evidence/keys/a.pub.pem": _pem(k256), "evidence/keys/b.pub.pem": _pem(ed),
                                   "evidence/keys/c.pub.pem": b"not a key", "evidence/keys/d.pub.pem": _pem(xkey)})
    assert [k.keyid for k in carried] == [SSlibKey.from_crypto(ed).keyid]


def test_reading_an_envelope_imports_no_signer(key_files, tmp_path):
    priv, pub = key_files["trusted"]
    env = attest.sign(attest.statement([("a.json", "ab" * 32)], attest.PACKAGE_PREDICATE, {}),
                      [attest.load_signer(priv)])
    (tmp_path / "env.json").write_text(attest.envelope_bytes(env).decode())
    code = ("import json, sys; from auditkit.evidence import attest; "
            f"key = attest.load_public_key({str(pub)!r}); "
            f"doc = json.load(open({str(tmp_path / 'env.json')!r})); "
            f"carried = attest.carried_keys({{'k': open({str(pub)!r}, 'rb').read()}}); "
            "check = attest.check_envelope(doc, [key], carried); "
            "print(check.signed_by == [key.keyid], sorted(m for m in sys.modules if m.startswith('securesystemslib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert out[0] == "True" and "securesystemslib.signer" not in out[1], out

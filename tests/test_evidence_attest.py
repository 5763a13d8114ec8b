"""DSSE envelopes with in-toto statements: signing, verifying under trusted keys only."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auditkit.errors import AuditError
from auditkit.evidence import attest
from auditkit.evidence.canonical import canonical_json
from fixtures.evidence import keys  # noqa: F401 - fixture

STMT = attest.statement([("analysis/g_decision.json", "ab" * 32)], attest.DECISION_PREDICATE,
                        {"gate": "g", "rules": {"path": "preanalysis/g.rules.json", "sha256": "cd" * 32}})


def test_pae_is_the_dsse_spec_encoding():
    from securesystemslib.dsse import Envelope

    # the DSSE v1 protocol's own example
    env = Envelope(b"hello world", "http://example.com/HelloWorld", {})
    assert env.pae() == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


@pytest.mark.parametrize("name", ["trusted", "trusted-ec"])
def test_signed_statement_verifies_under_its_key(keys, name):
    priv, pub = keys[name]
    env = attest.sign(STMT, [attest.load_signer(priv)])
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(env["payload"]) == canonical_json(STMT)
    key = attest.load_public_key(pub)
    check = attest.check_envelope(env, [key])
    assert check.ok and check.signed_by == [key.keyid] and check.statement == STMT
    assert attest.subjects_of(check.statement) == {"analysis/g_decision.json": "ab" * 32}


def test_untrusted_signer_is_named_never_accepted(keys):
    env = attest.sign(STMT, [attest.load_signer(keys["other"][0])])
    other = attest.load_public_key(keys["other"][1])
    trusted = attest.load_public_key(keys["trusted"][1])
    check = attest.check_envelope(env, [trusted])
    assert check.signed_by == [] and check.bad == [] and check.untrusted == [f"{other.keyid} (not a trusted key)"]
    check = attest.check_envelope(env, [trusted], carried=[other])
    assert check.signed_by == [] and "valid signature by a key the package carries" in check.untrusted[0]


def test_changed_payload_is_a_bad_signature(keys):
    env = attest.sign(STMT, [attest.load_signer(keys["trusted"][0])])
    forged = copy.deepcopy(STMT)
    forged["predicate"]["gate"] = "h"
    env["payload"] = base64.b64encode(canonical_json(forged)).decode()
    key = attest.load_public_key(keys["trusted"][1])
    check = attest.check_envelope(env, [key])
    assert check.signed_by == [] and check.bad == [key.keyid] and not check.ok


def test_key_id_is_only_a_hint(keys):
    """A signature whose keyid names no key still counts when a trusted key verifies it (DSSE)."""
    env = attest.sign(STMT, [attest.load_signer(keys["trusted"][0])])
    env["signatures"][0]["keyid"] = ""
    key = attest.load_public_key(keys["trusted"][1])
    assert attest.check_envelope(env, [key]).signed_by == [key.keyid]


@pytest.mark.parametrize("doc, error", [
    ({"payload": "e30=", "payloadType": "application/vnd.in-toto+json"}, "not a DSSE envelope"),
    ({"payload": "e30=", "payloadType": "text/plain", "signatures": [{"keyid": "k", "sig": "AA=="}]}, "payloadType"),
    ({"payload": "e30=", "payloadType": "application/vnd.in-toto+json", "signatures": []}, "no signature"),
    ({"payload": "e30=", "payloadType": "application/vnd.in-toto+json",
      "signatures": [{"keyid": "k", "sig": "AA=="}]}, "in-toto Statement v1"),
    ("just a string", "not a DSSE envelope"),
])
def test_malformed_envelopes_are_reported(doc, error):
    assert error in attest.check_envelope(doc, []).error


def test_key_files_are_checked(tmp_path):
    enc = tmp_path / "enc.pem"
    enc.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(AuditError, match="encrypted"):
        attest.load_signer(enc)
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(AuditError, match="unsupported key type RSA") as err:
        attest.load_signer(rsa_key)
    assert "Ed25519 or ECDSA P-256" in err.value.hint
    p384 = tmp_path / "p384.pub.pem"
    p384.write_bytes(ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(AuditError, match="unsupported key type"):
        attest.load_public_key(p384)
    with pytest.raises(AuditError, match="cannot read") as err:
        attest.load_public_key(tmp_path / "missing.pem")
    assert err.value.path == str(tmp_path / "missing.pem")


def test_write_envelope_stores_key_and_never_overwrites(keys, tmp_path):
    signer = attest.load_signer(keys["trusted"][0])
    attest.write_envelope(tmp_path, "evidence/attestations/g.decision.dsse.json", STMT, [signer])
    doc = json.loads((tmp_path / "evidence/attestations/g.decision.dsse.json").read_text())
    carried = attest.carried_keys({"k": (tmp_path / f"evidence/keys/{signer.public_key.keyid}.pub.pem").read_bytes()})
    assert [k.keyid for k in carried] == [signer.public_key.keyid]
    assert attest.check_envelope(doc, carried).signed_by == [signer.public_key.keyid]
    with pytest.raises(AuditError, match="already recorded"):
        attest.write_envelope(tmp_path, "evidence/attestations/g.decision.dsse.json", STMT, [signer])

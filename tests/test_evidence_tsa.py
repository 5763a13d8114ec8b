"""RFC 3161 timestamps: requested from a local TSA, verified offline against the reviewer's roots only."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timezone

import pytest

from auditkit.errors import AuditError
from auditkit.evidence import tsa
from auditkit.evidence.events import EventLog, verify_chain
from auditkit.evidence.tsa import TokenStatus
from fixtures.evidence import TsaServer, good_pki, rogue_pki, tsa_server  # noqa: F401 - fixtures

DATA = b'{"gate": "stage2", "frozen_at": "2026-04-28T09:00:00Z"}\n'
SHA = hashlib.sha256(DATA).hexdigest()


def test_token_from_openssl_tsa_is_trusted_under_its_root(tsa_server, good_pki):
    token = tsa.request_token(tsa_server.url, DATA)
    check = tsa.check_token(token, SHA, tsa.load_certificates([good_pki.ca_cert]))
    assert check.status is TokenStatus.TRUSTED, check.detail
    assert check.info.imprint_sha256 == SHA
    assert check.info.tsa_name == "CN=Good TSA,O=auditkit tests"
    assert abs((datetime.now(timezone.utc) - check.info.gen_time).total_seconds()) < 60
    # genTime is read to the second: the latest moment covers the rest of that second
    assert (check.info.latest_time - check.info.gen_time).total_seconds() == 1.0


def test_the_reference_verifier_agrees(tsa_server, good_pki, tmp_path):
    """openssl ts -verify accepts what check_token calls trusted (both TSA backends)."""
    with TsaServer(good_pki, "python", clock=lambda: datetime.now(timezone.utc)) as py_tsa:
        for url in (tsa_server.url, py_tsa.url):
            token = tsa.request_token(url, DATA)
            assert tsa.check_token(token, SHA, tsa.load_certificates([good_pki.ca_cert])).status is TokenStatus.TRUSTED
            (tmp_path / "t.tsr").write_bytes(token)
            (tmp_path / "d").write_bytes(DATA)
            done = subprocess.run(["openssl", "ts", "-verify", "-in", str(tmp_path / "t.tsr"), "-data",
                                   str(tmp_path / "d"), "-CAfile", str(good_pki.ca_cert)],
                                  capture_output=True, text=True, timeout=30)
            assert "Verification: OK" in done.stdout, done.stderr


def test_token_over_other_bytes(tsa_server, good_pki):
    token = tsa.request_token(tsa_server.url, DATA)
    other = hashlib.sha256(DATA + b" ").hexdigest()
    check = tsa.check_token(token, other, tsa.load_certificates([good_pki.ca_cert]))
    assert check.status is TokenStatus.OTHER_BYTES and SHA in check.detail


def test_no_trusted_root_means_untrusted_even_with_the_carried_chain(tsa_server, good_pki):
    token = tsa.request_token(tsa_server.url, DATA)
    assert tsa.check_token(token, SHA, []).status is TokenStatus.UNTRUSTED
    carried = tsa.load_certificates([good_pki.chain])  # the package carries the TSA's whole chain, root included
    check = tsa.check_token(token, SHA, [], carried)
    assert check.status is TokenStatus.UNTRUSTED
    assert "valid signature" in check.detail and "not among the trusted roots" in check.detail


def test_rogue_tsa_with_made_up_clock_is_untrusted(good_pki, rogue_pki):
    backdated = datetime(2020, 3, 1, 12, 0, tzinfo=timezone.utc)
    with TsaServer(rogue_pki, "python", clock=lambda: backdated) as rogue:
        token = tsa.request_token(rogue.url, DATA)
    trusted = tsa.load_certificates([good_pki.ca_cert])
    # even when the package carries the rogue TSA's certificate and root as "its chain"
    for carried in ([], tsa.load_certificates([rogue_pki.tsa_cert]), tsa.load_certificates([rogue_pki.chain])):
        check = tsa.check_token(token, SHA, trusted, carried)
        assert check.status is TokenStatus.UNTRUSTED, carried
        assert check.info.gen_time == backdated
    # a reviewer who chooses to trust the rogue root gets what they asked for
    assert tsa.check_token(token, SHA, tsa.load_certificates([rogue_pki.ca_cert])).status is TokenStatus.TRUSTED


def test_damaged_token_is_invalid(tsa_server, good_pki):
    token = bytearray(tsa.request_token(tsa_server.url, DATA))
    token[-10] ^= 0x01  # inside the signature
    check = tsa.check_token(bytes(token), SHA, tsa.load_certificates([good_pki.ca_cert]), tsa.load_certificates([good_pki.chain]))
    assert check.status is TokenStatus.INVALID
    assert tsa.check_token(b"not a token", SHA, []).status is TokenStatus.INVALID


def test_token_before_its_certificate_is_invalid(good_pki):
    """A TSA certificate must be valid at genTime: a clock set before it was issued gives no token."""
    with TsaServer(good_pki, "python", clock=lambda: datetime(2001, 1, 1, tzinfo=timezone.utc)) as early:
        token = tsa.request_token(early.url, DATA)
    check = tsa.check_token(token, SHA, tsa.load_certificates([good_pki.ca_cert]), tsa.load_certificates([good_pki.chain]))
    assert check.status is TokenStatus.INVALID and "not yet valid" in check.detail


@pytest.mark.parametrize("mode, message", [("http-500", "HTTP 500"), ("garbage", "not an RFC 3161 response"),
                                           ("rejection", "refused the request: bad request")])
def test_failing_tsa_is_a_clear_error(good_pki, mode, message):
    with TsaServer(good_pki, "python") as server:
        server.mode = mode
        with pytest.raises(AuditError, match=message) as err:
            tsa.request_token(server.url, DATA)
        assert err.value.path == server.url


def test_unreachable_tsa_and_bad_url():
    with pytest.raises(AuditError, match="cannot reach the TSA"):
        tsa.request_token("http://127.0.0.1:9/tsa", DATA, timeout=2)
    with pytest.raises(AuditError, match="not an http"):
        tsa.request_token("file:///etc/passwd", DATA)


def test_bad_trust_file_names_the_file(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(AuditError, match="not a PEM certificate") as err:
        tsa.load_certificates([bad])
    assert err.value.path == str(bad)
    with pytest.raises(AuditError, match="cannot read"):
        tsa.load_certificates([tmp_path / "missing.pem"])


def test_record_timestamps_stores_token_chain_and_event(tsa_server, good_pki, tmp_path):
    log = EventLog(tmp_path)
    evs = tsa.record_timestamps(tmp_path, log, subject="preanalysis/g.rules.json", data=DATA,
                                urls=[tsa_server.url, tsa_server.url], label="g.rules")
    assert [e.get("token") for e in evs] == ["evidence/timestamps/g.rules.0.tsr", "evidence/timestamps/g.rules.1.tsr"]
    events, findings = verify_chain((tmp_path / "evidence/events.jsonl").read_bytes())
    assert findings == [] and [e.type for e in events] == ["timestamped", "timestamped"]
    token = (tmp_path / evs[0].get("token")).read_bytes()
    assert evs[0].get("token_sha256") == hashlib.sha256(token).hexdigest() and evs[0].get("sha256") == SHA
    chain = tsa.load_certificates([tmp_path / evs[0].get("chain")])
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=Good TSA,O=auditkit tests"]
    assert tsa.check_token(token, SHA, tsa.load_certificates([good_pki.ca_cert]), chain).status is TokenStatus.TRUSTED

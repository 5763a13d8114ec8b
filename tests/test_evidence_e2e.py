"""End to end: a smoke study run with a TSA and a signing key; verify and replay-gate grade it; forgeries fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.evidence import attest
from auditkit.evidence.canonical import sha256_hex
from auditkit.package.manifest import build_manifest
from fixtures.evidence import good_pki, keys, tsa_server  # noqa: F401 - fixtures
from fixtures.protofakes import FakeExecutor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory, tsa_server, keys):
    """manifests/smoke.toml run (fake executor) with --tsa and --sign-key; finalized."""
    from auditkit.evidence.record import Recorder
    from auditkit.study.run import run_protocol
    from auditkit.study.spec import load_manifest

    manifest = load_manifest(REPO / "manifests" / "smoke.toml")
    out = tmp_path_factory.mktemp("e2e") / "pkg"
    rec = Recorder(out, tsa_urls=[tsa_server.url], signers=[attest.load_signer(keys["trusted"][0])])
    outcome = run_protocol(manifest, out, list(manifest.protocol.hosts), executor=FakeExecutor(), evidence=rec)
    assert outcome.complete
    return out


@pytest.fixture
def copy(study, tmp_path):
    dest = tmp_path / "pkg"
    shutil.copytree(study, dest)
    return dest


def trust_args(good_pki, keys):
    return ["--trusted-tsa", str(good_pki.ca_cert), "--trusted-key", str(keys["trusted"][1])]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_study_verifies_timestamped_signed_chained(study, good_pki, keys):
    keyid = attest.load_public_key(keys["trusted"][1]).keyid
    r = invoke("verify", study, *trust_args(good_pki, keys), "--require", "timestamped", "--require", "signed",
               "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert set(doc["info"]["freeze_evidence"]) == {"stage1", "stage2"}
    for ev in doc["info"]["freeze_evidence"].values():
        assert ev["level"] == "timestamped" and ev["signed_by"] == [keyid]
        assert ev["authority"] == "CN=Good TSA,O=auditkit tests" and ev["time"] < ev["first_input_started_at"]
    assert doc["info"]["evidence"]["chain"] == "intact" and doc["info"]["evidence"]["signed_by"] == [keyid]
    r = invoke("verify", study, *trust_args(good_pki, keys))
    assert r.exit_code == 0, r.output
    assert "gate stage2 frozen: timestamped " in r.output and f"signed by {keyid[:16]}" in r.output
    r = invoke("replay-gate", "all", "--package", study, *trust_args(good_pki, keys), "--require", "timestamped")
    assert r.exit_code == 0, r.output
    assert any(ln.split()[:1] == ["stage1"] and "timestamped" in ln.split() for ln in r.output.splitlines())
    r = invoke("replay-gate", "all", "--package", study, *trust_args(good_pki, keys), "--require", "timestamped", "-v")
    assert r.exit_code == 0 and "gate stage1 frozen: timestamped" in r.output


def test_without_trust_it_is_chained_and_require_says_so(study):
    r = invoke("verify", study)
    assert r.exit_code == 0 and "gate stage1 frozen: chained" in r.output, r.output
    r = invoke("replay-gate", "stage1", "--package", study, "--require", "timestamped", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.output)
    assert doc["counts"] == {"evidence-below-required": 1}
    assert list(doc["info"]["freeze_evidence"]) == ["stage1"]


def test_no_evidence_is_asserted_and_fails_only_under_require(copy):
    shutil.rmtree(copy / "evidence")
    build_manifest(copy)
    r = invoke("verify", copy)
    assert r.exit_code == 0 and "gate stage1 frozen: asserted (frozen_at" in r.output, r.output
    r = invoke("verify", copy, "--require", "chained")
    assert r.exit_code == 1 and "evidence-below-required x2" in r.output


def test_frozen_at_backdated_with_manifest_rebuilt(copy, good_pki, keys):
    rel = "preanalysis/stage2.rules.json"
    rules = json.loads((copy / rel).read_text())
    rules["frozen_at"] = "2020-01-01T00:00:00.000000Z"
    (copy / rel).write_text(json.dumps(rules, indent=2, sort_keys=True) + "\n")
    build_manifest(copy)
    r = invoke("verify", copy, *trust_args(good_pki, keys), "--json")
    assert r.exit_code == 1
    counts = json.loads(r.output)["counts"]
    assert {"rules-changed-after-freeze", "tsa-token-other-bytes", "attestation-subject-mismatch"} <= set(counts)
    assert json.loads(r.output)["info"]["freeze_evidence"]["stage2"]["level"] == "asserted"


def test_decision_resigned_with_untrusted_key(copy, good_pki, keys):
    rel = "evidence/attestations/stage2.decision.dsse.json"
    decision = "analysis/stage2_decision.json"
    stmt = attest.decision_statement(decision, sha256_hex((copy / decision).read_bytes()),
                                     json.loads((copy / decision).read_text()))
    (copy / rel).unlink()
    attest.write_envelope(copy, rel, stmt, [attest.load_signer(keys["other"][0])])
    build_manifest(copy)
    r = invoke("verify", copy, *trust_args(good_pki, keys), "--require", "signed", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.output)
    assert doc["counts"] == {"attestation-untrusted-signer": 1, "evidence-below-required": 1}
    assert doc["info"]["freeze_evidence"]["stage2"]["signed_by"] == []


def test_timestamp_command_anchors_the_content_root(copy, tsa_server, good_pki, keys):
    r = invoke("timestamp", copy, "--tsa", tsa_server.url)
    assert r.exit_code == 0, r.output
    assert "timestamped content root" in r.output and "says nothing of when its rules were frozen" in r.output
    r = invoke("verify", copy, *trust_args(good_pki, keys), "--json")
    assert r.exit_code == 0, r.output
    anchored = json.loads(r.output)["info"]["evidence"]["anchored"]
    assert [a["status"] for a in anchored] == ["trusted"]
    # a file changed afterwards: the anchor no longer covers the content
    (copy / "README.txt").write_text("changed\n")
    build_manifest(copy)
    r = invoke("verify", copy, *trust_args(good_pki, keys), "--json")
    assert r.exit_code == 1 and "tsa-token-other-bytes" in json.loads(r.output)["counts"]


def test_protocol_run_cli_passes_tsa_and_key_to_the_recorder(tmp_path, tsa_server, keys, monkeypatch):
    """The CLI options reach the run as a Recorder with those TSAs and that key (the run itself is tested above)."""
    from auditkit.study import run as study_run

    seen = {}

    def fake_run(manifest, out, hosts, **kw):
        seen.update(kw, out=out)
        return study_run.RunOutcome(True, [], 0, out)

    monkeypatch.setattr(study_run, "run_protocol", fake_run)
    r = invoke("protocol", "run", REPO / "manifests" / "smoke.toml", "--out", tmp_path / "pkg", "--host", "all",
               "--tsa", tsa_server.url, "--tsa", "http://127.0.0.1:9/other", "--sign-key", keys["trusted"][0])
    assert r.exit_code == 0, r.output
    rec = seen["evidence"]
    assert rec.package == tmp_path / "pkg" and rec.tsa_urls == [tsa_server.url, "http://127.0.0.1:9/other"]
    assert [s.public_key.keyid for s in rec.signers] == [attest.load_public_key(keys["trusted"][1]).keyid]
    seen.clear()
    assert invoke("protocol", "run", REPO / "manifests" / "smoke.toml", "--out", tmp_path / "p2", "--host", "all"
                  ).exit_code == 0
    assert seen["evidence"] is None  # no evidence unless asked for
    r = invoke("protocol", "run", REPO / "manifests" / "smoke.toml", "--out", tmp_path / "p3", "--host", "all",
               "--sign-key", tmp_path / "missing.pem")
    assert r.exit_code == 2 and "cannot read the private key" in r.output

"""Per-gate evidence levels, and every forgery caught with its own code (primitive level, no CLI)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import pytest

from auditkit.evidence import EVENTS_PATH, attest, level, require, tsa
from auditkit.evidence.canonical import row_hash, sha256_hex
from auditkit.evidence.level import package_evidence
from auditkit.evidence.model import DirReader, Trust
from auditkit.evidence.require import require_findings
from fixtures.evidence import (DECISION, RULES, TsaServer, build_package, csv_path, evidence_package,  # noqa: F401
                               good_pki, keys, package_copy, rewrite_log, rogue_pki, tsa_server, write_rows)


@pytest.fixture(scope="module")
def trust(good_pki, keys) -> Trust:
    return Trust.from_files([good_pki.ca_cert], [keys["trusted"][1]])


def check(root, gate, trust=None):
    return package_evidence(DirReader(root), [gate], trust)


def codes(rep) -> set[str]:
    return {f.code for f in rep.findings}


def read_rows(root, rel):
    from auditkit.package.rows import read_csv_text

    return read_csv_text((root / rel).read_text(), rel)[1]


# --- what holds ------------------------------------------------------------------------------

def test_honest_package_is_timestamped_signed_seeds_bound(evidence_package, trust, keys):
    root, gate = evidence_package
    rep = check(root, gate, trust)
    assert rep.findings == [], [str(f) for f in rep.findings]
    ev = rep.gates[gate.gate]
    keyid = attest.load_public_key(keys["trusted"][1]).keyid
    assert ev["level"] == "timestamped" and ev["signed_by"] == [keyid] and ev["seeds_bound"] is True
    assert ev["authority"] == "CN=Good TSA,O=auditkit tests"
    assert ev["time"] < ev["first_input_started_at"] and ev["lead_seconds"] > 0
    assert rep.package["signed_by"] == [keyid] and rep.package["chain"] == "intact"
    text = require.describe(ev)
    assert text.startswith(f"timestamped {ev['time']} by CN=Good TSA") and "before the first input" in text
    assert f"signed by {keyid[:16]}" in text and text.endswith("seeds bound to anchor")
    assert require_findings(rep, [gate], ["timestamped", "signed", "seeds-bound"]) == []


def test_package_root_is_the_manifest_root_of_its_files(evidence_package):
    from auditkit.package.manifest import Entry, root_hash

    root, _ = evidence_package
    env = json.loads((root / level.PACKAGE_ATTESTATION).read_text())
    stmt = attest.check_envelope(env, []).statement
    files = attest.subjects_of(stmt)
    assert stmt["predicate"]["root"] == root_hash([Entry(p, d, 0) for p, d in files.items()])
    assert RULES in files and not any(p.startswith("evidence/") for p in files)


def test_without_trust_anchors_it_is_chained_and_says_why(evidence_package, keys):
    root, gate = evidence_package
    rep = check(root, gate)
    assert rep.findings == []
    ev = rep.gates[gate.gate]
    assert ev["level"] == "chained" and ev["signed_by"] == [] and ev["seeds_bound"] is False
    assert any("no trusted TSA root was given" in u for u in ev["untrusted"])
    assert any("valid signature by a key the package carries" in u for u in ev["untrusted"])
    req = require_findings(rep, [gate], ["chained", "timestamped", "signed"])
    assert [(f.code, f.expected) for f in req] == [("evidence-below-required", "timestamped"),
                                                   ("evidence-below-required", "signed")]
    assert "no trusted TSA root was given" in req[0].message


def test_package_without_evidence_is_asserted(package_copy, trust):
    root, gate = package_copy
    shutil.rmtree(root / "evidence")
    rep = check(root, gate, trust)
    assert rep.present is False and rep.findings == []
    assert rep.gates[gate.gate]["level"] == "asserted" and rep.gates[gate.gate]["frozen_at"] == gate.frozen_at
    assert require_findings(rep, [gate], ["asserted"]) == []
    assert [f.code for f in require_findings(rep, [gate], ["timestamped"])] == ["evidence-below-required"]
    with pytest.raises(ValueError, match="unknown requirement"):
        require_findings(rep, [gate], ["notarized"])


# --- forgeries ---------------------------------------------------------------------------------

def test_frozen_at_backdated(package_copy, trust):
    root, gate = package_copy
    rules = json.loads((root / RULES).read_text())
    rules["frozen_at"] = "2020-01-01T00:00:00Z"
    (root / RULES).write_text(json.dumps(rules, indent=2, sort_keys=True) + "\n")
    rep = check(root, gate, trust)
    assert {"rules-changed-after-freeze", "tsa-token-other-bytes", "attestation-subject-mismatch"} <= codes(rep)
    assert rep.gates[gate.gate]["level"] == "asserted"


def _refreeze(root, new_rules: bytes):
    """Replace the rules and rewrite the log as if these rules had been frozen (token events kept)."""
    (root / RULES).write_bytes(new_rules)

    def edit(docs):
        for d in docs:
            if d["type"] == "rules-frozen":
                d["sha256"] = sha256_hex(new_rules)
    rewrite_log(root, edit)


def test_token_for_a_different_rules_file(package_copy, trust):
    root, gate = package_copy
    _refreeze(root, (root / RULES).read_bytes().replace(b'"top_k": 1', b'"top_k": 2'))
    rep = check(root, gate, trust)
    other = [f for f in rep.findings if f.code == "tsa-token-other-bytes"]
    assert RULES in {f.path for f in other}  # the token over the rules
    assert f"{EVENTS_PATH}#0" in {f.path for f in other}  # and the one over the log's head at the freeze
    assert rep.gates[gate.gate]["level"] != "timestamped"


def test_rules_refrozen_after_the_data(package_copy, trust, tsa_server):
    root, gate = package_copy
    new_rules = (root / RULES).read_bytes().replace(b'"top_k": 1', b'"top_k": 2')
    _refreeze(root, new_rules)
    token = tsa.request_token(tsa_server.url, new_rules)  # a genuine token, but made now: after the rows
    rel = "evidence/timestamps/g1.rules.0.tsr"
    (root / rel).write_bytes(token)

    def edit(docs):
        for d in docs:
            if d["type"] == "timestamped" and d["subject"] == RULES:
                d["token_sha256"] = sha256_hex(token)
    rewrite_log(root, edit)
    rep = check(root, gate, trust)
    late = [f for f in rep.findings if f.code == "tsa-token-after-data"]
    assert late and late[0].path == RULES and "first input row" in late[0].expected
    assert "tsa-token-other-bytes" not in {f.code for f in rep.findings if f.path == RULES}
    assert "seed-not-from-anchor" in codes(rep)  # the seeds came from the first token, not this one
    ev = rep.gates[gate.gate]
    assert ev["level"] == "chained" and ev["seeds_bound"] is False


def test_row_inserted_and_log_rechained(package_copy, trust):
    root, gate = package_copy
    rel = csv_path("alpha")
    rows = read_rows(root, rel)
    extra = dict(rows[0], run_id="alpha-s1-bridge-s9", seed="9", val_bpb="1.000000")
    write_rows(root, rel, rows + [extra])
    # without touching the log: the row never landed
    assert "row-not-in-log" in codes(check(root, gate, trust))

    def edit(docs):
        last = max(i for i, d in enumerate(docs) if d["type"] == "row-landed")
        docs.insert(last + 1, {"type": "row-landed", "time": docs[last]["time"], "run_id": extra["run_id"],
                               "path": rel, "row_sha256": row_hash(extra)})
    rewrite_log(root, edit)
    rep = check(root, gate, trust)
    assert not {"event-chain-broken", "row-not-in-log", "row-landed-before-freeze"} & codes(rep)
    # caught by evidence taken at the time: the timestamped log heads and the signed attestations
    heads = [f for f in rep.findings if f.code == "tsa-token-other-bytes"]
    assert heads and all(f.path.startswith(f"{EVENTS_PATH}#") for f in heads)
    mism = {(f.path, f.location) for f in rep.findings if f.code == "attestation-subject-mismatch"}
    assert (rel, level.PACKAGE_ATTESTATION) in mism
    assert (EVENTS_PATH, "$.predicate.events_head") in mism
    assert (rel, f"{level.decision_attestation_path(gate.gate)} $.predicate.inputs") in mism


def test_decision_resigned_with_an_untrusted_key(package_copy, trust, keys):
    root, gate = package_copy
    decision = json.loads((root / DECISION).read_text())
    decision["promoted"] = ["greedy"]
    (root / DECISION).write_text(json.dumps(decision, indent=2, sort_keys=True) + "\n")
    stmt = attest.decision_statement(DECISION, sha256_hex((root / DECISION).read_bytes()), decision)
    rel = level.decision_attestation_path(gate.gate)
    (root / rel).unlink()
    attest.write_envelope(root, rel, stmt, [attest.load_signer(keys["other"][0])])
    rep = check(root, gate, trust)
    other_id = attest.load_public_key(keys["other"][1]).keyid
    signer = [f for f in rep.findings if f.code == "attestation-untrusted-signer"]
    assert [f.path for f in signer] == [rel] and other_id in signer[0].found
    assert "decision-changed-after-log" in codes(rep)
    assert rep.gates[gate.gate]["signed_by"] == []
    assert [f.expected for f in require_findings(rep, [gate], ["signed"])] == ["signed"]


def test_decision_attestation_edited_is_a_bad_signature(package_copy, trust):
    root, gate = package_copy
    rel = level.decision_attestation_path(gate.gate)
    env = json.loads((root / rel).read_text())
    import base64

    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["decided_at"] = "2020-01-01T00:00:00Z"
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    (root / rel).write_text(json.dumps(env))
    rep = check(root, gate, trust)
    assert "attestation-bad-signature" in codes(rep) and rep.gates[gate.gate]["signed_by"] == []


def test_token_from_untrusted_tsa_with_a_faked_clock(tmp_path, rogue_pki, trust):
    backdated = datetime(2020, 3, 1, tzinfo=timezone.utc)
    with TsaServer(rogue_pki, "python", clock=lambda: backdated) as rogue:
        gate = build_package(tmp_path / "pkg", tsa_urls=[rogue.url], anchored=True)
    rep = check(tmp_path / "pkg", gate, trust)
    untrusted = [f for f in rep.findings if f.code == "tsa-untrusted"]
    assert RULES in {f.location for f in untrusted}
    assert "Rogue Root CA" in untrusted[0].found
    ev = rep.gates[gate.gate]
    assert ev["level"] == "chained" and ev["time"] is None and ev["seeds_bound"] is False
    # a reviewer who named no roots: no finding, but it does not count, and --require says so
    rep = check(tmp_path / "pkg", gate)
    assert rep.findings == [] and rep.gates[gate.gate]["level"] == "chained"
    assert [f.code for f in require_findings(rep, [gate], ["timestamped"])] == ["evidence-below-required"]


def test_seeds_edited(package_copy, trust):
    root, gate = package_copy
    rel = csv_path("beta")
    rows = read_rows(root, rel)
    old_hash = row_hash(rows[1])
    rows[1]["rng_seed"] = str(int(rows[1]["rng_seed"]) ^ 1)
    write_rows(root, rel, rows)

    def edit(docs):  # the forger also re-lands the row so that the log agrees
        for d in docs:
            if d["type"] == "row-landed" and d["row_sha256"] == old_hash:
                d["row_sha256"] = row_hash(rows[1])
    rewrite_log(root, edit)
    rep = check(root, gate, trust)
    seeds = [f for f in rep.findings if f.code == "seed-not-from-anchor"]
    assert [(f.path, f.location) for f in seeds] == [(rel, "row 2, column rng_seed")]
    assert rep.gates[gate.gate]["seeds_bound"] is False


def test_row_landed_before_the_freeze(package_copy, trust):
    root, gate = package_copy

    def edit(docs):
        i = next(i for i, d in enumerate(docs) if d["type"] == "row-landed")
        docs.insert(0, docs.pop(i))
    rewrite_log(root, edit)
    rep = check(root, gate, trust)
    assert "row-landed-before-freeze" in codes(rep)
    assert rep.gates[gate.gate]["level"] == "asserted"


def test_chain_broken_by_an_edited_line(package_copy, trust):
    root, gate = package_copy
    log = (root / EVENTS_PATH).read_bytes()
    (root / EVENTS_PATH).write_bytes(log.replace(b'"config_id":"greedy"', b'"config_id":"bridge"', 1))
    rep = check(root, gate, trust)
    assert "event-chain-broken" in codes(rep) and rep.package["chain"] == "broken"
    assert rep.gates[gate.gate]["level"] == "asserted"


def test_removed_or_swapped_token_files(package_copy, trust):
    root, gate = package_copy
    (root / "evidence/timestamps/g1.rules.0.tsr").unlink()
    (root / "evidence/timestamps/g1.decision.0.tsr").write_bytes(b"junk")
    rep = check(root, gate, trust)
    assert {"tsa-token-missing", "tsa-token-changed"} <= codes(rep)
    assert rep.gates[gate.gate]["level"] == "chained"


# --- the formats: JSON Schemas (schemas/) accept what the writer writes ----------------------------

def _validator(name):
    from pathlib import Path

    from jsonschema import Draft202012Validator

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_evidence_files_match_their_schemas(evidence_package):
    import base64

    root, _ = evidence_package
    events = _validator("event")
    lines = (root / EVENTS_PATH).read_bytes().splitlines()
    assert {json.loads(x)["type"] for x in lines} >= {"rules-frozen", "cell-started", "row-landed", "gate-decided",
                                                      "package-finalized", "timestamped", "seeds-anchored"}
    for line in lines:
        assert list(events.iter_errors(json.loads(line))) == [], line
    envelope, stmt = _validator("dsse-envelope"), _validator("statement")
    envs = sorted((root / "evidence/attestations").glob("*.dsse.json"))
    assert len(envs) == 2
    for p in envs:
        doc = json.loads(p.read_text())
        assert list(envelope.iter_errors(doc)) == []
        assert list(stmt.iter_errors(json.loads(base64.b64decode(doc["payload"])))) == []


def test_schemas_refuse_what_the_format_forbids():
    events = _validator("event")
    ok = {"seq": 0, "prev": "0" * 64, "time": "2026-01-01T00:00:00.000000Z", "type": "rules-frozen",
          "gate": "g", "path": RULES, "sha256": "a" * 64}
    assert list(events.iter_errors(ok)) == []
    for bad in ({**ok, "type": "made-up"}, {k: v for k, v in ok.items() if k != "sha256"},
                {**ok, "time": "2026-01-01 00:00:00"}, {**ok, "prev": "xyz"}, {**ok, "seq": -1}):
        assert list(events.iter_errors(bad)), bad
    assert list(_validator("dsse-envelope").iter_errors({"payload": "", "payloadType": "text/plain",
                                                         "signatures": []}))


def test_resumed_freeze_asks_only_the_tsa_that_failed(tmp_path, good_pki):
    from auditkit.errors import AuditError
    from auditkit.evidence.events import verify_chain
    from auditkit.evidence.record import Recorder

    (tmp_path / "preanalysis").mkdir()
    (tmp_path / RULES).write_text('{"gate": "g1"}\n')
    with TsaServer(good_pki, "python") as ok, TsaServer(good_pki, "python") as flaky:
        flaky.mode = "http-500"
        rec = Recorder(tmp_path, tsa_urls=[ok.url, flaky.url])
        with pytest.raises(AuditError, match="HTTP 500"):
            rec.frozen("g1", RULES)
        flaky.mode = "ok"
        asked = ok.requests
        rec.frozen("g1", RULES)  # the resumed run
        assert ok.requests == asked + 1  # only the log-head token it had not made yet
    events, findings = verify_chain((tmp_path / EVENTS_PATH).read_bytes())
    assert findings == []
    assert [e.type for e in events].count("rules-frozen") == 1
    stamped = sorted((e.get("subject"), e.get("tsa")) for e in events if e.type == "timestamped")
    assert stamped == sorted([(RULES, ok.url), (RULES, flaky.url), (f"{EVENTS_PATH}#0", ok.url),
                              (f"{EVENTS_PATH}#0", flaky.url)])

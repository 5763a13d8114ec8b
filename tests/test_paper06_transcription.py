"""The paper's promotion rules are transcribed once (manifests/paper06_transcription.toml); the
protocol, the profile of the paper's package and the paper-shaped claims must say the same, and
the CPU replication keeps the same always-keep and check placement (its sentinel renamed)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from auditkit.study.spec import load_manifest

REPO = Path(__file__).resolve().parents[1]
TRANSCRIPTION = REPO / "manifests" / "paper06_transcription.toml"
PROFILE = REPO / "docs" / "examples" / "paper06.profile.toml"
CLAIMS = REPO / "tests" / "data" / "paper06_claims.json"


def transcription() -> dict:
    return tomllib.loads(TRANSCRIPTION.read_text("utf-8"))["gates"]


def _checks(checks) -> list[tuple]:
    return sorted((c["kind"], c["candidate"], c.get("reference"), c.get("threshold")) for c in checks or [])


def test_every_choice_quotes_what_it_rests_on():
    for gate, body in transcription().items():
        assert body["always_keep_rests_on"], gate
        if body["checks"]:
            assert body["checks_rest_on"], gate
        for key in ("always_keep_rests_on", "checks_rest_on"):
            for source, quote in body.get(key, {}).items():
                assert source in ("paper", "abstract", "why") and quote, (gate, key, source)


def test_manifest_follows_the_transcription():
    rules = load_manifest(REPO / "manifests" / "paper06.toml").rules
    t = transcription()
    assert set(rules) == set(t)
    for gate, body in t.items():
        assert rules[gate]["promote"].get("always_keep", []) == body["always_keep"], gate
        assert _checks(rules[gate].get("checks")) == _checks(body["checks"]), gate


def test_profile_follows_the_transcription():
    gates = tomllib.loads(PROFILE.read_text("utf-8"))["gates"]
    for gate, body in transcription().items():
        rules = gates[body["profile_gate"]]["rules"]
        assert rules["promote"].get("always_keep", []) == body["always_keep"], gate
        assert _checks(rules.get("checks")) == _checks(body["checks"]), gate
    # the profile's extra gate (the seed-46-only decision) keeps nobody and checks nothing
    extra = set(gates) - {b["profile_gate"] for b in transcription().values()}
    for g in extra:
        assert not gates[g]["rules"]["promote"].get("always_keep") and not gates[g]["rules"].get("checks"), g


def test_claims_place_each_check_where_the_transcription_does():
    t = transcription()
    placed = {(c["kind"], c["candidate"]): gate for gate, body in t.items() for c in body["checks"]
              if c["kind"] != "ranks_first_in_all_cells"}
    claims = json.loads(CLAIMS.read_text("utf-8"))["claims"]
    gate_checks = [c["check"] for c in claims if c["check"]["kind"] == "gate_check"]
    seen = set()
    for ch in gate_checks:
        if ch["check"] == "ranks_first_in_all_cells":
            assert any(c["kind"] == ch["check"] and c["candidate"] == ch["candidate"] for c in t[ch["gate"]]["checks"])
            continue
        assert placed[(ch["check"], ch["candidate"])] == ch["gate"], ch
        seen.add((ch["check"], ch["candidate"]))
    assert seen == set(placed)  # every thresholded check of the paper has its claim
    # "ranks first in every cell" claimed only at gates whose rules check it
    for c in claims:
        if c["check"]["kind"] == "rank" and c["check"]["scope"] == "every_cell":
            assert any(k["kind"] == "ranks_first_in_all_cells" for k in t[c["check"]["gate"]]["checks"])


@pytest.mark.parametrize("gate_map", [{"stage1_10min_top9": "stage1_top9", "stage1": "stage1", "stage2": "stage2",
                                       "stage3": "stage3"}])
def test_the_replication_keeps_the_papers_rules(gate_map):
    """manifests/micro_kjv.toml: the same always-keep and checks, with d2_ar48 for d8_ar48."""
    rules = load_manifest(REPO / "manifests" / "micro_kjv.toml").rules
    for gate, body in transcription().items():
        mine = rules[gate_map[gate]]
        assert mine["promote"].get("always_keep", []) == body["always_keep"], gate
        want = [dict(c, candidate="d2_ar48") if c["candidate"] == "d8_ar48" else c for c in body["checks"]]
        assert _checks(mine.get("checks")) == _checks(want), gate


def test_a_disagreement_is_caught(tmp_path):
    """The comparison fails when one file keeps a configuration the transcription does not."""
    text = (REPO / "manifests" / "paper06.toml").read_text("utf-8")
    changed = text.replace('promote = { top_k = 4, always_keep = ["bridge"] }',
                           'promote = { top_k = 4, always_keep = ["bridge", "greedy"] }')
    assert changed != text
    (tmp_path / "paper06.toml").write_text(changed, "utf-8")
    (tmp_path / "paper06_matrix.csv").write_bytes((REPO / "manifests" / "paper06_matrix.csv").read_bytes())
    rules = load_manifest(tmp_path / "paper06.toml").rules
    t = transcription()
    assert rules["stage1"]["promote"]["always_keep"] != t["stage1"]["always_keep"]

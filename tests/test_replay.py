"""Replay (`auditkit replay-gate`, `decide`): every kind of tampering is caught, exit codes exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.errors import AuditError
from auditkit.package.manifest import build_manifest
from auditkit.gates.replay import decide_gate, decision_text, gate_inputs, replay_all, replay_gate
from fixtures.synth import make_package


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_package(tmp_path_factory.mktemp("synth") / "pkg", tables=False)


@pytest.fixture
def pkg(pristine, tmp_path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(pristine, dest)
    return dest


def load(p: Path) -> dict:
    return json.loads(p.read_text())


def dump(p: Path, doc: dict) -> None:
    p.write_text(json.dumps(doc, indent=2) + "\n")


def codes(replays) -> set[str]:
    return {f.code for r in replays for f in r.findings}


def run(*args):
    return CliRunner().invoke(cli, list(args))


def csv_rows(p: Path) -> list[list[str]]:
    return [line.split(",") for line in p.read_text().splitlines()]


def write_rows(p: Path, rows: list[list[str]]) -> None:
    p.write_text("\n".join(",".join(r) for r in rows) + "\n")


# --------------------------------------------------------------------------- clean

def test_pristine_package_replays_identically(pkg):
    replays = replay_all(pkg)
    assert [r.gate for r in replays] == ["screen", "confirm", "final"]
    assert all(r.identical for r in replays), [str(f) for r in replays for f in r.findings]


def test_cli_replay_all_identical(pkg):
    res = run("replay-gate", "all", "--package", str(pkg))
    assert res.exit_code == 0, res.output
    assert "verdict: identical — gate screen replays to its recorded decision" in res.output
    assert "check near_equivalence greedy vs bridge: " in res.output
    assert "promoted (*): " in res.output
    assert res.output.rstrip().endswith("OK: replay-gate " + str(pkg) + " (3 gates)")


def test_cli_replay_json(pkg):
    res = run("replay-gate", "confirm", "--package", str(pkg), "--json")
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert doc["ok"] is True and doc["info"]["gate confirm"] == "identical"
    assert set(doc["info"]) == {"gate confirm", "freeze_evidence"}  # SPEC v1.1: per gate, the freeze evidence
    assert doc["info"]["freeze_evidence"]["confirm"]["level"] == "asserted"


def test_decide_gate_needs_no_manifest_and_no_tables(tmp_path):
    p = make_package(tmp_path / "bare", tables=False, manifest=False)
    assert not (p / "MANIFEST.json").exists() and not (p / "table_manifest.json").exists()
    doc = decide_gate(p, "confirm", "2026-05-02T12:00:00Z")
    assert doc == load(p / "analysis/confirm_decision.json")
    assert [i["path"] for i in doc["inputs"]] == gate_inputs(p, load(p / "preanalysis/confirm.rules.json"))


# --------------------------------------------------------------------------- tampering

def test_changed_val_bpb_that_flips_a_rank(pkg):
    csv = pkg / "remote-results/linux_screen_summary.csv"
    rows = csv_rows(csv)
    col = rows[0].index("val_bpb")
    target = next(r for r in rows[1:] if r[rows[0].index("config_id")] == "greedy")
    target[col] = "1.000000"  # greedy now first in that cell
    write_rows(csv, rows)
    build_manifest(pkg)  # the manifest agrees with the edited file: only replay can see it
    r = replay_gate(pkg, "screen")
    assert {"input-hash-mismatch", "rank-differs", "value-differs"} <= {f.code for f in r.findings}
    rank = [f for f in r.findings if f.code == "rank-differs" and f.location.endswith(".rank")
            and "cells" in f.location and "greedy" not in f.location]
    assert rank, [str(f) for f in r.findings]
    res = run("replay-gate", "screen", "--package", str(pkg))
    assert res.exit_code == 1
    assert "verdict: DIFFERS" in res.output


def test_threshold_edited_after_the_decision(pkg):
    p = pkg / "preanalysis/screen.rules.json"
    doc = load(p)
    doc["checks"][0]["threshold"] = 0.5
    dump(p, doc)
    r = replay_gate(pkg, "screen")
    found = {(f.code, f.location) for f in r.findings}
    assert ("rules-hash-mismatch", "$.rules.sha256") in found
    assert ("check-value-differs", "$.checks[0].threshold") in found
    assert ("check-outcome-differs", "$.checks[0].passed") in found


def test_rules_frozen_after_the_data(pkg):
    p = pkg / "preanalysis/confirm.rules.json"
    doc = load(p)
    doc["frozen_at"] = "2026-06-01T00:00:00Z"
    dump(p, doc)
    dec = pkg / "analysis/confirm_decision.json"
    dec.write_text(decision_text(decide_gate(pkg, "confirm", load(dec)["decided_at"])))  # hashes agree again
    r = replay_gate(pkg, "confirm")
    assert [f.code for f in r.findings] == ["rules-frozen-after-data"]
    assert "is not before" in r.findings[0].found and "row 1" in r.findings[0].found


def test_frozen_at_with_fractional_seconds_compares_as_time(pkg):
    p = pkg / "preanalysis/screen.rules.json"
    doc = load(p)
    first_start = csv_rows(pkg / "remote-results/linux_screen_summary.csv")[1][16]
    doc["frozen_at"] = first_start.replace("Z", ".5Z")  # half a second after the first row started
    dump(p, doc)
    dec = pkg / "analysis/screen_decision.json"
    dec.write_text(decision_text(decide_gate(pkg, "screen", load(dec)["decided_at"])))
    assert "rules-frozen-after-data" in {f.code for f in replay_gate(pkg, "screen").findings}


def test_decision_promoting_what_its_rules_would_not(pkg):
    p = pkg / "analysis/final_decision.json"
    doc = load(p)
    doc["promoted"] = [doc["candidates"][1]["config_id"]]
    dump(p, doc)
    r = replay_gate(pkg, "final")
    assert [(f.code, f.location) for f in r.findings] == [("promoted-differs", "$.promoted")]
    res = run("replay-gate", "final", "--package", str(pkg))
    assert res.exit_code == 1 and "promoted-differs" in res.output


def test_swapped_input_file(pkg):
    p = pkg / "analysis/screen_decision.json"
    doc = load(p)
    doc["inputs"][0]["path"] = "remote-results/linux_confirm_summary.csv"
    dump(p, doc)
    found = {f.code for f in replay_gate(pkg, "screen").findings}
    assert {"input-extra", "input-not-recorded"} <= found


def test_swapped_input_contents(pkg):
    shutil.copyfile(pkg / "remote-results/windows_final_summary.csv", pkg / "remote-results/linux_final_summary.csv")
    found = {f.code for f in replay_gate(pkg, "final").findings}
    assert "input-hash-mismatch" in found


def test_promoted_list_that_breaks_the_chain(pkg):
    p = pkg / "analysis/screen_decision.json"
    doc = load(p)
    doc["promoted"] = doc["promoted"][:-1]
    dump(p, doc)
    by_gate = {r.gate: {f.code for f in r.findings} for r in replay_all(pkg)}
    assert "promoted-differs" in by_gate["screen"]
    assert "chain-broken" in by_gate["confirm"]


def test_chain_broken_on_replay_only(pkg):
    # screen's recorded promoted list and confirm agree, but screen's rows no longer give that list
    csv = pkg / "remote-results/windows_screen_summary.csv"
    rows = csv_rows(csv)
    promoted = load(pkg / "analysis/screen_decision.json")["promoted"]
    out = [r for r in rows[1:] if r[4] == promoted[-1]]
    for r in out:
        r[rows[0].index("val_bpb")] = "9.000000"
    write_rows(csv, rows)
    by_gate = {r.gate: {f.code for f in r.findings} for r in replay_all(pkg)}
    assert "chain-broken-on-replay" in by_gate["confirm"]


def test_duplicate_row_is_a_finding_naming_file_and_rows(pkg):
    csv = pkg / "remote-results/linux_final_summary.csv"
    rows = csv_rows(csv)
    dup = list(rows[1])
    dup[0] = dup[0] + "-again"
    write_rows(csv, rows + [dup])
    r = replay_gate(pkg, "final")
    f = next(f for f in r.findings if f.code == "duplicate-run-row")
    assert f.path == "remote-results/linux_final_summary.csv"
    assert "row 1" in f.location and f"row {len(rows)}" in f.location


def test_missing_input_file(pkg):
    (pkg / "remote-results/windows_confirm_summary.csv").unlink()
    found = {f.code for f in replay_gate(pkg, "confirm").findings}
    assert "input-missing" in found


# --------------------------------------------------------------------------- cannot run: exit 2

def test_unknown_gate_names_the_gates(pkg):
    res = run("replay-gate", "stage9", "--package", str(pkg))
    assert res.exit_code == 2
    assert "unknown gate 'stage9'" in res.output and "screen, confirm, final" in res.output
    with pytest.raises(AuditError):
        replay_gate(pkg, "stage9")


def test_missing_package_and_unreadable_protocol(tmp_path, pkg):
    assert run("replay-gate", "all", "--package", str(tmp_path / "nope")).exit_code == 2
    (tmp_path / "empty").mkdir()
    res = run("replay-gate", "all", "--package", str(tmp_path / "empty"))
    assert res.exit_code == 2 and "not a package directory (no protocol.json)" in res.output
    (pkg / "protocol.json").write_text("{not json")
    res = run("replay-gate", "all", "--package", str(pkg), "--json")
    assert res.exit_code == 2 and json.loads(res.output)["exit_code"] == 2


# --------------------------------------------------------------------------- decide

def test_decide_refuses_to_overwrite_evidence(pkg):
    before = (pkg / "analysis/screen_decision.json").read_bytes()
    res = run("decide", "screen", "--package", str(pkg))
    assert res.exit_code == 2
    assert "the recorded decision is evidence" in res.output and "--force" in res.output
    assert (pkg / "analysis/screen_decision.json").read_bytes() == before


def test_decide_writes_and_force_overwrites(pkg):
    (pkg / "analysis/final_decision.json").unlink()
    res = run("decide", "final", "--package", str(pkg))
    assert res.exit_code == 0 and res.output.startswith("decided gate final: promoted bridge")
    res = run("decide", "final", "--package", str(pkg), "--force")
    assert res.exit_code == 0
    assert replay_gate(pkg, "final").identical

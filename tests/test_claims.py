"""claims.json: the paper's abstract claims decided from a paper-shaped package's raw rows,
held and not held both ways, and every way a claim cannot be checked."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from auditkit.errors import AuditError
from auditkit.derived.observations import claims_from_study, claims_text
from auditkit.report.claims import ClaimKind, ClaimOutcome, claims_report, evaluate_claims, load_claims, render_claims
from auditkit.package.schemas import schema_errors
from fixtures.pkgbuild import set_cell
from fixtures.paperpkg import build_paper_package

DATA = Path(__file__).resolve().parent / "data"
PAPER_CLAIMS = DATA / "paper06_claims.json"
STAGE2_WIN44 = "remote-results/windows_stage2_60min_seed44_gate4_summary.csv"


@pytest.fixture(scope="module")
def paper_pkg(tmp_path_factory) -> Path:
    return build_paper_package(tmp_path_factory.mktemp("paper") / "pkg")


@pytest.fixture
def paper_copy(paper_pkg, tmp_path) -> Path:
    return Path(shutil.copytree(paper_pkg, tmp_path / "pkg"))


def paper_claims() -> dict:
    return json.loads(PAPER_CLAIMS.read_text())


def by_id(results):
    return {r.id: r for r in results}


def data_row(pkg: Path, rel: str, config_id: str) -> int:
    lines = (pkg / rel).read_text().splitlines()
    col = lines[0].split(",").index("config_id")
    return next(i for i, line in enumerate(lines) if i and line.split(",")[col] == config_id)


def value_of(pkg: Path, rel: str, config_id: str) -> float:
    lines = (pkg / rel).read_text().splitlines()
    head = lines[0].split(",")
    return float(lines[data_row(pkg, rel, config_id)].split(",")[head.index("val_bpb")])


def test_paper_claims_file_is_schema_valid():
    assert schema_errors(paper_claims(), "claims") == []
    assert load_claims(PAPER_CLAIMS) == paper_claims()


def test_every_abstract_claim_holds_on_the_paper_shaped_package(paper_pkg):
    results = evaluate_claims(paper_pkg, PAPER_CLAIMS)
    assert [r.id for r in results] == [c["id"] for c in paper_claims()["claims"]]
    assert {r.id: r.outcome for r in results} == {r.id: ClaimOutcome.HELD for r in results}
    got = by_id(results)
    assert got["gpu-hours-12h-branch"].found == "144.000000"
    assert got["gpu-hours-total"].found == "169.200000"
    assert "4/4 cells first -> PASS" in got["bridge-first-all-cells-12h"].found
    assert "mean-best greedy" in got["winner-not-mean-best-at-10min"].found
    # the 0.010 rule is the final package's (manifests/paper06_transcription.toml)
    assert got["greedy-not-near-equivalent"].command.startswith("auditkit replay-gate stage3 --package ")
    rep = claims_report(results, str(paper_pkg))
    assert rep.exit_code == 0 and rep.info["claims"] == "12 held, 0 not held, 0 not checkable"


def test_a_raw_row_edit_makes_claims_fail_and_the_opposite_claim_hold(paper_copy):
    opposite = {"id": "bridge-not-first-everywhere", "statement": "The bridge is not first in every 60-min cell.",
                "check": {"kind": "gate_check", "gate": "stage2", "check": "ranks_first_in_all_cells",
                          "candidate": "bridge", "expected": "FAIL"}}
    doc = paper_claims()
    doc["claims"].append(opposite)
    before = by_id(evaluate_claims(paper_copy, doc))
    assert before["bridge-not-first-everywhere"].outcome is ClaimOutcome.NOT_HELD

    # greedy beats bridge in one 60-minute cell (windows, seed 44): one raw row changed
    bridge = value_of(paper_copy, STAGE2_WIN44, "bridge")
    set_cell(paper_copy / STAGE2_WIN44, data_row(paper_copy, STAGE2_WIN44, "greedy"), "val_bpb", f"{bridge - 0.01:.6f}")
    after = by_id(evaluate_claims(paper_copy, doc))
    failed = {k for k, r in after.items() if r.outcome is ClaimOutcome.NOT_HELD}
    assert failed == {"bridge-first-all-cells-60min"}
    assert after["bridge-not-first-everywhere"].outcome is ClaimOutcome.HELD
    assert "windows/44: 2" in after["bridge-first-all-cells-60min"].found
    rep = claims_report(list(after.values()), str(paper_copy))
    assert rep.exit_code == 1
    assert rep.counts() == {"claim-not-held": 1}
    text = render_claims(list(after.values()))
    assert "[NOT HELD | data: " in text and "] bridge-first-all-cells-60min" in text


def test_an_edit_to_the_recorded_decision_alone_changes_no_claim(paper_copy):
    """Claims come from the raw rows, not from what the author recorded."""
    path = paper_copy / "analysis/stage2_decision.json"
    doc = json.loads(path.read_text())
    doc["checks"][0]["passed"] = True
    doc["promoted"] = ["s01_d8_ar64"]
    path.write_text(json.dumps(doc))
    results = evaluate_claims(paper_copy, PAPER_CLAIMS)
    assert all(r.outcome is ClaimOutcome.HELD for r in results)


def test_host_sensitivity_bound_fails_when_hosts_agree(paper_pkg):
    doc = paper_claims()
    doc["claims"] = [c for c in doc["claims"] if c["id"] == "host-sensitive-5min"]
    doc["claims"][0]["check"]["at_most"] = 0.1
    (r,) = evaluate_claims(paper_pkg, doc)
    assert r.outcome is ClaimOutcome.NOT_HELD
    assert r.found.startswith("spearman 0.118881 over 12 candidates (95% interval [")


UNCHECKABLE = [
    ({"kind": "gate_check", "gate": "nope", "check": "mean_gap", "candidate": "greedy", "expected": "PASS"},
     "the protocol has no gate 'nope'"),
    ({"kind": "gate_check", "gate": "stage3", "check": "mean_gap", "candidate": "greedy", "expected": "PASS"},
     "have no check mean_gap on greedy"),
    ({"kind": "rank", "gate": "stage3", "candidate": "s09_d12_ar64_b262k", "scope": "overall"},
     "s09_d12_ar64_b262k is not a candidate at gate stage3"),
    ({"kind": "table_value", "table": "no_such_table", "row": {"item": "total"}, "column": "gpu_hours",
      "value": 1, "tol": 0}, "no table 'no_such_table'"),
    ({"kind": "table_value", "table": "budget_counterfactual", "row": {"item": "nothing"}, "column": "gpu_hours",
      "value": 1, "tol": 0}, "has no row with item=nothing"),
    ({"kind": "table_value", "table": "budget_counterfactual", "row": {"item": "stage"}, "column": "gpu_hours",
      "value": 1, "tol": 0}, "8 rows with item=stage"),
    ({"kind": "table_value", "table": "budget_counterfactual", "row": {"item": "total"}, "column": "nope",
      "value": 1, "tol": 0}, "has no column(s) ['nope']"),
    ({"kind": "table_value", "table": "promotion_survival", "row": {"config_id": "bridge"}, "column": "outcome",
      "value": 1, "tol": 0}, "not a number"),
    ({"kind": "host_sensitivity", "stage": "stage9", "hosts": ["linux", "windows"], "statistic": "spearman",
      "at_most": 0.5}, "no row with stage=stage9"),
    ({"kind": "promotion", "gate": "stage1", "candidate": {"winner_of": "ghost"}, "fact": "promoted",
      "expected": True}, "the protocol has no gate 'ghost'"),
]


@pytest.mark.parametrize("check,why", UNCHECKABLE, ids=[c[0]["kind"] + str(i) for i, c in enumerate(UNCHECKABLE)])
def test_not_checkable_says_why(paper_pkg, check, why):
    doc = {"schema": "auditkit/claims/v1", "claims": [{"id": "c", "statement": "s", "check": check}]}
    (r,) = evaluate_claims(paper_pkg, doc)
    assert r.outcome is ClaimOutcome.NOT_CHECKABLE
    assert why in r.why
    assert claims_report([r], "p").counts() == {"claim-not-checkable": 1}


def test_a_gate_that_cannot_be_decided_makes_its_claims_not_checkable(paper_copy):
    (paper_copy / STAGE2_WIN44).unlink()
    got = by_id(evaluate_claims(paper_copy, PAPER_CLAIMS))
    assert got["bridge-first-all-cells-60min"].outcome is ClaimOutcome.NOT_CHECKABLE
    assert "input run CSV missing: " + STAGE2_WIN44 in got["bridge-first-all-cells-60min"].why
    # stage3's candidates are stage2's promoted list: not decidable either
    assert "which could not be decided" in got["bridge-wins-12h"].why
    assert got["gpu-hours-12h-branch"].outcome is ClaimOutcome.HELD


def test_every_claim_kind_is_dispatched(paper_pkg):
    examples = {
        ClaimKind.GATE_CHECK: {"kind": "gate_check", "gate": "stage3", "check": "mean_gap", "candidate": "d8_ar48",
                               "reference": "bridge", "expected": "FAIL"},
        ClaimKind.RANK: {"kind": "rank", "gate": "stage2", "candidate": "greedy", "rank": 1, "scope": "no_cell"},
        ClaimKind.TABLE_VALUE: {"kind": "table_value", "table": "stage_summary",
                                "row": {"stage": "stage0", "config_id": "bridge"}, "column": "runs", "value": 2,
                                "tol": 0},
        ClaimKind.PROMOTION: {"kind": "promotion", "gate": "stage2", "candidate": "s01_d8_ar64",
                              "fact": "eliminated", "expected": True},
        ClaimKind.HOST_SENSITIVITY: {"kind": "host_sensitivity", "stage": "stage2_60min_seed44_gate4",
                                     "hosts": ["linux", "windows"], "statistic": "kendall", "at_least": 0.99},
    }
    assert set(examples) == set(ClaimKind)
    doc = {"schema": "auditkit/claims/v1",
           "claims": [{"id": k.value, "statement": k.value, "check": c} for k, c in examples.items()]}
    assert schema_errors(doc, "claims") == []
    results = evaluate_claims(paper_pkg, doc)
    assert [(r.kind, r.outcome) for r in results] == [(k.value, ClaimOutcome.HELD) for k in ClaimKind]


@pytest.mark.parametrize("text,msg", [
    ("{", "not valid JSON"),
    ('{"schema": "auditkit/claims/v1", "claims": [{"id": "a", "statement": "s", "check": {"kind": "rank"}}]}',
     "claims file is not valid"),
    ('{"schema": "auditkit/claims/v1", "claims": []}', "claims file is not valid"),
    ('{"schema": "auditkit/claims/v1", "claims": [{"id": "a", "statement": "s", "check": {"kind": "table_value", '
     '"table": "t", "row": {"a": 1}, "column": "c", "value": NaN, "tol": 0}}]}', "NaN is not JSON"),
])
def test_a_broken_claims_file_cannot_be_checked(paper_pkg, tmp_path, text, msg):
    p = tmp_path / "claims.json"
    p.write_text(text)
    with pytest.raises(AuditError) as exc:
        evaluate_claims(paper_pkg, p)
    assert msg in exc.value.message and exc.value.path == str(p)


def test_repeated_ids_and_a_missing_file_cannot_be_checked(paper_pkg, tmp_path):
    doc = paper_claims()
    doc["claims"].append(copy.deepcopy(doc["claims"][0]))
    p = tmp_path / "claims.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(AuditError, match="claim id 'host-sensitive-5min' repeats at \\$.claims\\[12\\].id"):
        load_claims(p)
    with pytest.raises(AuditError, match="no claims file") as exc:
        evaluate_claims(paper_pkg)   # the package carries no claims.json
    assert "docs/SPEC.md" in exc.value.hint


def test_claims_from_study_hold_on_the_study_and_fail_after_an_edit(paper_copy):
    doc = claims_from_study(paper_copy)
    assert schema_errors(doc, "claims") == []
    ids = [c["id"] for c in doc["claims"]]
    assert len(ids) == len(set(ids))
    assert {"stage3-near-equivalence-greedy", "stage3-winner", "stage3-winner-cells", "winner-mean-best-at-stage1",
            "gpu-hours-final-branch", "host-spearman-stage1-5min-linux-windows"} <= set(ids)
    text = {c["id"]: c["statement"] for c in doc["claims"]}
    assert text["stage3-near-equivalence-greedy"] == ("At gate stage3, greedy against bridge does not meet the frozen "
                                                      "near-equivalence rule (threshold 0.01 val_bpb).")
    assert text["winner-mean-best-at-stage1"] == "The final winner (bridge) is not the mean-best candidate at gate stage1."
    p = paper_copy / "claims.json"
    p.write_text(claims_text(doc))
    assert all(r.outcome is ClaimOutcome.HELD for r in evaluate_claims(paper_copy))
    bridge = value_of(paper_copy, STAGE2_WIN44, "bridge")
    set_cell(paper_copy / STAGE2_WIN44, data_row(paper_copy, STAGE2_WIN44, "greedy"), "val_bpb", f"{bridge - 0.01:.6f}")
    failed = {r.id for r in evaluate_claims(paper_copy) if r.outcome is not ClaimOutcome.HELD}
    assert {"stage2-ranks-first-in-all-cells-bridge",
            "host-spearman-stage2-60min-seed44-gate4-linux-windows"} <= failed


def test_the_spec_example_holds_on_the_paper_shaped_package(paper_pkg):
    doc = json.loads((DATA / "spec_examples" / "claims.json").read_text())
    assert [r.outcome for r in evaluate_claims(paper_pkg, doc)] == [ClaimOutcome.HELD] * len(doc["claims"])

"""SARIF 2.1.0 (validated against the official schema, tests/data/sarif/) and JUnit XML (read back
with junitparser) from real findings of verify, replay-gate, tables --check and claims."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from jsonschema import Draft4Validator
from junitparser import Error, Failure, JUnitXml

from auditkit.findings import Finding, Report
from auditkit.package.manifest import build_manifest
from auditkit.gates.replay import replay_all, replay_report
from auditkit.report.claims import claims_report, evaluate_claims
from auditkit.report.junit import junit_xml
from auditkit.report.sarif import sarif_log, sarif_text
from auditkit.derived.tables import check_tables
from auditkit.verify import verify_package
from fixtures.paperpkg import build_paper_package
from fixtures.pkgbuild import set_cell

DATA = Path(__file__).resolve().parent / "data"
SCHEMA = json.loads((DATA / "sarif" / "sarif-schema-2.1.0.json").read_text())
BAD_CSV = "remote-results/windows_stage2_60min_seed44_gate4_summary.csv"


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """The paper-shaped package with one val_bpb made non-numeric and a table line changed, MANIFEST rebuilt."""
    p = build_paper_package(tmp_path_factory.mktemp("sarif") / "pkg")
    set_cell(p / BAD_CSV, 2, "val_bpb", "abc")
    t = p / "analysis/stage_summary.csv"
    t.write_text(t.read_text().replace("stage0,bridge,2,2,", "stage0,bridge,2,3,"))
    build_manifest(p)
    return p


def claims_doc() -> dict:
    """The paper's claims plus one that does not hold and one that cannot be checked."""
    doc = json.loads((DATA / "paper06_claims.json").read_text())
    doc["claims"] += [
        {"id": "greedy-wins-12h", "statement": "greedy wins at 12 h.",
         "check": {"kind": "rank", "gate": "stage3", "candidate": "greedy", "scope": "overall"}},
        {"id": "ghost", "statement": "a gate that is not there.",
         "check": {"kind": "rank", "gate": "stage9", "candidate": "greedy", "scope": "overall"}}]
    return doc


@pytest.fixture(scope="module")
def reports(broken) -> list[Report]:
    replays = replay_all(broken)
    return [verify_package(broken), replay_report(replays, str(broken)), check_tables(broken),
            claims_report(evaluate_claims(broken, claims_doc()), str(broken))]


def schema_errors(log: dict) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in Draft4Validator(SCHEMA).iter_errors(log)]


def test_the_official_schema_is_the_one_stored():
    Draft4Validator.check_schema(SCHEMA)
    assert SCHEMA["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"


def test_sarif_is_valid_and_has_one_result_per_finding(reports, broken):
    log = sarif_log(reports, package_dir=broken)
    assert schema_errors(log) == []
    assert json.loads(sarif_text(reports, package_dir=broken)) == log
    assert [r["automationDetails"]["id"] for r in log["runs"]] == ["auditkit/verify/", "auditkit/replay-gate/",
                                                                   "auditkit/tables/", "auditkit/claims/"]
    for run, rep in zip(log["runs"], reports):
        assert not rep.ok
        assert len(run["results"]) == len(rep.findings)
        ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
        assert ids == sorted(set(rep.counts()))
        for res in run["results"]:
            assert ids[res["ruleIndex"]] == res["ruleId"]
        assert run["invocations"][0]["exitCode"] == 1
        assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == broken.resolve().as_uri() + "/"


def test_a_broken_log_is_refused_by_the_schema(reports, broken):
    """The schema check is not vacuous: what SARIF forbids fails it."""
    log = sarif_log(reports, package_dir=broken)
    bad = copy.deepcopy(log)
    del bad["runs"][0]["results"][0]["message"]
    assert schema_errors(bad)
    bad = copy.deepcopy(log)
    bad["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"] = {"startLine": 0}
    assert schema_errors(bad)
    bad = copy.deepcopy(log)
    bad["version"] = "2.0.0"
    assert schema_errors(bad)


def test_csv_row_is_a_region_with_the_column_span(reports, broken):
    run = sarif_log(reports, package_dir=broken)["runs"][0]
    rows = [r for r in run["results"] if r["ruleId"] == "row-invalid"]
    assert rows
    for res in rows:
        phys = res["locations"][0]["physicalLocation"]
        assert phys["artifactLocation"] == {"uri": BAD_CSV, "uriBaseId": "%SRCROOT%"}
        region = phys["region"]
        assert region["startLine"] == 3   # data row 2 under the header
        line = (broken / BAD_CSV).read_text().split("\n")[region["startLine"] - 1]
        assert line[region["startColumn"] - 1:region["endColumn"] - 1] == "abc"
        assert res["properties"]["location"] == "row 2, column val_bpb"


def test_json_paths_are_logical_locations_and_table_lines_regions(reports, broken):
    log = sarif_log(reports, package_dir=broken)
    replay = log["runs"][1]["results"]
    promoted = next(r for r in replay if r["ruleId"] == "promoted-differs")
    loc = promoted["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "analysis/stage2_decision.json"
    assert loc["logicalLocations"] == [{"fullyQualifiedName": "$.promoted", "kind": "property"}]
    table = next(r for r in log["runs"][2]["results"] if r["ruleId"] == "table-differs")
    assert table["locations"][0]["physicalLocation"]["region"]["startLine"] >= 2
    claims = {r["ruleId"]: r for r in log["runs"][3]["results"]}
    assert set(claims) == {"claim-not-held", "claim-not-checkable"}
    assert claims["claim-not-held"]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "$.claims[12]"
    # the claims were given as a document, not a file of the package: placed at the package's first
    # listing file, and the message names claims.json
    ghost = claims["claim-not-checkable"]
    assert ghost["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] in ("MANIFEST.json", "protocol.json")
    assert ghost["message"]["text"].startswith("claims.json: ")


def test_findings_without_path_or_package_still_make_valid_sarif():
    rep = Report("verify", "x", [Finding("", "table-manifest-empty", "", "a table", "none", "nothing to check"),
                                 Finding("a b/c.csv", "row-invalid", "row 4, column q", "1", "2", "m")])
    log = sarif_log([rep])
    assert schema_errors(log) == []
    res = log["runs"][0]["results"]
    # without a package there is no file of the repository to point at
    assert "locations" not in next(r for r in res if r["ruleId"] == "table-manifest-empty")
    assert "locations" not in next(r for r in res if r["ruleId"] == "row-invalid")
    assert schema_errors(sarif_log([Report("verify", "ok")])) == []


def test_junit_has_a_case_per_finding_code_gate_check_and_claim(reports, broken):
    claims = evaluate_claims(broken, claims_doc())
    replays = replay_all(broken)
    text = junit_xml(reports=reports[:1], replays=replays, claims=claims)
    xml = JUnitXml.fromstring(text)
    suites = {s.name: s for s in xml}
    assert set(suites) == {f"verify {broken}", "replay-gate", "claims"}
    verify = {c.name: c for c in suites[f"verify {broken}"]}
    assert set(verify) == {"decision-input-hash", "derived-hash", "row-invalid", f"verify {broken}"}
    assert all(isinstance(c.result[0], Failure) for c in verify.values())
    gates = {c.name: c for c in suites["replay-gate"]}
    assert {f"gate {r.gate} replays to its recorded decision" for r in replays} <= set(gates)
    assert not gates["gate stage1 replays to its recorded decision"].result   # passes
    assert isinstance(gates["gate stage2 replays to its recorded decision"].result[0], Failure)
    checks = [n for n in gates if n.startswith("check ")]
    assert "check ranks_first_in_all_cells bridge: recorded PASS, replayed PASS" in checks
    assert not [n for n in checks if "->" in n]
    outcomes = {c.id: c.outcome.value for c in claims}
    cases = {c.name: c for c in suites["claims"]}
    assert set(cases) == set(outcomes)
    assert outcomes["greedy-wins-12h"] == "not_held" and outcomes["ghost"] == "not_checkable"
    for cid, case in cases.items():
        kind = type(case.result[0]) if case.result else None
        assert kind is {"held": None, "not_held": Failure, "not_checkable": Error}[outcomes[cid]]
    assert suites["claims"].tests == len(claims)
    assert xml.tests == sum(s.tests for s in xml)


def test_junit_of_a_clean_run_is_one_passing_case():
    xml = JUnitXml.fromstring(junit_xml(reports=[Report("verify", "pkg", checked={"files": 3})]))
    (suite,) = list(xml)
    (case,) = list(suite)
    assert case.name == "verify pkg" and not case.result and suite.failures == 0


def test_the_ci_recipe_runs_auditkit_and_uploads_the_sarif():
    import yaml

    text = (Path(__file__).resolve().parents[1] / "docs" / "ci" / "github-actions.yml").read_text()
    wf = yaml.safe_load(text)
    steps = wf["jobs"]["audit"]["steps"]
    run = "\n".join(s.get("run", "") for s in steps)
    for cmd in ("auditkit verify", "auditkit replay-gate all", "auditkit claims"):
        assert f"{cmd} " in run and "--format sarif" in run.split(cmd, 1)[1].split("\n")[0]
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif"))
    assert upload["with"]["sarif_file"] == "audit/sarif"
    assert wf["permissions"]["security-events"] == "write"

"""`auditkit claims`, `auditkit report` and `--format text|json|sarif|junit` through click's CliRunner:
exact exit codes and the key lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft4Validator
from junitparser import JUnitXml

from auditkit.cli import cli
from auditkit.package.manifest import build_manifest
from fixtures.paperpkg import build_paper_package
from fixtures.pkgbuild import set_cell

DATA = Path(__file__).resolve().parent / "data"
SARIF = Draft4Validator(json.loads((DATA / "sarif" / "sarif-schema-2.1.0.json").read_text()))
STAGE2_WIN44 = "remote-results/windows_stage2_60min_seed44_gate4_summary.csv"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def pkg(tmp_path_factory) -> Path:
    p = build_paper_package(tmp_path_factory.mktemp("cli") / "pkg")
    shutil.copy(DATA / "paper06_claims.json", p / "claims.json")
    build_manifest(p)
    return p


@pytest.fixture
def edited(pkg, tmp_path) -> Path:
    """greedy beats bridge in one 60-minute cell; the MANIFEST rebuilt so only replay and claims see it."""
    p = Path(shutil.copytree(pkg, tmp_path / "pkg"))
    lines = (p / STAGE2_WIN44).read_text().splitlines()
    bridge = next(x for x in lines if ",bridge," in x).split(",")[8]
    row = next(i for i, x in enumerate(lines) if ",greedy," in x)
    set_cell(p / STAGE2_WIN44, row, "val_bpb", f"{float(bridge) - 0.01:.6f}")
    build_manifest(p)
    return p


def test_claims_hold(pkg):
    r = run("claims", "--package", pkg)
    assert r.exit_code == 0, r.output
    assert "[HELD | data: " in r.output and "] bridge-first-all-cells-60min: At 60 minutes" in r.output
    assert r.output.rstrip().endswith(f"OK: claims {pkg} (12 claims)")


def test_claims_not_held_exit_1_in_every_format(edited):
    r = run("claims", "--package", edited)
    assert r.exit_code == 1
    assert "[NOT HELD | data: " in r.output and "] bridge-first-all-cells-60min" in r.output
    assert "claims.json [$.claims[3]]: claim-not-held" in r.output
    doc = json.loads(run("claims", "--package", edited, "--json").output)
    # the edit is at 60 minutes; the 0.010 rule is the final package's (manifests/paper06_transcription.toml)
    assert doc["exit_code"] == 1 and doc["counts"] == {"claim-not-held": 1}
    assert {x["id"] for x in doc["info"]["results"] if x["outcome"] == "not_held"} == {
        "bridge-first-all-cells-60min"}
    r = run("claims", "--package", edited, "--format", "sarif")
    assert r.exit_code == 1
    log = json.loads(r.output)
    assert not list(SARIF.iter_errors(log))
    assert [x["ruleId"] for x in log["runs"][0]["results"]] == ["claim-not-held"]
    r = run("claims", "--package", edited, "--format", "junit")
    assert r.exit_code == 1
    suites = {s.name: s for s in JUnitXml.fromstring(r.output)}
    assert suites["claims"].tests == 12 and suites["claims"].failures == 1


def test_claims_cannot_be_checked_exit_2(pkg, tmp_path):
    r = run("claims", "--package", pkg, "--claims", tmp_path / "none.json")
    assert r.exit_code == 2 and "no claims file" in r.output
    r = run("claims", "--package", tmp_path)
    assert r.exit_code == 2


def test_verify_and_replay_in_sarif_and_junit(edited):
    r = run("verify", edited, "--format", "sarif")
    assert r.exit_code == 1   # the MANIFEST was rebuilt, but the decision names the inputs' old hashes
    log = json.loads(r.output)
    assert not list(SARIF.iter_errors(log))
    assert {x["ruleId"] for x in log["runs"][0]["results"]} == {"decision-input-hash"}
    r = run("replay-gate", "all", "--package", edited, "--format", "sarif")
    assert r.exit_code == 1
    log = json.loads(r.output)
    assert not list(SARIF.iter_errors(log))
    uris = {x["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for x in log["runs"][0]["results"]}
    assert "analysis/stage2_decision.json" in uris and STAGE2_WIN44 in uris
    r = run("replay-gate", "all", "--package", edited, "--format", "junit")
    assert r.exit_code == 1
    suites = {s.name: s for s in JUnitXml.fromstring(r.output)}
    cases = {c.name: c for c in suites["replay-gate"]}
    assert not cases["gate stage1 replays to its recorded decision"].result
    assert cases["gate stage2 replays to its recorded decision"].result
    r = run("verify", edited, "--format", "junit")
    xml = JUnitXml.fromstring(r.output)
    assert r.exit_code == 1 and xml.tests == 2 and xml.failures == 2   # the code's case and the command's


def test_replay_text_says_why(pkg):
    r = run("replay-gate", "stage2", "--package", pkg)
    assert r.exit_code == 0
    assert "  s01_d8_ar64: eliminated: rank 4 of 4 eligible, below the cut top_k=3" in r.output
    assert r.output.count("why:") == 1


def test_json_and_another_format_is_a_usage_error(pkg):
    for cmd in (["verify", pkg], ["replay-gate", "all", "--package", pkg], ["claims", "--package", pkg]):
        r = run(*cmd, "--json", "--format", "junit")
        assert r.exit_code == 2 and "--json and --format junit ask for two formats" in r.output


def test_report_writes_a_page_outside_the_package(pkg, tmp_path):
    before = json.loads((pkg / "MANIFEST.json").read_text())["root"]
    out = tmp_path / "report.md"
    r = run("report", pkg, "--out", out, "--format", "md", "--no-figures")
    # the package has no figures: the page says so and the exit code is 1
    assert r.exit_code == 1, r.output
    assert r.output.startswith(f"wrote {out}: findings in figures; root {before}")
    text = out.read_text()
    assert "# auditkit report: paper06" in text and "| freeze evidence | OK " in text
    r = run("report", pkg, "--out", out, "--format", "md")
    assert r.exit_code == 2 and "the file exists" in r.output
    r = run("report", pkg, "--out", pkg / "report.html")
    assert r.exit_code == 2 and "into the package" in r.output
    assert not (pkg / "report.html").exists()
    r = run("verify", pkg)
    assert r.exit_code == 0 and before in r.output

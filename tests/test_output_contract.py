"""Every command prints a whole, parseable document on every exit, in every format it offers:
text, JSON (validated against the published contract, schemas/output/v1.json), SARIF (against
the OASIS 2.1.0 schema) and JUnit XML (well formed, read back by junitparser) — on exit 0, 1 and
2, usage errors included."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft4Validator
from junitparser import JUnitXml

from auditkit.cli.main import cli
from auditkit.cli.output import OUTPUT_SCHEMA, json_key, output_validator
from auditkit.package.manifest import build_manifest
from fixtures.paperpkg import build_paper_package
from fixtures.pkgbuild import set_cell

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]
SARIF = json.loads((DATA / "sarif" / "sarif-schema-2.1.0.json").read_text())
BAD_CSV = "remote-results/windows_stage2_60min_seed44_gate4_summary.csv"
VALIDATOR = output_validator()


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory) -> dict[str, Path]:
    """good: the paper-shaped package; bad: a copy with one val_bpb edited and a table line changed;
    gone: a directory that does not exist; claims files that hold and that do not."""
    base = tmp_path_factory.mktemp("contract")
    good = build_paper_package(base / "good")
    bad = base / "bad"
    shutil.copytree(good, bad)
    set_cell(bad / BAD_CSV, 2, "val_bpb", "0.5")
    t = bad / "analysis/stage_summary.csv"
    t.write_text(t.read_text().replace("stage0,bridge,2,2,", "stage0,bridge,2,3,"))
    build_manifest(bad)
    held = json.loads((DATA / "paper06_claims.json").read_text())
    (base / "held.json").write_text(json.dumps(held))
    held["claims"].append({"id": "greedy-wins-12h", "statement": "greedy wins at 12 h.",
                           "check": {"kind": "rank", "gate": "stage3", "candidate": "greedy", "scope": "overall"}})
    (base / "not-held.json").write_text(json.dumps(held))
    return {"good": good, "bad": bad, "gone": base / "gone", "held": base / "held.json",
            "not-held": base / "not-held.json"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def contract_errors(doc) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def check_document(fmt: str, r, code: int) -> None:
    """The output of one run in `fmt` is whole and says `code`."""
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    out = r.stdout
    if fmt == "text":
        assert (out if code < 2 else r.stderr).strip()
        return
    if fmt == "json":
        doc = json.loads(out)
        assert contract_errors(doc) == []
        assert doc["schema"] == OUTPUT_SCHEMA and doc["exit_code"] == code and doc["ok"] is (code == 0)
        return
    if fmt == "sarif":
        log = json.loads(out)
        assert [f"{list(e.absolute_path)}: {e.message}" for e in Draft4Validator(SARIF).iter_errors(log)] == []
        (run_,) = log["runs"]
        inv = run_["invocations"][0]
        assert inv["exitCode"] == code and inv["executionSuccessful"] is (code != 2)
        assert bool(run_["results"]) is (code == 1)
        if code == 2:
            assert inv["toolExecutionNotifications"][0]["message"]["text"]
        return
    root = ET.fromstring(out.encode("utf-8"))
    xml = JUnitXml.fromstring(out)
    assert root.tag == "testsuites" and xml.tests >= 1
    assert (int(root.get("errors")) > 0) is (code == 2)
    assert (int(root.get("failures")) > 0) is (code == 1)


FORMATS = ("text", "json", "sarif", "junit")


def fmt_args(fmt: str) -> list[str]:
    return [] if fmt == "text" else ["--format", fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_in_every_format_on_every_exit(pkgs, fmt):
    for which, code in (("good", 0), ("bad", 1), ("gone", 2)):
        check_document(fmt, run("verify", pkgs[which], *fmt_args(fmt)), code)
    check_document(fmt, run("verify", pkgs["good"], "--no-such-option", *fmt_args(fmt)), 2)   # a usage error
    check_document(fmt, run("verify", pkgs["good"], "--jobs", "0", *fmt_args(fmt)), 2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_replay_gate_in_every_format_on_every_exit(pkgs, fmt):
    for which, code in (("good", 0), ("bad", 1), ("gone", 2)):
        check_document(fmt, run("replay-gate", "all", "--package", pkgs[which], *fmt_args(fmt)), code)
    check_document(fmt, run("replay-gate", "nosuchgate", "--package", pkgs["good"], *fmt_args(fmt)), 2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_claims_in_every_format_on_every_exit(pkgs, fmt):
    for which, claims, code in (("good", "held", 0), ("good", "not-held", 1), ("gone", "held", 2)):
        check_document(fmt, run("claims", "--package", pkgs[which], "--claims", pkgs[claims], *fmt_args(fmt)), code)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tables_and_figures_check_in_every_format_on_every_exit(pkgs, fmt):
    for which, code in (("good", 0), ("bad", 1), ("gone", 2)):
        check_document(fmt, run("tables", "--check", "--package", pkgs[which], *fmt_args(fmt)), code)
    check_document(fmt, run("figures", "--check", "--package", pkgs["gone"], *fmt_args(fmt)), 2)
    if fmt in ("sarif", "junit"):   # a SARIF or JUnit document reports a check
        check_document(fmt, run("tables", "--package", pkgs["good"], *fmt_args(fmt)), 2)


@pytest.mark.parametrize("fmt", ("text", "json"))
def test_written_files_and_counterfactual_on_every_exit(pkgs, fmt, tmp_path):
    flag = ["--json"] if fmt == "json" else []
    check_document(fmt, run("tables", "--package", pkgs["good"], "--out", tmp_path / f"t-{fmt}", *flag), 0)
    check_document(fmt, run("counterfactual", REPO / "manifests" / "smoke.toml", *flag), 0)
    check_document(fmt, run("counterfactual", tmp_path / "none.toml", *flag), 2)


def test_json_keys_have_no_spaces_or_parentheses(pkgs):
    doc = json.loads(run("verify", pkgs["good"], "--json").stdout)
    assert {"files", "run_rows"} <= set(doc["checked"])
    assert "root_recorded" in doc["info"] and "root_of_the_files" in doc["info"]
    doc = json.loads(run("replay-gate", "all", "--package", pkgs["good"], "--json").stdout)
    assert all(k.startswith("gate_") or k in ("freeze_evidence", "evidence", "evidence_notes") for k in doc["info"])
    assert json_key("root (recorded)") == "root_recorded" and json_key("Run rows") == "run_rows"


def test_the_contract_refuses_what_it_does_not_promise(pkgs):
    """The schema check is not vacuous."""
    doc = json.loads(run("verify", pkgs["bad"], "--json").stdout)
    assert contract_errors(doc) == []
    for broken in ({**doc, "schema": "auditkit-output/0"}, {**doc, "ok": True},
                   {**doc, "checked": {"run rows": 3}}, {k: v for k, v in doc.items() if k != "command"},
                   {**doc, "findings": [{**doc["findings"][0], "extra": 1}]}, {**doc, "Exit code": 1}):
        assert contract_errors(broken), broken


def test_json_through_a_profile_follows_the_contract(tmp_path):
    from fixtures import legacy

    pkg = legacy.build_legacy_package(tmp_path / "legacy")
    example = REPO / "docs" / "examples" / "paper06.profile.toml"
    for args in (["verify", pkg], ["replay-gate", "all", "--package", pkg], ["tables", "--check", "--package", pkg]):
        r = run(*args, "--profile", example, "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert contract_errors(doc) == [] and doc["schema"] == OUTPUT_SCHEMA
    r = run("verify", pkg, "--profile", tmp_path / "none.toml", "--json")
    assert r.exit_code == 2 and contract_errors(json.loads(r.stdout)) == []

"""SARIF as GitHub code scanning reads it: for a package with an edited CSV value and a missing
file, inside a git checkout, the log validates against the OASIS 2.1.0 schema and GitHub's
documented subset, every rule carries the catalogue's help text, every result a region and GitHub's
own line hash, and every URI names a file of the checkout; hostile names (`../x`, `/etc/passwd`,
bytes that are not UTF-8, control characters) never escape the package or break the document."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes

import pytest
from click.testing import CliRunner
from jsonschema import Draft4Validator
from junitparser import JUnitXml

from auditkit.cli.main import cli
from auditkit.codes import lookup
from auditkit.errors import AuditError
from auditkit.findings import Finding, Report
from auditkit.package.manifest import build_manifest
from auditkit.report.junit import error_xml, junit_xml
from auditkit.report.sarif_spans import github_line_hashes, json_spans
from auditkit.report.sarif import error_log, sarif_log, sarif_text
from fixtures.paperpkg import build_paper_package
from fixtures.pkgbuild import set_cell

SCHEMA = json.loads((Path(__file__).resolve().parent / "data" / "sarif" / "sarif-schema-2.1.0.json").read_text())
BAD_CSV = "remote-results/windows_stage2_60min_seed44_gate4_summary.csv"
GONE = "analysis/stage1_decision.json"


def schema_errors(log: dict) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in Draft4Validator(SCHEMA).iter_errors(log)]


def github_subset_errors(log: dict) -> list[str]:
    """What GitHub's "SARIF support for code scanning" page marks required, or refuses."""
    errs = []
    if log.get("version") != "2.1.0":
        errs.append("version")
    categories = [r.get("automationDetails", {}).get("id") for r in log["runs"]]
    if len(set(categories)) != len(categories):
        errs.append("two runs share a category")
    for i, run in enumerate(log["runs"]):
        driver = run["tool"]["driver"]
        if not driver.get("name"):
            errs.append(f"run {i}: tool.driver.name")
        rules = {r["id"]: r for r in driver.get("rules", [])}
        for rid, rule in rules.items():
            for part in ("shortDescription", "fullDescription", "help"):
                if not rule.get(part, {}).get("text"):
                    errs.append(f"rule {rid}: {part}.text")
        for res in run.get("results", []):
            where = f"result {res.get('ruleId')}"
            if res.get("ruleId") not in rules:
                errs.append(f"{where}: ruleId not among the rules")
            if not res.get("message", {}).get("text"):
                errs.append(f"{where}: message.text")
            locs = res.get("locations") or []
            if not 1 <= len(locs) <= 10:
                errs.append(f"{where}: locations")
            for loc in locs:
                phys = loc.get("physicalLocation", {})
                uri = phys.get("artifactLocation", {}).get("uri", "")
                if not uri or "://" in uri or uri.startswith("/") or ".." in unquote(uri).split("/"):
                    errs.append(f"{where}: uri {uri!r}")
                if phys.get("region", {}).get("startLine", 0) < 1:
                    errs.append(f"{where}: region.startLine")
            if not re.fullmatch(r"[0-9a-f]+:\d+", res.get("partialFingerprints", {}).get("primaryLocationLineHash", "")):
                errs.append(f"{where}: partialFingerprints.primaryLocationLineHash")
    return errs


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A git checkout (its .git marks the top) holding the package at studies/ancillary, with one
    val_bpb edited to 'abc' and one listed decision deleted after the MANIFEST was built."""
    repo = tmp_path_factory.mktemp("checkout")
    (repo / ".git").mkdir()
    pkg = build_paper_package(repo / "studies" / "ancillary")
    set_cell(pkg / BAD_CSV, 2, "val_bpb", "abc")
    build_manifest(pkg)
    (pkg / GONE).unlink()
    return repo


def sarif_of(repo: Path, *args, monkeypatch) -> tuple[int, dict]:
    monkeypatch.chdir(repo)
    r = CliRunner().invoke(cli, [str(a) for a in args] + ["--format", "sarif"])
    return r.exit_code, json.loads(r.stdout)


def region_text(repo: Path, uri: str, region: dict) -> str:
    line = (repo / unquote(uri)).read_text().split("\n")[region["startLine"] - 1]
    return line[region["startColumn"] - 1:region["endColumn"] - 1]


def test_verify_sarif_is_what_code_scanning_needs(checkout, monkeypatch):
    code, log = sarif_of(checkout, "verify", "studies/ancillary", monkeypatch=monkeypatch)
    assert code == 1
    assert schema_errors(log) == [] and github_subset_errors(log) == []
    run = log["runs"][0]
    assert run["invocations"][0]["executionSuccessful"] is True
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == checkout.resolve().as_uri() + "/"
    for rule in run["tool"]["driver"]["rules"]:
        entry = lookup(rule["id"])
        assert rule["fullDescription"]["text"] == entry.meaning
        assert rule["help"]["text"] == f"{entry.meaning}\n\nWhat to do: {entry.action}"
    by_code: dict[str, list] = {}
    for res in run["results"]:
        phys = res["locations"][0]["physicalLocation"]
        uri = phys["artifactLocation"]["uri"]
        assert phys["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        assert uri.startswith("studies/ancillary/") and (checkout / unquote(uri)).is_file()
        text = (checkout / unquote(uri)).read_text()
        assert res["partialFingerprints"]["primaryLocationLineHash"] == \
            github_line_hashes(text)[phys["region"]["startLine"]]
        by_code.setdefault(res["ruleId"], []).append(res)
    # the edited CSV cell: its line, and the column span of exactly the cell
    for res in by_code["row-invalid"]:
        phys = res["locations"][0]["physicalLocation"]
        assert phys["artifactLocation"]["uri"] == f"studies/ancillary/{BAD_CSV}"
        assert phys["region"]["startLine"] == 3 and region_text(checkout, phys["artifactLocation"]["uri"],
                                                                phys["region"]) == "abc"
    # the missing file: placed where the MANIFEST lists it, and named in the message
    (gone,) = [r for r in by_code["file-missing"]]
    phys = gone["locations"][0]["physicalLocation"]
    assert phys["artifactLocation"]["uri"] == "studies/ancillary/MANIFEST.json"
    assert region_text(checkout, phys["artifactLocation"]["uri"], phys["region"]) == f'"{GONE}"'
    assert gone["message"]["text"].startswith(f"{GONE}: ")
    # a JSON path: the value's own line and columns
    (hashed,) = by_code["decision-input-hash"]
    phys = hashed["locations"][0]["physicalLocation"]
    doc = json.loads((checkout / unquote(phys["artifactLocation"]["uri"])).read_text())
    assert region_text(checkout, phys["artifactLocation"]["uri"], phys["region"]) == json.dumps(
        doc["inputs"][2]["sha256"])


def test_replay_sarif_is_what_code_scanning_needs(checkout, monkeypatch):
    code, log = sarif_of(checkout, "replay-gate", "all", "--package", "studies/ancillary", monkeypatch=monkeypatch)
    assert code == 1 and log["runs"][0]["results"]
    assert schema_errors(log) == [] and github_subset_errors(log) == []
    for res in log["runs"][0]["results"]:
        assert (checkout / unquote(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"])).is_file()


def test_sarif_root_sets_what_uris_are_relative_to(checkout, monkeypatch, tmp_path):
    code, log = sarif_of(checkout, "verify", "studies/ancillary", "--sarif-root", "studies", monkeypatch=monkeypatch)
    assert code == 1
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert uris and all(u.startswith("ancillary/") and (checkout / "studies" / unquote(u)).is_file() for u in uris)
    # a root that does not hold the package: could not check, and still a whole SARIF document
    code, log = sarif_of(checkout, "verify", "studies/ancillary", "--sarif-root", tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and schema_errors(log) == []
    inv = log["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False and "not inside --sarif-root" in \
        inv["toolExecutionNotifications"][0]["message"]["text"]


def test_claims_file_outside_the_package(checkout, monkeypatch, tmp_path):
    claims = {"schema": "auditkit/claims/v1", "claims": [
        {"id": "ghost", "statement": "a gate that is not there.",
         "check": {"kind": "rank", "gate": "stage9", "candidate": "greedy", "scope": "overall"}}]}
    inside = checkout / "notes" / "claims.json"
    inside.parent.mkdir(exist_ok=True)
    inside.write_text(json.dumps(claims, indent=2))
    code, log = sarif_of(checkout, "claims", "--package", "studies/ancillary", "--claims", "notes/claims.json",
                         monkeypatch=monkeypatch)
    assert code == 1 and schema_errors(log) == [] and github_subset_errors(log) == []
    (res,) = log["runs"][0]["results"]
    phys = res["locations"][0]["physicalLocation"]
    assert phys["artifactLocation"]["uri"] == "notes/claims.json"   # relative to the checkout, not absolute
    assert phys["region"]["startLine"] == 4   # "$.claims[0]" starts on the fourth line of the file
    outside = tmp_path / "claims.json"
    outside.write_text(json.dumps(claims))
    code, log = sarif_of(checkout, "claims", "--package", "studies/ancillary", "--claims", outside,
                         monkeypatch=monkeypatch)
    assert code == 1 and github_subset_errors(log) == []
    (res,) = log["runs"][0]["results"]
    uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.startswith("studies/ancillary/") and str(outside) in res["message"]["text"]


def test_hostile_names_never_escape_and_never_break_the_documents(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "protocol.json").write_text('{\n  "name": "x",\n  "subjects": ["../outside.txt", "/etc/passwd"]\n}\n')
    odd = os.fsdecode(b"bad\xff.csv")               # a file name that is not UTF-8
    (pkg / odd).write_text("a,b\n1,\x07\n")
    findings = [Finding("../outside.txt", "attestation-subject-mismatch", "", "x", "y", "subject"),
                Finding("/etc/passwd", "attestation-subject-mismatch", "", "x", "y", "subject"),
                Finding(odd, "row-invalid", "row 1, column b", "a number", "\x07", "bell\x1b[31m"),
                Finding("ev/\x07\r.json", "json-invalid", "$", "\ud800", "\udcff", "lone surrogates")]
    rep = Report("verify", str(pkg), findings)
    text = sarif_text([rep], package_dir=pkg)
    text.encode("utf-8")                             # strict: no lone surrogate left
    log = json.loads(text)
    assert schema_errors(log) == [] and github_subset_errors(log) == []
    uris = {r["properties"]["path"]: r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in log["runs"][0]["results"]}
    assert uris["../outside.txt"] == uris["/etc/passwd"] == "protocol.json"   # where the package names them
    assert uris["bad\ufffd.csv"] == "bad%FF.csv"       # the name's own bytes, percent-encoded
    assert os.path.isfile(os.path.join(os.fsencode(pkg), unquote_to_bytes(uris["bad\ufffd.csv"])))
    assert uris["ev/\x07\r.json"] == "protocol.json"
    # JUnit: well formed whatever the names and cells hold
    xml = junit_xml(reports=[rep])
    root = ET.fromstring(xml.encode("utf-8"))
    assert root.get("failures") == str(len({f.code for f in findings}) + 1)
    assert "\\x07" in xml and "\\x1b" in xml and "\ufffd" in xml
    assert JUnitXml.fromstring(xml).tests == len({f.code for f in findings}) + 1


def test_error_documents_are_whole():
    err = AuditError("cannot read \x07 \udcff", path="/x/\udcffy", hint="do this")
    log = error_log("verify", err)
    assert schema_errors(log) == [] and log["runs"][0]["results"] == []
    inv = log["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False and inv["exitCode"] == 2
    assert "do this" in inv["toolExecutionNotifications"][0]["message"]["text"]
    json.dumps(log, ensure_ascii=False).encode("utf-8")
    root = ET.fromstring(error_xml("verify", err).encode("utf-8"))
    (case,) = root.iter("testcase")
    assert case.find("error").get("type") == "could-not-check" and root.get("errors") == "1"


def test_json_spans_locate_every_value():
    text = '{\n  "a": [1, {"b": "x\\"y"}],\n  "c": null\n}'
    spans = json_spans(text)
    lines = text.split("\n")

    def at(path):
        (l1, c1), (l2, c2) = spans[path]
        assert l1 == l2
        return lines[l1 - 1][c1 - 1:c2 - 1]

    assert at("$.a[0]") == "1" and at("$.a[1].b") == '"x\\"y"' and at("$.c") == "null"
    assert spans["$"] == ((1, 1), (4, 2))
    assert json_spans('{"a": 1, "b": ') == {"$.a": ((1, 7), (1, 8))}   # what came before the fault
    assert json_spans("not json") is None


def test_line_hashes_are_githubs():
    """Values published with the CodeQL action's own tests of its fingerprint (src/fingerprints.test.ts)."""
    assert github_line_hashes("") == {1: "c129715d7a2bc9a3:1"}
    assert list(github_line_hashes(" a\nb\n  \t\tc\n d").values()) == [
        "271789c17abda88f:1", "54703d4cd895b18:1", "180aee12dab6264:1", "a23a3dc5e078b07b:1"]
    crlf = github_line_hashes(" hello; \t\r\nworld!!!\r\n\r\n\r\n  \t\tGreetings\r\n End\r\n")
    assert crlf == github_line_hashes(" hello; \t\nworld!!!\r\r\r  \t\tGreetings\r End\r")
    assert crlf[1] == "e9496ae3ebfced30:1" and crlf[7] == "c129715d7a2bc9a3:1"
    rep = github_line_hashes("Lorem ipsum dolor sit amet.\n" * 10)
    assert rep[6] == "a7f2ff13bc495cf2:6" and rep[7] == "a7f2ff1481e87703:1"


def test_claims_with_control_characters_and_surrogates_make_well_formed_junit_and_sarif(checkout):
    from auditkit.report.claims import claims_report, evaluate_claims

    pkg = checkout / "studies" / "ancillary"
    doc = {"schema": "auditkit/claims/v1", "claims": [
        {"id": "bell", "statement": "greedy \x1b[31mwins\x00 \ud800 at 12 h.",
         "check": {"kind": "rank", "gate": "stage3", "candidate": "greedy", "scope": "overall"}},
        {"id": "ghost", "statement": "a gate\x0b that is not there \udcff.",
         "check": {"kind": "rank", "gate": "stage9", "candidate": "greedy", "scope": "overall"}}]}
    results = evaluate_claims(pkg, doc)
    rep = claims_report(results, str(pkg))
    xml = junit_xml(reports=[rep], claims=results)
    root = ET.fromstring(xml.encode("utf-8"))
    text = "".join(root.itertext())
    assert "\\x1b[31mwins\\x00 \ufffd" in text and "gate\\x0b that" in text
    log = json.loads(sarif_text([rep], package_dir=pkg).encode("utf-8"))
    assert schema_errors(log) == [] and len(log["runs"][0]["results"]) == 2

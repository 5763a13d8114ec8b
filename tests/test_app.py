"""The use cases (auditkit.app) as library calls: each returns an Outcome or raises AuditError,
with no click context, no printing and no exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from auditkit.app.checks import VerifyRequest, replay_gate, verify
from auditkit.app.derived import counterfactual, refuse_format
from auditkit.app.outcome import Outcome
from auditkit.app.review import explain
from auditkit.errors import AuditError
from auditkit.package.source import open_source

REPO = Path(__file__).resolve().parents[1]


def test_explain_is_a_value_and_an_unknown_code_an_error(capsys):
    out = explain("row-invalid")
    assert isinstance(out, Outcome) and out.code == 0 and out.report is None
    assert out.lines[0].startswith("row-invalid  (") and out.doc["codes"][0]["code"] == "row-invalid"
    assert all(len(line) <= 88 for text in out.lines for line in text.splitlines())
    with pytest.raises(AuditError, match="no finding code") as exc:
        explain("row-invalide")
    assert "row-invalid" in exc.value.hint
    assert capsys.readouterr() == ("", "")     # nothing printed


def test_option_rules_are_errors_before_any_work():
    with pytest.raises(AuditError, match="--threads applies with --deep only"):
        VerifyRequest(threads=2)
    assert VerifyRequest(threads=2, deep=True).threads == 2
    with pytest.raises(AuditError, match="needs --check"):
        refuse_format("sarif", check=False)
    with pytest.raises(AuditError, match="and no --profile"):
        refuse_format("junit", check=True, profile="p.toml")
    refuse_format("json", check=False)


def test_verify_and_replay_of_the_shipped_package_return_their_reports(tmp_path, capsys):
    pkg = tmp_path / "ancillary"
    shutil.copytree(REPO / "ancillary", pkg)
    src = open_source(str(pkg))
    try:
        out = verify(src, VerifyRequest(), "json")
        assert out.report.ok and out.code == 0 and out.package == src.target
        assert "freeze_evidence" in out.report.info      # graded, kept structured for JSON
        out = replay_gate(src, "all", "text", verbose=1)
        assert out.code == 0 and out.view == "replay" and out.verbosity == 1
        assert any(line.startswith("why:") for line in out.lines)
        assert any(k.endswith("frozen") for k in out.report.info)  # one readable line a gate, for text
    finally:
        src.close()
    (pkg / "README.txt").write_text("changed after the MANIFEST")
    src = open_source(str(pkg))
    try:
        assert verify(src, VerifyRequest(), "text").code == 1
    finally:
        src.close()
    assert capsys.readouterr().out == ""


def test_counterfactual_of_a_missing_manifest_is_an_error():
    with pytest.raises(AuditError):
        counterfactual("/nonexistent/protocol.toml")

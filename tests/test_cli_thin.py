"""The commands are thin (issue 23): every click command's body is parse -> one call -> one
formatter -> one exit, in at most 15 lines; formats are one enum behind one interface; the
evidence options reach a command as one policy value."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from auditkit.app.outcome import Outcome
from auditkit.app.policy import REQUIREMENTS, EvidencePolicy
from auditkit.cli.output import FORMATTERS, OutputFormat, formatter
from auditkit.errors import AuditError
from auditkit.findings import Finding, Report

CLI = Path(__file__).resolve().parents[1] / "auditkit" / "cli"
MAX_BODY = 15


def _is_command(fn: ast.FunctionDef) -> bool:
    for d in fn.decorator_list:
        call = d.func if isinstance(d, ast.Call) else d
        if isinstance(call, ast.Attribute) and call.attr in ("command", "group"):
            return True
    return False


def command_bodies():
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and _is_command(node):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]   # the docstring is help text, not work
                lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
                yield f"{path.name}:{node.name}", lines


def test_every_command_body_is_at_most_15_lines():
    found = dict(command_bodies())
    assert len(found) >= 15, found     # every command was seen (verify, replay-gate, tables, ..., protocol merge)
    assert {k: v for k, v in found.items() if v > MAX_BODY} == {}


def test_the_line_count_sees_a_long_body():
    src = "@click.command('x')\ndef x():\n    '''doc'''\n" + "".join(f"    a{i} = {i}\n" for i in range(16))
    fn = ast.parse(src).body[0]
    assert _is_command(fn) and fn.body[-1].end_lineno - fn.body[1].lineno + 1 == 16


def test_no_command_module_exits_but_through_its_outcome_or_translates_errors_itself():
    for path in sorted(CLI.glob("cmd_*.py")):
        text = path.read_text()
        assert "except AuditError" not in text, path.name
        assert "fail(" not in text, path.name
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and not _is_command(node):
                exits = [c for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                         and c.func.attr == "exit"]
                assert exits == [], f"{path.name}:{node.name} exits; only a command may"


def test_one_enum_picks_the_formatter():
    assert set(FORMATTERS) == set(OutputFormat)
    assert [f.value for f in OutputFormat] == ["text", "json", "sarif", "junit"]
    assert all(formatter(f.value).fmt is f for f in OutputFormat)


def _printed(fmt: str, outcome: Outcome) -> tuple[int, str, str]:
    @click.command()
    def show():
        click.get_current_context().exit(formatter(fmt).outcome(outcome))

    r = CliRunner().invoke(show, [])
    return r.exit_code, r.stdout, r.stderr


def test_an_outcome_prints_its_report_in_each_format_and_gives_its_exit_code():
    report = Report(command="verify", target="pkg")
    report.add(Finding("rows.csv", "row-invalid", "row 2, column seed", "an integer", "x"))
    outcome = Outcome("verify", report, lines=["before"], notes=["note: n"], warnings=["warning: w"])
    code, out, err = _printed("text", outcome)
    assert code == 1 and out.startswith("before\n") and "FAILED: 1 finding(s) in verify pkg" in out
    assert err == "note: n\nwarning: w\n"
    code, out, _ = _printed("json", outcome)
    doc = json.loads(out)
    assert code == 1 and doc["command"] == "verify" and doc["exit_code"] == 1 and "before" not in out
    code, out, _ = _printed("sarif", outcome)
    assert code == 1 and json.loads(out)["runs"][0]["results"][0]["ruleId"] == "row-invalid"
    code, out, _ = _printed("junit", outcome)
    assert code == 1 and out.startswith("<?xml") and "row-invalid" in out


def test_an_outcome_without_a_report_prints_its_document_or_its_lines():
    outcome = Outcome("counterfactual", doc={"ok": True, "exit_code": 0, "rows": []}, lines=["a table"], exit_code=3)
    code, out, _ = _printed("text", outcome)
    assert (code, out) == (3, "a table\n")
    code, out, _ = _printed("json", outcome)
    assert code == 3 and json.loads(out)["schema"] == "auditkit-output/1"
    raw = Outcome("review", doc={"b": 1, "a": [1]}, contract=False)
    assert json.loads(_printed("json", raw)[1]) == {"a": [1], "b": 1}


def test_an_error_is_a_whole_document_of_the_format():
    err = AuditError("nope", path="x", hint="h")

    @click.command()
    def show():
        formatter("json").error(err, "verify")

    r = CliRunner().invoke(show, [])
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 2 and doc["error"] == "nope" and r.stderr == ""


def test_the_require_choices_are_the_evidence_levels():
    from auditkit.evidence.model import REQUIREMENTS as LEVELS

    assert REQUIREMENTS == LEVELS


def test_the_evidence_options_reach_a_command_as_one_policy():
    from auditkit.cli.cmd_evidence import evidence_options

    seen = {}

    @click.command()
    @evidence_options
    def cmd(policy):
        seen["policy"] = policy

    r = CliRunner().invoke(cmd, ["--trusted-key", "k.pem", "--require", "signed", "--require", "chained"])
    assert r.exit_code == 0, r.output
    assert seen["policy"] == EvidencePolicy((), ("k.pem",), False, ("signed", "chained"))
    assert seen["policy"].trusts_anything and not EvidencePolicy().trusts_anything
    with pytest.raises(ValueError):
        EvidencePolicy(require=("notarized",))


class _FakeSource:
    def __init__(self, findings):
        self.findings, self.given, self.noted, self.closed = findings, "https://example.org/pkg.tar", False, False

    def note(self):
        return ""

    def close(self):
        self.closed = True


def test_a_refused_served_file_turns_the_error_into_its_finding(monkeypatch):
    """The check could not run because a fetched file was refused: the error is said, then the
    refusal as the finding, exit 1; without such a file the error is exit 2."""
    import auditkit.package.source as source
    from auditkit.cli.common import package_source

    finding = Finding("runs/a.csv", "remote-file-mismatch", "", "sha256 aa", "sha256 bb")
    for findings, code in (([finding], 1), ([], 2)):
        fake = _FakeSource(findings)
        monkeypatch.setattr(source, "open_source", lambda *a, **k: fake)

        @click.command()
        def cmd():
            with package_source("pkg"):
                raise AuditError("cannot read runs/a.csv")

        from auditkit.cli.main import AuditGroup

        group = AuditGroup(commands={"cmd": cmd})
        r = CliRunner().invoke(group, ["cmd"])
        assert r.exit_code == code and fake.closed
        assert "error: cannot read runs/a.csv" in r.stderr
        if findings:
            assert r.stdout.startswith(str(finding)) and "FAILED: 1 file(s) served at https://example.org/pkg.tar" in r.stdout
        else:
            assert r.stdout == ""

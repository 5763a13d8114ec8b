"""Help a newcomer can act on: `--help` with whole summaries, examples and exit codes, a CLI
reference generated from it (docs/CLI.md), shell completion, and `auditkit explain CODE`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli.main import COMMAND_MODULES, SUMMARIES, cli
from auditkit.cli.output import output_validator
from auditkit.cli.reference import render_markdown
from auditkit.codes import CODES

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_top_level_help_has_whole_summaries_examples_and_exit_codes():
    r = run("--help")
    assert r.exit_code == 0
    assert set(SUMMARIES) == set(COMMAND_MODULES)
    for name, summary in SUMMARIES.items():
        assert summary.endswith(".") and "..." not in summary and len(summary) <= 60
        assert f"{name}  " in r.output and summary in r.output      # printed whole, not cut
    assert "Exit codes" in r.output and "auditkit verify ancillary/" in r.output


def test_the_cli_reference_is_generated_from_help():
    import difflib

    text = (REPO / "docs" / "CLI.md").read_text()
    diff = list(difflib.unified_diff(text.splitlines(), render_markdown().splitlines(), lineterm="", n=1))
    assert diff == [], "docs/CLI.md is stale (python -m auditkit.cli.reference > docs/CLI.md):\n" + "\n".join(diff[:20])
    for name in COMMAND_MODULES:
        assert f"## `auditkit {name}`" in text
    assert "_AUDITKIT_COMPLETE=bash_source auditkit" in text


def test_shell_completion_completes_command_names():
    env = {**os.environ, "COMP_WORDS": "auditkit repl", "COMP_CWORD": "1", "_AUDITKIT_COMPLETE": "bash_complete"}
    r = subprocess.run([sys.executable, "-c", "from auditkit.cli.main import main; main()"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "replay-gate" in r.stdout and "verify" not in r.stdout


@pytest.mark.parametrize("code", [c.code for c in CODES])
def test_explain_says_what_every_code_means_and_what_to_do(code):
    r = run("explain", code)
    assert r.exit_code == 0
    assert r.output.startswith(code) and "What it means:" in r.output and "What to do:" in r.output


def test_explain_an_unknown_code_suggests_the_nearest():
    r = run("explain", "row-invalidd")
    assert r.exit_code == 2 and "did you mean: row-invalid" in r.output and "Traceback" not in r.output
    doc = json.loads(run("explain", "nope-nope", "--json").stdout)
    assert doc["exit_code"] == 2 and list(output_validator().iter_errors(doc)) == []
    doc = json.loads(run("explain", "--json").stdout)
    assert len(doc["codes"]) == len(CODES) and list(output_validator().iter_errors(doc)) == []
    listing = run("explain").output
    assert all(f"  {c.code}\n" in listing for c in CODES)


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    from auditkit.cli import output

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(output.sys.stdout, "isatty", lambda: True, raising=False)
    assert output.paint("OK: x", True) != "OK: x" and "\x1b[" in output.paint("FAILED: x", False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert output.paint("OK: x", True) == "OK: x"
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(output.sys.stdout, "isatty", lambda: False, raising=False)
    assert output.paint("OK: x", True) == "OK: x"

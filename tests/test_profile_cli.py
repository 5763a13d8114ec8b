"""The profile commands through click: exit codes and key lines (auditkit/cli/cmd_profile.py)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import legacy  # noqa: E402
from auditkit.cli import cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = str(REPO / "docs" / "examples" / "paper06.profile.toml")


@pytest.fixture(scope="module")
def legacy_pkg(tmp_path_factory) -> Path:
    return legacy.build_legacy_package(tmp_path_factory.mktemp("legacy") / "pkg")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_verify_replay_and_tables_through_a_profile_exit_0(legacy_pkg):
    r = run("verify", legacy_pkg, "--profile", EXAMPLE)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == f"OK: verify --profile {legacy_pkg} (63 files, 100 run rows, 5 gates)"
    assert "from the package+profile: row column host" in r.output
    r = run("replay-gate", "all", "--package", legacy_pkg, "--profile", EXAMPLE)
    assert r.exit_code == 0, r.output
    assert "== gate stage3b (through the profile) ==" in r.output
    assert "check near_equivalence greedy vs bridge: 0.016031500 (threshold 0.01) -> FAIL" in r.output
    assert "verdict: identical as far as the authors recorded — gate stage2" in r.output
    assert "verdict: replayed — the authors recorded no decision the profile maps for gate stage3" in r.output
    r = run("tables", "--package", legacy_pkg, "--profile", EXAMPLE, "--check", "--json")
    doc = json.loads(r.output)
    assert r.exit_code == 0 and doc["ok"] is True and doc["checked"] == {"tables": 3}
    assert any(f["from"] == "replay" for f in doc["facts"])


def test_findings_exit_1_and_could_not_check_exits_2(legacy_pkg, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(legacy_pkg, pkg)
    rel = "analysis/stage2_60min_seed44_seed45_combined_decision.json"
    (pkg / rel).write_text(json.dumps({"anchors_for_12h": ["bridge", "greedy", "s01_d5_ar40"],
                                       "bridge_first_in_all_cells": True}) + "\n")
    legacy.write_manifests(pkg)
    r = run("replay-gate", "stage2", "--package", pkg, "--profile", EXAMPLE, "--json")
    doc = json.loads(r.output)
    assert r.exit_code == 1 and doc["counts"] == {"promoted-differs": 1}
    assert doc["findings"][0]["path"] == rel and doc["findings"][0]["location"] == "$.anchors_for_12h"
    r = run("replay-gate", "stage9", "--package", pkg, "--profile", EXAMPLE)
    assert r.exit_code == 2 and "unknown gate 'stage9'" in r.output
    r = run("tables", "--package", pkg, "--profile", EXAMPLE)
    assert r.exit_code == 2 and "only checked" in r.output
    r = run("verify", pkg, "--profile", EXAMPLE, "--deep")
    assert r.exit_code == 2 and "do not apply with --profile" in r.output
    r = run("verify", pkg, "--profile", tmp_path / "absent.toml", "--json")
    assert r.exit_code == 2 and json.loads(r.output)["exit_code"] == 2


def test_profile_draft_writes_outside_the_package_only(legacy_pkg, tmp_path):
    out = tmp_path / "draft.toml"
    r = run("profile", "draft", legacy_pkg, "--out", out)
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"wrote {out}: a draft with 5 gate(s) whose rules are TODO")
    assert 'rules = "TODO"' in out.read_text()
    r = run("profile", "draft", legacy_pkg, "--out", out)
    assert r.exit_code == 2 and "the file exists" in r.output
    r = run("profile", "draft", legacy_pkg, "--out", legacy_pkg / "draft.toml")
    assert r.exit_code == 2 and "written into the package" in r.output and not (legacy_pkg / "draft.toml").exists()
    r = run("replay-gate", "all", "--package", legacy_pkg, "--profile", out)
    assert r.exit_code == 2 and "still TODO" in r.output
    r = run("verify", legacy_pkg, "--profile", out)
    assert r.exit_code == 0 and "not checked (TODO in the profile): rules of gate" in r.output
    r = run("profile", "draft", legacy_pkg)
    assert r.exit_code == 0 and r.output.startswith("# Draft profile for pkg")


def test_require_asserted_holds_and_more_is_a_finding_through_a_profile(legacy_pkg):
    r = run("replay-gate", "stage2", "--package", legacy_pkg, "--profile", EXAMPLE, "--require", "asserted")
    assert r.exit_code == 0, r.output
    r = run("verify", legacy_pkg, "--profile", EXAMPLE, "--require", "timestamped", "--json")
    doc = json.loads(r.output)
    assert r.exit_code == 1 and doc["counts"] == {"evidence-below-required": 5}
    assert doc["findings"][0]["found"].startswith("asserted 2026-")
    r = run("replay-gate", "all", "--package", legacy_pkg, "--profile", EXAMPLE, "--trusted-key", EXAMPLE)
    assert r.exit_code == 2 and "do not apply with --profile" in r.output

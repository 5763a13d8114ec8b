"""The shipped reference package `ancillary/` audits itself: it was produced by
`auditkit protocol run manifests/micro.toml` (real runs of the runner), and every
check a reviewer would run on it passes; a single changed byte in a copy fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.study.spec import load_manifest
from auditkit.package.rows import read_csv_text

REPO = Path(__file__).resolve().parents[1]
ANC = REPO / "ancillary"
MICRO = REPO / "manifests" / "micro.toml"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def all_rows(pkg: Path) -> list[dict]:
    rows = []
    for p in sorted((pkg / "remote-results").glob("*.csv")):
        rows += read_csv_text(p.read_text())[1]
    return rows


def test_ancillary_is_shipped_and_small():
    assert (ANC / "MANIFEST.json").is_file() and (ANC / "protocol.json").is_file()
    total = sum(p.stat().st_size for p in ANC.rglob("*") if p.is_file())
    assert total < 50 * 2**20, f"ancillary/ is {total / 2**20:.1f} MiB"
    assert "auditkit protocol run" in (ANC / "README.txt").read_text()


def test_ancillary_verifies_and_prints_its_root():
    r = invoke("verify", ANC)
    assert r.exit_code == 0, r.output
    root = json.loads((ANC / "MANIFEST.json").read_text())["root"]
    assert f"root (of the files): {root}" in r.output


def test_every_gate_replays_identically():
    r = invoke("replay-gate", "all", "--package", ANC, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["ok"] is True
    gates = {g.gate for g in load_manifest(MICRO).protocol.gates}
    decided = {p.name.removesuffix("_decision.json") for p in (ANC / "analysis").glob("*_decision.json")}
    assert decided == gates


@pytest.mark.parametrize("what", ["tables", "figures"])
def test_tables_and_figures_regenerate(what):
    r = invoke(what, "--package", ANC, "--check")
    assert r.exit_code == 0, r.output


def test_ancillary_was_made_by_the_micro_manifest():
    m = load_manifest(MICRO)
    assert json.loads((ANC / "protocol.json").read_text()) == m.protocol.to_json()
    assert (ANC / m.protocol.matrix).read_bytes() == m.matrix_file.read_bytes()
    rows = all_rows(ANC)
    first_start = {}
    for r in rows:
        first_start[r["stage"]] = min(first_start.get(r["stage"], r["started_at"]), r["started_at"])
    for g in m.protocol.gates:
        doc = json.loads((ANC / "preanalysis" / f"{g.gate}.rules.json").read_text())
        for key, value in m.rules[g.gate].items():
            assert doc[key] == value, (g.gate, key)
        # frozen before the first row of any of its input stages started
        assert all(doc["frozen_at"] < first_start[s] for s in doc["inputs"]["stages"]), g.gate
    # every planned cell ran once
    keys = [(r["host"], r["stage"], r["config_id"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_deep_reevaluation_matches_the_rows():
    r = invoke("verify", ANC, "--deep")
    assert r.exit_code == 0, r.output


def test_one_changed_byte_in_a_copy_fails(tmp_path):
    pkg = tmp_path / "anc"
    shutil.copytree(ANC, pkg)
    f = sorted((pkg / "remote-results").glob("*.csv"))[-1]
    data = bytearray(f.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    f.write_bytes(bytes(data))
    r = invoke("verify", pkg)
    assert r.exit_code == 1
    assert f"{f.relative_to(pkg).as_posix()}: file-changed" in r.output
    # the original is untouched
    assert invoke("verify", ANC).exit_code == 0


def test_verify_replay_and_tables_never_import_torch():
    """torch is the runner's extra: auditing a package must work where it is not installed."""
    import subprocess
    import sys

    code = ("import sys\nfrom click.testing import CliRunner\nfrom auditkit.cli import cli\n"
            f"pkg = {str(ANC)!r}\n"
            "for args in (['verify', pkg], ['replay-gate', 'all', '--package', pkg], ['tables', '--package', pkg, '--check']):\n"
            "    r = CliRunner().invoke(cli, args)\n"
            "    assert r.exit_code == 0, (args, r.output)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]

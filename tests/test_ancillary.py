"""The shipped reference package audits itself: what README.md's first command runs, as tests.

`ancillary/` was made by `auditkit protocol run manifests/micro.toml` (real runs
of the bundled runner); these tests hold it to that claim.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.protocol import load_manifest
from auditkit.rows import read_csv_text

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ancillary"
MICRO = REPO / "manifests" / "micro.toml"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def rows() -> list[dict]:
    out = []
    for p in sorted((PKG / "remote-results").glob("*.csv")):
        out += read_csv_text(p.read_text("utf-8"))[1]
    return out


def test_the_package_is_shipped_and_small():
    assert (PKG / "MANIFEST.json").is_file(), "ancillary/ must ship with the repository"
    size = sum(p.stat().st_size for p in PKG.rglob("*") if p.is_file())
    assert size < 50 * 2**20, f"ancillary/ is {size / 2**20:.1f} MiB"


def test_verify_passes_and_prints_the_recorded_root():
    res = invoke("verify", PKG)
    assert res.exit_code == 0, res.output
    root = json.loads((PKG / "MANIFEST.json").read_text())["root"]
    assert root in res.output


def test_every_gate_replays_identically():
    res = invoke("replay-gate", "all", "--package", PKG, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    gates = {g.gate for g in load_manifest(MICRO).protocol.gates}
    assert doc["ok"] and doc["findings"] == [] and doc["checked"] == {"gates": len(gates)}
    assert doc["info"] == {f"gate {g}": "identical" for g in gates}


def test_tables_and_figures_regenerate_identically():
    res = invoke("tables", "--package", PKG, "--check")
    assert res.exit_code == 0, res.output
    res = invoke("figures", "--package", PKG, "--check")
    assert res.exit_code == 0, res.output


def test_the_package_was_made_by_the_micro_protocol():
    shipped = json.loads((PKG / "protocol.json").read_text())
    assert shipped == load_manifest(MICRO).protocol.to_json()
    assert (PKG / "matrices" / "micro_matrix.csv").read_bytes() == (REPO / "manifests" / "micro_matrix.csv").read_bytes()
    all_rows = rows()
    assert len({r["run_id"] for r in all_rows}) == len(all_rows)
    assert {r["host"] for r in all_rows} == {"windows", "linux"}
    # every row came from the runner that ships in source/
    assert {r["runner_sha256"] for r in all_rows} and all(len(r["runner_sha256"]) == 64 for r in all_rows)
    # rules were frozen before the first row of each gate's input stages started
    for gate in load_manifest(MICRO).protocol.gates:
        rules = json.loads((PKG / "preanalysis" / f"{gate.gate}.rules.json").read_text())
        frozen, stages = rules["frozen_at"], set(rules["inputs"]["stages"])
        started = [r["started_at"] for r in all_rows if r["stage"] in stages]
        assert started and frozen < min(started), gate.gate


def test_checkpoints_re_evaluate_to_their_recorded_val_bpb():
    res = invoke("verify", PKG, "--deep")
    assert res.exit_code == 0, res.output
    assert list(PKG.rglob("*.safetensors")), "the final stages' checkpoints are kept"


def test_one_changed_byte_in_a_copy_fails_verify(tmp_path):
    copy = tmp_path / "ancillary"
    shutil.copytree(PKG, copy)
    csv = sorted((copy / "remote-results").glob("*.csv"))[0]
    data = bytearray(csv.read_bytes())
    i = data.rindex(b".") + 1  # a digit of the last number
    data[i] = ord("0") if data[i] != ord("0") else ord("1")
    csv.write_bytes(bytes(data))
    res = invoke("verify", copy)
    assert res.exit_code == 1
    assert csv.name in res.output

"""Derived tables: byte-stable, checked by regenerating; the paper's own accounting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.derived.generators import kendall, spearman
from auditkit.derived.tables import TableKind, build_tables, check_tables, generate_tables
from fixtures.synth import make_package
from auditkit.package.schemas import schema_errors


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_package(tmp_path_factory.mktemp("synth") / "pkg")


@pytest.fixture
def pkg(pristine, tmp_path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(pristine, dest)
    return dest


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_every_kind_generates_and_is_listed(pkg):
    doc = json.loads((pkg / "table_manifest.json").read_text())
    assert schema_errors(doc, "table-manifest") == []
    assert {e["kind"] for e in doc["tables"]} == {k.value for k in TableKind}
    for e in doc["tables"]:
        assert (pkg / e["path"]).is_file() and e["inputs"]
    ids = sorted(e["id"] for e in doc["tables"])
    assert "stage_summary.csv" in ids and "host_correlation.json" in ids


def test_regenerating_gives_the_same_bytes(pkg, tmp_path):
    before = {p.name: p.read_bytes() for p in (pkg / "analysis").iterdir()}
    generate_tables(pkg, tmp_path / "again")
    for p in (tmp_path / "again/analysis").iterdir():
        assert p.read_bytes() == before[p.name], p.name
    assert (tmp_path / "again/table_manifest.json").read_bytes() == (pkg / "table_manifest.json").read_bytes()
    assert all(b"\r" not in v for v in before.values())


def test_check_passes_on_pristine(pkg):
    assert check_tables(pkg).ok
    res = run("tables", "--package", str(pkg), "--check")
    assert res.exit_code == 0 and res.output.startswith("OK: tables --check")


def test_check_catches_an_edited_cell(pkg):
    p = pkg / "analysis/stage_summary.csv"
    lines = p.read_text().split("\n")
    cols = lines[3].split(",")
    cols[4] = "1.234567"  # mean_val_bpb
    lines[3] = ",".join(cols)
    p.write_text("\n".join(lines))
    rep = check_tables(pkg)
    assert [(f.code, f.path, f.location) for f in rep.findings] == [
        ("table-differs", "analysis/stage_summary.csv", "row 3, column mean_val_bpb")]
    res = run("tables", "--package", str(pkg), "--check", "--json")
    assert res.exit_code == 1 and json.loads(res.output)["counts"] == {"table-differs": 1}


def test_check_catches_a_changed_input(pkg):
    p = pkg / "analysis/final_decision.json"
    doc = json.loads(p.read_text())
    doc["checks"][0]["passed"] = not doc["checks"][0]["passed"]
    doc["candidates"][0]["rank"] = 3
    p.write_text(json.dumps(doc))
    codes = {f.code for f in check_tables(pkg).findings}
    assert "table-differs" in codes and "table-hash-differs" in codes


def test_check_without_tables_is_a_finding(pkg):
    (pkg / "table_manifest.json").unlink()
    res = run("tables", "--package", str(pkg), "--check")
    assert res.exit_code == 1 and "table-manifest-missing" in res.output
    assert run("tables", "--package", str(pkg / "nope"), "--check").exit_code == 2


def test_table_contents(pkg):
    tables = {t.id: t for t in build_tables(pkg)}
    budget = {(r[0], r[2]): r for r in tables["budget_counterfactual"].rows}
    assert budget[("final_branch", None)][-1] == pytest.approx(3 * 4 * 12)  # 3 anchors x 4 cells x 12 h
    assert budget[("gate_counterfactual", "confirm")][-1] == pytest.approx(4 * 4 * 12)
    assert budget[("total", None)][-1] == pytest.approx(0.8 + 8 + 16 + 144)
    surv = {r[0]: r for r in tables["promotion_survival"].rows}
    assert surv["bridge"][2] == "final" and surv["bridge"][-2] == "promoted by final"
    assert surv["bridge"][-1] == "promoted: rank 1 of 3 eligible, within top_k=1"
    sens = [r for r in tables["threshold_sensitivity"].rows if r[7]]  # the frozen thresholds
    assert all(r[6] in (0.01, 0.02) for r in sens)
    smoke = tables["smoke_summary"].rows
    assert len(smoke) == 12 * 2 and {r[0] for r in smoke} == {"stage0_smoke"}
    corr = tables["host_correlation"].rows
    assert {r[0] for r in corr} == {"stage0_smoke", "screen", "confirm", "final"}


def test_rank_correlations_by_hand():
    assert spearman([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert spearman([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(0.8)      # 1 - 6*2/60
    assert kendall([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(4 / 6)     # 5 concordant, 1 discordant
    assert kendall([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman([1], [1]) is None and kendall([1], [1]) is None


def test_paper06_accounting_is_computed_from_the_manifest():
    from auditkit.app.derived import manifest_counterfactual

    rows = manifest_counterfactual("manifests/paper06.toml")
    final = next(r for r in rows if r["item"] == "final_branch")
    gates = {r["gate"]: r for r in rows if r["item"] == "gate_counterfactual"}
    assert final["gpu_hours"] == pytest.approx(144)                 # executed 12 h branch
    assert gates["stage2"]["candidates"] == 4 and gates["stage2"]["gpu_hours"] == pytest.approx(192)
    assert gates["stage1"]["candidates"] == 9 and gates["stage1"]["gpu_hours"] == pytest.approx(432)
    total = next(r for r in rows if r["item"] == "total")
    assert total["gpu_hours"] == pytest.approx(169.2)  # with the smoke set inferred in paper06.toml
    res = run("counterfactual", "manifests/paper06.toml")
    assert res.exit_code == 0
    assert any(line.split()[-1] == "432.0" and "stage1 " in line for line in res.output.splitlines())


# --------------------------------------------------------------------------- the store: defects are findings

def _digest(root: Path) -> dict[str, str]:
    import hashlib
    import os

    return {os.path.relpath(os.path.join(d, n), root): (hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest()
                                                      if os.path.isfile(os.path.join(d, n))
                                                      and not os.path.islink(os.path.join(d, n)) else "special")
            for d, dirs, files in os.walk(root) for n in dirs + files}


def _symlink(pkg: Path, rel: str) -> None:
    outside = pkg.parent / ("outside-" + Path(rel).name)
    if (pkg / rel).is_dir():
        shutil.copytree(pkg / rel, outside)
        shutil.rmtree(pkg / rel)
    else:
        shutil.copyfile(pkg / rel, outside)
        (pkg / rel).unlink()
    (pkg / rel).symlink_to(outside)


CHECK, GENERATE, FIGURES = ("tables", "--check"), ("tables", "--out"), ("figures", "--out")


@pytest.mark.parametrize("rel,commands", [
    ("remote-results/linux_screen_summary.csv", (CHECK, GENERATE, FIGURES)),
    ("remote-results", (CHECK, GENERATE, FIGURES)),
    ("analysis/final_decision.json", (CHECK, GENERATE, FIGURES)),
    ("matrices/synthetic.csv", (CHECK, GENERATE)),
    ("preanalysis/screen.rules.json", (CHECK, GENERATE)),
    ("analysis/stage_summary.csv", (CHECK,)),
    ("table_manifest.json", (CHECK,)),
])
def test_tables_and_figures_never_follow_a_link(pkg, tmp_path, rel, commands):
    _symlink(pkg, rel)
    before = _digest(tmp_path)
    for args in commands:
        args = list(args) + ([str(tmp_path / args[0])] if args[1] == "--out" else [])
        res = run(*args, "--package", str(pkg), "--json")
        assert res.exit_code == 1, (args, res.output)
        findings = json.loads(res.output)["findings"]
        assert any(f["code"] == "symlink" and f["path"].startswith(rel) for f in findings), (args, findings)
        assert "Traceback" not in res.output
    assert _digest(tmp_path) == before  # nothing written, in the package or beside it


def test_tables_check_reports_strict_json_and_utf8_defects(pkg):
    p = pkg / "analysis/screen_decision.json"
    good = p.read_text()
    p.write_text(good.replace('"promoted": ', '"promoted": [], "promoted": ', 1))
    rep = check_tables(pkg)
    assert [(f.code, f.path, f.location) for f in rep.findings] == [
        ("json-duplicate-key", "analysis/screen_decision.json", "promoted")]
    p.write_text(good)
    t = pkg / "analysis/stage_summary.csv"
    t.write_bytes(t.read_bytes().replace(b"screen", b"scr\xe9en", 1))
    rep = check_tables(pkg)
    assert [(f.code, f.path) for f in rep.findings] == [("text-not-utf8", "analysis/stage_summary.csv")]
    res = run("tables", "--check", "--package", str(pkg))
    assert res.exit_code == 1 and "analysis/stage_summary.csv [byte " in res.output


def _text_only(monkeypatch):
    import auditkit.derived.package_data as package_data
    import auditkit.package.columns as columns

    def refuse(*_a, **_k):
        raise ValueError("a value that is not a number")

    monkeypatch.setattr(package_data, "typed_frame", refuse)
    monkeypatch.setattr(columns, "typed_frame", refuse)


@pytest.mark.parametrize("edit", [None, "val_bpb", "num_steps"])
def test_run_rows_read_typed_or_as_text_make_the_same_tables(pkg, monkeypatch, edit):
    """The shared typed parse of a run CSV (the common case, kept for replay), the tables' own typed
    parse and the text parse with conversions (a value that is not a number) make byte-identical
    tables, also when one file takes each path."""
    from auditkit.derived.package_data import PackageData
    from auditkit.derived.tables import table_files
    from auditkit.package.columns import shared_run_frame
    from auditkit.package.store import open_package

    if edit:
        csvs = sorted((pkg / "remote-results").glob("*_summary.csv"))
        text = csvs[-1].read_text().splitlines(keepends=True)
        header = text[0].rstrip("\n").split(",")
        row = text[1].rstrip("\n").split(",")
        row[header.index(edit)] = "n/a"
        text[1] = ",".join(row) + "\n"
        csvs[-1].write_text("".join(text))
        rel = csvs[-1].relative_to(pkg).as_posix()
        assert shared_run_frame(open_package(pkg), rel)[0] is None      # this file: its own path
        assert shared_run_frame(open_package(pkg), csvs[0].relative_to(pkg).as_posix())[0] is not None
    typed = table_files(pkg)
    rows = PackageData(pkg).rows
    _text_only(monkeypatch)
    assert table_files(pkg) == typed
    text_rows = PackageData(pkg).rows
    for c in ("seed", "val", "train_s", "steps", "good", "host", "stage", "config_id", "status", "run_id"):
        assert rows[c].astype(object).tolist() == text_rows[c].astype(object).tolist() or \
            c == "val" and rows[c].equals(text_rows[c]), c

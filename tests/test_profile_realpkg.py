"""Profiles, from what a real package showed: a table's own labels mapped to the rows'
(`linux-l40s` in the authors' table, `linux` in the rows), compute counted at planned budgets (a
crashed 5-minute run counts 5 minutes), and `profile draft` finding start/finish columns that carry
an offset under another name (`start_time_local`)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from auditkit.profile import check_tables_profiled, parse_profile
from auditkit.profile.draft import draft_profile
from fixtures import legacy

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "paper06.profile.toml"
SMOKE = "analysis/p06_stage0_smoke_summary_2026-05-02.csv"
BUDGET = "analysis/p06_budget_counterfactual_2026-05-02.csv"
STAGE0_LINUX = "remote-results/linux_stage0_summary.csv"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return legacy.build_legacy_package(tmp_path_factory.mktemp("real") / "pkg")


@pytest.fixture
def pkg(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "pkg"))


def edit_csv(root: Path, rel: str, edit) -> None:
    lines = (root / rel).read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    for r in rows:
        edit(r)
    (root / rel).write_text("\n".join([",".join(header)] + [",".join(r[h] for h in header) for r in rows]) + "\n")
    legacy.write_manifests(root)


def profile(pkg: Path, **table_edits):
    doc = tomllib.loads(EXAMPLE.read_text())
    for g in doc["gates"].values():
        g["prose"]["sha256"] = legacy.sha256_of(pkg, g["prose"]["path"])
    for t in doc["tables"]:
        t.update(table_edits.get(t["path"], {}))
    return parse_profile(doc, "p.toml")


def table_findings(rep, rel: str) -> list:
    return [f for f in rep.findings if f.path == rel]


def test_a_tables_own_host_labels_are_mapped_to_the_rows(pkg):
    labels = {"linux": "linux-l40s", "windows": "win-a100"}
    edit_csv(pkg, SMOKE, lambda r: r.update(host=labels[r["host"]]))
    unmapped = check_tables_profiled(pkg, profile(pkg))
    assert {f.code for f in table_findings(unmapped, SMOKE)} == {"table-row-extra", "table-row-missing"}
    mapped = check_tables_profiled(pkg, profile(pkg, **{SMOKE: {"values": {"host": {v: k for k, v in labels.items()}}}}))
    assert table_findings(mapped, SMOKE) == []
    # a mapped label is still compared: a wrong one is still caught
    edit_csv(pkg, SMOKE, lambda r: r.update(host="win-a100") if r["host"] == "linux-l40s" else None)
    wrong = check_tables_profiled(pkg, profile(pkg, **{SMOKE: {"values": {"host": {v: k for k, v in labels.items()}}}}))
    assert table_findings(wrong, SMOKE)


def test_compute_can_be_counted_at_planned_budgets(pkg):
    # the crashed smoke run stopped after 1.2 of its planned 2 minutes; the authors' 169.2 counts 2
    edit_csv(pkg, STAGE0_LINUX, lambda r: r.update(train_min="1.20") if r["exit_status"] == "crashed" else None)
    measured = check_tables_profiled(pkg, profile(pkg))
    bad = table_findings(measured, BUDGET)
    assert [(f.code, f.location, f.found) for f in bad] == [("table-value-differs", "row 1, column gpu_hours", "169.2")]
    planned = check_tables_profiled(pkg, profile(pkg, **{BUDGET: {"accounting": "planned"}}))
    assert table_findings(planned, BUDGET) == []
    assert any(f.name == "planned compute" for f in planned.facts)


def test_a_wrong_accounting_word_is_refused(pkg):
    from auditkit.errors import AuditError

    with pytest.raises(AuditError):
        profile(pkg, **{BUDGET: {"accounting": "guessed"}})


def test_draft_finds_start_and_finish_columns_with_an_offset_under_other_names(pkg):
    for rel in sorted((pkg / "remote-results").glob("*.csv")):
        text = rel.read_text().splitlines()
        text[0] = text[0].replace("start_local", "start_time_local").replace("end_local", "finish_time_local")
        rel.write_text("\n".join(text) + "\n")
    legacy.write_manifests(pkg)
    doc = tomllib.loads(draft_profile(pkg))
    cols = doc["rows"]["columns"]
    assert cols["started_at"] == {"column": "start_time_local", "convert": "local_to_utc"}
    assert cols["finished_at"] == {"column": "finish_time_local", "convert": "local_to_utc"}

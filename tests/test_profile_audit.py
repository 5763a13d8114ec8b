"""verify / replay / tables --check of a legacy package through a profile (auditkit.profile.audit).

The package (tests/fixtures/legacy.py) has the arXiv listing's file names and the authors' own
shapes; the profile is the shipped example docs/examples/paper06.profile.toml."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import legacy  # noqa: E402
from auditkit.errors import AuditError  # noqa: E402
from auditkit.profile import check_tables_profiled, load_profile, parse_profile, replay_profiled, verify_profiled  # noqa: E402
from auditkit.profile.model import Provenance  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "paper06.profile.toml"
ROWS_3B = "remote-results/windows_stage3b_12h_seed47_anchor3_summary.csv"
STAGE1_DECISION = "analysis/stage1_10min_seed42_seed43_top9_promotion_decision.json"


@pytest.fixture(scope="module")
def legacy_pkg(tmp_path_factory) -> Path:
    return legacy.build_legacy_package(tmp_path_factory.mktemp("legacy") / "pkg")


@pytest.fixture
def pkg(legacy_pkg, tmp_path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(legacy_pkg, dest)
    return dest


def snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def codes(rep) -> set[str]:
    return {f.code for f in rep.findings}


def set_cell(root: Path, rel: str, row: int, column: str, value: str) -> None:
    lines = (root / rel).read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    (root / rel).write_text("\n".join(lines) + "\n")


def test_verify_replay_and_tables_pass_through_the_profile_and_write_nothing(legacy_pkg):
    before = snapshot(legacy_pkg)
    v = verify_profiled(legacy_pkg, EXAMPLE)
    assert v.ok, v.render_text()
    assert v.checked == {"files": 63, "run rows": 100, "gates": 5}
    r = replay_profiled(legacy_pkg, EXAMPLE)
    assert r.ok, r.render_text()
    t = check_tables_profiled(legacy_pkg, EXAMPLE)
    assert t.ok, t.render_text()
    assert t.checked == {"tables": 3}
    assert snapshot(legacy_pkg) == before


def test_replay_recomputes_the_papers_decisions_and_says_what_it_compared(legacy_pkg):
    rep = replay_profiled(legacy_pkg, EXAMPLE)
    g = {x.gate: x for x in rep.gates}
    assert g["stage1"].replayed["promoted"][0] == "greedy"   # the mean-best at the replicated 10-minute gate
    assert g["stage3b"].replayed["promoted"] == ["bridge"]   # ... is not the 12-hour winner
    checks = {c["kind"]: c for c in g["stage3b"].replayed["checks"]}
    assert checks["near_equivalence"]["passed"] is False and checks["near_equivalence"]["value"] > 0.010
    assert checks["mean_gap"]["passed"] is False and checks["mean_gap"]["value"] > 0.020
    assert checks["ranks_first_in_all_cells"]["passed"] is True
    assert g["stage2"].replayed["checks"][0]["passed"] is True  # the bridge first in all four 60-minute cells
    assert "per-cell values and ranks" in g["stage3b"].compared
    assert "check 0 (near_equivalence greedy) value" in g["stage3b"].compared
    assert any(n.what == "promoted order" for n in g["stage1"].not_compared)
    assert any(n.what == "the decision" for n in g["stage3"].not_compared)
    assert rep.info["gate stage3"].startswith("replayed; the authors recorded no decision")
    # candidates come from the authors' recorded promoted list, and the result says so
    assert g["stage2"].candidates_from.startswith("package: gate stage1's recorded promoted list")


def test_freeze_evidence_is_at_most_asserted(legacy_pkg):
    rep = replay_profiled(legacy_pkg, EXAMPLE)
    freeze = {x.gate: x.freeze for x in rep.gates}
    assert all(f.startswith("asserted ") and "not a timestamp" in f for f in freeze.values())
    assert "consistent" in freeze["stage1_top9"]          # the 10-minute runs began the day after
    assert "undetermined" in freeze["stage2"]             # same day: a date cannot order them


def test_freeze_contradicted_by_the_rows_is_a_finding(legacy_pkg):
    doc = tomllib.loads(EXAMPLE.read_text())
    late = "preanalysis/STAGE3B_12H_SEED47_DECISION_2026-05-02.txt"
    doc["gates"]["stage1_top9"]["prose"] = {"path": late, "sha256": legacy.sha256_of(legacy_pkg, late)}
    rep = replay_profiled(legacy_pkg, parse_profile(doc, "late.toml"))
    bad = [f for f in rep.findings if f.code == "freeze-contradicted"]
    assert len(bad) == 1 and bad[0].path == late and "stage1_10min_summary.csv" in bad[0].found


def test_every_result_says_which_facts_came_from_the_package_and_which_from_the_profile(legacy_pkg):
    doc = verify_profiled(legacy_pkg, EXAMPLE).to_dict()
    facts = {f["fact"]: f for f in doc["facts"]}
    assert facts["row column host"]["from"] == Provenance.PACKAGE_VIA_PROFILE.value
    assert "win-a100->windows" in facts["row column host"]["detail"]
    assert facts["row column budget_kind"]["from"] == Provenance.PROFILE.value
    assert facts["row column stage"]["from"] == Provenance.PACKAGE.value
    assert "capture" in facts["row column stage"]["detail"]
    assert facts["rules of gate stage2"]["from"] == Provenance.PROFILE.value
    assert facts["run rows"]["detail"].startswith("100 row(s) from 16 file(s)")
    assert any(n["what"] == "run-row columns runner_sha256, checkpoint, checkpoint_sha256"
               for n in doc["not_checked"])
    tables = check_tables_profiled(legacy_pkg, EXAMPLE).to_dict()
    assert {"fact": "decisions the tables use", "from": "replay",
            "detail": "replayed from the package's rows under the profile's transcribed rules"} in tables["facts"]


# --------------------------------------------------------------------------- edits are caught

def test_an_edited_raw_row_is_caught_by_the_manifest(pkg):
    set_cell(pkg, ROWS_3B, 1, "final_val_bpb", "0.850000")
    rep = verify_profiled(pkg, EXAMPLE)
    assert [(f.path, f.code) for f in rep.findings] == [(ROWS_3B, "file-changed")] * 2  # both manifests


def test_an_edited_raw_row_is_caught_by_the_replay_even_with_the_manifests_rebuilt(pkg):
    set_cell(pkg, ROWS_3B, 1, "final_val_bpb", "0.850000")   # the bridge, seed 47 on windows
    legacy.write_manifests(pkg)
    assert verify_profiled(pkg, EXAMPLE).ok
    rep = replay_profiled(pkg, EXAMPLE, "stage3b")
    assert [g.gate for g in rep.gates] == ["stage3b"]
    cells = [f for f in rep.findings if f.path == "analysis/stage3_12h_seed46_seed47_combined_cells.csv"]
    assert [(f.code, f.location, f.expected) for f in cells] == [("value-differs", "row 4, column val_bpb", "0.85")]
    assert {"check-value-differs", "value-differs"} <= codes(rep)
    summary = [f for f in rep.findings if f.path.endswith("combined_summary.csv")]
    assert any(f.location == "row 1, column mean" for f in summary)


def test_an_edited_prose_rule_makes_the_profile_stop_applying(pkg):
    rel = legacy.GATE_PROSE["stage2"]
    with open(pkg / rel, "a") as f:
        f.write("Amended: promote four anchors.\n")
    legacy.write_manifests(pkg)
    v = verify_profiled(pkg, EXAMPLE)
    assert [(f.path, f.code) for f in v.findings] == [(rel, "profile-prose-changed")]
    assert v.findings[0].expected == load_profile(EXAMPLE).gate("stage2").prose[0].sha256
    r = replay_profiled(pkg, EXAMPLE)
    assert [(f.path, f.code) for f in r.findings] == [(rel, "profile-prose-changed")]


def test_an_edited_recorded_promoted_list_is_caught(pkg):
    doc = json.loads((pkg / STAGE1_DECISION).read_text())
    doc["promoted_to_60min"] = [c if c != "s01_d5_ar40" else "s02_d6_ar32" for c in doc["promoted_to_60min"]]
    (pkg / STAGE1_DECISION).write_text(json.dumps(doc, indent=2) + "\n")
    legacy.write_manifests(pkg)
    rep = replay_profiled(pkg, EXAMPLE)
    promoted = [f for f in rep.findings if f.code == "promoted-differs"]
    assert [(f.path, f.location) for f in promoted] == [(STAGE1_DECISION, "$.promoted_to_60min")]
    assert "s01_d5_ar40" in promoted[0].expected and "s02_d6_ar32" in promoted[0].found
    # and the 60-minute stages did not run what the recorded list says
    broken = [f for f in rep.findings if f.code == "chain-broken"]
    assert {f.location for f in broken} == {"stage stage2_60min_seed44_gate4", "stage stage2_60min_seed45_gate4"}


def test_an_edited_recorded_table_is_caught(pkg):
    rel = "analysis/p06_budget_counterfactual_2026-05-02.csv"
    (pkg / rel).write_text((pkg / rel).read_text().replace("432.0", "400.0"))
    rep = check_tables_profiled(pkg, EXAMPLE)
    assert [(f.path, f.code, f.location, f.expected) for f in rep.findings] == \
        [(rel, "table-value-differs", "row 3, column gpu_hours", "432.000000")]


# --------------------------------------------------------------------------- reading safely

def test_rows_that_do_not_convert_are_findings_naming_file_row_and_column(pkg):
    rel = "remote-results/linux_stage1_5min_summary.csv"
    set_cell(pkg, rel, 3, "start_local", "2026-04-27T06:20:00")
    set_cell(pkg, rel, 5, "exit_status", "exploded")
    set_cell(pkg, rel, 6, "machine", "win-a100")
    rep = verify_profiled(pkg, EXAMPLE)
    got = {(f.path, f.code, f.location) for f in rep.findings if f.path == rel}
    assert got == {(rel, "file-changed", "listed in MANIFEST.csv"), (rel, "file-changed", "listed in MANIFEST.json"),
                   (rel, "row-unconvertible", "row 3, column start_local"),
                   (rel, "row-unconvertible", "row 5, column exit_status"),
                   (rel, "host-mismatch", "row 6, column host")}


def test_strict_json_symlinks_and_unlisted_files_are_findings(pkg, tmp_path):
    rel = "analysis/stage2_60min_seed44_seed45_combined_decision.json"
    (pkg / rel).write_text('{"anchors_for_12h": ["bridge"], "anchors_for_12h": ["greedy"]}\n')
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    os.symlink(outside, pkg / "analysis" / "link.txt")
    (pkg / "extra.txt").write_text("x\n")
    legacy.write_manifests(pkg)   # the fixture's writer follows links: the link is listed
    rep = verify_profiled(pkg, EXAMPLE)
    assert {(f.path, f.code) for f in rep.findings} >= {(rel, "json-duplicate-key"), ("analysis/link.txt", "symlink")}
    assert ("analysis/link.txt", "file-missing") in {(f.path, f.code) for f in rep.findings}
    os.unlink(pkg / "analysis" / "link.txt")
    legacy.write_manifests(pkg)
    (pkg / "late.txt").write_text("y\n")
    rep = verify_profiled(pkg, EXAMPLE)
    assert ("late.txt", "file-unlisted") in {(f.path, f.code) for f in rep.findings}
    assert outside.read_text() == "secret\n"


def test_a_profile_that_does_not_fit_the_package_is_a_finding_or_refused(pkg):
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["matrix"]["path"] = "matrices/absent.csv"
    rep = verify_profiled(pkg, parse_profile(doc, "p.toml"))
    assert ("matrices/absent.csv", "profile-file-missing") in {(f.path, f.code) for f in rep.findings}
    with pytest.raises(AuditError, match="unknown gate"):
        replay_profiled(pkg, EXAMPLE, "stage9")
    with pytest.raises(AuditError, match="package directory not found"):
        verify_profiled(pkg / "absent", EXAMPLE)


def test_a_transcription_that_is_not_valid_rules_is_a_finding_not_a_crash(legacy_pkg):
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gates"]["stage1"]["rules"]["promote"] = {"top_k": 2, "always_keep": ["bridge", "greedy", "nobody"]}
    prof = parse_profile(doc, "p.toml")
    v = verify_profiled(legacy_pkg, prof)
    assert [(f.path, f.code, f.location) for f in v.findings] == \
        [("p.toml [gates.stage1.rules]", "rules-always-keep-too-long", "$.promote.always_keep")]
    r = replay_profiled(legacy_pkg, prof)
    assert [f.code for f in r.findings] == ["rules-always-keep-too-long"]
    g = {x.gate: x for x in r.gates}
    assert g["stage1"].replayed is None
    assert g["stage2"].replayed is not None    # its candidates are stage1's *recorded* list


def test_a_recorded_decision_that_is_gone_or_unreadable_is_a_replay_finding(pkg):
    (pkg / STAGE1_DECISION).unlink()
    rel = "analysis/stage3_12h_seed46_seed47_combined_decision.json"
    (pkg / rel).write_text('{"winner": NaN}\n')
    rep = replay_profiled(pkg, EXAMPLE)
    got = {(f.path, f.code) for f in rep.findings}
    assert (STAGE1_DECISION, "profile-file-missing") in got and (rel, "json-non-finite") in got
    g = {x.gate: x for x in rep.gates}
    assert g["stage2"].candidates_from.startswith("replay: gate stage1's replayed promoted list")

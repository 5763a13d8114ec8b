"""Profiles: loading, the schema, sense checks, and the value conversions (auditkit.profile.model/view)."""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

sys.path.insert(0, str(Path(__file__).resolve().parent))

from auditkit.errors import AuditError  # noqa: E402
from auditkit.profile.load import load_profile, parse_profile, profile_findings, profile_validator  # noqa: E402
from auditkit.profile.model import ColumnRule, Convert, Provenance, Source  # noqa: E402
from auditkit.profile.rows import ConvertError, convert_value, match_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "paper06.profile.toml"


def example_doc() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def test_the_schema_is_a_valid_schema():
    Draft202012Validator.check_schema(profile_validator().schema)


def test_the_example_profile_loads_and_is_short():
    prof = load_profile(EXAMPLE)
    assert [g.gate for g in prof.gates] == ["stage1_top9", "stage1", "stage2", "stage3", "stage3b"]
    assert prof.gate("stage3b").rules["checks"][0]["threshold"] == 0.010
    # [rules] is merged into every gate: metric and hosts come from it, inputs key by key
    assert prof.gate("stage1").rules["metric"] == {"column": "val_bpb", "better": "lower"}
    assert prof.gate("stage1").rules["inputs"]["hosts"] == ["windows", "linux"]
    assert prof.gate("stage1").rules["inputs"]["seeds"] == [42, 43]
    assert len(prof.sha256) == 64 and prof.source == str(EXAMPLE)
    lines = [ln for ln in EXAMPLE.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(lines) <= 60


def _edit(path, value):
    doc = example_doc()
    d = doc
    for k in path[:-1]:
        d = d[k]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return doc


BAD = {
    "unknown-spec-column": (["rows", "columns", "val_bpd"], "final_val_bpb", "$.rows.columns.val_bpd"),
    "capture-not-in-pattern": (["rows", "columns", "seed"], {"capture": "seed"}, "$.rows.columns.seed.capture"),
    "const-with-convert": (["rows", "columns", "budget_kind"], {"const": "seconds", "convert": "local_to_utc"},
                           "$.rows.columns.budget_kind"),
    "unknown-conversion": (["rows", "columns", "started_at"], {"column": "start_local", "convert": "to_utc"},
                           "$.rows.columns.started_at"),
    "prose-without-sha": (["gates", "stage1", "prose"], {"path": "preanalysis/x.txt"}, "$.gates.stage1.prose"),
    "promoted-by-a-later-gate": (["gates", "stage1", "rules", "inputs", "candidates"], "promoted-by:stage2",
                                 "$.gates.stage1.rules.inputs.candidates"),
    "bad-json-path": (["gates", "stage1_top9", "recorded", "promoted"], "$.top9[", "$.gates.stage1_top9.recorded[0].promoted"),
    "unknown-generator": (["tables", 0, "generator"], "smoke", "$.tables[0].generator"),
    "path-escapes": (["matrix", "path"], "../matrix.csv", "$.matrix.path"),
    "no-gates": (["gates"], {}, "$.gates"),
    "unknown-key": (["matrix", "colour"], "blue", "$.matrix"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_broken_profile_is_refused_naming_the_key(name):
    path, value, loc = BAD[name]
    doc = _edit(path, value)
    found = profile_findings(doc, "p.toml")
    assert found and all(f.code == "profile-invalid" for f in found)
    assert loc in [f.location for f in found], [str(f) for f in found]
    with pytest.raises(AuditError) as exc:
        parse_profile(doc, "p.toml")
    assert exc.value.path == "p.toml" and loc in exc.value.message


def test_rules_still_todo_load_but_cannot_replay():
    doc = _edit(["gates", "stage2", "rules"], "TODO")
    prof = parse_profile(doc, "p.toml")
    assert prof.todo_gates() == ["stage2"]
    with pytest.raises(AuditError) as exc:
        prof.require_rules()
    assert "stage2" in exc.value.message and "PREANALYSIS_STAGE2" in exc.value.hint


def test_not_toml_and_missing_files_are_could_not_check(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("schema = \n")
    with pytest.raises(AuditError, match="not TOML"):
        load_profile(bad)
    with pytest.raises(AuditError, match="cannot read the profile"):
        load_profile(tmp_path / "absent.toml")
    doc = example_doc()
    assert profile_findings(copy.deepcopy(doc)) == []


# --------------------------------------------------------------------------- conversions

@pytest.mark.parametrize("conv", list(Convert))
def test_every_conversion_is_dispatched(conv):
    rule = ColumnRule("x", Source.COLUMN, "x", conv)
    sample = {Convert.MINUTES_TO_SECONDS: ("2.5", "150"), Convert.HOURS_TO_SECONDS: ("12", "43200"),
              Convert.LOCAL_TO_UTC: ("2026-04-28T14:03:11+02:00", "2026-04-28T12:03:11Z")}[conv]
    assert convert_value(rule, sample[0]) == sample[1]
    assert rule.provenance is Provenance.PACKAGE_VIA_PROFILE and conv.value in rule.describe()


@pytest.mark.parametrize("source", list(Source))
def test_every_source_says_where_it_came_from(source):
    rule = ColumnRule("host", source, "machine")
    assert rule.provenance is (Provenance.PROFILE if source is Source.CONST else Provenance.PACKAGE)
    assert {"const": "constant", "column": "package column", "capture": "capture"}[source.value] in rule.describe()


def test_conversions_refuse_what_they_cannot_convert():
    utc = ColumnRule("started_at", Source.COLUMN, "s", Convert.LOCAL_TO_UTC)
    assert convert_value(utc, "2026-04-28T23:30:00-04:00") == "2026-04-29T03:30:00Z"
    assert convert_value(utc, "2026-04-28T23:30:00.250+05:30") == "2026-04-28T18:00:00.250000Z"
    with pytest.raises(ConvertError, match="no UTC offset"):
        convert_value(utc, "2026-04-28T23:30:00")
    with pytest.raises(ConvertError, match="not an ISO-8601"):
        convert_value(utc, "yesterday")
    mins = ColumnRule("budget_value", Source.COLUMN, "b", Convert.MINUTES_TO_SECONDS)
    assert convert_value(mins, "0.5") == "30" and convert_value(mins, "") == ""
    for bad in ("ten", "nan", "inf"):
        with pytest.raises(ConvertError):
            convert_value(mins, bad)
    status = ColumnRule("status", Source.COLUMN, "s", map=(("completed", "ok"), ("crashed", "failed")))
    assert convert_value(status, "crashed") == "failed"
    with pytest.raises(ConvertError, match="not in the profile's map"):
        convert_value(status, "exploded")


def test_file_name_captures_stay_inside_one_path_segment():
    prof = load_profile(EXAMPLE)
    got = match_rows(prof, ["remote-results/linux_stage1_10min_seed43_top9_summary.csv",
                            "remote-results/old/linux_stage0_summary.csv", "remote-results/Linux_stage0_summary.CSV",
                            "analysis/linux_stage0_summary.csv"])
    assert got == {"remote-results/linux_stage1_10min_seed43_top9_summary.csv":
                   {"host": "linux", "stage": "stage1_10min_seed43_top9"}}

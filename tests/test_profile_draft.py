"""`draft_profile`: a first profile inferred from a package's own files; only the rules are left TODO."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import tomlkit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import legacy  # noqa: E402
from auditkit.errors import AuditError  # noqa: E402
from auditkit.profile import check_tables_profiled, parse_profile, replay_profiled, verify_profiled  # noqa: E402
from auditkit.profile.draft import draft_profile  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "paper06.profile.toml"


@pytest.fixture(scope="module")
def legacy_pkg(tmp_path_factory) -> Path:
    return legacy.build_legacy_package(tmp_path_factory.mktemp("legacy") / "pkg")


def fill_rules(draft: str) -> str:
    """What a reviewer does with a draft: transcribe each gate's rules from its prose."""
    doc = tomlkit.parse(draft)
    name_of = {g["prose"]["path"]: name for name, g in doc["gates"].items()}
    draft_name = {mine: name_of[prose] for mine, prose in legacy.GATE_PROSE.items()}
    for mine, prose in legacy.GATE_PROSE.items():
        rules = legacy.full_rules(mine)
        c = rules["inputs"]["candidates"]
        if c.startswith("promoted-by:"):
            rules["inputs"]["candidates"] = "promoted-by:" + draft_name[c.split(":", 1)[1]]
        doc["gates"][draft_name[mine]]["rules"] = rules
    return tomlkit.dumps(doc)


def test_the_draft_needs_only_the_rules_filled_in(legacy_pkg):
    before = {p: p.read_bytes() for p in legacy_pkg.rglob("*") if p.is_file()}
    text = draft_profile(legacy_pkg)
    assert {p: p.read_bytes() for p in legacy_pkg.rglob("*") if p.is_file()} == before
    draft = parse_profile(tomllib.loads(text), "draft.toml")
    assert sorted(g.prose[0].path for g in draft.gates) == sorted(legacy.GATE_PROSE.values())
    assert draft.todo_gates() == [g.gate for g in draft.gates]
    assert text.count('rules = "TODO"') == 5
    with pytest.raises(AuditError, match="still TODO"):
        replay_profiled(legacy_pkg, draft)
    v = verify_profiled(legacy_pkg, draft)          # fixity and rows need no rules
    assert v.ok, v.render_text()
    assert sum(n.why == "TODO in the profile" for n in v.not_checked) == 5

    filled = parse_profile(tomllib.loads(fill_rules(text)), "filled.toml")
    for audit in (verify_profiled, replay_profiled, check_tables_profiled):
        rep = audit(legacy_pkg, filled)
        assert rep.ok, rep.render_text()
    rep = replay_profiled(legacy_pkg, filled)
    assert [g.replayed["promoted"] for g in rep.gates][-1] == ["bridge"]


def test_the_draft_guesses_what_the_example_profile_says(legacy_pkg):
    draft = tomllib.loads(draft_profile(legacy_pkg))
    example = tomllib.loads(EXAMPLE.read_text())
    assert draft["manifests"] == [{**m, "columns": m["columns"]} for m in example["manifests"]]
    assert draft["matrix"] == example["matrix"]
    assert draft["rows"]["files"] == example["rows"]["files"]
    assert {k: v for k, v in draft["rows"]["columns"].items() if k != "runner_sha256"} == example["rows"]["columns"]
    sha = hashlib.sha256((legacy_pkg / legacy.GATE_PROSE["stage2"]).read_bytes()).hexdigest()
    assert {"path": legacy.GATE_PROSE["stage2"], "sha256": sha} in [g["prose"] for g in draft["gates"].values()]
    text = draft_profile(legacy_pkg)
    assert 'promoted = "$.promoted_to_60min"' in text and 'generator = "budget_counterfactual"' in text


def test_a_bare_package_drafts_todos_where_a_person_must_decide(tmp_path):
    pkg = tmp_path / "bare"
    (pkg / "remote-results").mkdir(parents=True)
    for host in ("a", "b"):
        (pkg / f"remote-results/{host}_s1_runs.csv").write_text("id,seed,val,when\nr1,1,0.5,2026-01-01T00:00:00\n")
    text = draft_profile(pkg)
    doc = tomllib.loads(text)
    assert doc["manifests"] == [] and doc["matrix"]["path"] == "TODO"
    assert doc["rows"]["files"] == "remote-results/{host}_{stage}_runs.csv"
    assert "no manifest found" in text and "TODO: no column found for config_id" in text
    assert "no prose pre-registration found" in text
    shutil.rmtree(pkg)
    with pytest.raises(AuditError):
        draft_profile(pkg)

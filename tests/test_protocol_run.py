"""Protocol runner: staged flow, freezing, gates, resume, waiting hosts and merge (fake executor)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from auditkit.errors import AuditError
from auditkit.study.executors import CellResult
from auditkit.study.spec import load_manifest
from auditkit.package.atomic import create_exclusive, remove_stale_temporaries
from auditkit.study.merge import merge_packages
from auditkit.study.run import run_protocol
from auditkit.package.rows import read_csv_text
from fixtures.protofakes import FakeExecutor

MATRIX = "config_id,role,depth\nbridge,reference,2\ngreedy,greedy,2\nd8_ar48,sentinel,2\ns01,screened,2\ns02,screened,2\n"

TOML = """
name = "fake"
matrix = "fake_matrix.csv"
hosts = ["windows", "linux"]

[runner]
keep_checkpoints = "none"

[[stages]]
stage = "smoke"
budget = {kind = "steps", value = 2}
seeds = [42]
hosts = ["windows", "linux"]
candidates = "matrix"

[[stages]]
stage = "screen"
budget = {kind = "steps", value = 5}
seeds = [42, 43]
hosts = ["windows", "linux"]
candidates = "matrix"

[[gates]]
gate = "g1"
[gates.rules]
inputs = {stages = ["screen"], hosts = ["windows", "linux"], seeds = [42, 43], candidates = "matrix"}
metric = {column = "val_bpb", better = "lower"}
promote = {top_k = 3, always_keep = ["bridge"]}
checks = []

[[stages]]
stage = "final"
budget = {kind = "steps", value = 20}
seeds = [44, 45]
hosts = ["windows", "linux"]
candidates = "promoted-by:g1"

[[gates]]
gate = "g2"
[gates.rules]
inputs = {stages = ["final"], hosts = ["windows", "linux"], seeds = [44, 45], candidates = "promoted-by:g1"}
metric = {column = "val_bpb", better = "lower"}
promote = {top_k = 1, always_keep = []}
checks = [{kind = "ranks_first_in_all_cells", candidate = "bridge"}]
"""


@pytest.fixture
def manifest(tmp_path):
    (tmp_path / "fake_matrix.csv").write_text(MATRIX)
    (tmp_path / "fake.toml").write_text(TOML)
    return load_manifest(tmp_path / "fake.toml")


def all_rows(pkg: Path) -> list[dict]:
    rows = []
    for p in sorted((pkg / "remote-results").glob("*.csv")):
        rows += read_csv_text(p.read_text())[1]
    return rows


def run(manifest, out, hosts=("windows", "linux"), **kw):
    kw.setdefault("finalize", False)
    return run_protocol(manifest, out, list(hosts), executor=kw.pop("executor", FakeExecutor()), **kw)


def test_full_run_freezes_before_data_and_decides(manifest, tmp_path):
    out = tmp_path / "pkg"
    outcome = run(manifest, out)
    assert outcome.complete and outcome.cells_run == 5 * 2 + 5 * 2 * 2 + 3 * 2 * 2
    rows = all_rows(out)
    assert len({r["run_id"] for r in rows}) == len(rows) == outcome.cells_run
    for gate, stages in (("g1", {"screen"}), ("g2", {"final"})):
        rules = json.loads((out / f"preanalysis/{gate}.rules.json").read_text())
        started = [r["started_at"] for r in rows if r["stage"] in stages]
        assert rules["frozen_at"] < min(started)
    d1 = json.loads((out / "analysis/g1_decision.json").read_text())
    assert d1["promoted"][0] == "bridge" or "bridge" in d1["promoted"]
    final_cfgs = {r["config_id"] for r in rows if r["stage"] == "final"}
    assert final_cfgs == set(d1["promoted"])
    assert (out / "protocol.json").is_file() and (out / "matrices/fake_matrix.csv").read_text() == MATRIX
    assert (out / "source/runner").is_dir()


def test_resume_after_crash_runs_each_cell_once(manifest, tmp_path):
    out = tmp_path / "pkg"
    with pytest.raises(KeyboardInterrupt):
        run(manifest, out, executor=FakeExecutor(fail_after=7))
    assert len(all_rows(out)) == 7
    second = FakeExecutor()
    outcome = run(manifest, out, executor=second)
    assert outcome.complete
    rows = all_rows(out)
    assert len(rows) == 42 and len({r["run_id"] for r in rows}) == 42
    assert len(second.ran) == 42 - 7
    # a third run has nothing left to do
    third = FakeExecutor()
    assert run(manifest, out, executor=third).complete and third.ran == []


def test_stale_temporaries_are_removed(manifest, tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()          # a writer that is still running (our parent)
    out = tmp_path / "pkg"
    (out / "remote-results").mkdir(parents=True)
    (out / "remote-results" / f".auditkit-tmp-{dead.pid}-ab12cd34-windows_smoke_summary.csv").write_text("half a row")
    (out / "remote-results" / f".auditkit-tmp-{live}-ab12cd34-linux_smoke_summary.csv").write_text("in flight")
    (out / ".auditkit-tmp-notes.txt").write_text("a user's")          # no writer's pid: not ours
    assert remove_stale_temporaries(out) == 1
    assert sorted(p.name for p in out.rglob(".auditkit-tmp-*")) == [
        f".auditkit-tmp-{live}-ab12cd34-linux_smoke_summary.csv", ".auditkit-tmp-notes.txt"]


def test_single_host_without_wait_stops_at_gate_then_merge_completes(manifest, tmp_path):
    a, b, merged = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    oa = run(manifest, a, hosts=["windows"], wait=False)
    ob = run(manifest, b, hosts=["linux"], wait=False)
    assert not oa.complete and not ob.complete
    assert any("linux/screen" in w for w in oa.waiting_for)
    merge_packages([a, b], merged)
    before = {p: p.read_bytes() for p in a.rglob("*") if p.is_file()}
    outcome = run(manifest, merged, executor=FakeExecutor())
    assert outcome.complete
    rows = all_rows(merged)
    assert len(rows) == 42 and len({r["run_id"] for r in rows}) == 42
    # sources untouched
    assert before == {p: p.read_bytes() for p in a.rglob("*") if p.is_file()}


def test_merge_refuses_conflicting_rows(manifest, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(manifest, a, hosts=["windows"], wait=False)
    run(manifest, b, hosts=["windows"], wait=False)  # same cells, other timestamps
    with pytest.raises(AuditError, match="differs between host outputs"):
        merge_packages([a, b], tmp_path / "m")


def test_different_protocol_in_out_dir_is_refused(manifest, tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "protocol.json").write_text("{}\n")
    with pytest.raises(AuditError, match="different protocol"):
        run(manifest, out)
    assert (out / "protocol.json").read_text() == "{}\n"


def test_unknown_host_is_refused(manifest, tmp_path):
    with pytest.raises(AuditError, match="unknown host"):
        run(manifest, tmp_path / "pkg", hosts=["macos"])


def test_create_exclusive_keeps_first(tmp_path):
    p = tmp_path / "x.json"
    assert create_exclusive(p, b"first")
    assert not create_exclusive(p, b"second")
    assert p.read_bytes() == b"first" and not list(tmp_path.glob(".*tmp*"))


class BrokenExecutor:
    """Every cell fails, as when the runner cannot start at all."""

    name = "broken"

    def __init__(self):
        self.ran = []

    def run(self, tasks):
        from fixtures.protofakes import fake_summary

        for task in tasks:
            self.ran.append(task.run_id)
            s = dict(fake_summary(task), status="failed", val_bpb=None,
                     error="Traceback (most recent call last):\nModuleNotFoundError: No module named 'x'")
            yield CellResult(task, s, None)


def test_a_stage_where_every_cell_fails_stops_the_run_with_the_cause(manifest, tmp_path, capsys):
    out = tmp_path / "pkg"
    broken = BrokenExecutor()
    with pytest.raises(AuditError, match=r"every one of the 10 cells of stage smoke failed.*No module named 'x'"):
        run(manifest, out, executor=broken, log=print)
    assert len(broken.ran) == 10  # the first stage only: no gate decided on nothing
    assert not (out / "analysis").exists() or not list((out / "analysis").glob("*_decision.json"))
    assert len(all_rows(out)) == 10 and {r["status"] for r in all_rows(out)} == {"failed"}
    assert "(ModuleNotFoundError: No module named 'x')" in capsys.readouterr().out


@pytest.mark.parametrize("old,new,message", [
    ('inputs = {stages = ["final"], hosts = ["windows", "linux"]',
     'inputs = {stages = ["final"], hosts = ["windows", "macos"]',
     r"gates\[1\]\.rules\.inputs\.hosts names \['macos'\], but stage 'final' runs only on"),
    ('seeds = [42, 43], candidates = "matrix"}', 'seeds = [42, 46], candidates = "matrix"}',
     r"gates\[0\]\.rules\.inputs\.seeds names \[46\], which none of its stages \['screen'\] runs"),
    ('inputs = {stages = ["screen"]', 'inputs = {stages = ["screens"]',
     r"gates\[0\]\.rules\.inputs\.stages names \['screens'\]"),
])
def test_gate_inputs_must_match_the_stages(tmp_path, old, new, message):
    assert old in TOML
    (tmp_path / "fake_matrix.csv").write_text(MATRIX)
    (tmp_path / "fake.toml").write_text(TOML.replace(old, new))
    with pytest.raises(AuditError, match=message) as info:
        load_manifest(tmp_path / "fake.toml")
    assert info.value.path == str(tmp_path / "fake.toml")


def test_a_relative_data_file_is_carried_in_the_package_once(tmp_path, monkeypatch):
    """`text:data/c.txt` (relative): protocol run copies it to the package's data/c.txt; a package that
    already carries other bytes there is refused; an absolute path stays outside (and is said so)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.txt").write_text("first paragraph\n\nsecond paragraph\n")
    (tmp_path / "fake_matrix.csv").write_text(MATRIX)
    toml = TOML.replace('keep_checkpoints = "none"', 'keep_checkpoints = "none"\nsettings = { data = "text:data/c.txt,val=0.3" }')
    (tmp_path / "fake.toml").write_text(toml)
    out = tmp_path / "pkg"
    assert run(load_manifest(tmp_path / "fake.toml"), out).complete
    assert (out / "data" / "c.txt").read_bytes() == (tmp_path / "data" / "c.txt").read_bytes()
    (tmp_path / "data" / "c.txt").write_text("other text\n")
    with pytest.raises(AuditError, match="already carries a different data/c.txt"):
        run(load_manifest(tmp_path / "fake.toml"), out)
    assert (out / "data" / "c.txt").read_text() == "first paragraph\n\nsecond paragraph\n"
    (tmp_path / "fake.toml").write_text(toml.replace("text:data/c.txt", f"text:{tmp_path / 'data' / 'c.txt'}"))
    said = []
    assert run(load_manifest(tmp_path / "fake.toml"), tmp_path / "pkg2", log=said.append).complete
    assert not (tmp_path / "pkg2" / "data").exists()
    assert any("is not carried in the package" in m for m in said)


# --- issue 22: interleaved hosts, host-set dtype, per-document files, manifest claims ---------

class _DocsExecutor(FakeExecutor):
    """Summaries that carry a per-document evaluation file as the runner's do (one bad sha256)."""

    def __init__(self, bad: str = ""):
        super().__init__()
        self.bad = bad
        self.tasks = []

    def run(self, tasks):
        import hashlib

        from fixtures.protofakes import fake_summary

        for task in tasks:
            self.ran.append(task.run_id)
            self.tasks.append(task)
            s = fake_summary(task)
            text = f"doc,nats,bytes\n0,{s['val_bpb'] * 0.693147 * 10:.6f},10\n"
            s["eval_docs_csv"] = text
            s["eval_docs_sha256"] = hashlib.sha256(text.encode()).hexdigest() if task.run_id != self.bad else "0" * 64
            yield CellResult(task, s, None)


def test_hosts_are_interleaved_and_take_their_dtype(tmp_path):
    (tmp_path / "fake_matrix.csv").write_text(MATRIX)
    (tmp_path / "fake.toml").write_text(TOML.replace('[runner]', '[host_profiles.linux]\ndtype = "bfloat16"\n\n[runner]'))
    m = load_manifest(tmp_path / "fake.toml")
    ex = _DocsExecutor()
    run_protocol(m, tmp_path / "pkg", ["windows", "linux"], executor=ex)
    smoke = [t for t in ex.tasks if t.stage == "smoke"]
    # each candidate on every host in turn: never one host's block after the other
    assert [t.host for t in smoke] == ["windows", "linux"] * (len(smoke) // 2)
    assert [t.config_id for t in smoke[::2]] == [t.config_id for t in smoke[1::2]]
    assert {t.settings.get("dtype") for t in ex.tasks if t.host == "linux"} == {"bfloat16"}
    assert all("dtype" not in t.settings for t in ex.tasks if t.host == "windows")


def test_per_document_files_land_with_their_columns(tmp_path, manifest):
    import hashlib

    bad = "linux-smoke-greedy-s42"
    run_protocol(manifest, tmp_path / "pkg", ["windows", "linux"], executor=_DocsExecutor(bad=bad))
    rows = all_rows(tmp_path / "pkg")
    assert rows and all("eval_docs" in r and "eval_docs_sha256" in r for r in rows)
    for r in rows:
        if r["run_id"] == bad:  # a file that does not match its sha256 is not stored
            assert r["eval_docs"] == "" and r["eval_docs_sha256"] == ""
            assert not (tmp_path / "pkg" / "eval-docs" / f"{bad}.csv").exists()
            continue
        assert r["eval_docs"] == f"eval-docs/{r['run_id']}.csv"
        data = (tmp_path / "pkg" / r["eval_docs"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["eval_docs_sha256"]
        assert data.startswith(b"doc,nats,bytes\n")
    from auditkit.cli.main import cli
    from click.testing import CliRunner

    res = CliRunner().invoke(cli, ["verify", str(tmp_path / "pkg")])
    assert res.exit_code == 0, res.output


def test_a_manifest_claims_file_ships_as_claims_json_and_the_study_s_own_as_observations(tmp_path):
    claims = {"schema": "auditkit/claims/v1", "source": "a test",
              "claims": [{"id": "bridge-wins", "statement": "The bridge wins.",
                          "check": {"kind": "rank", "gate": "g2", "candidate": "bridge", "rank": 1,
                                    "scope": "overall"}}]}
    (tmp_path / "fake_matrix.csv").write_text(MATRIX)
    (tmp_path / "mine.json").write_text(json.dumps(claims))
    (tmp_path / "fake.toml").write_text('claims = "mine.json"\n' + TOML)
    m = load_manifest(tmp_path / "fake.toml")
    run_protocol(m, tmp_path / "pkg", ["windows", "linux"], executor=FakeExecutor())
    assert (tmp_path / "pkg" / "claims.json").read_bytes() == (tmp_path / "mine.json").read_bytes()
    observed = json.loads((tmp_path / "pkg" / "observations.json").read_text())
    assert observed["schema"] == "auditkit/claims/v1" and observed["claims"]
    # a claims file that is not auditkit/claims/v1 stops finalizing with its name
    (tmp_path / "bad.json").write_text('{"schema": "nope"}')
    (tmp_path / "bad.toml").write_text('claims = "bad.json"\n' + TOML)
    with pytest.raises(AuditError, match="claims file"):
        run_protocol(load_manifest(tmp_path / "bad.toml"), tmp_path / "pkg2", ["windows", "linux"],
                     executor=FakeExecutor())


def test_budget_left_is_told_in_steps_for_step_budgets(manifest, tmp_path):
    said = []
    assert run(manifest, tmp_path / "pkg", log=said.append).complete
    # smoke: 5 candidates x 1 seed x 2 hosts x 2 steps; screen: 5 x 2 x 2 x 5; final: top_k 3 x 2 x 2 x 20
    assert "stage smoke (2steps): 10 cell(s) to run; 360 steps of budget left in the protocol" in said
    assert "stage screen (5steps): 20 cell(s) to run; 340 steps of budget left in the protocol" in said
    cells = [line for line in said if line.startswith("  [smoke 1/10]")]
    assert len(cells) == 1 and cells[0].endswith("(358 steps of budget left)")
    budget_lines = [line for line in said if "of budget left" in line]
    assert budget_lines and not [line for line in budget_lines if " min" in line]


def test_budget_left_text_keeps_minutes_for_time_budgets_and_names_both_units_when_mixed():
    from auditkit.study.run import BudgetLeft

    assert BudgetLeft(seconds=90).text() == "about 1.5 min"
    assert BudgetLeft(seconds=90).text(approx="~") == "~1.5 min"
    assert BudgetLeft().text() == "about 0.0 min" and not BudgetLeft()
    assert BudgetLeft(steps=600).text() == "600 steps"
    assert BudgetLeft(seconds=60, steps=40).text() == "about 1.0 min and 40 steps"
    assert BudgetLeft(seconds=60, steps=40) - BudgetLeft(seconds=90, steps=10) == BudgetLeft(0.0, 30.0)


def test_the_study_directory_takes_its_clock(manifest, tmp_path):
    from auditkit.study.writer import StudyDir

    study = StudyDir(manifest, tmp_path / "pkg", clock=lambda: "2030-01-02T03:04:05.000000Z")
    study.init()
    study.freeze("g1")
    assert json.loads(study.rules_path("g1").read_text())["frozen_at"] == "2030-01-02T03:04:05.000000Z"

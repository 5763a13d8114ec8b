"""Commands that write never change evidence without being told: tables/figures, protocol
run on a finished package, protocol merge (all or nothing), decide --force, manifest build."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.errors import AuditError
from auditkit.gates.replay import write_decision
from auditkit.package.manifest import manifest_entries, root_hash
from auditkit.study.merge import merge_packages
from auditkit.study.run import run_protocol
from auditkit.study.spec import load_manifest
from fixtures.protofakes import FakeExecutor
from test_protocol_run import MATRIX, TOML

REPO = Path(__file__).resolve().parents[1]
ANC = REPO / "ancillary"
MICRO = REPO / "manifests" / "micro_kjv.toml"


def invoke(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (hidden temporaries included)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def root_of(pkg: Path) -> str:
    return root_hash(manifest_entries(pkg))


@pytest.fixture(scope="module")
def anc_copy_pristine(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("anc") / "ancillary"
    shutil.copytree(ANC, dest)
    return dest


@pytest.fixture
def anc_copy(anc_copy_pristine, tmp_path) -> Path:
    dest = tmp_path / "ancillary"
    shutil.copytree(anc_copy_pristine, dest)
    return dest


# --- tables and figures ------------------------------------------------------------

@pytest.mark.parametrize("what", ["tables", "figures"])
def test_without_out_or_in_place_nothing_is_written_and_the_root_hash_holds(anc_copy, monkeypatch, what):
    recorded = json.loads((anc_copy / "MANIFEST.json").read_text())["root"]
    before = snapshot(anc_copy)
    monkeypatch.chdir(anc_copy.parent)  # `auditkit tables` in the repository root: --package defaults to ancillary
    r = invoke(what)
    assert r.exit_code == 2, r.output
    assert "would be written into the package itself (ancillary)" in r.output and "--out DIR" in r.output
    assert "--in-place" in r.output
    assert snapshot(anc_copy) == before
    assert root_of(anc_copy) == recorded


@pytest.mark.parametrize("what", ["tables", "figures"])
def test_out_inside_the_package_or_with_in_place_is_refused(anc_copy, tmp_path, what):
    before = snapshot(anc_copy)
    r = invoke(what, "--package", anc_copy, "--out", anc_copy / "analysis")
    assert r.exit_code == 2 and "inside the package" in r.output
    r = invoke(what, "--package", anc_copy, "--out", tmp_path / "o", "--in-place")
    assert r.exit_code == 2 and "not both" in r.output
    assert snapshot(anc_copy) == before and not (tmp_path / "o").exists()


def test_out_writes_elsewhere_and_in_place_says_the_manifest_is_stale(anc_copy, tmp_path):
    before = snapshot(anc_copy)
    r = invoke("tables", "--package", anc_copy, "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t/table_manifest.json").read_bytes() == before["table_manifest.json"]
    assert snapshot(anc_copy) == before
    # in place, regenerating identical tables changes nothing and warns of nothing
    r = invoke("tables", "--package", anc_copy, "--in-place")
    assert r.exit_code == 0 and "(0 changed)" in r.output and "stale" not in r.output
    assert snapshot(anc_copy) == before
    # one table edited by hand: --in-place restores it and says the MANIFEST is stale
    (anc_copy / "analysis/stage_summary.csv").write_text("edited\n")
    r = invoke("tables", "--package", anc_copy, "--in-place")
    assert r.exit_code == 0 and "(1 changed)" in r.output
    assert "MANIFEST.json is now stale" in r.output and "auditkit manifest build" in r.output
    assert snapshot(anc_copy) == before


def test_a_directory_that_is_no_package_is_named_not_written(tmp_path):
    r = invoke("tables", "--package", tmp_path / "nothing", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no such file or directory" in r.output and not (tmp_path / "o").exists()


# --- protocol run on a finished package -----------------------------------------------

def test_protocol_run_on_a_copy_of_the_shipped_package_keeps_its_root_hash(anc_copy, monkeypatch):
    recorded = json.loads((anc_copy / "MANIFEST.json").read_text())["root"]
    before = snapshot(anc_copy)
    monkeypatch.chdir(anc_copy)   # the manifest's data/kjv.txt: the copy the package carries
    r = invoke("protocol", "run", MICRO, "--out", anc_copy, "--host", "all")
    # same bytes from this auditkit: "unchanged"; a different matplotlib would draw other PNG
    # bytes: then the run refuses (exit 2) and says how to finalize into a new directory
    if r.exit_code == 0:
        assert "0 cell(s) run now" in r.output and "finalized already and is unchanged" in r.output
    else:
        assert r.exit_code == 2 and "would change" in r.output and "NEW" in r.output, r.output
    assert snapshot(anc_copy) == before
    assert root_of(anc_copy) == recorded


@pytest.fixture
def fake_manifest(tmp_path):
    (tmp_path / "fake_matrix.csv").write_text(MATRIX)
    (tmp_path / "fake.toml").write_text(TOML)
    return load_manifest(tmp_path / "fake.toml")


@pytest.fixture
def finished(fake_manifest, tmp_path) -> Path:
    out = tmp_path / "pkg"
    outcome = run_protocol(fake_manifest, out, ["windows", "linux"], executor=FakeExecutor())
    assert outcome.complete and outcome.finalized == "written"
    return out


def test_a_finished_package_is_left_as_it_is(fake_manifest, finished):
    before = snapshot(finished)
    mtimes = {p: p.stat().st_mtime_ns for p in finished.rglob("*")}
    again = FakeExecutor()
    outcome = run_protocol(fake_manifest, finished, ["windows", "linux"], executor=again)
    assert outcome.complete and outcome.finalized == "unchanged" and again.ran == []
    assert snapshot(finished) == before
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*")} == mtimes


def test_finalizing_again_to_other_bytes_is_refused(fake_manifest, finished, monkeypatch):
    import auditkit.study.finalize as run_mod

    before = snapshot(finished)
    # newer code: finalizing now would write another README.txt
    newer = run_mod.readme_text
    monkeypatch.setattr(run_mod, "readme_text", lambda study: newer(study) + "one more line\n")
    with pytest.raises(AuditError, match="would write different bytes") as info:
        run_protocol(fake_manifest, finished, ["windows", "linux"], executor=FakeExecutor())
    assert "(README.txt)" in str(info.value) and "nothing was written" in str(info.value)
    assert "--out NEW" in info.value.hint and "rm NEW/MANIFEST.json" in info.value.hint
    assert snapshot(finished) == before


def test_a_finished_package_edited_since_its_manifest_is_not_re_recorded(fake_manifest, finished):
    csv = finished / "remote-results/linux_screen_summary.csv"
    csv.write_bytes(csv.read_bytes().replace(b",ok,", b",failed,", 1))
    before = snapshot(finished)
    with pytest.raises(AuditError, match="differ from what its MANIFEST recorded") as info:
        run_protocol(fake_manifest, finished, ["windows", "linux"], executor=FakeExecutor())
    assert "remote-results/linux_screen_summary.csv" in str(info.value)
    assert snapshot(finished) == before


# --- protocol merge is all or nothing ----------------------------------------------------

def test_a_refused_merge_leaves_the_target_byte_identical(fake_manifest, tmp_path):
    w1, w2, lx, target = (tmp_path / n for n in ("w1", "w2", "lx", "target"))
    run_protocol(fake_manifest, w1, ["windows"], executor=FakeExecutor(), wait=False)
    run_protocol(fake_manifest, w2, ["windows"], executor=FakeExecutor(), wait=False)  # same cells, other times
    run_protocol(fake_manifest, lx, ["linux"], executor=FakeExecutor(), wait=False)
    merge_packages([w1], target)
    before = snapshot(target)
    # lx alone would merge; w2 conflicts with what target holds: nothing of lx may land
    with pytest.raises(AuditError, match="differs between host outputs") as info:
        merge_packages([lx, w2], target)
    assert "nothing was merged" in info.value.hint
    assert snapshot(target) == before
    r = invoke("protocol", "merge", lx, w2, "--into", target)
    assert r.exit_code == 2 and snapshot(target) == before
    # into a directory that does not exist: it still does not
    with pytest.raises(AuditError):
        merge_packages([lx, w1, w2], tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    # the good merge still works, and leaves no temporaries
    merge_packages([lx], target)
    assert len(snapshot(target)) > len(before) and not list(target.rglob(".auditkit-tmp-*"))


def test_merge_refuses_a_target_inside_a_source(fake_manifest, tmp_path):
    a = tmp_path / "a"
    run_protocol(fake_manifest, a, ["windows"], executor=FakeExecutor(), wait=False)
    before = snapshot(a)
    with pytest.raises(AuditError, match="overlap"):
        merge_packages([a], a / "merged")
    assert snapshot(a) == before


# --- decide --force ---------------------------------------------------------------------

def test_decide_force_writes_the_bytes_protocol_run_wrote_and_says_the_manifest_is_stale(finished):
    rel = "analysis/g1_decision.json"
    recorded = (finished / rel).read_bytes()
    decided_at = json.loads(recorded)["decided_at"]
    path, _ = write_decision(finished, "g1", decided_at, force=True)
    assert path == finished / rel and path.read_bytes() == recorded
    r = invoke("decide", "g1", "--package", finished)
    assert r.exit_code == 2 and "already recorded" in r.output and path.read_bytes() == recorded
    r = invoke("decide", "g1", "--package", finished, "--force")
    assert r.exit_code == 0, r.output
    assert "MANIFEST.json is now stale" in r.output and "auditkit manifest build" in r.output
    fresh = json.loads(path.read_bytes())
    assert path.read_bytes() == recorded.replace(decided_at.encode(), fresh["decided_at"].encode())
    assert not list(finished.rglob(".auditkit-tmp-*"))


# --- manifest build -------------------------------------------------------------------------

def test_manifest_build_refuses_a_directory_without_protocol_json_unless_forced(tmp_path):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "a.txt").write_text("a\n")
    r = invoke("manifest", "build", d)
    assert r.exit_code == 2 and "no protocol.json" in r.output and "--force" in r.output
    assert sorted(os.listdir(d)) == ["a.txt"]
    r = invoke("manifest", "build", d, "--force")
    assert r.exit_code == 0 and "1 files" in r.output


def test_manifest_build_never_lists_git(finished):
    (finished / ".git/objects").mkdir(parents=True)
    (finished / ".git/HEAD").write_text("ref: refs/heads/main\n")
    (finished / ".git/objects/ab").write_bytes(b"\x00")
    (finished / "source/.git").mkdir()
    (finished / "source/.git/config").write_text("[core]\n")
    r = invoke("manifest", "build", finished)
    assert r.exit_code == 0, r.output
    listed = [e["path"] for e in json.loads((finished / "MANIFEST.json").read_text())["files"]]
    assert listed and not [p for p in listed if ".git/" in p or p.startswith(".git")]
    assert "README.txt" in listed and "protocol.json" in listed
    # verify does not enter them either: the package (as its MANIFEST lists it) holds
    r = invoke("verify", finished)
    assert r.exit_code == 0, r.output
    (finished / ".git/objects/ab").write_bytes(b"\x01")   # a commit later: still no finding
    assert invoke("verify", finished).exit_code == 0

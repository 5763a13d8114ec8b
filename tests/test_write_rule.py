"""One rule for every file a command writes (auditkit/package/writes.py), and no write outside
the target: an existing file of other bytes is replaced only with --force; a link, directory or
FIFO where a file (or a directory on the way to it) would go is never written through; a
refused or failing command changes nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.errors import AuditError
from auditkit.evidence.events import EventLog
from auditkit.package import writes
from auditkit.package.writes import write_files
from fixtures.evidence import good_pki, tsa_server  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]
ANC = REPO / "ancillary"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def anc_pristine(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("anc") / "ancillary"
    shutil.copytree(ANC, dest)
    return dest


@pytest.fixture
def anc(anc_pristine, tmp_path) -> Path:
    dest = tmp_path / "ancillary"
    shutil.copytree(anc_pristine, dest)
    return dest


# --- the rule, on its own ----------------------------------------------------------------

def test_new_identical_and_other_bytes(tmp_path):
    assert write_files(tmp_path, {"a/x.csv": b"1\n", "y.json": b"{}\n"}) == ["a/x.csv", "y.json"]
    assert write_files(tmp_path, {"a/x.csv": b"1\n", "y.json": b"{}\n"}) == []      # identical: untouched
    with pytest.raises(AuditError, match="the file exists with other bytes") as info:
        write_files(tmp_path, {"a/x.csv": b"1\n", "y.json": b"[]\n", "z": b"new"}, force_hint="pass --force")
    assert info.value.path == str(tmp_path / "y.json") and "nothing was written" in info.value.message
    assert not (tmp_path / "z").exists() and (tmp_path / "y.json").read_bytes() == b"{}\n"
    assert write_files(tmp_path, {"y.json": b"[]\n"}, force=True) == ["y.json"]
    assert (tmp_path / "y.json").read_bytes() == b"[]\n"
    assert sorted(os.listdir(tmp_path)) == ["a", "y.json"]      # no temporaries, no backups


@pytest.mark.parametrize("plant", ["link-dir", "link-file", "fifo", "dir"])
def test_nothing_is_written_through_a_link_or_over_a_special_file(tmp_path, plant):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (outside / "x.csv").write_bytes(b"theirs\n")
    if plant == "link-dir":
        (dest / "a").symlink_to(outside)
    elif plant == "link-file":
        (dest / "a").mkdir()
        (dest / "a" / "x.csv").symlink_to(outside / "x.csv")
    elif plant == "fifo":
        (dest / "a").mkdir()
        os.mkfifo(dest / "a" / "x.csv")
    else:
        (dest / "a" / "x.csv").mkdir(parents=True)
    for force in (False, True):
        with pytest.raises(AuditError, match="(a symbolic link|a FIFO|a directory) is where") as info:
            write_files(dest, {"b.csv": b"new\n", "a/x.csv": b"mine\n"}, force=force)
        assert "never writes through or over" in info.value.hint
    assert (outside / "x.csv").read_bytes() == b"theirs\n" and sorted(os.listdir(outside)) == ["x.csv"]
    assert not (dest / "b.csv").exists()


def test_a_rename_that_fails_part_way_puts_everything_back(tmp_path, monkeypatch):
    write_files(tmp_path, {"a.txt": b"old a\n", "b.txt": b"old b\n"})
    real, calls = os.replace, []

    def flaky(src, dst, **kw):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst, **kw)

    monkeypatch.setattr(writes.os, "replace", flaky)
    with pytest.raises(AuditError, match="No space left on device") as info:
        write_files(tmp_path, {"a.txt": b"new a\n", "b.txt": b"new b\n", "c/d.txt": b"new\n"}, force=True)
    monkeypatch.setattr(writes.os, "replace", real)
    assert "nothing was written" in info.value.message
    assert snapshot(tmp_path) == {"a.txt": b"old a\n", "b.txt": b"old b\n"}
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]


# --- every writing command ------------------------------------------------------------------

def test_tables_out_keeps_a_users_files_unless_forced(anc, tmp_path):
    out = tmp_path / "out"
    (out / "analysis").mkdir(parents=True)
    (out / "analysis" / "stage_summary.csv").write_text("my notes\n")
    (out / "table_manifest.json").write_text("{}\n")
    r = invoke("tables", "--package", anc, "--out", out)
    assert r.exit_code == 2 and "the file exists with other bytes" in r.output and "--force" in r.output, r.output
    assert snapshot(out) == {"analysis/stage_summary.csv": b"my notes\n", "table_manifest.json": b"{}\n"}
    r = invoke("tables", "--package", anc, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert (out / "analysis" / "stage_summary.csv").read_bytes() == (anc / "analysis" / "stage_summary.csv").read_bytes()
    r = invoke("tables", "--package", anc, "--out", out)       # the same bytes again: nothing to refuse
    assert r.exit_code == 0 and "(0 changed)" in r.output


def test_figures_in_place_never_follows_a_planted_figures_link(anc, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(anc / "figures")
    (anc / "figures").symlink_to(elsewhere)
    r = invoke("figures", "--package", anc, "--in-place")
    assert r.exit_code == 2 and "a symbolic link" in r.output and "nothing was written" in r.output, r.output
    assert os.listdir(elsewhere) == []


def test_decide_never_follows_a_linked_analysis_directory(anc, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(anc / "analysis", elsewhere)
    (anc / "analysis").symlink_to(elsewhere)
    before = snapshot(elsewhere)
    r = invoke("decide", "stage1", "--package", anc, "--force")
    assert r.exit_code == 2 and "a symbolic link" in r.output, r.output
    assert snapshot(elsewhere) == before


@pytest.mark.parametrize("command", ["report", "profile-draft"])
def test_report_and_draft_refuse_an_existing_out_before_working(anc, tmp_path, command):
    out = tmp_path / "page"
    out.write_text("mine\n")
    args = (["report", anc, "--out", out, "--format", "md"] if command == "report"
            else ["profile", "draft", anc, "--out", out])
    r = invoke(*args)
    assert r.exit_code == 2 and "the file exists" in r.output and out.read_text() == "mine\n", r.output
    os.unlink(out)
    out.symlink_to(tmp_path / "target")
    r = invoke(*args, "--force")
    assert r.exit_code == 2 and "a symbolic link" in r.output and not (tmp_path / "target").exists(), r.output


def test_manifest_build_failing_on_the_csv_leaves_the_json_as_it_was(anc):
    before = (anc / "MANIFEST.json").read_bytes()
    os.unlink(anc / "MANIFEST.csv")
    (anc / "MANIFEST.csv").mkdir()
    (anc / "README.txt").write_text("changed\n")    # the new MANIFEST.json would differ
    r = invoke("manifest", "build", anc)
    assert r.exit_code == 2 and "MANIFEST.csv" in r.output, r.output
    assert (anc / "MANIFEST.json").read_bytes() == before
    assert not [n for n in os.listdir(anc) if n.startswith(".auditkit")]


def test_protocol_merge_never_follows_a_linked_directory_of_the_target(tmp_path):
    from auditkit.study.merge import merge_packages
    from auditkit.study.run import run_protocol
    from auditkit.study.spec import load_manifest
    from fixtures.protofakes import FakeExecutor
    from test_protocol_run import MATRIX, TOML

    (tmp_path / "fake_matrix.csv").write_text(MATRIX)
    (tmp_path / "fake.toml").write_text(TOML)
    m = load_manifest(tmp_path / "fake.toml")
    src, target, elsewhere = tmp_path / "w", tmp_path / "target", tmp_path / "elsewhere"
    run_protocol(m, src, ["windows"], executor=FakeExecutor(), wait=False)
    target.mkdir()
    elsewhere.mkdir()
    (target / "remote-results").symlink_to(elsewhere)
    r = invoke("protocol", "merge", src, "--into", target)
    assert r.exit_code == 2 and "remote-results" in r.output, r.output
    assert os.listdir(elsewhere) == [] and sorted(os.listdir(target)) == ["remote-results"]
    with pytest.raises(AuditError, match="lies under a link"):
        merge_packages([src], target)


def test_a_refused_timestamp_leaves_the_package_as_it_was(anc, tsa_server):
    log = anc / "evidence" / "events.jsonl"
    log.write_bytes(log.read_bytes() + b'{"seq": 99, "torn')
    before = snapshot(anc)
    r = invoke("timestamp", anc, "--tsa", tsa_server.url)
    assert r.exit_code == 2 and "torn line" in r.output, r.output
    assert snapshot(anc) == before
    # and where the log tears between the check and the append, the tokens this call stored go again
    from auditkit.evidence import tsa

    class Torn(EventLog):
        def append(self, type, **fields):
            raise AuditError("the event log ends with a torn line")

    with pytest.raises(AuditError):
        tsa.record_timestamps(anc, Torn(anc), subject="x", data=b"x", urls=[tsa_server.url], label="t")
    assert snapshot(anc) == before


def test_a_formula_id_is_never_written_into_a_table(anc, tmp_path):
    import csv
    import io

    from auditkit.derived.tables import Table

    matrix = anc / json.loads((anc / "protocol.json").read_text())["matrix"]
    rows = list(csv.DictReader(io.StringIO(matrix.read_text())))
    rows[0]["config_id"] = '=HYPERLINK("http://example.invalid/x","click")'
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    matrix.write_text(buf.getvalue())
    r = invoke("tables", "--package", anc, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "would run as a spreadsheet formula" in r.output, r.output
    assert "analysis/promotion_survival.csv row 1, column config_id" in r.output
    assert not (tmp_path / "out").exists()
    # an id of SPEC's alphabet that starts with '-' is no formula; text of other kinds is
    ok = Table("t", "k", ("a",), (("-x.1",), ("plain =text",)), ())
    assert ok.formula_cell() is None
    assert Table("t", "k", ("a",), (("ok",), ("@SUM(A1)",)), ()).formula_cell() == (2, "a", "@SUM(A1)")


def test_a_fifo_protocol_json_stops_a_resumed_run_with_a_clear_error(tmp_path):
    import threading

    from auditkit.study.run import run_protocol
    from auditkit.study.spec import load_manifest
    from fixtures.protofakes import FakeExecutor
    from test_protocol_run import MATRIX, TOML

    (tmp_path / "fake_matrix.csv").write_text(MATRIX)
    (tmp_path / "fake.toml").write_text(TOML)
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "protocol.json"
    os.mkfifo(fifo)
    # were the run to block on the FIFO, this writer would let it go on (and the test fail, not hang)
    stop = threading.Event()

    def unblock():
        if not stop.wait(60):
            os.close(os.open(fifo, os.O_WRONLY))

    t = threading.Thread(target=unblock, daemon=True)
    t.start()
    try:
        with pytest.raises(AuditError, match="a FIFO, not a regular file") as info:
            run_protocol(load_manifest(tmp_path / "fake.toml"), out, ["windows"], executor=FakeExecutor(), wait=False)
        assert "protocol.json" in str(info.value.path) + info.value.message
    finally:
        stop.set()
        t.join()
    assert sorted(os.listdir(out)) == ["protocol.json"]

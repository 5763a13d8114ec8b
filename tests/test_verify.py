"""verify: tampering, bad content, cross-file checks, --deep, CLI exit codes and output.

Built on the minimal package of `pkgbuild` (milliseconds); two slow tests run on
the smoke package that the real runner writes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import pkgbuild  # noqa: E402
from auditkit.cli import cli  # noqa: E402
from auditkit.errors import AuditError  # noqa: E402
from auditkit.package.manifest import build_manifest  # noqa: E402
from auditkit.verify.orchestrate import verify_package  # noqa: E402

LINUX = "remote-results/linux_s1_summary.csv"
WINDOWS = "remote-results/windows_s1_summary.csv"
CKPT = "checkpoints/linux-s1-a-s1.safetensors"


@pytest.fixture
def pkg(tmp_path) -> Path:
    return pkgbuild.build(tmp_path / "pkg")


def codes(report) -> set[str]:
    return {f.code for f in report.findings}


def paths_with(report, code) -> set[str]:
    return {f.path for f in report.findings if f.code == code}


def only(report, code):
    found = [f for f in report.findings if f.code == code]
    assert found, report.render_text()
    return found


def test_minimal_package_verifies(pkg):
    r = verify_package(pkg)
    assert r.ok, r.render_text()
    assert r.exit_code == 0
    assert r.info["root (recorded)"] == r.info["root (of the files)"] == json.loads(
        (pkg / "MANIFEST.json").read_text())["root"]
    assert r.checked == {"files": 11, "run rows": 4, "checkpoints": 2}


# -- tampering: every kind of file, four ways ----------------------------------------

KINDS = [LINUX, "matrices/mini.csv", "preanalysis/s1.rules.json", "analysis/s1_decision.json",
         "protocol.json", CKPT, "README.txt"]


@pytest.mark.parametrize("rel", KINDS)
def test_flip_one_byte(pkg, rel):
    f = pkg / rel
    data = bytearray(f.read_bytes())
    original = pkgbuild.sha(bytes(data))
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    r = verify_package(pkg)
    assert r.exit_code == 1
    changed = only(r, "file-changed")
    assert [x.path for x in changed] == [rel]
    assert original in changed[0].expected and pkgbuild.sha(bytes(data)) in changed[0].found


@pytest.mark.parametrize("rel", KINDS)
def test_delete(pkg, rel):
    (pkg / rel).unlink()
    r = verify_package(pkg)
    assert r.exit_code == 1 and paths_with(r, "file-missing") == {rel}


@pytest.mark.parametrize("rel", KINDS)
def test_add(pkg, rel):
    extra = Path(rel).with_name("extra-" + Path(rel).name).as_posix()
    shutil.copy(pkg / rel, pkg / extra)
    r = verify_package(pkg)
    assert r.exit_code == 1 and extra in paths_with(r, "file-unlisted")
    assert not paths_with(r, "file-changed") and not paths_with(r, "file-missing")


@pytest.mark.parametrize("rel", KINDS)
def test_rename(pkg, rel):
    new = Path(rel).with_name("renamed-" + Path(rel).name).as_posix()
    (pkg / rel).rename(pkg / new)
    r = verify_package(pkg)
    assert r.exit_code == 1
    assert rel in paths_with(r, "file-missing") and new in paths_with(r, "file-unlisted")


def test_every_finding_names_path_location_expected_found(pkg):
    pkgbuild.set_cell(pkg / LINUX, 1, "val_bpb", "nan")
    r = verify_package(pkg)
    f = [x for x in r.findings if x.code == "row-invalid"][0]
    assert (f.path, f.location) == (LINUX, "row 1, column val_bpb") and f.expected and "nan" in f.found


# -- manifest ---------------------------------------------------------------------------

def _edit_manifest(pkg, fn):
    p = pkg / "MANIFEST.json"
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc, indent=2) + "\n")


def test_manifest_csv_must_agree(pkg):
    p = pkg / "MANIFEST.csv"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[1], "0" * 64)
    p.write_text("\n".join(lines) + "\n")
    f = only(verify_package(pkg), "manifest-csv-mismatch")
    assert f[0].path == "MANIFEST.csv" and lines[2].split(",")[0] in f[0].location


def test_manifest_missing_is_a_finding(pkg):
    (pkg / "MANIFEST.json").unlink()
    (pkg / "MANIFEST.csv").unlink()
    r = verify_package(pkg)
    assert {"manifest-missing", "manifest-csv-missing"} <= codes(r) and r.exit_code == 1


@pytest.mark.parametrize("bad", ["../outside.txt", "/etc/passwd", "a/../../b", "C:/x", "a\\b"])
def test_unsafe_manifest_paths(pkg, bad):
    _edit_manifest(pkg, lambda d: d["files"].append({"path": bad, "sha256": "0" * 64, "bytes": 1}))
    r = verify_package(pkg)
    assert "manifest-unsafe-path" in codes(r) and r.exit_code == 1
    assert not (pkg.parent / "outside.txt").exists()


def test_duplicated_unsorted_empty_manifest(pkg):
    _edit_manifest(pkg, lambda d: d["files"].insert(1, dict(d["files"][0])))
    assert "manifest-duplicate-entry" in codes(verify_package(pkg))
    _edit_manifest(pkg, lambda d: d["files"].reverse())
    assert "manifest-unsorted" in codes(verify_package(pkg))
    _edit_manifest(pkg, lambda d: d.update(files=[]))
    assert "manifest-empty" in codes(verify_package(pkg))


def test_manifest_root_and_size_tampering(pkg):
    _edit_manifest(pkg, lambda d: d.update(root="0" * 64))
    assert paths_with(verify_package(pkg), "manifest-root-mismatch") == {"MANIFEST.json"}
    build_manifest(pkg)
    _edit_manifest(pkg, lambda d: d["files"][0].update(bytes=d["files"][0]["bytes"] + 1))
    assert "file-size-changed" in codes(verify_package(pkg))


def test_manifest_not_json(pkg):
    (pkg / "MANIFEST.json").write_text("{not json")
    assert paths_with(verify_package(pkg), "json-invalid") == {"MANIFEST.json"}


def test_symlink_inside_the_package(pkg, tmp_path):
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", pkg / "link.txt")
    os.symlink(tmp_path, pkg / "linkdir")
    r = verify_package(pkg)
    assert paths_with(r, "symlink") == {"link.txt", "linkdir"} and r.exit_code == 1


def test_paths_that_collide_on_other_filesystems(pkg):
    (pkg / "readme.TXT").write_text("x")
    (pkg / "caf\u00e9.txt").write_text("nfc")
    (pkg / "cafe\u0301.txt").write_text("nfd")
    build_manifest(pkg)
    assert paths_with(verify_package(pkg), "path-collision") == {"readme.TXT", "caf\u00e9.txt"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_not_read(pkg):
    os.mkfifo(pkg / "pipe")
    r = verify_package(pkg)  # would hang if the FIFO were opened for reading
    assert paths_with(r, "special-file") == {"pipe"}


# -- CSV content ------------------------------------------------------------------------

def test_csv_bom_and_crlf(pkg):
    f = pkg / LINUX
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes().replace(b"\n", b"\r\n"))
    build_manifest(pkg)
    r = verify_package(pkg)
    assert paths_with(r, "csv-bom") == {LINUX} and paths_with(r, "csv-crlf") == {LINUX}
    assert not paths_with(r, "csv-missing-column")  # the BOM is named, not mistaken for a column


def test_csv_missing_column(pkg):
    f = pkg / LINUX
    lines = [line.split(",") for line in f.read_text().splitlines()]
    f.write_text("\n".join(",".join(cells[:-1]) for cells in lines) + "\n")
    build_manifest(pkg)
    f = only(verify_package(pkg), "csv-missing-column")[0]
    assert f.path == LINUX and f.location == "header" and "checkpoint_sha256" in f.expected


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e3", "abc"])
def test_non_decimal_val_bpb(pkg, value):
    pkgbuild.set_cell(pkg / LINUX, 2, "val_bpb", value)
    build_manifest(pkg)
    f = only(verify_package(pkg), "row-invalid")
    assert f[0].path == LINUX and f[0].location == "row 2, column val_bpb"


def test_status_val_bpb_coherence(pkg):
    pkgbuild.set_cell(pkg / WINDOWS, 1, "status", "diverged")
    build_manifest(pkg)
    assert paths_with(verify_package(pkg), "row-invalid") == {WINDOWS}


def test_duplicated_run_id(pkg):
    rid = (pkg / LINUX).read_text().splitlines()[1].split(",")[0]
    pkgbuild.set_cell(pkg / WINDOWS, 1, "run_id", rid)
    build_manifest(pkg)
    f = only(verify_package(pkg), "run-id-duplicate")
    assert len(f) == 1 and f[0].location == "row 1, column run_id" and LINUX in f[0].found


def test_host_stage_config_and_time_order(pkg):
    pkgbuild.set_cell(pkg / LINUX, 1, "host", "windows")
    pkgbuild.set_cell(pkg / LINUX, 2, "stage", "s2")
    pkgbuild.set_cell(pkg / WINDOWS, 1, "config_id", "ghost")
    pkgbuild.set_cell(pkg / WINDOWS, 2, "finished_at", "2000-01-01T00:00:00Z")
    build_manifest(pkg)
    r = verify_package(pkg)
    assert {"host-mismatch", "stage-mismatch", "unknown-stage", "unknown-config", "time-order"} <= codes(r)
    assert only(r, "host-mismatch")[0].expected == "linux"


def test_empty_run_csv_fails_closed(pkg):
    f = pkg / WINDOWS
    f.write_text(f.read_text().splitlines()[0] + "\n")
    build_manifest(pkg)
    assert paths_with(verify_package(pkg), "csv-empty") == {WINDOWS}


def test_matrix_rows(pkg):
    (pkg / "matrices/mini.csv").write_text("config_id,role\na,reference\na,greedy\nb c,x\n")
    (pkg / "matrices/other.csv").write_text("config_id\n")
    build_manifest(pkg)
    r = verify_package(pkg)
    assert {"config-id-duplicate", "row-invalid"} <= codes(r)
    assert "matrices/other.csv" in paths_with(r, "csv-missing-column")


def test_run_csv_with_a_bad_name(pkg):
    shutil.copy(pkg / LINUX, pkg / "remote-results/Linux.csv")
    build_manifest(pkg)
    assert paths_with(verify_package(pkg), "run-csv-name") == {"remote-results/Linux.csv"}


# -- JSON documents and cross-file ----------------------------------------------------------

def test_json_documents_against_their_schemas(pkg):
    for rel, key in (("protocol.json", "hosts"), ("preanalysis/s1.rules.json", "metric"),
                     ("analysis/s1_decision.json", "promoted")):
        doc = json.loads((pkg / rel).read_text())
        del doc[key]
        (pkg / rel).write_text(json.dumps(doc))
    (pkg / "analysis/table.json").write_text("{broken")
    build_manifest(pkg)
    r = verify_package(pkg)
    assert paths_with(r, "schema-invalid") == {"protocol.json", "preanalysis/s1.rules.json",
                                               "analysis/s1_decision.json"}
    assert paths_with(r, "json-invalid") == {"analysis/table.json"}


def test_decision_hashes(pkg):
    f = pkg / WINDOWS
    f.write_text(f.read_text() + "")
    pkgbuild.set_cell(f, 1, "val_bpb", "1.000000")
    (pkg / "preanalysis/s1.rules.json").write_text((pkg / "preanalysis/s1.rules.json").read_text() + " ")
    build_manifest(pkg)  # consistent manifest: only the decision's recorded hashes can see it
    locs = {f.location for f in only(verify_package(pkg), "decision-input-hash")}
    assert locs == {"$.rules.sha256", "$.inputs[1].sha256"}


def test_decision_input_and_required_files_missing(pkg):
    (pkg / "preanalysis/s1.rules.json").unlink()
    (pkg / "matrices/mini.csv").unlink()
    build_manifest(pkg)
    r = verify_package(pkg)
    assert "decision-input-missing" in codes(r)
    assert paths_with(r, "required-missing") == {"preanalysis/s1.rules.json", "matrices/mini.csv"}


def test_row_checkpoint_hash_missing_and_run(pkg):
    other = pkg / "checkpoints/linux-s1-b-s1.safetensors"
    a = (pkg / CKPT).read_bytes()
    (pkg / CKPT).write_bytes(other.read_bytes())
    other.unlink()
    build_manifest(pkg)
    r = verify_package(pkg)
    assert "checkpoint-hash" in codes(r) and "checkpoint-run-mismatch" in codes(r)
    assert "checkpoint-missing" in codes(r)
    assert a != (pkg / CKPT).read_bytes()


def test_num_params_must_match_the_architecture(pkg):
    pkgbuild.set_cell(pkg / LINUX, 1, "num_params_M", "1.000000")
    build_manifest(pkg)
    f = only(verify_package(pkg), "num-params-mismatch")[0]
    assert f.location == "row 1, column num_params_M" and f.found == "1.000000"


def test_table_and_figure_manifests(pkg):
    (pkg / "analysis/t.csv").write_text("x\n1\n")
    tm = {"schema": "auditkit/tables/v1", "tables": [
        {"id": "t", "path": "analysis/t.csv", "kind": "stage_summary", "inputs": [LINUX], "sha256": "0" * 64},
        {"id": "u", "path": "analysis/u.csv", "kind": "stage_summary", "inputs": ["nope.csv"], "sha256": "0" * 64}]}
    (pkg / "table_manifest.json").write_text(json.dumps(tm))
    build_manifest(pkg)
    assert {"derived-hash", "derived-missing", "derived-input-missing"} <= codes(verify_package(pkg))


# -- checkpoints inside a package -------------------------------------------------------------

def test_truncated_checkpoint(pkg):
    f = pkg / CKPT
    f.write_bytes(f.read_bytes()[:-100])
    build_manifest(pkg)
    r = verify_package(pkg)
    assert paths_with(r, "checkpoint-truncated") == {CKPT} and "checkpoint-hash" in codes(r)


def test_header_length_2_60(pkg):
    f = pkg / CKPT
    f.write_bytes((2 ** 60).to_bytes(8, "little") + f.read_bytes()[8:])
    build_manifest(pkg)
    f = only(verify_package(pkg), "checkpoint-header-too-large")[0]
    assert f.path == CKPT and str(2 ** 60) in f.found


def test_nonfinite_and_architecture(pkg):
    data = pkgbuild.checkpoint_bytes("linux-s1-a-s1", "a")
    n, h = pkgbuild.header_of(data)
    d = bytearray(data)
    b = h["wte.weight"]["data_offsets"][0]
    d[8 + n + b:8 + n + b + 4] = b"\x00\x00\xc0\x7f"  # float32 nan
    h2 = dict(h)
    h2["wte.wieght"] = h2.pop("wte.weight")
    (pkg / CKPT).write_bytes(pkgbuild.with_header(bytes(d), n, h2))
    build_manifest(pkg)
    r = verify_package(pkg)
    assert {"checkpoint-nonfinite", "checkpoint-tensor-missing", "checkpoint-tensor-unexpected"} <= codes(r)


def test_checkpoint_shape_and_metadata(pkg):
    cfg = dict(pkgbuild.MODEL_CONFIG, n_embd=16, head_dim=16)
    data = pkgbuild.checkpoint_bytes("linux-s1-a-s1", "a", model_config=cfg)
    n, h = pkgbuild.header_of(data)
    h["__metadata__"]["model_config"] = json.dumps(pkgbuild.MODEL_CONFIG)
    del h["__metadata__"]["step"]
    (pkg / CKPT).write_bytes(pkgbuild.with_header(data, n, h))
    build_manifest(pkg)
    r = verify_package(pkg)
    assert "checkpoint-shape" in codes(r) and "checkpoint-metadata-invalid" in codes(r)


# -- --deep -----------------------------------------------------------------------------------

def test_deep_without_torch_is_exit_2(pkg, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(AuditError, match="torch"):
        verify_package(pkg, deep=True)
    r = CliRunner().invoke(cli, ["verify", str(pkg), "--deep"])
    assert r.exit_code == 2 and "pip install torch==2.13.0" in r.output and "Traceback" not in r.output


def test_deep_calls_the_reevaluator_once_per_named_checkpoint(pkg, monkeypatch):
    import auditkit.verify.deep as deep
    from auditkit.findings import Finding

    seen = []

    def fake(data, row, path, read=None):
        seen.append((path, row["run_id"], pkgbuild.sha(data)))
        return [Finding(path, "deep-val-bpb-mismatch", "row", "x", "y")] if "b-s1" in path else []

    monkeypatch.setattr(deep, "reevaluate_checkpoint", fake)
    r = verify_package(pkg, deep=True, jobs=1)
    assert sorted(p for p, _, _ in seen) == sorted(str(p.relative_to(pkg)) for p in pkg.glob("checkpoints/*"))
    assert all(h == pkgbuild.sha((pkg / p).read_bytes()) for p, _, h in seen)
    assert paths_with(r, "deep-val-bpb-mismatch") == {"checkpoints/linux-s1-b-s1.safetensors"}
    assert r.checked["re-evaluated"] == 2


@pytest.mark.slow
def test_reference_smoke_package_verifies_deep(smoke_copy):
    r = verify_package(smoke_copy, deep=True)
    assert r.ok, r.render_text()
    assert r.checked["run rows"] == r.checked["checkpoints"] == r.checked["re-evaluated"] == 18


@pytest.mark.slow
def test_deep_catches_a_checkpoint_swapped_between_runs(smoke_copy):
    a, b = sorted(smoke_copy.glob("checkpoints/linux-stage2*.safetensors"))[:2]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    build_manifest(smoke_copy)
    assert {"checkpoint-hash", "checkpoint-run-mismatch", "deep-checkpoint-mismatch"} <= codes(
        verify_package(smoke_copy, deep=True))


# -- CLI ---------------------------------------------------------------------------------------

def test_cli_ok(pkg):
    r = CliRunner().invoke(cli, ["verify", str(pkg), "--jobs", "2"])
    root = json.loads((pkg / "MANIFEST.json").read_text())["root"]
    assert r.exit_code == 0, r.output
    assert f"root (recorded): {root}" in r.output and f"root (of the files): {root}" in r.output
    assert r.output.splitlines()[-1].startswith(f"OK: verify {pkg} (11 files")


def test_cli_findings_text_and_json(pkg):
    (pkg / "README.txt").write_text("changed\n")
    (pkg / "extra.txt").write_text("x\n")
    r = CliRunner().invoke(cli, ["verify", str(pkg)])
    lines = r.output.splitlines()
    assert r.exit_code == 1
    assert lines[0].startswith("README.txt: file-changed: ") and lines[1].startswith("extra.txt: file-unlisted: ")
    assert lines[-1] == f"FAILED: 2 finding(s) in verify {pkg} (12 files, 4 run rows, 2 checkpoints): " \
                        "file-changed x1, file-unlisted x1"
    r = CliRunner().invoke(cli, ["verify", str(pkg), "--json"])
    doc = json.loads(r.output)
    assert r.exit_code == 1 and doc["exit_code"] == 1 and doc["ok"] is False
    assert doc["counts"] == {"file-changed": 1, "file-unlisted": 1}
    assert {"path", "code", "location", "expected", "found", "message"} == set(doc["findings"][0])
    assert doc["info"]["root_recorded"] == json.loads((pkg / "MANIFEST.json").read_text())["root"]


def test_cli_cannot_run(tmp_path):
    for args in (["verify", str(tmp_path / "none")], ["verify", str(tmp_path / "none"), "--json"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2 and "no such package" in r.output and "Traceback" not in r.output
    (tmp_path / "x.txt").write_text("hi")
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "x.txt"), "--json"])
    assert r.exit_code == 2 and json.loads(r.output)["exit_code"] == 2
    r = CliRunner().invoke(cli, ["verify", str(tmp_path), "--jobs", "0"])
    assert r.exit_code == 2


def test_verify_never_writes_inside_the_package(pkg, monkeypatch):
    import auditkit.verify.deep as deep

    monkeypatch.setattr(deep, "reevaluate_checkpoint", lambda data, row, path, read=None: [])
    os.chmod(pkg, 0o555)
    for d in pkg.iterdir():
        if d.is_dir():
            os.chmod(d, 0o555)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in pkg.rglob("*")}
    try:
        assert verify_package(pkg, deep=True).ok
        assert CliRunner().invoke(cli, ["verify", str(pkg), "--json"]).exit_code == 0
    finally:
        for d in [pkg, *pkg.iterdir()]:
            if d.is_dir():
                os.chmod(d, 0o755)
    assert before == {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in pkg.rglob("*")}


# -- not a package: refused at once; hints never say to regenerate the evidence --------------------

def test_a_directory_that_is_no_package_is_refused_before_a_byte_is_read(tmp_path, monkeypatch):
    import auditkit.package.scan as scan

    d = tmp_path / "home"
    (d / "big").mkdir(parents=True)
    (d / "big" / "blob.bin").write_bytes(b"x" * 100_000)
    (d / "notes.json").write_text("{}")
    monkeypatch.setattr(scan, "scan_file", lambda *a, **k: pytest.fail("a file was read"))
    monkeypatch.setattr(scan, "scan_document", lambda *a, **k: pytest.fail("a document was read"))
    with pytest.raises(AuditError, match="neither MANIFEST.json nor protocol.json"):
        verify_package(d)
    for extra in ([], ["--json"]):
        r = CliRunner().invoke(cli, ["verify", str(d), *extra])
        assert r.exit_code == 2 and "neither MANIFEST.json nor protocol.json" in r.output, r.output
        assert "Traceback" not in r.output


def test_an_archive_that_holds_no_package_is_exit_2(tmp_path):
    import tarfile

    (tmp_path / "a.txt").write_text("hello\n")
    with tarfile.open(tmp_path / "x.tar", "w") as tar:
        tar.add(tmp_path / "a.txt", arcname="a.txt")
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "x.tar")])
    assert r.exit_code == 2 and "neither MANIFEST.json nor protocol.json" in r.output


@pytest.mark.parametrize("keep", ["MANIFEST.json", "protocol.json"])
def test_one_mark_is_enough_to_be_checked(pkg, keep):
    for name in ("MANIFEST.json", "MANIFEST.csv", "protocol.json"):
        if name != keep:
            (pkg / name).unlink()
    r = verify_package(pkg)
    assert r.exit_code == 1 and r.findings


def test_hints_never_say_to_regenerate_the_evidence(pkg):
    """A finding says what it means and how to investigate — never "rebuild the MANIFEST" or "regenerate
    the table", which would replace the evidence the finding is about."""
    (pkg / "README.txt").write_text("changed\n")
    (pkg / "extra.txt").write_text("x\n")
    (pkg / "MANIFEST.csv").write_text("path,sha256,bytes\n")
    pkgbuild.set_cell(pkg / LINUX, 1, "val_bpb", "nan")
    tm = {"schema": "auditkit/tables/v1", "tables": [
        {"id": "t", "path": "analysis/t.csv", "kind": "stage_summary", "inputs": [LINUX], "sha256": "0" * 64}]}
    (pkg / "analysis/t.csv").write_text("x\n1\n")
    (pkg / "table_manifest.json").write_text(json.dumps(tm))
    found = list(verify_package(pkg).findings)
    (pkg / "MANIFEST.json").unlink()
    (pkg / "MANIFEST.csv").unlink()
    found += verify_package(pkg).findings
    assert {"file-changed", "file-unlisted", "manifest-csv-mismatch", "row-invalid", "derived-hash",
            "manifest-missing", "manifest-csv-missing"} <= {f.code for f in found}
    for f in found:
        text = f"{f.message} {f.hint}".lower()
        assert not any(w in text for w in ("manifest build", "rebuild", "regenerate", "auditkit tables")), f


def test_the_console_entry_leaves_at_once_with_the_whole_verdict_and_its_exit_code(pkg):
    """`auditkit verify` ends with os._exit once its output is flushed (no interpreter teardown): the
    verdict is whole, in text and JSON, and the exit code is the report's: 0 OK, 1 findings, 2 unreadable."""
    import subprocess

    def run(*args):
        return subprocess.run([sys.executable, "-m", "auditkit", "verify", *args], capture_output=True, text=True,
                              timeout=120)

    ok = run(str(pkg))
    assert ok.returncode == 0 and ok.stdout.rstrip().splitlines()[-1].startswith("OK: verify"), ok.stdout + ok.stderr
    with open(pkg / LINUX, "ab") as f:
        f.write(b"\n")
    bad = run(str(pkg), "--json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    doc = json.loads(bad.stdout)                      # all of it: flushed before the process left
    assert any(f["code"] == "file-changed" and f["path"] == LINUX for f in doc["findings"])
    gone = run(str(pkg / "nothing-here"))
    assert gone.returncode == 2 and "no such package" in gone.stderr and "Traceback" not in gone.stderr


def test_deep_threads_follow_the_free_cores():
    from auditkit.verify.deep import free_cores

    assert free_cores(2, 0.0) == 2
    assert free_cores(2, 0.9) == 1            # one core busy: one thread
    assert free_cores(2, 7.5) == 1            # a loaded machine: one, never zero
    assert free_cores(16, 3.2) == 13
    assert free_cores(4, -1.0) == 4           # never more than the usable cores


def test_deep_says_its_threads_and_progress_on_stderr_and_keeps_json_clean(pkg, monkeypatch):
    import torch

    import auditkit.verify.deep as deep

    monkeypatch.setattr(deep, "reevaluate_checkpoint", lambda data, row, path, read=None: [])
    before = torch.get_num_threads()
    try:
        r = CliRunner().invoke(cli, ["verify", str(pkg), "--deep", "--threads", "1", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["checked"]["re_evaluated"] == 2
        assert torch.get_num_threads() == 1
        lines = r.stderr.splitlines()
        assert lines[0] == "verify --deep: 1 torch thread(s) (as --threads asked)"
        # not a terminal: the first and the last checkpoint (at most one line per 30 s between)
        assert [x.split(" checkpoints/")[0] for x in lines[1:]] == ["verify --deep: checkpoint 1/2",
                                                                    "verify --deep: checkpoint 2/2"]
        r = CliRunner().invoke(cli, ["verify", str(pkg), "--deep"])
        assert r.exit_code == 0 and "torch thread(s) (" in r.stderr and "choose with --threads N" in r.stderr
    finally:
        torch.set_num_threads(before)
    r = CliRunner().invoke(cli, ["verify", str(pkg), "--threads", "2"])
    assert r.exit_code == 2 and "--threads applies with --deep only" in r.output


def test_deep_progress_is_rate_limited_off_a_terminal():
    from auditkit.verify.deep import DeepProgress

    said, now = [], [0.0]
    p = DeepProgress(5, said.append, tty=False, interval=30.0, clock=lambda: now[0])
    for i, t in zip(range(1, 6), (0.0, 10.0, 31.0, 40.0, 41.0)):
        now[0] = t
        p(i, f"c{i}")
    assert [s.split()[3] for s in said] == ["1/5", "3/5", "5/5"]
    said.clear()
    p = DeepProgress(3, said.append, tty=True)
    for i in (1, 2, 3):
        p(i, "c")
    assert len(said) == 3

"""One way to name a package (auditkit/package/source.py): positional or --package, a missing path said
to be missing, archives of any name read by every read-only command, a package below the top (anc/
first) found and said where, a package in its authors' own layout refused with the profile command,
and `auditkit review` of an arXiv-shaped e-print."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.package.manifest import build_manifest
from auditkit.package.locate import archive_kind, is_remote, prefix_in_names
from auditkit.package.source import open_source
from fixtures.legacy import build_legacy_package
from fixtures.paperpkg import build_paper_package

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def run(*args, cwd: Path | None = None):
    if cwd is None:
        return CliRunner().invoke(cli, [str(a) for a in args])
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def pkg(tmp_path_factory) -> Path:
    p = build_paper_package(tmp_path_factory.mktemp("src") / "pkg")
    shutil.copy(DATA / "paper06_claims.json", p / "claims.json")
    build_manifest(p)
    return p


def eprint(dest: Path, anc: Path, *, compress: str = "gz", edit=None) -> Path:
    """An arXiv-shaped e-print at `dest` (no extension): main.tex, figures/, anc/ = `anc`'s files."""
    mode = "w:gz" if compress == "gz" else "w:" if compress == "" else f"w:{compress}"
    with tarfile.open(dest, mode) as tar:
        for name, data in (("main.tex", b"\\documentclass{article}\n"), ("figures/f1.pdf", b"%PDF-1.4\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for p in sorted(anc.rglob("*")):
            if p.is_file():
                rel = p.relative_to(anc).as_posix()
                data = p.read_bytes()
                if edit is not None and rel == edit:
                    data = data[:-1] + bytes([data[-1] ^ 1])      # one byte changed
                info = tarfile.TarInfo("anc/" + rel)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return dest


# --- naming -----------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["verify"], ["replay-gate", "all"], ["tables", "--check"], ["claims"]])
def test_positional_and_package_option_name_the_same_package(pkg, command):
    a, b = run(*command, pkg), run(*command, "--package", pkg)
    assert a.exit_code == b.exit_code == 0, a.output + b.output
    assert a.output.splitlines()[-1] == b.output.splitlines()[-1]
    both = run(*command, pkg, "--package", pkg.parent)
    assert both.exit_code == 2 and "two packages named" in both.output


def test_a_missing_package_is_said_to_be_missing(tmp_path):
    r = run("replay-gate", "all", tmp_path / "nope")
    assert r.exit_code == 2 and "no such file or directory" in r.output and "protocol.json" not in r.output
    r = run("claims", cwd=tmp_path)            # the default, `ancillary`, is not here
    assert r.exit_code == 2 and "the default package name" in r.output
    r = run("tables", "--check", "--json", tmp_path / "nope")
    doc = json.loads(r.output)
    assert r.exit_code == 2 and doc["exit_code"] == 2 and "no such file" in doc["error"]


def test_every_read_only_command_reads_an_archive_of_any_name(pkg, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"                  # this test's own: another worker's snapshots are not its
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    arch = tmp_path / "2606.11387"                  # arXiv's e-print: no extension
    eprint(arch, pkg)
    assert archive_kind(arch) == "gzip"
    for command in (["verify"], ["replay-gate", "all"], ["tables", "--check"], ["claims"]):
        r = run(*command, arch)
        assert r.exit_code == 0, (command, r.output)
        assert "package found at anc/ inside" in r.output, r.output
    plain = eprint(tmp_path / "plain", pkg, compress="")
    assert archive_kind(plain) == "tar" and run("replay-gate", "all", plain).exit_code == 0
    xz = eprint(tmp_path / "x.bin", pkg, compress="xz")
    assert archive_kind(xz) == "xz" and run("claims", xz).exit_code == 0
    # no snapshot is left behind; the archive is unchanged
    assert not [n for n in os.listdir(scratch) if n.startswith("auditkit-pkg-")]
    (tmp_path / "notes.txt").write_text("hello\n")
    r = run("verify", tmp_path / "notes.txt")
    assert r.exit_code == 2 and "not an archive" in r.output


def test_a_tampered_archive_member_is_a_finding(pkg, tmp_path):
    arch = eprint(tmp_path / "e", pkg, edit="claims.json")
    r = run("verify", arch)
    assert r.exit_code == 1 and "claims.json: file-changed" in r.output, r.output


def test_an_extracted_tree_finds_anc(pkg, tmp_path):
    tree = tmp_path / "tree"
    (tree / "figures").mkdir(parents=True)
    (tree / "main.tex").write_text("x\n")
    shutil.copytree(pkg, tree / "anc")
    r = run("verify", ".", cwd=tree)
    assert r.exit_code == 0 and "package found at anc/ inside ." in r.output
    with open_source(str(tree)) as src:
        assert src.found_at == "anc/" and src.root == tree / "anc"


def test_below_the_top_anc_comes_first():
    assert prefix_in_names(["a/MANIFEST.json", "anc/protocol.json", "main.tex"]) == "anc/"
    assert prefix_in_names(["x/y/protocol.json", "z/protocol.json"]) == "z/"
    assert prefix_in_names(["protocol.json", "anc/protocol.json"]) == ""
    assert prefix_in_names(["main.tex"]) is None
    assert is_remote("https://example.org/pkg/") and is_remote("arxiv:2606.11387")
    assert not is_remote("ancillary")


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Path:
    return build_legacy_package(tmp_path_factory.mktemp("legacy") / "legacy")


@pytest.mark.parametrize("command", [["verify"], ["replay-gate", "all"], ["tables", "--check"], ["claims"]])
def test_the_authors_own_layout_gets_exit_2_and_the_draft_command(legacy, command):
    r = run(*command, legacy)
    assert r.exit_code == 2, r.output
    assert "this package is in its authors' own layout" in r.output
    assert f"auditkit profile draft {legacy} --out profile.toml" in r.output
    assert "file-changed" not in r.output and len(r.output.splitlines()) < 10


def test_the_authors_own_layout_in_an_archive(legacy, tmp_path):
    arch = tmp_path / "legacy.tgz"
    with tarfile.open(arch, "w:gz") as tar:
        tar.add(legacy, arcname="legacy")
    r = run("verify", arch)
    assert r.exit_code == 2 and "authors' own layout" in r.output and f"profile draft {arch}" in r.output
    out = tmp_path / "p.toml"
    r = run("profile", "draft", arch, "--out", out)          # the suggested command works on the archive
    assert r.exit_code == 0 and 'schema = "auditkit/profile/v1"' in out.read_text()


# --- the review ------------------------------------------------------------------------------

def test_review_of_an_eprint_is_one_command(tmp_path):
    """The shipped package inside an arXiv-shaped e-print: every check of the package passes, and
    the review's one answer about the paper is that four of its eight mapped claims do not hold on
    the replication (docs/REPLICATION.md) — exit 1 from the claims verdict alone, as `auditkit
    claims` gives it."""
    from auditkit.report.claims import evaluate_claims

    not_held = sum(1 for c in evaluate_claims(REPO / "ancillary") if c.outcome == "not_held")
    arch = eprint(tmp_path / "2606.11387", REPO / "ancillary")
    r = run("review", arch, "--report", tmp_path / "rep")
    assert r.exit_code == (1 if not_held else 0), r.output
    for check in ("verify", "replay", "freeze evidence", "tables", "figures"):
        assert any(line.strip().startswith(check) and line.split()[len(check.split())] == "OK"
                   for line in r.output.splitlines()), (check, r.output)
    verdict = "FAILED: review" if not_held else "OK: review"
    assert "package found at anc/" in r.output and verdict in r.output
    if not_held:
        assert "findings in claims (" in r.output and r.output.count("claim-not-held") == not_held
    doc = json.loads((tmp_path / "rep" / "review.json").read_text())
    assert doc["exit_code"] == r.exit_code and (tmp_path / "rep" / "report.html").stat().st_size > 1000
    again = run("review", arch, "--report", tmp_path / "rep")
    assert again.exit_code == 2 and "the file exists" in again.output

    bad = eprint(tmp_path / "tampered", REPO / "ancillary", edit="README.txt")
    r = run("review", bad, "--no-figures")
    assert r.exit_code == 1, r.output
    assert "README.txt" in r.output and "FAILED: review" in r.output and "findings in verify" in r.output


def test_a_hostile_archive_read_by_replay_writes_nothing_outside_its_snapshot(tmp_path):
    import tempfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("a", b"x"), ("a/protocol.json", b"{}"), ("../evil", b"y"), ("/abs", b"z"),
                           ("b/protocol.json", b"{}"), ("b/protocol.json", b"[]")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("b/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    arch = tmp_path / "hostile"
    arch.write_bytes(buf.getvalue())
    before = sorted(os.listdir(tmp_path))
    r = run("replay-gate", "all", arch)
    # a defective protocol.json leaves nothing to replay: exit 2 naming the defect (verify finds it, exit 1)
    assert r.exit_code == 2 and "package found at b/" in r.output and "protocol-invalid" in r.output, r.output
    assert "Traceback" not in r.output and sorted(os.listdir(tmp_path)) == before
    assert not (tmp_path.parent / "evil").exists()
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("auditkit-pkg-")]

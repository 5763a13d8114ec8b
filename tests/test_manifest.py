"""MANIFEST (SPEC section 9): format, root hash, `manifest build`, and the properties
that make it worth having (read size does not matter; build-then-verify passes; any
single changed byte is caught)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import pkgbuild  # noqa: E402
from auditkit.cli import cli  # noqa: E402
from auditkit.errors import AuditError  # noqa: E402
from auditkit.package.hashing import sha256_fileobj  # noqa: E402
from auditkit.package.manifest import Entry, build_manifest, manifest_csv_text, root_hash  # noqa: E402
from auditkit.package.scan import scan_file  # noqa: E402
from auditkit.package.schemas import schema_errors  # noqa: E402
from auditkit.verify.orchestrate import verify_package  # noqa: E402


@pytest.fixture
def pkg(tmp_path) -> Path:
    return pkgbuild.build(tmp_path / "pkg")


def test_manifest_format(pkg):
    doc = json.loads((pkg / "MANIFEST.json").read_text())
    assert schema_errors(doc, "manifest") == []
    paths = [e["path"] for e in doc["files"]]
    assert paths == sorted(paths) and "MANIFEST.json" not in paths and "MANIFEST.csv" not in paths
    on_disk = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
    assert paths == [p for p in on_disk if not p.startswith("MANIFEST.")]
    for e in doc["files"]:
        data = (pkg / e["path"]).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest() and e["bytes"] == len(data)
    rows = list(csv.DictReader(io.StringIO((pkg / "MANIFEST.csv").read_text())))
    assert [(r["path"], r["sha256"], int(r["bytes"])) for r in rows] == [
        (e["path"], e["sha256"], e["bytes"]) for e in doc["files"]]


def test_root_is_the_sha256_of_sha256sum_lines(pkg):
    doc = json.loads((pkg / "MANIFEST.json").read_text())
    lines = "".join(f"{e['sha256']}  {e['path']}\n" for e in doc["files"])
    assert doc["root"] == hashlib.sha256(lines.encode()).hexdigest()
    if shutil.which("sha256sum"):
        out = subprocess.run(["sha256sum", *[e["path"] for e in doc["files"]]], cwd=pkg, capture_output=True,
                             text=True, check=True).stdout
        assert hashlib.sha256(out.encode()).hexdigest() == doc["root"]
        check = subprocess.run(["sha256sum", "-c", "-"], input=lines, cwd=pkg, capture_output=True, text=True)
        assert check.returncode == 0


def test_root_does_not_depend_on_entry_order():
    es = [Entry("b", "1" * 64, 1), Entry("a", "2" * 64, 2)]
    assert root_hash(es) == root_hash(reversed(es))


def test_csv_quotes_awkward_paths():
    text = manifest_csv_text([Entry('a,"b".txt', "0" * 64, 3)])
    assert list(csv.reader(io.StringIO(text)))[1] == ['a,"b".txt', "0" * 64, "3"]


def test_build_changes_no_other_file_and_is_byte_stable(pkg):
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in pkg.rglob("*") if p.is_file()
              and not p.name.startswith("MANIFEST.")}
    first = (pkg / "MANIFEST.json").read_bytes(), (pkg / "MANIFEST.csv").read_bytes()
    build_manifest(pkg, jobs=1)
    assert ((pkg / "MANIFEST.json").read_bytes(), (pkg / "MANIFEST.csv").read_bytes()) == first
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in pkg.rglob("*") if p.is_file()
             and not p.name.startswith("MANIFEST.")}
    assert before == after
    assert sorted(os.listdir(pkg)) == sorted(os.listdir(pkg))  # no temp files left behind
    assert not [n for n in os.listdir(pkg) if n.startswith(".auditkit-tmp-")]


def test_nested_manifest_names_are_ordinary_files(pkg):
    (pkg / "source").mkdir()
    (pkg / "source/MANIFEST.json").write_text("{}")
    doc = build_manifest(pkg)
    assert "source/MANIFEST.json" in [e["path"] for e in doc["files"]]
    assert verify_package(pkg).ok


def test_build_refuses_links_and_odd_names(pkg, tmp_path):
    os.symlink(tmp_path, pkg / "link")
    with pytest.raises(AuditError, match="symlink"):
        build_manifest(pkg)
    r = CliRunner().invoke(cli, ["manifest", "build", str(pkg)])
    assert r.exit_code == 2 and "symlink" in r.output and "Traceback" not in r.output
    os.unlink(pkg / "link")
    (pkg / "a\nb").write_text("x")
    with pytest.raises(AuditError, match="line break"):
        build_manifest(pkg)


def test_build_cli(pkg, tmp_path):
    (pkg / "new.txt").write_text("new\n")
    r = CliRunner().invoke(cli, ["manifest", "build", str(pkg)])
    root = json.loads((pkg / "MANIFEST.json").read_text())["root"]
    assert r.exit_code == 0 and r.output.strip() == f"wrote MANIFEST.json and MANIFEST.csv: 10 files, root {root}"
    assert verify_package(pkg).ok
    r = CliRunner().invoke(cli, ["manifest", "build", str(tmp_path / "none")])
    assert r.exit_code == 2 and "Traceback" not in r.output


# -- properties -------------------------------------------------------------------------------

class Trickle(io.RawIOBase):
    """A reader that hands out at most `sizes[i]` bytes per call: short reads, as pipes and archives do."""

    def __init__(self, data: bytes, sizes: list[int]):
        self.data, self.pos, self.sizes, self.i = data, 0, sizes, 0

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.sizes[self.i % len(self.sizes)], len(self.data) - self.pos)
        self.i += 1
        b[:k] = self.data[self.pos:self.pos + k]
        self.pos += k
        return k


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 3000), sizes=st.lists(st.integers(1, 700), min_size=1))
def test_digest_does_not_depend_on_read_size(data, chunk, sizes):
    want = hashlib.sha256(data).hexdigest()
    assert sha256_fileobj(io.BytesIO(data), chunk) == (want, len(data))
    fs = scan_file("x.csv", Trickle(data, sizes))
    assert (fs.sha256, fs.bytes, fs.content) == (want, len(data), data)


names = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
trees = st.dictionaries(st.lists(names, min_size=1, max_size=3).map("/".join), st.binary(max_size=300),
                        min_size=1, max_size=8)


def _write_tree(root: Path, tree: dict[str, bytes]) -> bool:
    for rel, data in tree.items():
        p = root / rel
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            return False  # a name used both as a file and a directory: not a tree
    return True


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_build_then_verify_always_passes(tree):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "p"
        root.mkdir()
        if not _write_tree(root, tree):
            return
        doc = build_manifest(root)
        r = verify_package(root)
        # an arbitrary tree is no study: only the package-format findings may appear, never fixity ones
        fixity = {"file-missing", "file-unlisted", "file-changed", "file-size-changed", "manifest-root-mismatch",
                  "manifest-csv-mismatch", "manifest-duplicate-entry", "manifest-unsorted", "schema-invalid"}
        assert not [f for f in r.findings if f.code in fixity and f.path.startswith("MANIFEST")], r.render_text()
        assert not [f for f in r.findings if f.code in fixity], r.render_text()
        assert r.info["root (recorded)"] == r.info["root (of the files)"] == doc["root"]


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    return pkgbuild.build(tmp_path_factory.mktemp("mini") / "pkg")


FILES = ["README.txt", "protocol.json", "matrices/mini.csv", "preanalysis/s1.rules.json",
         "remote-results/linux_s1_summary.csv", "remote-results/windows_s1_summary.csv",
         "analysis/s1_decision.json", "checkpoints/linux-s1-a-s1.safetensors", "MANIFEST.json", "MANIFEST.csv"]


def _meaning(rel: str, data: bytes):
    """What a MANIFEST says, whatever its bytes (another writer may format it otherwise)."""
    try:
        if rel == "MANIFEST.json":
            return json.loads(data)
        return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (ValueError, csv.Error):
        return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(FILES), where=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255))
def test_any_single_byte_change_is_caught(mini, which, where, xor):
    """Every file is hashed, so any changed byte is `file-changed`; a MANIFEST is not hashed by
    itself, so a changed byte there is caught unless it leaves what the MANIFEST says unchanged
    (JSON whitespace: the same entries and root)."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "p"
        shutil.copytree(mini, root)
        f = root / which
        before = f.read_bytes()
        data = bytearray(before)
        i = int(where * len(data))
        data[i] ^= xor
        f.write_bytes(bytes(data))
        r = verify_package(root)
        if which.startswith("MANIFEST"):
            meaning = _meaning(which, bytes(data))
            assert r.exit_code == 1 or meaning == _meaning(which, before), (which, i, xor)
            assert r.ok or any(x.path.startswith("MANIFEST") for x in r.findings)
        else:
            assert r.exit_code == 1
            assert which in {x.path for x in r.findings if x.code == "file-changed"}


def test_manifest_whitespace_is_not_a_change(mini, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(mini, root)
    f = root / "MANIFEST.json"
    f.write_text(json.dumps(json.loads(f.read_text()), separators=(",", ":")))
    assert verify_package(root).ok


entry_values = st.one_of(st.text(max_size=12), st.integers(-2, 2 ** 40), st.booleans(), st.none(),
                         st.sampled_from(["a/b.csv", "../x", "/abs", "a//b", "a/./b", "C:/x", "0" * 64, "f" * 64,
                                          "F" * 64, "a\\b", "ok.txt\n"]))


@settings(max_examples=300, deadline=None)
@given(entry=st.dictionaries(st.sampled_from(["path", "sha256", "bytes", "extra"]), entry_values))
def test_fast_manifest_entry_check_agrees_with_the_schema(entry):
    from auditkit.verify.fastschema import fast_valid

    doc = {"schema": "auditkit/manifest/v1", "algorithm": "sha256", "files": [entry], "root": "0" * 64}
    assert fast_valid("manifest", ("properties", "files", "items"))(entry) == (schema_errors(doc, "manifest") == [])

"""The package attestation's subjects hashed once (issue 23, verify speed): `package_evidence` may take
the sha256 that verify's scan already made of each file (`subject_sha256`); the report is the same one,
findings in the same order, and a file the scan did not read is read as before."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.evidence import model
from auditkit.evidence.level import package_evidence
from auditkit.evidence.model import DirReader
from auditkit.evidence.report import gate_refs

SHIPPED = Path(__file__).resolve().parents[1] / "ancillary"


@pytest.fixture
def changed(tmp_path) -> Path:
    """The shipped package with a gate's rules changed after their freeze (an attestation finding and
    the gate's own) and one file added after the attestation."""
    root = tmp_path / "pkg"
    shutil.copytree(SHIPPED, root)
    rules = sorted((root / "preanalysis").glob("*.rules.json"))[0]
    rules.write_bytes(rules.read_bytes() + b" ")
    (root / "notes.txt").write_text("added later\n")
    return root


def _as_tuples(rep):
    return ([(f.path, f.code, f.location, f.expected, f.found) for f in rep.findings], rep.package, rep.gates,
            rep.notes)


def _sha(root: Path):
    return lambda rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() if (root / rel).is_file() else None


def test_given_hashes_give_the_same_report_in_the_same_order(changed):
    refs = gate_refs(changed)
    own = package_evidence(DirReader(changed), refs)
    assert _as_tuples(package_evidence(DirReader(changed), refs, subject_sha256=_sha(changed))) == _as_tuples(own)
    assert _as_tuples(package_evidence(DirReader(changed), refs, subject_sha256=lambda rel: None)) == _as_tuples(own)
    package_attestation = [f.location == "evidence/attestations/package.dsse.json" for f in own.findings]
    # the package attestation's two findings first, then the gate's (rules changed, its decision's
    # attestation), as when the gates were graded after the package attestation
    assert package_attestation == [True, True, False, False], [(f.code, f.location) for f in own.findings]
    assert own.findings[2].code == "rules-changed-after-freeze"


def test_the_given_hash_is_the_one_compared(changed):
    refs = gate_refs(changed)
    subject = "protocol.json"
    lie = lambda rel: "0" * 64 if rel == subject else None   # noqa: E731
    rep = package_evidence(DirReader(changed), refs, subject_sha256=lie)
    assert [f.found for f in rep.findings if f.path == subject and f.code == "attestation-subject-mismatch"] == [
        "sha256 " + "0" * 64]


def test_verify_hashes_no_attested_file_twice(changed, monkeypatch):
    hashed = []
    real = model.DirReader.sha256
    monkeypatch.setattr(model.DirReader, "sha256", lambda self, rel: hashed.append(rel) or real(self, rel))
    r = CliRunner().invoke(cli, ["verify", str(changed), "--jobs", "2", "--json"])
    assert r.exit_code == 1 and '"attestation-subject-mismatch"' in r.output
    assert hashed == []
    own = CliRunner().invoke(cli, ["replay-gate", "all", "--package", str(changed), "--json"])
    assert own.exit_code == 1 and hashed          # replay-gate grades the same evidence, hashing for itself

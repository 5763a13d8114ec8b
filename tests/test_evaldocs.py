"""Per-document evaluation losses (SPEC v1.2 eval_docs): verify's checks of the files a row names, and
the statistics that use them (replay-gate's uncertainty gains the document sample's variance)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.package.evaldocs import docs_val_bpb, parse_eval_docs
from auditkit.package.manifest import build_manifest
from auditkit.errors import PackageDefect
from auditkit.gates.replay import write_decision
from fixtures.synth import DECIDED_AT, make_package

NDOCS = 40


BYTES = np.random.default_rng(1).integers(50, 400, size=NDOCS)   # one evaluation set: the same documents


def _docs_text(val_bpb: float, rng) -> str:
    """A per-document file whose losses add up to `val_bpb` (to 6-decimal rounding of each doc's nats)."""
    b = BYTES
    w = rng.uniform(0.5, 1.5, size=NDOCS) * b
    nats = w / w.sum() * val_bpb * math.log(2) * b.sum()
    return "doc,nats,bytes\n" + "".join(f"{j},{x:.6f},{int(n)}\n" for j, (x, n) in enumerate(zip(nats, b)))


def _add_eval_docs(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "eval-docs").mkdir()
    for p in sorted((root / "remote-results").glob("*.csv")):
        rows = list(csv.DictReader(io.StringIO(p.read_text())))
        header = list(rows[0]) + ["eval_docs", "eval_docs_sha256"]
        for r in rows:
            if r["status"] == "ok" and r["val_bpb"]:
                text = _docs_text(float(r["val_bpb"]), rng)
                rel = f"eval-docs/{r['run_id']}.csv"
                (root / rel).write_text(text, newline="\n")
                r["eval_docs"], r["eval_docs_sha256"] = rel, hashlib.sha256(text.encode()).hexdigest()
            else:
                r["eval_docs"] = r["eval_docs_sha256"] = ""
        out = io.StringIO()
        w = csv.DictWriter(out, header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        p.write_text(out.getvalue(), newline="\n")


@pytest.fixture(scope="module")
def with_docs(tmp_path_factory) -> Path:
    root = make_package(tmp_path_factory.mktemp("docs") / "pkg", tables=False, manifest=False)
    _add_eval_docs(root)
    for g in json.loads((root / "protocol.json").read_text())["gates"]:   # the inputs' hashes changed
        write_decision(root, g["gate"], DECIDED_AT, force=True)
    build_manifest(root)
    return root


@pytest.fixture
def pkg(with_docs, tmp_path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(with_docs, dest)
    return dest


def verify_codes(pkg: Path) -> tuple[int, set[str]]:
    res = CliRunner().invoke(cli, ["verify", str(pkg), "--json"])
    doc = json.loads(res.output)
    return res.exit_code, {f["code"] for f in doc["findings"]}


def first_docs(pkg: Path) -> Path:
    return sorted((pkg / "eval-docs").glob("*.csv"))[0]


def test_a_package_with_per_document_files_verifies(with_docs):
    code, codes = verify_codes(with_docs)
    assert not {c for c in codes if c.startswith("eval-docs")}, codes
    assert code == 0, codes


def test_a_changed_file_is_a_hash_mismatch(pkg):
    p = first_docs(pkg)
    p.write_text(p.read_text().replace(",", ",1", 1).replace("doc,1nats", "doc,nats"))  # one doc's nats changed
    text = p.read_text().splitlines()
    text[1] = text[1].split(",")[0] + ",999.000000," + text[1].split(",")[2]
    p.write_text("\n".join(text) + "\n")
    build_manifest(pkg)     # even with a rebuilt MANIFEST the row's hash and val_bpb catch it
    _, codes = verify_codes(pkg)
    assert {"eval-docs-hash-mismatch", "eval-docs-val-bpb-mismatch"} <= codes


def test_a_missing_file_and_an_unreadable_one(pkg):
    a, b = sorted((pkg / "eval-docs").glob("*.csv"))[:2]
    a.unlink()
    b.write_text("doc,nats,bytes\n0,nan,12\n")
    _, codes = verify_codes(pkg)
    assert {"eval-docs-missing", "eval-docs-unreadable"} <= codes


def test_an_unlisted_file(pkg):
    doc = json.loads((pkg / "MANIFEST.json").read_text())
    rel = first_docs(pkg).relative_to(pkg).as_posix()
    doc["files"] = [f for f in doc["files"] if f["path"] != rel]
    (pkg / "MANIFEST.json").write_text(json.dumps(doc, indent=2) + "\n")
    _, codes = verify_codes(pkg)
    assert "eval-docs-unlisted" in codes


@pytest.mark.parametrize("text,where", [
    ("", "header"), ("doc,nats,bytes\n", "row 1"), ("doc,nats,bytes\n0,1.5,10\n0,1.2,10\n", "row 2, column doc"),
    ("doc,nats,bytes\n0,1.5,0\n", "row 1, column bytes"), ("doc,nats,bytes\n0,inf,3\n", "row 1, column nats"),
    ("doc,nats,bytes\r\n0,1.5,3\r\n", ""), ("doc,nats,bytes\n0,1.5\n", "row 1"),
    ("doc,nats,bytes\n-1,1.5,3\n", "row 1, column doc"), ("doc,nats,bytes\n0,1e400,3\n", "row 1, column nats"),
])
def test_parse_refuses_what_spec_does_not_allow(text, where):
    with pytest.raises(PackageDefect) as exc:
        parse_eval_docs(text.encode(), "eval-docs/x.csv")
    assert exc.value.finding.code == "eval-docs-unreadable" and exc.value.finding.location == where


def test_parse_and_the_val_bpb_it_stands_for():
    ed = parse_eval_docs(b"doc,nats,bytes\n0,0.693147,1\n2,1.386294,2\n", "x")
    assert list(ed.doc) == [0, 2] and docs_val_bpb(ed) == pytest.approx(2.079441 / (math.log(2) * 3))


def test_replay_uses_the_documents_and_says_so(with_docs):
    res = CliRunner().invoke(cli, ["replay-gate", "all", "--package", str(with_docs), "--json"])
    doc = json.loads(res.output)
    methods = [c["method"] for g in doc["gates"] for c in g["uncertainty"]["checks"] if c["low"] is not None]
    assert methods and all(m.endswith("+docs") for m in methods)
    assert all(any("per-document evaluation losses over" in n for n in g["uncertainty"]["notes"])
               for g in doc["gates"] if g["uncertainty"]["checks"])


def test_a_gate_with_a_bad_file_falls_back_to_cells_and_says_why(pkg):
    p = first_docs(pkg)
    p.write_text(p.read_text() + f"{NDOCS + 5},1.0,3\n")
    res = CliRunner().invoke(cli, ["replay-gate", "all", "--package", str(pkg), "--json"])
    doc = json.loads(res.output)
    notes = [n for g in doc["gates"] for n in g["uncertainty"]["notes"]]
    assert any("per-document evaluation losses not used" in n for n in notes)

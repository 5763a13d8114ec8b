"""Per-document evaluation files within one gate list the same documents (issue 21; SPEC v1.2 eval_docs):
verify's `eval-docs-set-mismatch`, from the package through the command and from a view through the check."""

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
from auditkit.gates.replay import write_decision
from auditkit.package.manifest import build_manifest
from fixtures.synth import DECIDED_AT, SynthShape, make_package

NDOCS = 12
BYTES = np.arange(100, 100 + NDOCS)          # the gate's one evaluation set: documents 0..11


def _docs_text(val_bpb: float, docs: np.ndarray, nbytes: np.ndarray) -> str:
    """A file over `docs` whose losses add up to `val_bpb` (each document's nats to 6 decimals)."""
    nats = nbytes / nbytes.sum() * val_bpb * math.log(2) * nbytes.sum()
    return "doc,nats,bytes\n" + "".join(f"{int(d)},{x:.6f},{int(b)}\n" for d, x, b in zip(docs, nats, nbytes))


def _rewrite(root: Path, files: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Give every scored row a per-document file (over `files[run_id]` when named, else the common set),
    then decide the gates and seal the MANIFEST again (the rows' hashes changed)."""
    (root / "eval-docs").mkdir(exist_ok=True)
    for p in sorted((root / "remote-results").glob("*.csv")):
        rows = list(csv.DictReader(io.StringIO(p.read_text())))
        header = [c for c in rows[0] if c not in ("eval_docs", "eval_docs_sha256")] + ["eval_docs", "eval_docs_sha256"]
        for r in rows:
            r["eval_docs"] = r["eval_docs_sha256"] = ""
            if r["status"] == "ok" and r["val_bpb"]:
                docs, nbytes = files.get(r["run_id"], (np.arange(NDOCS), BYTES))
                text = _docs_text(float(r["val_bpb"]), docs, nbytes)
                rel = f"eval-docs/{r['run_id']}.csv"
                (root / rel).write_text(text, newline="\n")
                r["eval_docs"], r["eval_docs_sha256"] = rel, hashlib.sha256(text.encode()).hexdigest()
        out = io.StringIO()
        w = csv.DictWriter(out, header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        p.write_text(out.getvalue(), newline="\n")
    for g in json.loads((root / "protocol.json").read_text())["gates"]:
        write_decision(root, g["gate"], DECIDED_AT, force=True)
    build_manifest(root)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_package(tmp_path_factory.mktemp("sets") / "pkg", SynthShape(configs=4), tables=False,
                        manifest=False)


@pytest.fixture
def pkg(base, tmp_path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(base, dest)
    return dest


def _a_gate_run(root: Path) -> tuple[str, str]:
    """(gate, run_id) of a scored row among the inputs of the protocol's first gate."""
    proto = json.loads((root / "protocol.json").read_text())
    gate = proto["gates"][0]
    rules = json.loads((root / gate["rules"]).read_text())
    for p in sorted((root / "remote-results").glob("*.csv")):
        for r in csv.DictReader(io.StringIO(p.read_text())):
            if r["stage"] in rules["inputs"]["stages"] and r["status"] == "ok" and r["val_bpb"]:
                return gate["gate"], r["run_id"]
    raise AssertionError("no scored input row")


def _verify(root: Path) -> tuple[int, list[dict]]:
    res = CliRunner().invoke(cli, ["verify", str(root), "--json"])
    return res.exit_code, json.loads(res.output)["findings"]


def test_one_document_set_per_gate_verifies(pkg):
    _rewrite(pkg, {})
    code, findings = _verify(pkg)
    assert not [f for f in findings if f["code"].startswith("eval-docs")], findings
    assert code == 0


@pytest.mark.parametrize("change", ["a document less", "another document", "other byte counts"])
def test_a_run_scored_on_other_documents_is_flagged(pkg, change):
    gate, rid = _a_gate_run(pkg)
    docs, nbytes = np.arange(NDOCS), BYTES.copy()
    if change == "a document less":
        docs, nbytes = docs[:-1], nbytes[:-1]
    elif change == "another document":
        docs = docs.copy()
        docs[3] = NDOCS + 7
        docs.sort()
    else:
        nbytes[5] += 1
    _rewrite(pkg, {rid: (docs, nbytes)})
    code, findings = _verify(pkg)
    eval_docs = [f for f in findings if f["code"].startswith("eval-docs")]
    # the file is whole, listed, hashed and adds up to its row: only the set differs, and only for this run
    assert [(f["code"], f["path"]) for f in eval_docs] == [("eval-docs-set-mismatch", f"eval-docs/{rid}.csv")]
    assert eval_docs[0]["location"] == f"gate {gate}, run {rid}"
    assert eval_docs[0]["expected"].startswith(f"{NDOCS} documents")
    assert code != 0


def test_a_set_shared_by_a_different_gate_is_not_compared_across_gates(pkg):
    """Runs of different gates may be scored on different documents: each gate is compared within itself."""
    proto = json.loads((pkg / "protocol.json").read_text())
    last = proto["gates"][-1]
    stages = json.loads((pkg / last["rules"]).read_text())["inputs"]["stages"]
    other = (np.arange(NDOCS + 3), np.arange(200, 200 + NDOCS + 3))
    files = {}
    for p in sorted((pkg / "remote-results").glob("*.csv")):
        for r in csv.DictReader(io.StringIO(p.read_text())):
            if r["stage"] in stages:
                files[r["run_id"]] = other
    earlier = {st for g in proto["gates"][:-1]
               for st in json.loads((pkg / g["rules"]).read_text())["inputs"]["stages"]}
    assert not earlier & set(stages), "the synthetic gates share no stage"
    _rewrite(pkg, files)
    _, findings = _verify(pkg)
    assert not [f for f in findings if f["code"] == "eval-docs-set-mismatch"], findings

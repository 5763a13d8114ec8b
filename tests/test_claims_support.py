"""`auditkit claims` beside each point-estimate outcome: what the data support at a level (held / not held /
undetermined) with interval and Holm-adjusted p; claims files read strictly through the store; a study's own
observations are not claims."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.errors import AuditError
from auditkit.derived.observations import observations_from_study
from auditkit.report.claims import ClaimOutcome, evaluate_claims
from fixtures.paperpkg import build_paper_package

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def paper_pkg(tmp_path_factory) -> Path:
    return build_paper_package(tmp_path_factory.mktemp("paper") / "pkg")


@pytest.fixture(scope="module")
def results(paper_pkg):
    return evaluate_claims(paper_pkg, DATA / "paper06_claims.json")


def test_every_claim_has_a_call_beside_its_outcome(results):
    assert results
    for r in results:
        assert r.call in ("held", "not_held", "undetermined") and r.level == 0.95 and r.basis
        if r.outcome is not ClaimOutcome.HELD:
            assert r.call != "held"          # a test of averages never makes a claim the cells contradict true
        if r.p is not None:
            assert r.p_holm >= r.p
        if r.low is not None:
            assert r.low <= r.high


def test_facts_of_the_rules_are_exact_and_statistics_are_tested(results):
    by = {r.id: r for r in results}
    acct = by["gpu-hours-total"]
    assert acct.p is None and acct.call == "held" and acct.basis.startswith("exact")
    eq = by["greedy-not-near-equivalent"]
    assert eq.p is not None and "interval of the gap against threshold 0.01" in eq.basis
    host = by["host-sensitive-5min"]
    assert host.basis.startswith("Fisher z") and host.low is not None


def test_support_is_not_by_construction(paper_pkg):
    """What a study's own rows show holds on them by construction; what the data *support* is another
    matter: on a 2 x 2 design some of it is undetermined."""
    doc = observations_from_study(paper_pkg)
    assert "observations" in doc["source"] and "evidence of nothing" in doc["source"]
    res = evaluate_claims(paper_pkg, doc)
    assert all(r.outcome is ClaimOutcome.HELD for r in res)
    assert any(r.call != "held" for r in res)


def test_claims_json_reports_the_support(paper_pkg):
    r = CliRunner().invoke(cli, ["claims", "--package", str(paper_pkg), "--claims",
                                 str(DATA / "paper06_claims.json"), "--json"])
    doc = json.loads(r.output)
    rows = doc["info"]["results"]
    assert rows and all({"call", "low", "high", "p", "p_holm", "call_holm", "basis", "level"} <= set(x) for x in rows)


@pytest.mark.parametrize("text,msg", [
    ('{"schema": "auditkit/claims/v1", "schema": "x", "claims": []}', "appears twice"),
    ('{"schema": "auditkit/claims/v1", "claims": [{"id": "a", "statement": "s", "check": {"kind": "table_value", '
     '"table": "t", "row": {"a": 1}, "column": "c", "value": 1e400, "tol": 0}}]}', "cannot read the claims file"),
])
def test_claims_are_read_strictly(paper_pkg, tmp_path, text, msg):
    p = tmp_path / "claims.json"
    p.write_text(text)
    with pytest.raises(AuditError) as exc:
        evaluate_claims(paper_pkg, p)
    assert msg in exc.value.message.lower() and exc.value.path == str(p)


def test_a_symlinked_or_fifo_claims_file_is_refused_not_followed(paper_pkg, tmp_path):
    pkg = Path(shutil.copytree(paper_pkg, tmp_path / "pkg"))
    outside = tmp_path / "outside.json"
    outside.write_text((DATA / "paper06_claims.json").read_text())
    (pkg / "claims.json").symlink_to(outside)
    with pytest.raises(AuditError) as exc:
        evaluate_claims(pkg)
    assert "cannot read the claims file" in exc.value.message
    (pkg / "claims.json").unlink()
    os.mkfifo(pkg / "claims.json")
    r = CliRunner().invoke(cli, ["claims", "--package", str(pkg)])   # refused at once, never opened for reading
    assert r.exit_code == 2 and "claims.json" in r.output

"""verify's work beside the readers (issue 23, verify speed): the freeze evidence runs in a thread while
the files are read (`verify_package(beside=...)`), the per-document files are parsed once the documents
are in (`checks.prepare`), and neither changes what verify reports."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import auditkit.verify.checks.evaldocs as evaldocs_check
import auditkit.verify.orchestrate as orchestrate
from auditkit.errors import AuditError
from auditkit.findings import Finding
from auditkit.verify import verify_package
from fixtures.synth import SynthShape, make_package

SHIPPED = Path(__file__).resolve().parents[1] / "ancillary"


@pytest.fixture(scope="module")
def pkg(tmp_path_factory) -> Path:
    return make_package(tmp_path_factory.mktemp("beside") / "pkg", SynthShape(configs=4), tables=False)


def test_beside_runs_in_its_own_thread_and_lands_after_the_checks(pkg):
    seen = {}

    def work(report, scanned):
        seen["thread"] = threading.current_thread().name
        seen["target"] = report.target
        report.add(Finding("protocol.json", "evidence-below-required", "", "x", "y", "from beside"))
        report.info["gate g frozen"] = "asserted"

    plain = verify_package(pkg, jobs=2)
    report = verify_package(pkg, jobs=2, beside=work)
    assert seen == {"thread": "auditkit beside", "target": str(pkg)}
    assert report.findings[:-1] == plain.findings and report.findings[-1].message == "from beside"
    assert list(report.info) == [*plain.info, "gate g frozen"]   # its info after verify's own


def test_what_beside_raises_is_raised_after_verify(pkg):
    def work(report, scanned):
        raise AuditError("cannot read the key", path="k.pem")

    with pytest.raises(AuditError, match="cannot read the key"):
        verify_package(pkg, jobs=1, beside=work)


def test_verify_s_own_error_comes_first(tmp_path):
    (tmp_path / "nothing.txt").write_text("not a package")
    ran = []

    def work(report, scanned):
        ran.append(report)
        raise AuditError("late")

    with pytest.raises(AuditError, match="not a package"):
        verify_package(tmp_path, beside=work)
    assert ran == []   # refused before anything started


def test_per_document_files_are_parsed_before_the_checks_run(monkeypatch):
    """The shipped package's 100 eval-docs files: all parsed in `prepare`, none left for the serial checks."""
    phase = {"report": False}
    parsed = {"prepare": 0, "report": 0}
    real_parse, real_report = evaldocs_check.parse_eval_docs, orchestrate._report

    def parse(data, rel):
        parsed["report" if phase["report"] else "prepare"] += 1
        return real_parse(data, rel)

    def report(*args, **kwargs):
        phase["report"] = True
        return real_report(*args, **kwargs)

    monkeypatch.setattr(evaldocs_check, "parse_eval_docs", parse)
    monkeypatch.setattr(orchestrate, "_report", report)
    result = verify_package(SHIPPED, jobs=2)
    assert parsed == {"prepare": 100, "report": 0}
    assert not [f for f in result.findings if f.code.startswith("eval-docs")]


def test_beside_is_done_when_the_scan_raises(pkg, monkeypatch):
    """An error while reading leaves nothing of verify running: the beside work has ended when it is raised."""
    state = {}

    def work(report, scanned):
        time.sleep(0.3)
        state["done"] = True

    def failing_scan(path, **kwargs):
        kwargs["on_started"](False)
        raise AuditError("cannot read x")

    monkeypatch.setattr(orchestrate, "scan_package", failing_scan)
    with pytest.raises(AuditError, match="cannot read x"):
        verify_package(pkg, beside=work)
    assert state == {"done": True}


def test_beside_gets_the_scan_s_hashes_once_the_scan_has_ended(pkg):
    import hashlib

    seen = {}

    def work(report, scanned):
        seen["protocol"] = scanned("protocol.json")
        seen["absent"] = scanned("no/such/file.json")

    verify_package(pkg, jobs=2, beside=work)
    assert seen == {"protocol": hashlib.sha256((pkg / "protocol.json").read_bytes()).hexdigest(), "absent": None}


def test_a_beside_waiting_for_hashes_is_released_when_the_scan_raises(pkg, monkeypatch):
    seen = {}

    def work(report, scanned):
        seen["protocol"] = scanned("protocol.json")     # waits: the scan has not ended yet

    def failing_scan(path, **kwargs):
        kwargs["on_started"](False)
        time.sleep(0.1)
        raise AuditError("cannot read x")

    monkeypatch.setattr(orchestrate, "scan_package", failing_scan)
    with pytest.raises(AuditError, match="cannot read x"):
        verify_package(pkg, beside=work)
    assert seen == {"protocol": None}

"""Shared fixtures. `smoke_local_package`: manifests/smoke.toml run once per session
with the local executor and the real runner (about a minute on 2 cores); tests that
need to change it copy it first.

`pytest_sessionfinish` fails the session when a finding made during it carries a
code that auditkit/codes.py does not catalogue."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


_OWN_BASETEMP: Path | None = None
SESSION_PREFIX = "aktests-"     # not `auditkit-`: no auditkit, old or new, takes it for its scratch


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """The whole session's temporary files live in one fresh directory that the controller removes
    at the end: pytest's (`pytest-of-USER/pytest-N` otherwise), Dask's scratch space, torch.compile's
    cache, and the temporary directory itself: TMPDIR points at `<session>/tmp` for this process,
    the xdist workers and every subprocess the tests start, so whatever the suite's processes make
    lands there, and only there is judged at the end (`pytest_sessionfinish`) — another process on
    the machine writing into the real temporary directory meanwhile is none of the suite's business.
    An explicit --basetemp is kept as given; an xdist worker uses the directory its controller chose."""
    global _OWN_BASETEMP
    if getattr(config, "workerinput", None) is not None or config.option.basetemp:
        return
    import tempfile

    _OWN_BASETEMP = Path(tempfile.mkdtemp(prefix=SESSION_PREFIX))
    config.option.basetemp = str(_OWN_BASETEMP / "t")
    own_tmp = _OWN_BASETEMP / "tmp"
    own_tmp.mkdir()
    os.environ["TMPDIR"] = str(own_tmp)
    tempfile.tempdir = str(own_tmp)
    os.environ["DASK_TEMPORARY_DIRECTORY"] = str(_OWN_BASETEMP / "dask")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(_OWN_BASETEMP / "inductor")   # torch.compile's cache (test_deep)
    # one OpenMP thread per process: under `-n 2`, or beside other work, torch's threads that wait
    # for busy cores stall each other (a --deep re-evaluation ran 20x slower at load 5); the
    # runner's cells already get OMP_NUM_THREADS from their host profile (threads = 1 in the tests)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_unconfigure(config):
    if _OWN_BASETEMP is not None and getattr(config, "workerinput", None) is None:
        shutil.rmtree(_OWN_BASETEMP, ignore_errors=True)


def left_in_temp(tmp: Path) -> list[str]:
    """What the suite's processes left in their temporary directory: everything but auditkit's
    scratch root, which stays by design (holding only its marker and lock: a `cell-*` left in it
    is a leak too)."""
    from auditkit.study.executors import ROOT_LOCK, ROOT_MARKER, scratch_root

    left = []
    for p in sorted(tmp.iterdir()):
        if p.name == scratch_root(tmp).name and p.is_dir() and not p.is_symlink():
            left += [f"{p.name}/{q.name}" for q in sorted(p.iterdir()) if q.name not in (ROOT_MARKER, ROOT_LOCK)]
        else:
            left.append(p.name)
    return left


@pytest.fixture(scope="session")
def smoke_local_package(tmp_path_factory) -> Path:
    """Run once per test session; under pytest-xdist (`-n 2`) once for all workers: the first
    worker to need it runs it under a file lock, the others wait and share it (read-only)."""
    from filelock import FileLock

    from auditkit.study.spec import load_manifest
    from auditkit.study.run import run_protocol

    manifest = load_manifest(REPO / "manifests" / "smoke.toml")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "smoke-shared"
        shared.mkdir(exist_ok=True)
        out = shared / "pkg"
        with FileLock(str(shared / "build.lock")):
            if not (out / "MANIFEST.json").is_file():  # a half-built one (a worker that died) resumes
                outcome = run_protocol(manifest, out, list(manifest.protocol.hosts))
                assert outcome.complete, outcome.waiting_for
        return out
    out = tmp_path_factory.mktemp("smoke") / "pkg"
    outcome = run_protocol(manifest, out, list(manifest.protocol.hosts))
    assert outcome.complete, outcome.waiting_for
    return out


@pytest.fixture
def smoke_copy(smoke_local_package, tmp_path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(smoke_local_package, dest)
    return dest


def pytest_collection_modifyitems(session, config, items):
    """The tests marked slow first (in their order): under `-n 2` the long ones start at once on
    both workers instead of leaving one worker alone with them at the end. The tests that use the
    session's smoke package run on one worker (`--dist loadgroup`, pyproject.toml): the first of
    them builds it (~45 s), and no other worker sits waiting on its lock meanwhile."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    for item in items:
        if "smoke_local_package" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("smoke-package"))


_WORKER_CODES_KEY = "auditkit_emitted_codes"
_codes_from_workers: set[str] = set()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: collect the codes a worker's findings carried (see below)."""
    _codes_from_workers.update(getattr(node, "workeroutput", {}).get(_WORKER_CODES_KEY, ()))


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when a finding made during it carries a code the catalogue lacks
    (auditkit.codes, docs/FINDINGS.md): every code an auditor can see is explained there.
    Under pytest-xdist each worker hands its codes to the controller, which decides.  Fail it
    too when the suite's processes left anything in their own temporary directory (removed next)."""
    from auditkit.codes import uncatalogued
    from auditkit.findings import EMITTED_CODES

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:           # an xdist worker: its exit status does not count
        workeroutput[_WORKER_CODES_KEY] = sorted(EMITTED_CODES)
        return
    missing = uncatalogued(EMITTED_CODES | _codes_from_workers)
    if missing:
        _fail_session(session, "finding codes emitted during the tests but not catalogued in auditkit/codes.py: "
                      + ", ".join(missing) + "\n  add an entry for each (code, family, meaning, what to do), then "
                      "run `python -m auditkit.codes > docs/FINDINGS.md`")
    if _OWN_BASETEMP is not None:
        left = left_in_temp(_OWN_BASETEMP / "tmp")
        if left:
            _fail_session(session, f"the tests left these in their temporary directory ({_OWN_BASETEMP / 'tmp'}): "
                          f"{', '.join(left)}\n  have whatever wrote them clean up, or write under a test's tmp_path")


def _fail_session(session, text: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(text, red=True)
    else:
        sys.stderr.write(text + "\n")
    if session.exitstatus == 0:
        session.exitstatus = 1

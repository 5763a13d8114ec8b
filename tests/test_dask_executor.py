"""The Dask executor: host labels to workers, and the smoke protocol on a LocalCluster."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from auditkit.study.dask_executor import DaskExecutor, slot_for, workers_for_host
from auditkit.errors import AuditError
from auditkit.study.executors import CellTask
from auditkit.package.protocol import Budget
from auditkit.study.spec import load_manifest
from auditkit.study.run import run_protocol

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "manifests" / "smoke.toml"


def test_workers_for_host_matches_name_or_prefix():
    names = {"tcp://a:1": "windows", "tcp://b:2": "windows-1", "tcp://c:3": "linux-0", "tcp://d:4": "windowsx"}
    assert workers_for_host(names, "windows") == ["tcp://a:1", "tcp://b:2"]
    assert workers_for_host(names, "linux") == ["tcp://c:3"]
    assert workers_for_host(names, "macos") == []


def test_slot_follows_device():
    t = CellTask("r", "linux", "s", "c", 1, Budget("steps", 2), {}, device="cuda")
    assert slot_for(t) == {"GPU": 1}
    assert slot_for(CellTask("r", "linux", "s", "c", 1, Budget("steps", 2), {})) == {"CPU": 1}


def test_unreachable_scheduler_is_a_clean_error():
    with pytest.raises(AuditError, match="cannot reach the Dask scheduler"):
        DaskExecutor.connect("tcp://127.0.0.1:1", timeout="2s")


def _cluster():
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {h: {"cls": Nanny, "options": {"name": h, "nthreads": 1, "resources": {"CPU": 1}}}
               for h in ("windows", "linux")}
    return SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                       workers=workers, asynchronous=False, silence_logs=50)


def _rows(pkg: Path) -> set[tuple]:
    from auditkit.package.rows import read_csv_text

    out = []
    for p in sorted((pkg / "remote-results").glob("*.csv")):
        out += [(r["config_id"], r["seed"], r["host"], r["stage"]) for r in read_csv_text(p.read_text())[1]]
    assert len(out) == len(set(out)), "a row was duplicated"
    return set(out)


@pytest.mark.slow
def test_dask_executor_matches_local_and_survives_a_killed_worker(tmp_path, smoke_local_package):
    import psutil
    from distributed import Client

    from auditkit.gates.replay import replay_all
    from auditkit.verify.orchestrate import verify_package

    manifest = load_manifest(SMOKE)
    out = tmp_path / "dask-pkg"
    killed = []

    def kill_a_worker_mid_cell(worker_pids: set[int]):
        # wait for a runner subprocess started by one of *this cluster's* workers, then SIGKILL that worker
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for pid in worker_pids:
                try:
                    kids = psutil.Process(pid).children()
                except psutil.Error:
                    continue
                if any("auditkit.runner.train" in " ".join(k.cmdline()) for k in kids if k.is_running()):
                    psutil.Process(pid).kill()
                    killed.append(pid)
                    return
            time.sleep(0.05)

    with _cluster() as cluster, Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        killer = threading.Thread(target=kill_a_worker_mid_cell, args=(worker_pids,), daemon=True)
        killer.start()
        outcome = run_protocol(manifest, out, list(manifest.protocol.hosts),
                               executor=DaskExecutor(client, retries=2))
        killer.join(timeout=1)
    assert killed, "the test never saw a cell running on a worker"
    assert outcome.complete
    assert _rows(out) == _rows(smoke_local_package)
    assert verify_package(out).ok
    assert all(r.identical for r in replay_all(out))


def test_a_stopped_client_run_cancels_its_running_cell(tmp_path, monkeypatch):
    """SIGTERM to the client while a cell trains on a worker: the generator's cleanup cancels the
    cell, the worker kills its runner and removes the scratch directory."""
    import signal
    import tempfile

    import psutil
    from distributed import Client, Scheduler, SpecCluster, Worker

    from auditkit.study.signals import Stopped, stop_on_signals

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the in-process worker's scratch goes here

    def cells():
        return list((tmp_path / f"auditkit.scratch-{os.getuid()}").glob("cell-*"))
    row = {"config_id": "tiny", "role": "screened", "depth": "1", "aspect_ratio": "16", "head_dim": "16",
           "seq_len": "64", "total_batch_size": "512", "device_batch_size": "8", "matrix_lr": "0.03"}
    task = CellTask("linux-s-tiny-s1", "linux", "s", "tiny", 1, Budget("steps", 10**6), row, timeout=600,
                    settings={"data": "markov:seed=0", "eval_tokens": 1024})
    runners = []
    inside = threading.Event()

    def signal_once_training():
        deadline = time.time() + 120
        while time.time() < deadline:
            for k in psutil.Process().children(recursive=True):
                try:
                    if "auditkit.runner.train" in " ".join(k.cmdline()):
                        runners.append(k)
                except psutil.Error:
                    continue
            if runners:
                if inside.is_set():  # never outside the block: there SIGTERM would end this process
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    workers = {"linux": {"cls": Worker, "options": {"name": "linux", "nthreads": 1, "resources": {"CPU": 1}}}}
    with SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}, workers=workers,
                     asynchronous=False, silence_logs=50) as cluster, Client(cluster) as client:
        watcher = threading.Thread(target=signal_once_training, daemon=True)
        watcher.start()
        with pytest.raises(Stopped):
            with stop_on_signals():
                inside.set()
                try:
                    for _ in DaskExecutor(client).run([task]):
                        pass
                finally:
                    inside.clear()
        watcher.join(timeout=5)
        assert runners, "the cell never started training"
        deadline = time.time() + 30
        while time.time() < deadline and (any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE
                                              for r in runners) or cells()):
            time.sleep(0.1)
        assert not any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in runners)
        assert not cells()


@pytest.fixture(autouse=True, scope="module")
def _no_dask_threads_left_behind():
    """distributed keeps an offload thread pool and an event-loop thread for the life of the process;
    a thread left in this pytest worker would stop later tests (and verify) from forking readers
    (`auditkit.package.procread.available`). Both are ended each time this module's tests are done."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    before = set(threading.enumerate())
    yield
    import distributed.utils as du

    du._offload_executor.shutdown(wait=True)
    # a fresh pool in its place (no thread until it is used): this module's tests may run in more than one
    # stretch in one worker (--dist loadgroup runs the one that uses the smoke package with that group)
    du._offload_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="Dask-Offload")
    for loop, (_, runner) in list(du.LoopRunner._all_loops.items()):   # the event loops clients left running
        if runner is not None:
            runner.stop()
    for t in set(threading.enumerate()) - before:
        t.join(timeout=30)
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads left behind by the Dask tests: {left}"

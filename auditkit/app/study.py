"""Running a study and anchoring its package: `run_cell` (one cell with the bundled runner),
`protocol_run` (a staged study), `protocol_merge` (hosts' outputs joined) and `timestamp`
(a package's content root anchored at TSAs).  A run stopped by a signal is an outcome (its
exit code 128 + the signal), not an error."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from auditkit.app.outcome import Outcome
from auditkit.errors import AuditError

EXIT_OK, EXIT_FINDINGS = 0, 1


def _stopped(command: str, exc, message: str) -> Outcome:
    return Outcome(command, notes=[f"stopped by {exc}: {message}"], exit_code=exc.exit_code)


def run_cell(matrix_path: str, config_id: str, *, seed: int, budget: str, out: str, device: str = "cpu",
             threads: int = 1, timeout: float | None = None, settings: dict | None = None, host: str = "local",
             rng_seed: int | None = None) -> Outcome:
    """Train one cell with the bundled runner: its run row (exit 0 when the run is ok, else 1)."""
    from tabulate import tabulate

    from auditkit.study.runs import run_adhoc
    from auditkit.study.signals import Stopped, stop_on_signals

    try:
        with stop_on_signals():
            summary, row = run_adhoc(matrix_path, config_id, seed=seed, budget=budget, out=Path(out),
                                     device=device, threads=threads, timeout=timeout, settings=settings or {},
                                     host=host, rng_seed=rng_seed)
    except Stopped as exc:
        return _stopped("run", exc, "the running cell was killed and left no row; run the same command again to "
                                    "resume")
    return Outcome("run", lines=[tabulate(list(row.items()), tablefmt="plain")],
                   warnings=[f"error: {summary['error']}"] if summary.get("error") else [],
                   exit_code=EXIT_OK if summary["status"] == "ok" else EXIT_FINDINGS)


def protocol_run(manifest_path: str, out: str, hosts, *, log: Callable[[str], None], **options) -> Outcome:
    """Run every cell of the manifest for `hosts`, stage by stage (`options`: run_study's executor,
    scheduler, wait, tsa_urls, sign_keys, evidence, tsa_timeout); exit 3 when waiting for other hosts."""
    from auditkit.study.run import EXIT_WAITING, run_study
    from auditkit.study.signals import Stopped, stop_on_signals

    try:
        with stop_on_signals():
            outcome = run_study(manifest_path, Path(out), list(hosts), log=log, **options)
    except Stopped as exc:
        return _stopped("protocol run", exc, "the running cell was killed and left no row; run the same command "
                                             "again to resume")
    if not outcome.complete:
        return Outcome("protocol run", exit_code=EXIT_WAITING, lines=[
            f"waiting: {len(outcome.waiting_for)} cell(s) of other hosts are not in {out} yet, e.g.",
            *(f"  {line}" for line in outcome.waiting_for[:5]),
            "merge their outputs (auditkit protocol merge) and run again."])
    state = "was finalized already and is unchanged" if outcome.finalized == "unchanged" else "is finalized"
    return Outcome("protocol run", lines=[f"complete: {outcome.cells_run} cell(s) run now; package {out} {state} "
                                          f"(verify it with: auditkit verify {out})"])


def protocol_merge(sources, into: str, *, log: Callable[[str], None]) -> Outcome:
    """Join host output directories `sources` into `into` (all of the merge or none of it)."""
    from auditkit.study.merge import merge_packages
    from auditkit.study.signals import Stopped, stop_on_signals

    try:
        with stop_on_signals():
            counts = merge_packages([Path(s) for s in sources], Path(into), log=log)
    except Stopped as exc:
        return _stopped("protocol merge", exc, "the target holds all of this merge or none of it")
    return Outcome("protocol merge", lines=[f"merged {len(sources)} output(s) into {into}: {counts['rows']} new "
                                            f"row(s), {counts['files']} file(s)"])


def timestamp(package: str, tsa_urls, *, timeout: float = 30.0) -> Outcome:
    """Anchor the package's content root at the TSAs (proof it existed by then); rebuilds its MANIFEST."""
    from auditkit.evidence.record import timestamp_package
    from auditkit.evidence.tsa import token_info
    from auditkit.package.store import PackageStore
    from auditkit.text import printable

    try:
        root, events = timestamp_package(package, list(tsa_urls), timeout=timeout)
        store = PackageStore(package)   # the tokens just written, read back as every package byte is
        infos = [token_info(store.read_bytes(str(ev.get("token")))) for ev in events]
    except AuditError:
        raise
    except OSError as exc:  # the package directory cannot take the token (read-only, a file where a folder belongs)
        raise AuditError(f"cannot record the timestamp: {exc.strerror or exc}", path=str(exc.filename or package),
                         hint="timestamp a package directory you can write to") from None
    lines = [printable(f"timestamped content root {root} at {info.gen_time.isoformat()} by {info.tsa_name} "
                       f"({ev.get('tsa')}): {ev.get('token')}") for ev, info in zip(events, infos)]
    lines.append("this shows the package's content existed by then; it says nothing of when its rules were frozen")
    return Outcome("timestamp", lines=lines)

"""`auditkit verify`: prove a package is whole, unaltered and what the format says.

One read of every file (`auditkit.package.scan.scan_package`), a read-only view of
what was read (`view.PackageView`), then every registered check over the view
(`checks.CHECKS`: manifest, documents, rows, decisions, derived, checkpoints) —
every finding collected, none stopping at the first.  With `deep`, every
checkpoint named by a row is re-evaluated (torch, `deep.py`).

Work that does not need the large files runs beside the readers, not after them: the documents
are read first and checked (`checks.prepare`) while the readers hash the rest, and `beside` (the
command's freeze-evidence grading) runs in a thread from the moment the readers start, taking the
scan's hashes of the attested files once the scan has ended (`_ScanHashes`).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from auditkit.errors import AuditError
from auditkit.findings import Report
from auditkit.package.manifest import MANIFEST_JSON
from auditkit.package.scan import PackageScan, scan_package

if TYPE_CHECKING:  # the checks are imported beside the readers (in the warm-up), not before them
    from auditkit.verify.view import PackageView

PROGRESS_MIN_BYTES = 256 * 1024 * 1024
SWITCH_INTERVAL = 1e-4


def _warm() -> None:
    """Import the checks and the freeze-evidence report and compile every validator while the
    first files are read.  (Readers need no numpy: a checkpoint's values are checked from their
    bytes, numpy only counting a suspect chunk.)"""
    try:
        import auditkit.evidence.report  # noqa: F401 - what `verify` adds after the checks
        from auditkit.verify.checks import iter_findings  # noqa: F401 - the checks' modules
        from auditkit.verify.fastschema import warm

        warm()
    except Exception:  # noqa: BLE001 - the checks themselves raise it as an AuditError
        pass


def _deep_module():
    """`auditkit.verify.deep`, imported only for --deep; AuditError (exit 2) when it or torch is missing."""
    import importlib.util

    hint = "--deep needs the runner extra: pip install torch==2.13.0"
    if importlib.util.find_spec("torch") is None:
        raise AuditError("--deep re-evaluates checkpoints with torch, which is not installed", hint=hint)
    try:
        import auditkit.verify.deep as deep
    except ImportError as exc:
        raise AuditError(f"--deep is not available: {exc}", hint=hint) from exc
    return deep


PACKAGE_MARKS = (MANIFEST_JSON, "protocol.json")
NOT_A_PACKAGE_HINT = ("give the package's top directory, the one that holds MANIFEST.json and protocol.json "
                      "(SPEC section 1)")


def _refuse_a_directory_that_is_no_package(path: Path) -> None:
    """AuditError at once — before a byte is hashed — for a directory with neither mark of a package."""
    if path.is_dir() and not any(os.path.lexists(path / name) for name in PACKAGE_MARKS):
        raise AuditError("not a package: this directory holds neither MANIFEST.json nor protocol.json",
                         path=str(path), hint=NOT_A_PACKAGE_HINT + "; nothing was read")


def _refuse_an_archive_that_holds_no_package(path, scan: PackageScan) -> None:
    named = set(scan.files) | {rel for _, rel, _ in scan.problems}
    if not any(name in named for name in PACKAGE_MARKS):
        raise AuditError("not a package: the archive holds neither MANIFEST.json nor protocol.json, at its top "
                         "or in a directory below it (an e-print's anc/)", path=str(path),
                         hint="give the archive of a package, or the package directory itself")
    if Path(path).is_file():      # an archive in its authors' layout: refused with the profile command
        from auditkit.package.locate import refuse_foreign_documents

        manifest = scan.files.get(MANIFEST_JSON)
        refuse_foreign_documents(str(path), str(path), None if manifest is None else manifest.content,
                                 "protocol.json" in named)


def verify_package(path: str | Path, *, jobs: int | None = None, deep: bool = False,
                   progress_factory: Callable[[int], object] | None = None, max_members: int | None = None,
                   max_bytes: int | None = None, processes: bool | None = None, deep_threads: int | None = None,
                   say: Callable[[str], None] | None = None, say_tty: bool = False,
                   beside: Callable[[Report, Callable[[str], str | None]], None] | None = None) -> Report:
    """Every check of a package (directory or archive). Raises AuditError when it cannot run.

    `progress_factory(total_bytes)` may return a tqdm-like bar (or None) once
    the size of the package is known.  `jobs` files are read at a time; a large
    directory is read in `jobs` forked processes, so that the checks of this
    process never hold a reader back (`processes`: force True/False; None: choose).
    With `deep`: torch runs `deep_threads` threads (None: the free cores), and `say(line)` (if
    given) hears which, and the progress through the checkpoints (every one when `say_tty`).

    `beside(report, scanned_sha256)`, when given, is more work on the package (the freeze evidence,
    which reads its own few files): it runs in a thread while the files are read, into a report of its
    own whose findings and info are added after the checks' (as if it had run after them); what it
    raises is raised once verify's own work is done, unless verify raised first. `scanned_sha256(rel)`
    is the sha256 of the file `rel` as the scan read it, waiting for the scan to end, or None where the
    scan read no such regular file (or failed): the package attestation's subjects are not hashed twice.
    """
    _refuse_a_directory_that_is_no_package(Path(path))
    deep_mod = _deep_module() if deep else None
    warm: list[threading.Thread] = []
    extra = _Beside(beside, str(path)) if beside is not None else None

    def started(in_processes: bool) -> None:   # the warm-up runs beside the readers (after any fork)
        warm.append(threading.Thread(target=_warm, name="auditkit-warm", daemon=True))
        warm[0].start()
        if extra is not None:
            extra.start()

    bar = None

    def total_hint(total: int) -> None:
        nonlocal bar
        bar = progress_factory(total) if progress_factory else None

    def progress(k: int) -> None:
        if bar is not None:
            bar.update(k)

    views: list["PackageView"] = []

    def on_documents(scan: PackageScan) -> None:
        from auditkit.verify.view import PackageView

        for t in warm:
            t.join()
        from auditkit.verify.checks import prepare

        views.append(PackageView(scan))
        views[0].prefetch()
        prepare(views[0])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)  # readers (or the pipes from reader processes) get the GIL back at once
    try:
        scan = scan_package(path, jobs=jobs, keep_checkpoints=deep, progress=progress if progress_factory else None,
                            total_hint=total_hint, max_members=max_members, max_bytes=max_bytes,
                            on_documents=on_documents, processes=processes, on_started=started)
    except BaseException:
        if extra is not None:
            extra.hashes.publish(None)
            extra.join()          # nothing left reading the package once verify has raised
        raise
    finally:
        sys.setswitchinterval(interval)
        if bar is not None:
            bar.close()
    if extra is not None:
        extra.hashes.publish(scan)
    for t in warm:
        t.join()
    try:
        from auditkit.verify.view import PackageView

        _refuse_an_archive_that_holds_no_package(path, scan)
        view = views[0] if views else PackageView(scan)
        report = _report(path, view, deep_mod, deep_threads, say, say_tty)
        if scan.found_at:
            report.info["found_at"] = scan.found_at
        if extra is not None:
            extra.add_to(report)
        return report
    finally:
        if extra is not None:
            extra.join()
        for fs in scan.files.values():
            if fs.spool is not None:
                fs.spool.close()
                fs.spool = None


class _ScanHashes:
    """`scanned_sha256` for `beside`: asked for a file, it waits until the scan has ended (or failed)."""

    def __init__(self):
        self._done = threading.Event()
        self._files: dict = {}

    def publish(self, scan: PackageScan | None) -> None:
        if scan is not None:
            self._files = scan.files
        self._done.set()

    def __call__(self, rel: str) -> str | None:
        self._done.wait()
        fs = self._files.get(rel)
        return None if fs is None else fs.sha256


class _Beside:
    """`beside(report, scanned_sha256)` in a thread of its own (started once the readers run, after any fork)."""

    def __init__(self, work: Callable[[Report, Callable[[str], str | None]], None], target: str):
        self.work = work
        self.report = Report("verify", target)
        self.hashes = _ScanHashes()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="auditkit beside", daemon=True)

    def _run(self) -> None:
        try:
            self.work(self.report, self.hashes)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread by add_to
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        if self.thread.ident is not None:
            self.thread.join()

    def add_to(self, report: Report) -> None:
        """The work's findings and info after `report`'s own (started now if the scan never started it)."""
        if self.thread.ident is None:
            self.start()
        self.join()
        if self.error is not None:
            raise self.error
        report.extend(self.report.findings)
        report.info.update(self.report.info)


def _report(path, view: "PackageView", deep_mod, deep_threads=None, say=None, say_tty=False) -> Report:
    from auditkit.verify.checks import iter_findings

    report = Report("verify", str(path))
    report.extend(iter_findings(view))
    if view.json(MANIFEST_JSON) is not None:
        report.info["root (recorded)"] = view.recorded_root
        report.info["root (of the files)"] = view.files_root()
    report.checked = {"files": len(view.files), "run rows": len(view.runs),
                      "checkpoints": sum(1 for f in view.files.values() if f.checkpoint is not None)}
    if deep_mod is not None:
        done = 0
        read = deep_mod.package_data_reader(path, view.files)
        named = list(view.named_checkpoints())
        line = deep_mod.use_threads(deep_threads)
        say = say or (lambda text: None)
        say(line)
        progress = deep_mod.DeepProgress(len(named), say, tty=say_tty)
        for i, (fs, row, ck) in enumerate(named, 1):
            progress(i, ck)
            data = fs.read_spool()      # one checkpoint in memory at a time
            if data is None:
                continue
            report.extend(deep_mod.reevaluate_checkpoint(data, row, ck, read=read))
            done += 1
        report.checked["re-evaluated"] = done
    return report

"""Record evidence while a study is written: the writer's side of `level`.

`Recorder` is what a package writer (the protocol runner) calls at each step;
with no TSA and no key it still keeps the event log, so every new package is at
least `chained`.

    rec = Recorder(out, tsa_urls=["https://tsa.example/tsr"], signers=[attest.load_signer("k.pem")])
    rec.frozen("stage2", "preanalysis/stage2.rules.json")   # event, tokens over the rules and the log head
    rec.cell_started(run_id, host, stage, config_id, seed)
    rec.row_landed(run_id, "remote-results/linux_stage2_summary.csv", row)
    rec.decided("stage2", "analysis/stage2_decision.json")  # event, tokens, signed decision attestation
    rec.finalized()                                          # root event, tokens, signed package attestation
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from auditkit import clock as clocks
from auditkit.clock import Clock, utc_now
from auditkit.errors import AuditError
from auditkit.evidence import EVENTS_PATH, attest, tsa
from auditkit.evidence.canonical import row_hash, sha256_hex
from auditkit.evidence.events import Event, EventLog
from auditkit.evidence.model import (PACKAGE_ATTESTATION, EVENT_SUBJECT_PREFIX, content_files, content_root,
                                     decision_attestation_path)
from auditkit.evidence.seeds import anchored_seed
from auditkit.package.store import PackageStore, loads_strict
from auditkit.text import printable

MAX_ACCURACY_WAIT = 10.0


class Recorder:
    """Append evidence for one package directory; every step is safe to repeat after a crash."""

    def __init__(self, package: str | Path, *, tsa_urls: Sequence[str] = (), signers: Sequence = (),
                 timeout: float = 30.0, clock: Clock = utc_now,
                 log: Callable[[str], None] = lambda msg: None):
        self.package = Path(package)
        self.tsa_urls = list(tsa_urls)
        self.signers = list(signers)
        self.timeout = timeout
        self.log = log
        self.events = EventLog(self.package, clock=clock, repair=True, log=log)

    # --- reading back ----------------------------------------------------------------
    def logged(self) -> list[Event]:
        from auditkit.evidence.events import verify_chain

        p = self.package / EVENTS_PATH
        return verify_chain(self._read(EVENTS_PATH))[0] if p.exists() else []

    def _read(self, rel: str) -> bytes:
        """The bytes of the package file `rel`, read back through the store (no link followed, capped).
        A store per read: the study writes into the package between two reads."""
        store = PackageStore(self.package)
        try:
            return store.read_bytes(rel)
        finally:
            store.close()

    # --- steps --------------------------------------------------------------------------
    def frozen(self, gate: str, rules_rel: str) -> None:
        """The gate's rules are frozen: log it once, then timestamp the rules and the log's head.

        Repeating it (a resumed run) logs nothing new, and asks only the TSAs
        whose tokens are missing (a TSA that failed last time).
        """
        data = self._read(rules_rel)
        sha = sha256_hex(data)
        events = self.logged()
        ev = next((e for e in events if e.type == "rules-frozen" and e.get("gate") == gate
                   and e.get("sha256") == sha), None)
        if ev is None:
            ev = self.events.append("rules-frozen", gate=gate, path=rules_rel, sha256=sha)
        infos = self._timestamp(rules_rel, data, f"{gate}.rules", self._missing(events, rules_rel))
        self._timestamp_event(ev, self._missing(events, f"{EVENT_SUBJECT_PREFIX}{ev.seq}"))
        self._wait_out(infos)

    def cell_started(self, run_id: str, host: str, stage: str, config_id: str, seed: int) -> None:
        self.events.append("cell-started", run_id=run_id, host=host, stage=stage, config_id=config_id, seed=int(seed))

    def row_landed(self, run_id: str, csv_rel: str, row: dict) -> None:
        self.events.append("row-landed", run_id=run_id, path=csv_rel, row_sha256=row_hash(row))

    def decided(self, gate: str, decision_rel: str) -> None:
        """The gate is decided: log it, timestamp decision and log head, sign the decision's attestation."""
        data = self._read(decision_rel)
        sha = sha256_hex(data)
        events = self.logged()
        ev = next((e for e in events if e.type == "gate-decided" and e.get("gate") == gate), None)
        if ev is None:
            ev = self.events.append("gate-decided", gate=gate, path=decision_rel, sha256=sha)
        self._timestamp(decision_rel, data, f"{gate}.decision", self._missing(events, decision_rel))
        self._timestamp_event(ev, self._missing(events, f"{EVENT_SUBJECT_PREFIX}{ev.seq}"))
        rel = decision_attestation_path(gate)
        if self.signers and not (self.package / rel).exists():
            stmt = attest.decision_statement(decision_rel, sha, loads_strict(data, decision_rel))
            attest.write_envelope(self.package, rel, stmt, self.signers)

    def anchor_seeds(self, stage: str, rules_rel: str) -> str:
        """Bind `stage`'s seeds to the first token over `rules_rel`; return the anchor (sha256 of the token file).

        Logged once per stage (a `seeds-anchored` event); later calls return the
        recorded anchor. Raises AuditError when the rules carry no token (the
        stage asks for anchored seeds, so a TSA is required).
        """
        events = self.logged()
        for e in events:
            if e.type == "seeds-anchored" and e.get("stage") == stage:
                return str(e.get("token_sha256"))
        for e in events:
            if e.type == "timestamped" and e.get("subject") == rules_rel:
                self.events.append("seeds-anchored", stage=stage, token=e.get("token"),
                                   token_sha256=e.get("token_sha256"))
                return str(e.get("token_sha256"))
        raise AuditError(f"stage {stage} derives its seeds from a freeze token, and {rules_rel} has none",
                         path=str(self.package), hint="give --tsa URL so that the freeze is timestamped")

    def finalized(self) -> str:
        """Log the content root, timestamp that line, sign the package attestation; return the root."""
        from auditkit.package.manifest import list_package_files
        from auditkit.package.hashing import sha256_file

        files = [(p, sha256_file(self.package / p)) for p in content_files(list_package_files(self.package))]
        root = content_root(files)
        ev = self.events.append("package-finalized", root=root)
        self._timestamp_event(ev)
        if self.signers:
            stmt = attest.package_statement(files, root, ev.line_sha256)
            attest.write_envelope(self.package, PACKAGE_ATTESTATION, stmt, self.signers, replace=True)
        return root

    # --- helpers -------------------------------------------------------------------------
    def _missing(self, events: Sequence[Event], subject: str) -> list[str]:
        """The TSAs that have no token over `subject` in the log yet."""
        have = {e.get("tsa") for e in events if e.type == "timestamped" and e.get("subject") == subject}
        return [u for u in self.tsa_urls if u not in have]

    def _timestamp(self, subject: str, data: bytes, label: str, urls: Sequence[str] | None = None) -> list:
        urls = self.tsa_urls if urls is None else list(urls)
        if not urls:
            return []
        evs = tsa.record_timestamps(self.package, self.events, subject=subject, data=data, urls=urls,
                                    label=label, timeout=self.timeout)
        infos = [tsa.token_info(self._read(str(e.get("token")))) for e in evs]
        for url, info in zip(urls, infos):
            self.log(printable(f"timestamped {subject} at {info.gen_time.isoformat()} by {info.tsa_name} ({url})"))
        return infos

    def _timestamp_event(self, ev: Event, urls: Sequence[str] | None = None) -> None:
        self._timestamp(f"{EVENT_SUBJECT_PREFIX}{ev.seq}", ev.raw, f"events.{ev.seq}", urls)

    def _wait_out(self, infos: Sequence) -> None:
        """Sleep until this machine's clock is past every token's genTime + accuracy (capped at 10 s).

        So every row started afterwards is provably later than the token, even
        when the TSA's clock runs a little ahead of ours.
        """
        if not infos:
            return
        latest = max(i.latest_time for i in infos)
        wait = (latest - clocks.now()).total_seconds()
        if wait > MAX_ACCURACY_WAIT:
            self.log(f"warning: the TSA's time is {wait:.1f} s ahead of this machine's clock; "
                     "rows may look older than the freeze token")
            wait = MAX_ACCURACY_WAIT
        if wait > 0:
            time.sleep(wait + 0.001)


def seed_for(anchor_sha256: str, stage: str, seed: int) -> int:
    """The run seed of a cell of an anchored stage (`seeds.anchored_seed`)."""
    return anchored_seed(anchor_sha256, stage, int(seed))


def timestamp_package(package: str | Path, tsa_urls: Sequence[str], *, timeout: float = 30.0,
                      log: Callable[[str], None] = lambda msg: None) -> tuple[str, list]:
    """`auditkit timestamp`: anchor an existing package's content root at every TSA; rebuild its MANIFEST.

    The token is over the ASCII hex content root (every file but the MANIFEST
    and evidence/), so it shows the package's content existed by the token's
    time — no more: not when its rules were frozen. Returns (root, events).
    Raises AuditError when `package` is not a package directory or a TSA fails.
    """
    from auditkit.evidence.model import CONTENT_ROOT_SUBJECT
    from auditkit.package.hashing import sha256_file
    from auditkit.package.manifest import build_manifest, list_package_files

    package = Path(package)
    if not (package / "protocol.json").is_file():
        raise AuditError("not a package directory (no protocol.json)", path=str(package))
    if not tsa_urls:
        raise AuditError("no TSA given", hint="give --tsa URL (repeatable)")
    for rel in ("evidence", "evidence/timestamps"):  # refused before any TSA is asked, not after
        if (package / rel).is_symlink() or (package / rel).exists() and not (package / rel).is_dir():
            raise AuditError(f"{rel} is not a directory: the token cannot be stored", path=str(package),
                             hint="a package keeps its evidence in the folder evidence/ (docs/SPEC.md)")
    log_ = EventLog(package, log=log)
    log_.check_appendable()   # a log that cannot take the event: refused before any token is stored
    files = [(p, sha256_file(package / p)) for p in content_files(list_package_files(package))]
    root = content_root(files)
    events = tsa.record_timestamps(package, log_, subject=CONTENT_ROOT_SUBJECT,
                                   data=root.encode("ascii"), urls=list(tsa_urls), label="package-root",
                                   timeout=timeout)
    build_manifest(package)
    return root, events

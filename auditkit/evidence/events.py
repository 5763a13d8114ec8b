"""The append-only, hash-chained event log `evidence/events.jsonl`.

One event per line; a line is the canonical JSON (see `canonical`) of an
object with

- `seq`: 0 for the first line, then +1 per line;
- `prev`: the sha256 (hex) of the previous line's bytes, the `\\n` excluded
  (64 zeros on the first line);
- `time`: UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (the writer's clock: a claim);
- `type` and the fields that type requires (`EVENT_FIELDS`).

So the sha256 of the last line names the whole log (its *head*), and changing,
inserting or dropping any line breaks every later `prev` unless all of them are
rewritten; what catches a rewritten tail is evidence taken at the time
(a timestamp over a later head, a signed attestation over the file).

Appending is crash-safe: a line is written with one `write` of its bytes and
`\\n` on a file opened for appending, then fsynced, under an exclusive lock, so
hosts sharing a package directory never interleave.  A process killed mid-write
leaves a last line without `\\n`; `verify_chain` reports it (`event-log-torn`),
and `EventLog.append` refuses to extend such a log unless asked to repair it,
which cuts the torn bytes off and records that it did (`log-repaired`, with the
bytes' count and sha256).
"""

from __future__ import annotations

import os
import re
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from auditkit.clock import Clock, utc_now
from auditkit.errors import AuditError
from auditkit.evidence import EVENTS_PATH
from auditkit.evidence.canonical import canonical_json, sha256_hex
from auditkit.findings import Finding
from auditkit.errors import PackageDefect
from auditkit.package.store import loads_strict, unsafe_reason

try:  # POSIX; elsewhere a single writer per log is assumed
    import fcntl
except ImportError:  # pragma: no cover - not on the CI platform
    fcntl = None

GENESIS = "0" * 64

#: required fields of each event type (besides seq, prev, time, type); extra fields are kept
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "rules-frozen": ("gate", "path", "sha256"),
    "cell-started": ("run_id", "host", "stage", "config_id", "seed"),
    "row-landed": ("run_id", "path", "row_sha256"),
    "gate-decided": ("gate", "path", "sha256"),
    "package-finalized": ("root",),
    "timestamped": ("subject", "sha256", "token", "token_sha256", "tsa"),
    "seeds-anchored": ("stage", "token", "token_sha256"),
    "log-repaired": ("dropped_bytes", "dropped_sha256"),
}
COMMON_FIELDS = ("seq", "prev", "time", "type")

#: what each known field holds: "text" (a string), "int" (an integer), "sha256" (64 lowercase hex
#: digits), "path" (a package path: relative, no '..', at most MAX_PATH_BYTES) or "subject" (a
#: package path, `content-root`, or `evidence/events.jsonl#<seq>`); a line whose field holds
#: anything else is not a valid event (a list where a path belongs must not stop the check)
FIELD_KINDS: dict[str, str] = {
    "gate": "text", "path": "path", "sha256": "sha256", "run_id": "text", "host": "text", "stage": "text",
    "config_id": "text", "seed": "int", "row_sha256": "sha256", "root": "sha256", "subject": "subject",
    "token": "path", "token_sha256": "sha256", "tsa": "text", "chain": "path", "gen_time": "text",
    "dropped_bytes": "int", "dropped_sha256": "sha256",
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_PATH_BYTES = 4096   # PATH_MAX: a longer name cannot be a file of the package
MAX_NAME_BYTES = 255    # NAME_MAX: the longest one component can be


@dataclass(frozen=True)
class Event:
    """One parsed line: its fields, its 1-based line number and the sha256 of its bytes."""

    seq: int
    prev: str
    time: str
    type: str
    fields: dict = field(compare=False)
    line: int = 0
    line_sha256: str = ""
    raw: bytes = field(default=b"", compare=False, repr=False)  # the line's bytes, without the newline

    def get(self, key: str, default=None):
        return self.fields.get(key, default)


def event_line(seq: int, prev: str, time: str, type: str, fields: dict) -> bytes:
    """The canonical line (without `\\n`) of one event. Raises ValueError on an unknown type or missing field."""
    if type not in EVENT_FIELDS:
        raise ValueError(f"unknown event type {type!r}")
    missing = [k for k in EVENT_FIELDS[type] if k not in fields]
    if missing:
        raise ValueError(f"event {type} needs {', '.join(missing)}")
    clash = [k for k in COMMON_FIELDS if k in fields]
    if clash:
        raise ValueError(f"event fields may not be named {', '.join(clash)}")
    return canonical_json({**fields, "seq": seq, "prev": prev, "time": time, "type": type})


def _parse_line(raw: bytes, line_no: int) -> tuple[Event | None, str | None]:
    """(event, None) or (None, why the line is not a valid event)."""
    try:
        doc = loads_strict(raw, "evidence/events.jsonl")
    except PackageDefect as exc:
        return None, f"not strict JSON: {exc.finding.message}"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    try:
        canon = canonical_json(doc)
    except ValueError as exc:
        return None, str(exc)
    if canon != raw:
        return None, "not in canonical form (sorted keys, no spaces, UTF-8)"
    seq, prev, time, type_ = (doc.get(k) for k in COMMON_FIELDS)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return None, "seq is not a non-negative integer"
    if not (isinstance(prev, str) and len(prev) == 64 and all(c in "0123456789abcdef" for c in prev)):
        return None, "prev is not a sha256 hex digest"
    if not isinstance(time, str) or not time.endswith("Z"):
        return None, "time is not a UTC timestamp"
    if type_ not in EVENT_FIELDS:
        return None, f"unknown event type {type_!r}"
    missing = [k for k in EVENT_FIELDS[type_] if k not in doc]
    if missing:
        return None, f"event {type_} lacks {', '.join(missing)}"
    for k in sorted(doc):
        why = field_problem(k, doc[k])
        if why:
            return None, f"field {k} {why}"
    fields = {k: v for k, v in doc.items() if k not in COMMON_FIELDS}
    return Event(seq, prev, time, type_, fields, line_no, sha256_hex(raw), raw), None


def field_problem(name: str, value) -> str:
    """Why `value` cannot be the event field `name` ("" when it can, or the field is not a known one)."""
    kind = FIELD_KINDS.get(name)
    if kind is None:
        return ""
    if kind == "int":
        return "" if isinstance(value, int) and not isinstance(value, bool) else f"is {_kind(value)}, not an integer"
    if not isinstance(value, str):
        return f"is {_kind(value)}, not a string"
    if kind == "sha256":
        return "" if _HEX64.fullmatch(value) else "is not a sha256 (64 lowercase hex digits)"
    if kind == "subject":
        if value == "content-root":
            return ""
        if value.startswith(EVENTS_PATH + "#"):
            seq = value[len(EVENTS_PATH) + 1:]
            return "" if 0 < len(seq) <= 18 and seq.isascii() and seq.isdigit() else \
                f"names no line of the log (after '#': ASCII digits, not {seq[:40]!r})"
    if kind in ("path", "subject"):
        return path_problem(value)
    return ""


def path_problem(rel: str) -> str:
    """Why `rel` cannot name a file of a package ("" when it can): unsafe, or longer than a file name can be."""
    why = unsafe_reason(rel)
    if why:
        return f"is not a package path ({why})"
    if len(rel.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES or \
            any(len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in rel.split("/")):
        return f"is not a package path (longer than a file name can be: {len(rel)} characters)"
    return ""


def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def verify_chain(data: bytes, path: str = EVENTS_PATH) -> tuple[list[Event], list[Finding]]:
    """Every valid event of a log's bytes, and a finding for every way the log does not hold.

    Findings: `event-log-torn` (the last line has no `\\n`: a write that did not
    finish), `event-line-invalid` (not a canonical event line), `event-seq-broken`
    (a `seq` out of order), `event-chain-broken` (a `prev` that is not the hash
    of the line before). Every line is checked; none stops the check.
    """
    events: list[Event] = []
    findings: list[Finding] = []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the log ends with a newline
    if tail:
        findings.append(Finding(path, "event-log-torn", f"line {len(lines) + 1}", "a line ending with \\n",
                                f"{len(tail)} byte(s) without one",
                                "a write did not finish (a crash?): the line is not part of the log; "
                                "a writer repairs it with a log-repaired event, never by editing"))
    prev_hash = GENESIS
    for i, raw in enumerate(lines):
        line_no = i + 1
        ev, why = _parse_line(raw, line_no)
        if ev is None:
            findings.append(Finding(path, "event-line-invalid", f"line {line_no}", "one canonical event",
                                    why or "", "the log was edited or written by another tool"))
        else:
            if ev.seq != i:
                findings.append(Finding(path, "event-seq-broken", f"line {line_no}", f"seq {i}", f"seq {ev.seq}",
                                        "a line was inserted, dropped or moved"))
            if ev.prev != prev_hash:
                findings.append(Finding(path, "event-chain-broken", f"line {line_no}",
                                        f"prev {prev_hash[:16]}... (the hash of line {i})" if i else
                                        f"prev {GENESIS[:16]}... (the first line)",
                                        f"prev {ev.prev[:16]}...",
                                        "the line before was changed, inserted or removed after this one was written"))
            events.append(ev)
        prev_hash = sha256_hex(raw)
    return events, findings


def head_hash(events: Sequence[Event]) -> str:
    """The sha256 of the last line (the log's head), or the genesis value of an empty log."""
    return events[-1].line_sha256 if events else GENESIS


# --- writing --------------------------------------------------------------------

class EventLog:
    """Append events to a package's `evidence/events.jsonl` (created on the first append)."""

    def __init__(self, package: str | Path, *, clock: Clock = utc_now, repair: bool = False,
                 log: Callable[[str], None] = lambda msg: None):
        self.package = Path(package)
        self.path = self.package / EVENTS_PATH
        self.clock = clock
        self.repair = repair
        self.log = log

    def append(self, type: str, **fields) -> Event:
        """Append one event; return it. Raises AuditError on a log that cannot be extended."""
        for d in (self.package / "evidence",):  # a link planted in the package is never written through
            if d.is_symlink() or (d.exists() and not d.is_dir()):
                raise AuditError(f"{d.name} is not a directory of the package", path=str(d),
                                 hint="the event log lives in the package's own folder evidence/; "
                                      "find out why it is a link or a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0), 0o644)
        except OSError as exc:
            raise AuditError(f"cannot open the event log: {exc.strerror}", path=str(self.path),
                             hint="the event log must be a regular file of the package (not a link), "
                                  "in a directory you can write") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise AuditError("the event log is not a regular file", path=str(self.path),
                             hint="find out why it is a FIFO or device; the log cannot be extended")
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev = self._tail(fd)
            line = event_line(seq, prev, self.clock(), type, fields)
            _write_all(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        ev, _ = _parse_line(line, seq + 1)
        assert ev is not None
        return ev

    def check_appendable(self) -> None:
        """Raise the AuditError `append` would raise (a torn last line without repair, an edited
        last line), changing nothing: a command that writes files for an event first asks this."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditError(f"the event log cannot be opened: {exc.strerror}", path=str(self.path),
                             hint="evidence/events.jsonl is a regular file of the package") from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                return
            last, start, torn = _last_lines(fd, size)
            if torn is not None and not self.repair:
                raise AuditError(f"the event log ends with a torn line ({len(torn)} bytes without a newline)",
                                 path=str(self.path),
                                 hint="a write was cut off by a crash; resume with repair allowed "
                                      "(the protocol runner does) to drop it and record that it did")
            if torn is None and last is not None:
                self._checked(last, start)
        finally:
            os.close(fd)

    def _tail(self, fd: int) -> tuple[int, str]:
        """(next seq, hash of the last line) of the open log; cuts a torn tail only when repairing."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS
        last, start, torn = _last_lines(fd, size)
        if torn is not None:
            if not self.repair:
                raise AuditError(f"the event log ends with a torn line ({len(torn)} bytes without a newline)",
                                 path=str(self.path),
                                 hint="a write was cut off by a crash; resume with repair allowed "
                                      "(the protocol runner does) to drop it and record that it did")
            os.ftruncate(fd, size - len(torn))
            os.fsync(fd)
            if last is None:
                seq, prev = 0, GENESIS
            else:
                seq, prev = self._checked(last, start)
            line = event_line(seq, prev, self.clock(), "log-repaired",
                              {"dropped_bytes": len(torn), "dropped_sha256": sha256_hex(torn)})
            _write_all(fd, line + b"\n")
            self.log(f"event log: dropped a torn last line ({len(torn)} bytes) and recorded it")
            return seq + 1, sha256_hex(line)
        assert last is not None
        return self._checked(last, start)

    def _checked(self, last: bytes, start: int) -> tuple[int, str]:
        ev, why = _parse_line(last, 0)
        if ev is None:
            raise AuditError(f"the event log's last line (at byte {start}) is not a valid event: {why}",
                             path=str(self.path), hint="the log was edited by hand; it cannot be extended")
        return ev.seq + 1, sha256_hex(last)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _last_lines(fd: int, size: int, chunk: int = 1 << 16) -> tuple[bytes | None, int, bytes | None]:
    """(last complete line or None, its start offset, torn tail or None), reading backwards from the end."""
    buf = b""
    pos = size
    while True:
        step = min(chunk, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        nl = buf.rfind(b"\n")
        if nl < 0:
            if pos == 0:
                return None, 0, buf  # one torn line and no complete one
            continue
        prev_nl = buf.rfind(b"\n", 0, nl)
        if prev_nl >= 0 or pos == 0:
            return buf[prev_nl + 1:nl], pos + prev_nl + 1, (buf[nl + 1:] or None)


# --- order of events ------------------------------------------------------------

def order_findings(events: Sequence[Event], gate: str, rules_sha: str,
                   input_rows: Mapping[str, Sequence[str]], rules_path: str = "") -> list[Finding]:
    """Did every input row of `gate` land after the gate's rules were frozen, as the log says?

    `input_rows` maps each input CSV (package path) to the canonical hashes
    (`canonical.row_hash`) of its rows in file order. Findings:
    `rules-not-frozen-in-log` (no freeze event for the gate), `rules-changed-after-freeze`
    (no freeze event names these rules' sha256), `rules-refrozen` (the gate
    was frozen more than once with different rules), `row-not-in-log` (a row
    that never landed: added to the CSV by other means), `row-landed-before-freeze`,
    `cell-started-before-freeze`, `landed-row-missing` (a row that landed and
    is no longer in the CSV).
    """
    out: list[Finding] = []
    rules_path = rules_path or f"rules of gate {gate}"
    freezes = [e for e in events if e.type == "rules-frozen" and e.get("gate") == gate]
    if not freezes:
        return [Finding(EVENTS_PATH, "rules-not-frozen-in-log", "", f"a rules-frozen event for gate {gate}", "none",
                        "the log does not record when these rules were frozen")]
    matching = [e for e in freezes if e.get("sha256") == rules_sha]
    if not matching:
        out.append(Finding(rules_path, "rules-changed-after-freeze", f"{EVENTS_PATH} line {freezes[0].line}",
                           f"sha256 {freezes[0].get('sha256')} (frozen)", f"sha256 {rules_sha}",
                           "the rules file is not the one whose freeze the log records"))
    others = sorted({e.get("sha256") for e in freezes} - {rules_sha})
    if matching and others:
        out.append(Finding(rules_path, "rules-refrozen", f"{EVENTS_PATH} lines "
                           + ", ".join(str(e.line) for e in freezes), "one set of rules per gate",
                           f"{len(others) + 1} different rules frozen",
                           "the gate was frozen again with other rules"))
    freeze = (matching or freezes)[0]
    started: dict[str, list[Event]] = defaultdict(list)
    landed: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        if e.type == "cell-started":
            started[e.get("run_id")].append(e)
        elif e.type == "row-landed" and e.get("path") in input_rows:
            landed[(e.get("path"), e.get("row_sha256"))].append(e)
    for path, hashes in input_rows.items():
        for i, h in enumerate(hashes, 1):
            queue = landed.get((path, h))
            if not queue:
                out.append(Finding(path, "row-not-in-log", f"row {i}", "a row-landed event with its hash",
                                   f"row sha256 {h[:16]}... never landed",
                                   "this row was not written by the run the log records"))
                continue
            ev = queue.pop(0)
            if ev.seq < freeze.seq:
                out.append(Finding(path, "row-landed-before-freeze", f"row {i}",
                                   f"landed after {EVENTS_PATH} line {freeze.line} (rules of gate {gate} frozen)",
                                   f"landed at line {ev.line}", "the data existed before its rules were frozen"))
            early = [s for s in started.get(ev.get("run_id"), []) if s.seq < freeze.seq]
            if early:
                out.append(Finding(path, "cell-started-before-freeze", f"row {i}",
                                   f"started after {EVENTS_PATH} line {freeze.line}",
                                   f"cell-started at line {early[0].line}",
                                   "the run began before its rules were frozen"))
    for (path, h), rest in sorted(landed.items()):
        for ev in rest:
            out.append(Finding(path, "landed-row-missing", f"{EVENTS_PATH} line {ev.line}",
                               f"row sha256 {h[:16]}... (run {ev.get('run_id')}) in the CSV", "no such row",
                               "a row that landed was removed or changed afterwards"))
    return out


def decision_findings(events: Sequence[Event], gate: str, decision_sha: str, decision_path: str) -> list[Finding]:
    """The decision file is the one the log recorded (`decision-not-in-log`, `decision-changed-after-log`)."""
    decided = [e for e in events if e.type == "gate-decided" and e.get("gate") == gate]
    if not decided:
        return [Finding(decision_path, "decision-not-in-log", "", f"a gate-decided event for gate {gate}", "none",
                        "the log does not record this decision")]
    if all(e.get("sha256") != decision_sha for e in decided):
        return [Finding(decision_path, "decision-changed-after-log", f"{EVENTS_PATH} line {decided[0].line}",
                        f"sha256 {decided[0].get('sha256')}", f"sha256 {decision_sha}",
                        "the decision file is not the one the log recorded")]
    return []

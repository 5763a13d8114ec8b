"""The hash-chained event log: append, crash safety, chain checks, order of rows and freeze."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditkit.errors import AuditError
from auditkit.evidence import EVENTS_PATH
from auditkit.evidence.canonical import canonical_json, row_hash, sha256_hex
from auditkit.evidence.events import (GENESIS, EventLog, decision_findings, event_line, order_findings,
                                      verify_chain)


def codes(findings) -> list[str]:
    return sorted(f.code for f in findings)


def _log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path, clock=lambda: "2026-01-01T00:00:00.000000Z")


def _sample(tmp_path: Path) -> bytes:
    log = _log(tmp_path)
    log.append("rules-frozen", gate="g", path="preanalysis/g.rules.json", sha256="a" * 64)
    log.append("cell-started", run_id="r1", host="h", stage="s", config_id="c", seed=1)
    log.append("row-landed", run_id="r1", path="remote-results/h_s_summary.csv", row_sha256="b" * 64)
    log.append("gate-decided", gate="g", path="analysis/g_decision.json", sha256="c" * 64)
    return (tmp_path / EVENTS_PATH).read_bytes()


def test_lines_are_canonical_and_chained(tmp_path):
    data = _sample(tmp_path)
    lines = data.split(b"\n")[:-1]
    assert len(lines) == 4
    docs = [json.loads(x) for x in lines]
    assert [d["seq"] for d in docs] == [0, 1, 2, 3]
    assert docs[0]["prev"] == GENESIS
    for prev, doc in zip(lines, docs[1:]):
        assert doc["prev"] == sha256_hex(prev)
    assert all(canonical_json(d) == x for d, x in zip(docs, lines))
    events, findings = verify_chain(data)
    assert findings == [] and [e.type for e in events] == ["rules-frozen", "cell-started", "row-landed", "gate-decided"]
    assert events[-1].line_sha256 == sha256_hex(lines[-1])


def test_edited_line_breaks_the_chain_at_the_next_line(tmp_path):
    data = _sample(tmp_path).replace(b'"seed":1', b'"seed":2')
    _, findings = verify_chain(data)
    assert codes(findings) == ["event-chain-broken"]
    assert findings[0].location == "line 3"


def test_dropped_line_breaks_seq_and_chain(tmp_path):
    lines = _sample(tmp_path).split(b"\n")
    _, findings = verify_chain(b"\n".join(lines[:1] + lines[2:]))
    assert codes(findings) == ["event-chain-broken", "event-seq-broken", "event-seq-broken"]


def test_non_canonical_or_unknown_lines_are_findings(tmp_path):
    lines = _sample(tmp_path).split(b"\n")
    doc = json.loads(lines[1])
    spaced = json.dumps(doc, sort_keys=True).encode()
    _, f1 = verify_chain(b"\n".join([lines[0], spaced] + lines[2:]))
    assert "event-line-invalid" in codes(f1) and "not in canonical form" in f1[0].found
    _, f2 = verify_chain(lines[0] + b"\nnot json\n")
    assert codes(f2) == ["event-line-invalid"]
    with pytest.raises(ValueError, match="unknown event type"):
        event_line(0, GENESIS, "2026-01-01T00:00:00Z", "made-up", {})
    with pytest.raises(ValueError, match="needs sha256"):
        event_line(0, GENESIS, "2026-01-01T00:00:00Z", "rules-frozen", {"gate": "g", "path": "p"})


def test_torn_last_line_is_reported_and_never_extended_silently(tmp_path):
    good = _sample(tmp_path)
    torn = good + b'{"gate":"g","pa'
    (tmp_path / EVENTS_PATH).write_bytes(torn)
    events, findings = verify_chain(torn)
    assert codes(findings) == ["event-log-torn"] and len(events) == 4
    with pytest.raises(AuditError, match="torn line"):
        _log(tmp_path).append("package-finalized", root="d" * 64)
    assert (tmp_path / EVENTS_PATH).read_bytes() == torn  # refused: nothing changed

    repaired = EventLog(tmp_path, repair=True)
    ev = repaired.append("package-finalized", root="d" * 64)
    events, findings = verify_chain((tmp_path / EVENTS_PATH).read_bytes())
    assert findings == []
    assert [e.type for e in events[-2:]] == ["log-repaired", "package-finalized"] and ev.seq == 5
    assert events[-2].get("dropped_bytes") == 15 and events[-2].get("dropped_sha256") == sha256_hex(b'{"gate":"g","pa')


def test_torn_only_line_repairs_from_genesis(tmp_path):
    (tmp_path / "evidence").mkdir()
    (tmp_path / EVENTS_PATH).write_bytes(b'{"half')
    EventLog(tmp_path, repair=True).append("package-finalized", root="d" * 64)
    events, findings = verify_chain((tmp_path / EVENTS_PATH).read_bytes())
    assert findings == [] and [e.type for e in events] == ["log-repaired", "package-finalized"]


def test_append_continues_a_long_log_from_its_tail(tmp_path):
    prev, lines = GENESIS, []
    for i in range(300):
        line = event_line(i, prev, "2026-01-01T00:00:00.000000Z", "cell-started",
                          {"run_id": f"r{i}-" + "x" * 400, "host": "h", "stage": "s", "config_id": "c", "seed": i})
        lines.append(line)
        prev = sha256_hex(line)
    (tmp_path / "evidence").mkdir()
    (tmp_path / EVENTS_PATH).write_bytes(b"".join(x + b"\n" for x in lines))  # 130 KiB: two read chunks
    ev = _log(tmp_path).append("package-finalized", root="d" * 64)
    assert ev.seq == 300 and ev.prev == sha256_hex(lines[-1])
    assert verify_chain((tmp_path / EVENTS_PATH).read_bytes())[1] == []


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 16])
def test_last_line_found_across_read_chunks(tmp_path, chunk):
    import os

    from auditkit.evidence.events import _last_lines

    p = tmp_path / "log"
    for data, want in [(b"aa\nbbbb\n", (b"bbbb", 3, None)), (b"aa\nbbbb\ncc", (b"bbbb", 3, b"cc")),
                       (b"only\n", (b"only", 0, None)), (b"torn", (None, 0, b"torn"))]:
        p.write_bytes(data)
        fd = os.open(p, os.O_RDONLY)
        try:
            assert _last_lines(fd, len(data), chunk) == want
        finally:
            os.close(fd)


def _append_many(root: str, tag: str, n: int) -> None:
    log = EventLog(root)
    for i in range(n):
        log.append("cell-started", run_id=f"{tag}{i}", host=tag, stage="s", config_id="c", seed=i)


def test_two_processes_appending_keep_one_chain(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), tag, 40)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    events, findings = verify_chain((tmp_path / EVENTS_PATH).read_bytes())
    assert findings == [] and len(events) == 80
    assert sorted(e.get("run_id") for e in events) == sorted([f"a{i}" for i in range(40)] + [f"b{i}" for i in range(40)])


# --- canonical row hash -------------------------------------------------------------------------

def test_row_hash_is_sha256_of_sorted_compact_json():
    row = {"run_id": "r1", "val_bpb": "1.234000", "host": "h"}
    assert row_hash(row) == sha256_hex(b'{"host":"h","run_id":"r1","val_bpb":"1.234000"}')
    assert row_hash({**row, "val_bpb": "1.234001"}) != row_hash(row)
    assert row_hash({**row, "checkpoint": None}) == row_hash({**row, "checkpoint": ""})
    with pytest.raises(ValueError, match="more cells"):
        row_hash({**row, None: ["extra"]})


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), min_size=1, max_size=6), st.randoms())
def test_row_hash_does_not_depend_on_column_order(row, rnd):
    items = list(row.items())
    rnd.shuffle(items)
    assert row_hash(dict(items)) == row_hash(row)


# --- order: every input row landed after the freeze ------------------------------------------------

CSV = "remote-results/h_s_summary.csv"


def _events(tmp_path, steps):
    log = _log(tmp_path)
    for type_, fields in steps:
        log.append(type_, **fields)
    return verify_chain((tmp_path / EVENTS_PATH).read_bytes())[0]


def _freeze(sha="a" * 64):
    return ("rules-frozen", {"gate": "g", "path": "preanalysis/g.rules.json", "sha256": sha})


def _landed(h, run="r1"):
    return ("row-landed", {"run_id": run, "path": CSV, "row_sha256": h})


def _started(run="r1"):
    return ("cell-started", {"run_id": run, "host": "h", "stage": "s", "config_id": "c", "seed": 1})


def test_rows_after_the_freeze_hold(tmp_path):
    events = _events(tmp_path, [_freeze(), _started(), _landed("1" * 64), _started("r2"), _landed("2" * 64, "r2")])
    assert order_findings(events, "g", "a" * 64, {CSV: ["1" * 64, "2" * 64]}) == []


def test_row_landed_before_the_freeze(tmp_path):
    events = _events(tmp_path, [_started(), _landed("1" * 64), _freeze(), _landed("2" * 64, "r2")])
    f = order_findings(events, "g", "a" * 64, {CSV: ["1" * 64, "2" * 64]})
    assert codes(f) == ["cell-started-before-freeze", "row-landed-before-freeze"]
    assert {x.location for x in f} == {"row 1"}


def test_row_not_in_log_and_landed_row_missing(tmp_path):
    events = _events(tmp_path, [_freeze(), _landed("1" * 64), _landed("2" * 64, "r2")])
    f = order_findings(events, "g", "a" * 64, {CSV: ["1" * 64, "9" * 64]})
    assert codes(f) == ["landed-row-missing", "row-not-in-log"]
    assert [x.location for x in f if x.code == "row-not-in-log"] == ["row 2"]


def test_duplicated_row_needs_two_landings(tmp_path):
    events = _events(tmp_path, [_freeze(), _landed("1" * 64)])
    assert codes(order_findings(events, "g", "a" * 64, {CSV: ["1" * 64, "1" * 64]})) == ["row-not-in-log"]


def test_rules_not_frozen_changed_or_refrozen(tmp_path):
    events = _events(tmp_path, [_freeze(), _landed("1" * 64), _freeze("b" * 64)])
    assert codes(order_findings(events, "other", "a" * 64, {})) == ["rules-not-frozen-in-log"]
    assert codes(order_findings(events, "g", "c" * 64, {CSV: ["1" * 64]})) == ["rules-changed-after-freeze"]
    # the rules on disk are the re-frozen ones: the row landed before that freeze
    assert codes(order_findings(events, "g", "b" * 64, {CSV: ["1" * 64]})) == ["row-landed-before-freeze",
                                                                               "rules-refrozen"]


def test_decision_must_be_the_logged_one(tmp_path):
    events = _events(tmp_path, [("gate-decided", {"gate": "g", "path": "analysis/g_decision.json", "sha256": "d" * 64})])
    assert decision_findings(events, "g", "d" * 64, "analysis/g_decision.json") == []
    assert codes(decision_findings(events, "g", "e" * 64, "x")) == ["decision-changed-after-log"]
    assert codes(decision_findings(events, "h", "d" * 64, "x")) == ["decision-not-in-log"]

"""Per-document evaluation losses (SPEC v1.2, optional): ``eval-docs/<run_id>.csv`` named by a run
row's `eval_docs` column with its sha256 in `eval_docs_sha256`.

`parse_eval_docs` reads one file's bytes (header ``doc,nats,bytes``; one row per document, in
evaluation order; `doc` a strictly increasing integer, `nats` a finite decimal >= 0, `bytes` a
positive integer); `docs_val_bpb` is what the file says the run's val_bpb is; `gate_doc_losses`
collects a gate's files through the store for the statistics (`auditkit.stats.uncertainty`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from auditkit.errors import PackageDefect, defect
from auditkit.package.store import PackageStore, decode_utf8, parse_csv

HEADER = "doc,nats,bytes"
MAX_EVAL_DOCS_BYTES = 256 << 20
COLUMNS = ("eval_docs", "eval_docs_sha256")


@dataclass(frozen=True)
class EvalDocs:
    doc: np.ndarray     # int64, strictly increasing
    nats: np.ndarray    # float64
    bytes: np.ndarray   # int64 (> 0)


_PARSED: dict[bytes, EvalDocs] = {}     # the same bytes parse the same: verify and each gate's statistics
_PARSED_LIMIT = 64 << 20                # reread one run's file; keyed by the bytes themselves, not a hash
_parsed_bytes = 0


def parse_eval_docs(data: bytes, rel: str) -> EvalDocs:
    """The per-document losses of one file; PackageDefect (code ``eval-docs-unreadable``) naming the
    row and column of the first thing that is not as SPEC v1.2 says. The arrays are read-only: a
    file's bytes already parsed in this process give the same (shared) result."""
    global _parsed_bytes
    data = bytes(data)
    hit = _PARSED.get(data)
    if hit is not None:
        return hit
    ed = parse_eval_docs_once(data, rel)
    for a in (ed.doc, ed.nats, ed.bytes):
        a.setflags(write=False)
    if _parsed_bytes + len(data) > _PARSED_LIMIT:
        _PARSED.clear()
        _parsed_bytes = 0
    _PARSED[data] = ed
    _parsed_bytes += len(data)
    return ed


def parse_eval_docs_once(data: bytes, rel: str) -> EvalDocs:
    """`parse_eval_docs` without the memory of files already parsed."""
    text = decode_utf8(data, rel) if not data.isascii() else data.decode("ascii")

    def bad(where: str, expected: str, found: str, message: str):
        return defect(rel, "eval-docs-unreadable", message, location=where, expected=expected, found=found[:80],
                      hint="SPEC.md (v1.2, per-document evaluation losses) defines the file: header doc,nats,bytes, "
                           "one row per document; find out what wrote this file")

    if "\r" in text:
        raise bad("", "\\n line ends", "\\r", "the file has carriage returns")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != HEADER:
        raise bad("header", HEADER, lines[0] if lines else "an empty file", "the header is not doc,nats,bytes")
    if len(lines) == 1:
        raise bad("row 1", "one row per document", "no rows", "the file has no documents")
    doc, nats, nbytes = fast_columns(lines) or slow_columns(lines, bad)   # the fast path or the reference loop
    n = len(doc)
    if n > 1:
        dec = np.flatnonzero(np.diff(doc) <= 0)
        if len(dec):
            i = int(dec[0]) + 1
            raise bad(f"row {i + 1}, column doc", f"an index above {int(doc[i - 1])}", str(int(doc[i])),
                      "documents are not in strictly increasing order")
    return EvalDocs(doc, nats, nbytes)


def slow_columns(lines: list[str], bad):
    """The columns of a file's rows (`lines`: header first), one line at a time; raises `bad(...)` at the
    first row that is not as SPEC v1.2 says. The reference reader: `fast_columns` must agree with it."""
    n = len(lines) - 1
    doc = np.empty(n, dtype=np.int64)
    nats = np.empty(n, dtype=np.float64)
    nbytes = np.empty(n, dtype=np.int64)
    for i, line in enumerate(lines[1:]):
        parts = line.split(",")
        if len(parts) != 3:
            raise bad(f"row {i + 1}", "three fields", line, "a row does not have three fields")
        d, x, b = parts
        if not (d.isdigit() and d.isascii()):
            raise bad(f"row {i + 1}, column doc", "an integer >= 0", d, "a document index is not an integer")
        if not (b.isdigit() and b.isascii()) or int(b) == 0:
            raise bad(f"row {i + 1}, column bytes", "an integer > 0", b, "a document's byte count is not a positive "
                                                                        "integer (0-byte documents are omitted)")
        try:
            v = float(x)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or v < 0 or x.strip() != x or x.lower().startswith(("n", "i", "+")):
            raise bad(f"row {i + 1}, column nats", "a finite decimal >= 0", x, "a document's loss is not a number")
        doc[i], nats[i], nbytes[i] = int(d), v, int(b)
    return doc, nats, nbytes


_DIGITS = frozenset("0123456789")
_DECIMAL = frozenset("0123456789.")
_INT64_DIGITS = 18     # any string of at most 18 digits fits an int64


def fast_columns(lines: list[str]):
    """The columns of a file's rows (`lines`: header first) when every row is plainly well-formed
    (ASCII digits, three fields, a decimal `nats` of digits and one point, nonzero `bytes`, nothing an
    int64 cannot hold); None on anything else, so that `slow_columns` finds and words the problem.
    Every value it returns is what `slow_columns` returns for the same row (the same int() and float()
    of the same text)."""
    rows = lines[1:]
    n = len(rows)
    if set(map(str.count, rows, repeat(",", n))) != {2}:
        return None
    fields = ",".join(rows).split(",")
    docs, xs, bs = fields[0::3], fields[1::3], fields[2::3]
    for col in (docs, bs):
        if not all(col) or max(map(len, col)) > _INT64_DIGITS or not _DIGITS.issuperset("".join(col)):
            return None
    if not all(xs) or not _DECIMAL.issuperset("".join(xs)):
        return None
    try:
        nats = np.fromiter(map(float, xs), dtype=np.float64, count=n)
    except ValueError:                      # "1.2.3", "."
        return None
    doc = np.fromiter(map(int, docs), dtype=np.int64, count=n)
    nbytes = np.fromiter(map(int, bs), dtype=np.int64, count=n)
    if not np.isfinite(nats).all() or not nbytes.all():
        return None
    return doc, nats, nbytes


def docs_val_bpb(ed: EvalDocs) -> float:
    """sum(nats) / (ln 2 * sum(bytes)): the val_bpb the file stands for."""
    return math.fsum(ed.nats.tolist()) / (math.log(2) * float(ed.bytes.sum()))


def docs_tolerance(ed: EvalDocs) -> float:
    """How far `docs_val_bpb` may lie from the row's 6-decimal val_bpb: the row's rounding (5e-7) plus
    1e-6 plus the rounding of the per-document values (5e-7 nats each)."""
    return 5e-7 + 1e-6 + len(ed.nats) * 5e-7 / (math.log(2) * float(ed.bytes.sum()))


def gate_doc_losses(store: PackageStore, rules: dict, decision):
    """(DocLosses or None, note) for a decided gate: every eligible candidate's per-document losses in
    every cell, read through the store. None with an empty note when the rows carry no per-document
    files (a v1.0/v1.1 package); None with a note saying why when they are there but cannot be used
    (some runs lack them, a hash differs, the documents differ; verify reports the defects)."""
    from auditkit.package.rows import run_csv_path
    from auditkit.stats.uncertainty import DocLosses

    ins = rules["inputs"]
    paths = sorted({run_csv_path(h, s) for h in ins["hosts"] for s in ins["stages"]})
    cell_index = {(h, int(s)): k for k, (h, s) in enumerate(decision.cells)}
    eligible = {c.config_id for c in decision.candidates if c.eligible}
    stages, hosts = set(ins["stages"]), set(ins["hosts"])
    named: dict[tuple[str, int], tuple[str, str]] = {}
    any_column = False
    try:
        for rel in paths:
            if store.kind(rel) is None:
                continue
            with store.open(rel) as f:
                first = f.readline(1 << 16)
            if b"eval_docs" not in first:
                continue
            any_column = True
            header, rows = parse_csv(decode_utf8(store.read_bytes(rel, 1 << 30), rel), rel)
            for r in rows:
                if r.get("stage") not in stages or r.get("host") not in hosts or r.get("status") != "ok":
                    continue
                try:
                    k = cell_index.get((r["host"], int(r["seed"])))
                except (KeyError, ValueError):
                    continue
                if k is None or r.get("config_id") not in eligible:
                    continue
                named[(r["config_id"], k)] = (r.get("eval_docs", ""), r.get("eval_docs_sha256", ""))
    except PackageDefect as exc:
        return None, f"per-document evaluation losses not used: {exc.finding.message} ({exc.finding.path})"
    if not any_column:
        return None, ""
    need = [(c, k) for c in sorted(eligible) for k in range(len(decision.cells))]
    lacking = [f"{c} in {'/'.join(map(str, decision.cells[k]))}" for c, k in need if not named.get((c, k), ("",))[0]]
    if lacking:
        return None, (f"per-document evaluation losses not used: {len(lacking)} run(s) have no per-document file "
                      f"(first: {lacking[0]}); the intervals use cells only")
    nats: dict[tuple[str, int], np.ndarray] = {}
    ref: EvalDocs | None = None
    try:
        for key in need:
            rel, sha = named[key]
            data = store.read_bytes(rel, MAX_EVAL_DOCS_BYTES)
            if hashlib.sha256(data).hexdigest() != sha:
                return None, (f"per-document evaluation losses not used: {rel} does not have the sha256 its row "
                              "records (verify reports it); the intervals use cells only")
            ed = parse_eval_docs(data, rel)
            if ref is None:
                ref = ed
            elif not (np.array_equal(ed.doc, ref.doc) and np.array_equal(ed.bytes, ref.bytes)):
                return None, (f"per-document evaluation losses not used: {rel} lists other documents or byte counts "
                              "than the gate's other runs; the intervals use cells only")
            nats[key] = ed.nats
    except PackageDefect as exc:
        return None, f"per-document evaluation losses not used: {exc.finding.message} ({exc.finding.path})"
    return DocLosses(nats, ref.bytes), ""

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

import numpy as np

from auditkit.errors import PackageDefect, defect
from auditkit.package.store import PackageStore, decode_utf8, parse_csv

HEADER = "doc,nats,bytes"
_HEAD = HEADER.encode() + b"\n"
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
    columns = fast_columns(data[len(_HEAD):]) if data.startswith(_HEAD) else None
    if columns is None:                          # not plainly well-formed: the reference loop finds and names why
        columns = _text_columns(data, rel)
    return _increasing(*columns, rel)


def _bad(rel: str):
    def bad(where: str, expected: str, found: str, message: str):
        return defect(rel, "eval-docs-unreadable", message, location=where, expected=expected, found=found[:80],
                      hint="SPEC.md (v1.2, per-document evaluation losses) defines the file: header doc,nats,bytes, "
                           "one row per document; find out what wrote this file")
    return bad


def _text_columns(data: bytes, rel: str):
    """The columns by the reference loop, after the file's encoding, line ends and header are checked."""
    text = decode_utf8(data, rel) if not data.isascii() else data.decode("ascii")
    bad = _bad(rel)
    if "\r" in text:
        raise bad("", "\\n line ends", "\\r", "the file has carriage returns")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != HEADER:
        raise bad("header", HEADER, lines[0] if lines else "an empty file", "the header is not doc,nats,bytes")
    if len(lines) == 1:
        raise bad("row 1", "one row per document", "no rows", "the file has no documents")
    return slow_columns(lines, bad)


def _increasing(doc: np.ndarray, nats: np.ndarray, nbytes: np.ndarray, rel: str) -> EvalDocs:
    """The file's EvalDocs once its documents are seen in strictly increasing order."""
    if len(doc) > 1:
        dec = np.flatnonzero(np.diff(doc) <= 0)
        if len(dec):
            i = int(dec[0]) + 1
            raise _bad(rel)(f"row {i + 1}, column doc", f"an index above {int(doc[i - 1])}", str(int(doc[i])),
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


_INT64_DIGITS = 18     # any string of at most 18 digits fits an int64


def fast_columns(body: bytes):
    """The columns of a file's rows (`body`: the bytes after the header line) when every row is plainly
    well-formed (ASCII digits, three fields, a decimal `nats` of digits and at most one point, nonzero
    `bytes`, nothing an int64 cannot hold); None on anything else, so that `slow_columns` finds and words
    the problem. Every value it returns is what `slow_columns` returns for the same row: the integers are
    exact, and a `nats` of m digits with k after the point is m / 10**k, which is float()'s correctly
    rounded value while m < 2**53 and k <= 22 (both exact in a double, one rounding); any other `nats`
    is read with float() itself. Columnar (numpy over the bytes, in line-aligned chunks of 4 MiB):
    a file of 150,000 rows is read in a third of the time of a loop over its lines."""
    if not body.endswith(b"\n"):
        body += b"\n"
    if body.translate(None, b"0123456789.,\n"):
        return None
    parts = []
    i, n = 0, len(body)
    while i < n:
        j = n if i + _CHUNK >= n else body.rfind(b"\n", i, i + _CHUNK) + 1
        if j <= i:                          # a line longer than a chunk
            j = body.find(b"\n", i + _CHUNK) + 1
        got = _chunk_columns(body[i:j])
        if got is None:
            return None
        parts.append(got)
        i = j
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(column) for column in zip(*parts))


_CHUNK = 4 << 20
_ROW_SEPARATORS = np.array([44, 44, 10], dtype=np.uint8)      # b",,\n"
_POW10 = np.array([10.0 ** i for i in range(23)], dtype=np.float64)
_EXACT = 2 ** 53
_HORNER = 16            # a nats field longer than this is read with float() (its digits may pass 2**53)


def _chunk_columns(body: bytes):
    """`fast_columns` of whole lines (`body` ends with a newline and holds only digits, '.', ',' and
    newlines)."""
    a = np.frombuffer(body, np.uint8)
    sep = np.flatnonzero((a == 44) | (a == 10))
    if len(sep) % 3 or not (a[sep].reshape(-1, 3) == _ROW_SEPARATORS).all():
        return None                         # a row without exactly three fields, or an empty line
    sep = sep.reshape(-1, 3)
    line = np.empty(len(sep), np.int64)
    line[0] = 0
    line[1:] = sep[:-1, 2] + 1
    cols = ((line, sep[:, 0]), (sep[:, 0] + 1, sep[:, 1]), (sep[:, 1] + 1, sep[:, 2]))
    lens = [end - start for start, end in cols]
    if not all(width.all() for width in lens) or max(lens[0].max(), lens[2].max()) > _INT64_DIGITS:
        return None                         # an empty field, or an integer an int64 may not hold
    doc, _, doc_dots, _ = _horner(a, *cols[0], int(lens[0].max()))
    nbytes, _, bytes_dots, _ = _horner(a, *cols[2], int(lens[2].max()))
    m, digits, dots, k = _horner(a, *cols[1], min(int(lens[1].max()), _HORNER))
    long = lens[1] > _HORNER
    if doc_dots.any() or bytes_dots.any() or (dots > 1).any() or (digits[~long] == 0).any() or not nbytes.all():
        return None
    nats = m / _POW10[np.minimum(k, 22)]
    for i in np.flatnonzero(long | (m >= _EXACT)).tolist():
        text = body[cols[1][0][i]:cols[1][1][i]]
        if text.count(b".") > 1:
            return None
        nats[i] = float(text)
    if not np.isfinite(nats).all():
        return None
    return doc, nats, nbytes


def _horner(a: np.ndarray, start: np.ndarray, end: np.ndarray, width: int):
    """(value, digits, points, digits after the point) of the fields a[start:end] read `width` characters
    from their left: each field's digits as one integer, its point skipped."""
    n = len(start)
    value, digits, dots, after = (np.zeros(n, np.int64) for _ in range(4))
    for j in range(width):
        pos = start + j
        live = pos < end
        c = a[np.minimum(pos, end)].astype(np.int64)
        dot = live & (c == 46)
        digit = live & ~dot
        value = np.where(digit, value * 10 + (c - 48), value)
        digits += digit
        dots += dot
        after += digit & (dots > 0)
    return value, digits, dots, after


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

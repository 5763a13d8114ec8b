"""A gate's recorded decision as replay needs it, read from the store's bytes: the canonical-form
fast path (a file byte for byte what auditkit writes for the replayed decision is never parsed),
else the parsed document checked against its schema; and what the record says about the rules
and inputs it was decided from (`iter_reference_findings`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from auditkit.findings import Finding, json_location
from auditkit.gates.documents import MAX_DECISION_BYTES, json_object, validate_decision
from auditkit.gates.engine import Decision
from auditkit.package.schemas import validate_document
from auditkit.errors import PackageDefect
from auditkit.package.canonical import canonical_json_bytes
from auditkit.package.store import PackageStore, loads_strict


@dataclass
class Recorded:
    """A recorded decision as replay needs it. `doc` is None when the file is byte for byte the
    canonical form (SPEC 6, as auditkit writes it) of the replayed decision: then nothing of it
    differs and it was never parsed. `meta` (rules, inputs, decided_at, ...) is None when the
    decision does not follow the schema."""

    doc: dict | None
    meta: dict | None
    promoted: list[str] | None


META_KEYS = ("decided_at", "gate", "inputs", "promoted", "rules", "schema")  # sorted after "checks"


def read_recorded(store: PackageStore, gate: str, rel: str, decision: Decision | None,
                  f: list) -> Recorded | None:
    """Gate `gate`'s recorded decision at `rel`, compared as bytes with `decision` (the replayed one)
    first; its problems appended to `f`; None when it cannot be read at all."""
    try:
        data = store.read_bytes(rel, MAX_DECISION_BYTES)
    except PackageDefect as exc:
        if exc.finding.code == "missing-file":
            f.append(Finding(rel, "decision-missing", expected=f"the recorded decision of gate {gate}",
                             found="no such file", message="the package does not hold the decision this gate made: "
                             "without it there is nothing to replay against; find out whether it was ever recorded"))
        else:
            f.append(exc.finding)
        return None
    meta = canonical_meta(data, rel) if decision is not None else None
    if meta is not None and is_canonical_form(data, decision, meta):
        bad = validate_document({**meta, "cells": [], "candidates": [], "checks": []}, "decision", rel)
        if bad:
            f.extend(bad)
            return Recorded(None, None, list(decision.promoted))
        return Recorded(None, meta, list(decision.promoted))
    try:
        doc = json_object(data, rel)
    except PackageDefect as exc:
        f.append(exc.finding)
        return None
    del data
    promoted = doc.get("promoted")
    promoted = list(promoted) if isinstance(promoted, list) and all(isinstance(c, str) for c in promoted) else None
    bad = validate_decision(doc, rel, cells=False)  # cells: in the diff
    if bad:
        f.extend(bad)
        return Recorded(None, None, promoted)
    return Recorded(doc, {k: doc[k] for k in META_KEYS if k in doc}, promoted)


def canonical_meta(data: bytes, rel: str) -> dict | None:
    """The top-level fields after ``checks`` of a decision in canonical form (sorted keys, two-space
    indent: they close the file), parsed strictly; None when the file is not in that form."""
    i = data.rfind(b'\n  "decided_at": ')
    if i < 0:
        return None
    try:
        meta = loads_strict(b"{" + data[i + 1:], rel)
    except PackageDefect:
        return None
    if not isinstance(meta, dict) or tuple(sorted(meta)) != META_KEYS or not isinstance(meta["rules"], dict) \
            or not isinstance(meta["inputs"], list) or not all(isinstance(x, dict) for x in meta["inputs"]):
        return None
    return meta


_PLACEHOLDER = re.compile(r'"\\u0000cells (\d+)\\u0000"')
# the per-cell objects as `json.dumps(indent=2, sort_keys=True)` writes them inside a decision
_KEY_INDENT = "        "
_RANK = ': {\n          "rank": '
_STATUS = ',\n          "status": '
_VALUE = ',\n          "val_bpb": '
_END = "\n        }"


def is_canonical_form(data: bytes, decision: Decision, meta: dict) -> bool:
    """Whether `data` is exactly ``canonical_json_bytes`` of `decision`'s document with the recorded
    rules, inputs and decided_at — compared piece by piece as it is generated, never parsed or
    built whole. The document's skeleton comes from the one canonical writer; only the per-cell
    objects (one per run row) are formatted here, as that writer formats them (tested against it)."""
    try:
        skeleton = decision.to_json(rules_ref=meta["rules"], inputs=meta["inputs"], decided_at=meta["decided_at"],
                                    cells=False)
    except (TypeError, ValueError):
        return False
    if skeleton["gate"] != meta["gate"] or skeleton["promoted"] != meta["promoted"] or not data.isascii():
        return False
    for i, c in enumerate(skeleton["candidates"]):
        c["cells"] = f"\x00cells {i}\x00"
    try:
        parts = _PLACEHOLDER.split(canonical_json_bytes(skeleton).decode("ascii"))
    except (TypeError, ValueError):
        return False
    if [int(x) for x in parts[1::2]] != list(range(len(decision.candidates))):
        return False
    keys = decision.cell_keys()
    order = sorted(range(len(keys)), key=keys.__getitem__)
    json_keys = [json.encoder.encode_basestring_ascii(keys[j]) for j in order]
    pos = 0
    for k, piece in enumerate(parts):
        chunk = (piece if k % 2 == 0 else _cells_text(decision.candidates[k // 2], order, json_keys)).encode("ascii")
        if not data.startswith(chunk, pos):
            return False
        pos += len(chunk)
    return pos == len(data)


def _cells_text(c, order: list[int], json_keys: list[str]) -> str:
    """One candidate's ``cells`` object as ``json.dumps(indent=2, sort_keys=True)`` writes it at its depth."""
    n = len(order)
    if not n:
        return "{}"
    pick = (lambda xs: list(xs)) if order == list(range(n)) else (lambda xs: [xs[j] for j in order])
    vals, ranks, stats = pick(c.values), pick(c.cell_ranks), pick(c.statuses)
    if c.eligible:  # every cell ok, with a value and a rank: no status key, no null
        pieces = [",\n"] * (8 * n)
        pieces[0::8] = [_KEY_INDENT] * n
        pieces[1::8] = json_keys
        pieces[2::8] = [_RANK] * n
        pieces[3::8] = map(int.__repr__, ranks)
        pieces[4::8] = [_VALUE] * n
        pieces[5::8] = map(float.__repr__, vals)
        pieces[6::8] = [_END] * n
        return "{\n" + "".join(pieces[:-1]) + "\n      }"
    cells = []
    for key, r, v, st in zip(json_keys, ranks, vals, stats):
        r = "null" if r is None else int.__repr__(r)
        v = "null" if v is None else float.__repr__(v)
        cells.append(_KEY_INDENT + key + _RANK + r + (_STATUS + json.encoder.encode_basestring_ascii(st)
                                                      if st != "ok" else "") + _VALUE + v + _END)
    return "{\n" + ",\n".join(cells) + "\n      }"


def iter_reference_findings(sha: Callable[[str], str], gate: str, rules_rel: str, dec_rel: str,
                            selected: list[str], present: list[str], meta: dict) -> Iterator[Finding]:
    """The decision names the protocol's rules and exactly the inputs its rules select, with the
    sha256 (`sha(rel)`) of the bytes the package holds."""
    rr = meta["rules"]
    if rr["path"] != rules_rel:
        yield Finding(dec_rel, "rules-path-mismatch", "$.rules.path", rules_rel, rr["path"],
                      "the decision names other rules than the protocol's")
    actual = sha(rules_rel)
    if rr["sha256"] != actual:
        yield Finding(dec_rel, "rules-hash-mismatch", "$.rules.sha256", rr["sha256"], actual,
                      f"the decision records other bytes for {rules_rel} than the package holds: the rules "
                      "changed after the decision was recorded, or the record was altered")
    named = {i["path"]: i["sha256"] for i in meta["inputs"]}
    for p in selected:
        if p not in named:
            yield Finding(dec_rel, "input-not-recorded", "$.inputs", p, "not named",
                          "the decision left out a run CSV its rules select")
    for i, (p, h) in enumerate((x["path"], x["sha256"]) for x in meta["inputs"]):
        if p not in selected:
            yield Finding(dec_rel, "input-extra", json_location(["inputs", i, "path"]), "only inputs the rules select",
                          p, "the decision names a file its rules do not select")
        elif p in present and sha(p) != h:
            yield Finding(p, "input-hash-mismatch", "", h, sha(p), f"the rows changed after gate {gate} was decided")

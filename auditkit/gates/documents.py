"""The documents a gate is read from, through the package's store: the protocol and a gate of it,
a package JSON object (strict), the matrix's config_ids, the run CSVs a gate's rules select, and
the schema of a decision document (its per-cell objects checked directly, being one per run row).
"""

from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from itertools import repeat

from auditkit.errors import AuditError
from auditkit.findings import Finding, json_location
from auditkit.package.rows import run_csv_path
from auditkit.package.schemas import validate_document
from auditkit.errors import defect
from auditkit.package.store import PackageStore, loads_strict, open_package
from auditkit.package.protocol import Gate, Protocol, load_package_protocol

MAX_DECISION_BYTES = 1 << 30  # a decision holds one object per run row, read whole


def package_store(package) -> PackageStore:
    """The store of `package` (a directory path or an open store); AuditError (exit 2) if it is no package."""
    return package if isinstance(package, PackageStore) else open_package(package)


def package_protocol(package) -> Protocol:
    """The package's protocol (AuditError if `package` is no package, PackageDefect if the protocol is bad)."""
    return load_package_protocol(package_store(package))


def protocol_gate(protocol: Protocol, gate: str) -> Gate:
    """The protocol's gate `gate`; AuditError naming the gates there are when it has none of that name."""
    try:
        return protocol.gate(gate)
    except KeyError:
        names = ", ".join(g.gate for g in protocol.gates) or "(none)"
        raise AuditError(f"unknown gate {gate!r}", hint=f"the protocol's gates are: {names}") from None


@contextmanager
def paused_gc():
    """Pause the cyclic garbage collector: replay builds millions of small acyclic objects
    (one per run row) and collections triggered by allocation alone cost time for nothing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_json(package, rel: str) -> dict:
    """A package JSON object, read strictly through the store (PackageDefect if it is missing,
    not a regular file, not strict JSON or not an object)."""
    return json_object(package_store(package).read_bytes(rel, MAX_DECISION_BYTES), rel)


def json_object(data: bytes, rel: str) -> dict:
    """`data` parsed as strict JSON; PackageDefect naming `rel` unless it is an object."""
    with paused_gc():
        doc = loads_strict(data, rel)
    if not isinstance(doc, dict):
        raise defect(rel, "json-not-object", "the document is not a JSON object", location="$",
                     expected="a JSON object", found=type(doc).__name__)
    return doc


def matrix_config_ids(package, protocol: Protocol) -> list[str]:
    """The candidate matrix's config_ids (PackageDefect if it is unreadable or has no config_id column)."""
    header, rows = package_store(package).read_csv(protocol.matrix)
    if "config_id" not in header:
        raise defect(protocol.matrix, "run-csv-missing-column", "the matrix has no config_id column",
                     location="header", expected="config_id", found=", ".join(header) or "no header",
                     hint="SPEC.md section 2: a matrix names its configurations in config_id")
    return [r["config_id"] for r in rows]


def gate_inputs(package_dir, rules: dict) -> list[str]:
    """The run CSVs the rules select: ``remote-results/<host>_<stage>_summary.csv`` for every
    host x stage of `inputs`, sorted (package-relative POSIX paths)."""
    ins = rules["inputs"]
    return sorted({run_csv_path(h, s) for h in ins["hosts"] for s in ins["stages"]})


def validate_decision(doc: dict, path: str, *, cells: bool = True) -> list[Finding]:
    """Schema findings for a decision document. The per-cell objects (one per run row, up to
    millions) are checked by a direct test equal to their schema (`cell_findings`), the rest by
    jsonschema; with `cells=False` the caller checks the cells itself."""
    cands = doc.get("candidates")
    if not isinstance(cands, list):
        return validate_document(doc, "decision", path)
    skeleton = dict(doc)
    skeleton["candidates"] = [{k: v for k, v in c.items() if k != "cells"} if isinstance(c, dict) else c
                              for c in cands]
    findings = validate_document(skeleton, "decision", path)
    for i, c in enumerate(cands):
        if isinstance(c, dict) and "cells" in c and (cells or not isinstance(c["cells"], dict)):
            findings += cell_findings(path, i, c["cells"])
    return findings


def cell_findings(path: str, i: int, cells) -> list[Finding]:
    """Schema findings for candidate `i`'s cells object."""
    if not isinstance(cells, dict):
        return _cell_finding(path, ["candidates", i, "cells"], "an object", cells)
    objs = list(cells.values())
    if set(map(type, objs)) <= _DICT and set(map(type, map(dict.get, objs, repeat("val_bpb")))) <= _NUMBER_OR_NULL \
            and set(map(type, map(dict.get, objs, repeat("rank")))) <= _INTEGER_OR_NULL:
        return []      # the common case, tested in C loops; else each cell below, to name the bad ones
    out = []
    for key, cell in cells.items():
        if not isinstance(cell, dict):
            out += _cell_finding(path, ["candidates", i, "cells", key], "an object", cell)
            continue
        v, r = cell.get("val_bpb"), cell.get("rank")
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            out += _cell_finding(path, ["candidates", i, "cells", key, "val_bpb"], "a number or null", v)
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))
                              or not float(r).is_integer()):
            out += _cell_finding(path, ["candidates", i, "cells", key, "rank"], "an integer or null", r)
    return out


_DICT = frozenset({dict})
_NUMBER_OR_NULL = frozenset({int, float, type(None)})     # a JSON reader's exact types: bool is not int here
_INTEGER_OR_NULL = frozenset({int, type(None)})


def show(v) -> str:
    """A value as a finding shows it: text as is, anything else as JSON."""
    return json.dumps(v) if not isinstance(v, str) else v


def _cell_finding(path: str, loc: list, expected: str, found) -> list[Finding]:
    return [Finding(path, "schema-invalid", json_location(loc), expected, show(found),
                    "the decision does not follow SPEC.md section 6 here, so this part of it cannot be compared")]

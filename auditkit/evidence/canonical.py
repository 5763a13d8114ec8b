"""Canonical bytes for the evidence formats: JSON and run-row hashes (times: `auditkit.clock`).

Canonical JSON here is `json.dumps(doc, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` encoded as UTF-8, for documents made of objects, arrays,
strings, integers, booleans and null (no floats, so there is one spelling of
every value; for such documents it is the same as RFC 8785).
"""

from __future__ import annotations

import json

from auditkit.package.hashing import sha256_bytes as sha256_hex  # the one sha256 of bytes (hex)


def canonical_json(doc) -> bytes:
    """The canonical UTF-8 bytes of `doc`. Raises ValueError on a float (no single spelling)."""
    _no_floats(doc)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _no_floats(doc) -> None:
    if isinstance(doc, float):
        raise ValueError(f"canonical JSON holds no floats (found {doc!r}); write it as a string")
    if isinstance(doc, dict):
        for k, v in doc.items():
            if not isinstance(k, str):
                raise ValueError(f"canonical JSON keys are strings (found {k!r})")
            _no_floats(v)
    elif isinstance(doc, (list, tuple)):
        for v in doc:
            _no_floats(v)


def row_hash(row: dict) -> str:
    """The canonical hash of one run row: sha256 of the canonical JSON of the row's cells.

    The row is the mapping column name -> cell text exactly as the CSV holds it
    (every column of the file's header, extra columns included; a missing cell
    is the empty string). So the hash does not depend on column order, quoting
    or line endings, and changes with any cell's text.
    """
    cells = {}
    for k, v in row.items():
        if k is None:  # csv.DictReader's key for cells beyond the header
            raise ValueError("the row has more cells than the header has columns")
        if v is None:
            v = ""
        if not isinstance(v, str):
            v = str(v)
        cells[str(k)] = v
    return sha256_hex(canonical_json(cells))

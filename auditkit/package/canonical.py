"""The one JSON form auditkit writes into a package (and into its reports' JSON files).

`canonical_json_bytes(doc)`: sorted keys, a 2-space indent, UTF-8, one final newline, no NaN or
Infinity.  Two writers of the same document write the same bytes, so a rewrite that changes
nothing leaves a file's hash as it was.  (The evidence formats sign and hash a second, compact
form with no floats: `auditkit.evidence.canonical.canonical_json`.)
"""

from __future__ import annotations

import json


def canonical_json_bytes(doc) -> bytes:
    """The one JSON form auditkit writes: sorted keys, 2-space indent, UTF-8, one final newline."""
    return (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")

"""The package's own structure and its JSON documents (SPEC sections 1, 3, 5-7).

The files SPEC section 1 requires (protocol.json, the matrix it names, every gate's
rules and decision, at least one run CSV); every JSON document parses strictly, and
those with a schema (protocol, rules, decisions, table and figure manifests) follow it.
"""

from __future__ import annotations

from typing import Iterator

from auditkit.findings import Finding
from auditkit.package.manifest import MANIFEST_JSON
from auditkit.verify.view import PackageView, finding


def check(view: PackageView) -> Iterator[Finding]:
    yield from required(view)
    for rel in sorted(view.files):
        if rel.endswith(".json") and rel != MANIFEST_JSON:   # MANIFEST.json: the manifest check
            yield from view.parse_findings(rel)
            yield from view.schema_findings(rel)


def required(view: PackageView) -> Iterator[Finding]:
    files = view.files
    if "protocol.json" not in files:
        yield finding("protocol.json", "required-missing", "", "protocol.json", "absent",
                      "SPEC section 1 requires it")
    proto = view.protocol
    if not proto:
        return
    matrix = view.matrix
    if matrix is not None and matrix not in files:
        yield finding(matrix, "required-missing", "", "the matrix protocol.json names", "absent")
    gates = proto.get("gates")
    for g in gates if isinstance(gates, list) else []:
        if not isinstance(g, dict):
            continue
        for rel in (g.get("rules"), f"analysis/{g.get('gate')}_decision.json"):
            if isinstance(rel, str) and rel not in files:
                yield finding(rel, "required-missing", "", f"the file of gate {g.get('gate')}", "absent",
                              "SPEC section 1 requires every gate's rules and decision")
    if not view.run_csvs:
        yield finding("remote-results/", "required-missing", "", "at least one run CSV", "none")

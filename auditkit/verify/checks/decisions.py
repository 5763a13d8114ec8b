"""Recorded gate decisions name files that exist with the hashes they record (SPEC section 6).

Whether a decision is the one its rules and rows give is `replay-gate`'s question;
here: its rules file and every input it names are in the package, byte for byte the
files it was decided from, and it names at least one input.
"""

from __future__ import annotations

from typing import Iterator

from auditkit.findings import Finding
from auditkit.verify.view import PackageView, finding


def check(view: PackageView) -> Iterator[Finding]:
    for rel in sorted(view.files):
        if rel.startswith("analysis/") and rel.endswith("_decision.json"):
            yield from _decision(view, rel)


def _decision(view: PackageView, rel: str) -> Iterator[Finding]:
    doc = view.json(rel)
    if not isinstance(doc, dict):
        return
    refs = []
    if isinstance(doc.get("rules"), dict):
        refs.append(("$.rules", doc["rules"]))
    inputs = doc.get("inputs")
    for i, inp in enumerate(inputs if isinstance(inputs, list) else []):
        if isinstance(inp, dict):
            refs.append((f"$.inputs[{i}]", inp))
    if not inputs:
        yield finding(rel, "decision-no-inputs", "$.inputs", "the run CSVs the gate read", "none")
    for loc, ref in refs:
        p, sha = ref.get("path"), ref.get("sha256")
        if not isinstance(p, str):
            continue
        actual = view.sha256(p)
        if actual is None:
            yield finding(rel, "decision-input-missing", loc + ".path", p, "absent",
                          "the decision names a file that is not in the package")
        elif actual != sha:
            yield finding(rel, "decision-input-hash", loc + ".sha256", sha, actual,
                          f"{p} is not the file the decision was made from")

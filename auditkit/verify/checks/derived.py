"""Table and figure manifests match their files (SPEC section 7).

Each listed table or figure is in the package with the sha256 its manifest records,
and every input it names exists.  Whether a table is what its inputs give is
`tables --check`'s question.
"""

from __future__ import annotations

from typing import Iterator

from auditkit.findings import Finding
from auditkit.verify.view import PackageView, finding

DERIVED_MANIFESTS = (("table_manifest.json", "tables"), ("figure_manifest.json", "figures"))


def check(view: PackageView) -> Iterator[Finding]:
    for man, key in DERIVED_MANIFESTS:
        doc = view.json(man)
        if not isinstance(doc, dict):
            continue
        entries = doc.get(key)
        for i, e in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(e, dict) or not isinstance(e.get("path"), str):
                continue
            actual = view.sha256(e["path"])
            if actual is None:
                yield finding(man, "derived-missing", f"$.{key}[{i}].path", e["path"], "absent")
            elif actual != e.get("sha256"):
                yield finding(man, "derived-hash", f"$.{key}[{i}].sha256", e.get("sha256"), actual,
                              f"{e['path']} is not the file this manifest recorded")
            inputs = e.get("inputs")
            for inp in inputs if isinstance(inputs, list) else []:
                if isinstance(inp, str) and inp not in view.files:
                    yield finding(man, "derived-input-missing", f"$.{key}[{i}].inputs", inp, "absent")

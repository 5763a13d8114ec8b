"""The runner snapshot under `source/runner/` is the source every run row says ran.

A row's `runner_sha256` is the runner's tree hash (`auditkit.runner.arch.runner_tree_sha256`):
the sha256 of the lines ``"<sha256>  <name>\\n"`` of the tree's ``*.py`` files (not
those of subdirectories), sorted by name.  Recomputed here from the hashes the scan
took, so a snapshot edited after the runs — even with the MANIFEST rebuilt — no longer
matches the rows.  A package without a `source/runner/` snapshot (SPEC: optional) is not
checked here.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

from auditkit.findings import Finding, row_location
from auditkit.verify.view import PackageView, finding

RUNNER_SNAPSHOT = "source/runner/"


def tree_sha256(entries: Iterable[tuple[str, str]]) -> str:
    """The runner tree hash of (file name, sha256) pairs: `runner_tree_sha256` without reading a file."""
    h = hashlib.sha256()
    for name, sha in sorted(entries):
        h.update(f"{sha}  {name}\n".encode("utf-8"))
    return h.hexdigest()


def snapshot_sha256(view: PackageView) -> str | None:
    """The tree hash of the package's runner snapshot, or None when it has none."""
    entries = [(rel[len(RUNNER_SNAPSHOT):], fs.sha256) for rel, fs in view.files.items()
               if rel.startswith(RUNNER_SNAPSHOT) and rel.endswith(".py") and "/" not in rel[len(RUNNER_SNAPSHOT):]]
    return tree_sha256(entries) if entries else None


def check(view: PackageView) -> Iterator[Finding]:
    snapshot = snapshot_sha256(view)
    if snapshot is None:
        return
    for rel, _, _ in view.run_csvs:
        table = view.table(rel)
        rows_by_value: dict[str, list[int]] = {}
        for i, r in table.rows if table is not None else ():
            value = r.get("runner_sha256", "")
            if value and value != snapshot:     # an empty value: the row schema's finding
                rows_by_value.setdefault(value, []).append(i)
        for value, rows in sorted(rows_by_value.items(), key=lambda kv: kv[1][0]):
            more = f" (and {len(rows) - 1} more row(s) of this file: {_rows(rows[1:])})" if len(rows) > 1 else ""
            yield finding(rel, "runner-sha-mismatch", row_location(rows[0], "runner_sha256"),
                          f"{snapshot} (the tree hash of {RUNNER_SNAPSHOT})", value + more,
                          f"the runner snapshot in {RUNNER_SNAPSHOT} is not the source these runs recorded: it was "
                          "changed after they ran, or they ran another version; compare it with the runner the "
                          "authors published")


def _rows(rows: list[int], shown: int = 10) -> str:
    text = ", ".join(str(i) for i in rows[:shown])
    return text + (", ..." if len(rows) > shown else "")

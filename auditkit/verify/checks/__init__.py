"""Every check `verify` runs, one module per family, each `check(view) -> Iterator[Finding]`.

A check reads only the `PackageView` (no I/O), yields its findings lazily (like
jsonschema's `iter_errors`) and never stops at the first.  `CHECKS` is the registry,
in the order the checks run; `iter_findings` chains them.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from auditkit.findings import Finding
from auditkit.verify.checks import (checkpoints, decisions, derived, documents, evaluation, evaldocs, manifest, rows,
                                   source)
from auditkit.verify.view import PackageView

Check = Callable[[PackageView], Iterator[Finding]]

CHECKS: dict[str, Check] = {
    "manifest": manifest.check,          # files against MANIFEST.json / MANIFEST.csv, refused entries
    "documents": documents.check,        # required files; JSON documents parse and follow their schemas
    "rows": rows.check,                  # matrices and run rows, row by row
    "decisions": decisions.check,        # decisions name files with the hashes they record
    "evaluation": evaluation.check,      # every input of a gate scored on the same evaluation (v1.1)
    "evaldocs": evaldocs.check,          # per-document evaluation losses a row names (v1.2)
    "derived": derived.check,            # table and figure manifests match their files
    "checkpoints": checkpoints.check,    # checkpoints as scanned and as the rows name them
    "source": source.check,              # the runner snapshot is the source every row says ran
}


def prepare(view: PackageView) -> None:
    """The documents' part of the checks, worked out while the other files are still being read
    (called once every document outside source/ is in; nothing here may depend on another file)."""
    manifest.prepare(view)
    evaldocs.prepare(view)


def iter_findings(view: PackageView, names: Iterable[str] | None = None) -> Iterator[Finding]:
    """The findings of the checks `names` (default: all, in registry order), lazily."""
    for name in CHECKS if names is None else names:
        yield from CHECKS[name](view)


__all__ = ["CHECKS", "Check", "iter_findings", "prepare"]

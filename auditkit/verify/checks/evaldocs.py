"""Per-document evaluation losses (SPEC v1.2, optional): each run row that names an `eval_docs` file
must point at `eval-docs/<run_id>.csv`, a regular file the package holds and MANIFEST.json lists, with
the sha256 the row records, readable as `doc,nats,bytes`, and standing for the row's val_bpb. A row
with both columns empty (every v1.0/v1.1 row) has nothing to check."""

from __future__ import annotations

import hashlib
import math
from typing import Iterator

from auditkit.findings import Finding
from auditkit.package.evaldocs import docs_tolerance, docs_val_bpb, parse_eval_docs
from auditkit.errors import PackageDefect
from auditkit.verify.checks import manifest as manifest_check
from auditkit.verify.view import PackageView


def check(view: PackageView) -> Iterator[Finding]:
    listed = None
    for rid, (rel, i, row) in sorted(view.runs.items()):
        path, sha = row.get("eval_docs", "") or "", row.get("eval_docs_sha256", "") or ""
        if not path and not sha:
            continue
        where = f"row {i}, column eval_docs"
        if not path or not sha or path != f"eval-docs/{rid}.csv":
            yield Finding(rel, "eval-docs-columns", where, f"eval-docs/{rid}.csv with its eval_docs_sha256",
                          f"eval_docs={path!r}, eval_docs_sha256={sha!r}",
                          "a run names its per-document losses by both columns, at eval-docs/<run_id>.csv")
            if not path:
                continue
        fs = view.files.get(path)
        if fs is None:
            yield Finding(rel, "eval-docs-missing", where, "a regular file the package holds", f"{path}: not found",
                          f"run {rid} names per-document losses the package does not hold")
            continue
        if listed is None:
            listed = manifest_check.prepare(view).listed or {}
        if listed and path not in listed:
            yield Finding(path, "eval-docs-unlisted", "", "listed in MANIFEST.json", "not listed",
                          f"run {rid}'s per-document losses are not vouched for by the MANIFEST")
        if sha and fs.sha256 != sha:
            yield Finding(path, "eval-docs-hash-mismatch", "", sha, fs.sha256,
                          f"the file is not the one run {rid}'s row ({rel} row {i}) records")
        data = fs.content
        if data is None:
            continue   # too large to parse: the scan's own finding says so
        if hashlib.sha256(data).hexdigest() != fs.sha256:
            continue
        try:
            ed = parse_eval_docs(data, path)
        except PackageDefect as exc:
            yield exc.finding
            continue
        try:
            want = float(row.get("val_bpb", ""))
        except ValueError:
            continue   # the row's own findings name a val_bpb that is no number
        got = docs_val_bpb(ed)
        if not math.isfinite(want) or abs(got - want) > docs_tolerance(ed):
            yield Finding(path, "eval-docs-val-bpb-mismatch", "", f"val_bpb {row.get('val_bpb')} ({rel} row {i})",
                          f"{got:.9f} from {len(ed.nats)} documents",
                          f"the per-document losses do not add up to run {rid}'s val_bpb")

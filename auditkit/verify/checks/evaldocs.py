"""Per-document evaluation losses (SPEC v1.2, optional): each run row that names an `eval_docs` file
must point at `eval-docs/<run_id>.csv`, a regular file the package holds and MANIFEST.json lists, with
the sha256 the row records, readable as `doc,nats,bytes`, and standing for the row's val_bpb. A row
with both columns empty (every v1.0/v1.1 row) has nothing to check.

The runs a gate compares were scored on one evaluation, so their files must list the same documents
with the same byte counts (issue 21): within each gate, a file whose documents differ from those most
of the gate's files list is `eval-docs-set-mismatch`."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from auditkit.findings import Finding
from auditkit.package.evaldocs import EvalDocs, docs_tolerance, docs_val_bpb, parse_eval_docs
from auditkit.errors import PackageDefect
from auditkit.verify.checks import manifest as manifest_check
from auditkit.verify.view import PackageView


def prepare(view: PackageView) -> None:
    """Parse the per-document files the rows name while the readers still hash the large files (called
    once the documents are in: `checks.prepare`); `check` then finds them parsed."""
    for _rid, (_rel, _i, row) in sorted(view.runs.items()):
        path = row.get("eval_docs", "") or ""
        if path and path in view.files:
            _parsed(view, path)


@dataclass(frozen=True)
class Parsed:
    """One per-document file as parsed, with what the checks compare it by."""

    docs: EvalDocs
    val_bpb: float          # what its losses add up to (`docs_val_bpb`)
    document_set: bytes     # a digest of its documents and their byte counts, in order


def _parsed(view: PackageView, path: str) -> Parsed | PackageDefect | None:
    """The file `path` as parsed (its PackageDefect when it is not `doc,nats,bytes`), once per file content;
    None when its bytes were not kept or are not those hashed."""
    fs = view.files[path]
    done: dict = view.memo("evaldocs.parsed", dict)
    key = (path, fs.sha256)
    if key not in done:
        data = fs.content
        if data is None or hashlib.sha256(data).hexdigest() != fs.sha256:
            done[key] = None
        else:
            try:
                ed = parse_eval_docs(data, path)
            except PackageDefect as exc:
                done[key] = exc
            else:
                digest = hashlib.sha256(ed.doc.astype("<i8").tobytes())
                digest.update(ed.bytes.astype("<i8").tobytes())
                done[key] = Parsed(ed, docs_val_bpb(ed), digest.digest())
    return done[key]


def check(view: PackageView) -> Iterator[Finding]:
    parsed: dict[str, tuple[str, Parsed]] = {}
    yield from _files(view, parsed)
    yield from _document_sets(view, parsed)


def _files(view: PackageView, parsed: dict[str, tuple[str, Parsed]]) -> Iterator[Finding]:
    """Each row's file on its own; `parsed[run_id]` = (path, `Parsed`) for every file that parsed."""
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
        one = _parsed(view, path)
        if one is None:
            continue   # too large to parse (the scan's own finding says so), or not the bytes hashed
        if isinstance(one, PackageDefect):
            yield one.finding
            continue
        parsed[rid] = (path, one)
        try:
            want = float(row.get("val_bpb", ""))
        except ValueError:
            continue   # the row's own findings name a val_bpb that is no number
        got, ed = one.val_bpb, one.docs
        if not math.isfinite(want) or abs(got - want) > docs_tolerance(ed):
            yield Finding(path, "eval-docs-val-bpb-mismatch", "", f"val_bpb {row.get('val_bpb')} ({rel} row {i})",
                          f"{got:.9f} from {len(ed.nats)} documents",
                          f"the per-document losses do not add up to run {rid}'s val_bpb")


def _difference(ed: EvalDocs, ref: EvalDocs) -> str:
    """Where the documents of `ed` first differ from those of `ref` (both as parsed)."""
    n = min(len(ed.doc), len(ref.doc))
    at = np.flatnonzero((ed.doc[:n] != ref.doc[:n]) | (ed.bytes[:n] != ref.bytes[:n]))
    if len(at):
        k = int(at[0])
        return (f"{len(ed.doc)} documents; row {k + 1} is doc {int(ed.doc[k])} of {int(ed.bytes[k])} bytes, "
                f"not doc {int(ref.doc[k])} of {int(ref.bytes[k])} bytes")
    return f"{len(ed.doc)} documents, not {len(ref.doc)}"


def _document_sets(view: PackageView, parsed: dict[str, tuple[str, Parsed]]) -> Iterator[Finding]:
    """Within each gate, the scored runs' files list one set of documents (the one most of them list)."""
    for gate, picked in view.gate_inputs:
        runs = sorted({r.get("run_id", "") for _, r in picked
                       if (r.get("status") or "") == "ok" and r.get("run_id", "") in parsed})
        if len(runs) < 2:
            continue
        sets = {rid: parsed[rid][1].document_set for rid in runs}
        counts = Counter(sets.values())
        if len(counts) == 1:
            continue
        # the set most files list is the reference; ties go to the set of the first run (by run_id) listing one
        top = max(counts.values())
        reference_run = next(rid for rid in runs if counts[sets[rid]] == top)
        ref_path, ref = parsed[reference_run][0], parsed[reference_run][1].docs
        for rid in runs:
            if sets[rid] == sets[reference_run]:
                continue
            path, ed = parsed[rid][0], parsed[rid][1].docs
            yield Finding(path, "eval-docs-set-mismatch", f"gate {gate}, run {rid}",
                          f"{len(ref.doc)} documents as {top} of the gate's {len(runs)} files list them "
                          f"(e.g. {ref_path})", _difference(ed, ref),
                          f"gate {gate} compares runs whose per-document losses cover other documents: "
                          f"run {rid} was not scored on the documents the others were")

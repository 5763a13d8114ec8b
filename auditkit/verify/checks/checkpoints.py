"""Checkpoints (SPEC section 8), as the scan read them and as the rows name them.

A row's checkpoint exists with the recorded sha256, belongs to the row's run and has
the row's parameter count; every checkpoint's own scan (header, offsets, dtypes,
finite values) found nothing, its metadata follows the schema, and its tensor names
and shapes are exactly those its `model_config` implies.
"""

from __future__ import annotations

from typing import Iterator

from auditkit.findings import Finding, row_location
from auditkit.package.checkpoint_arch import architecture_problems, expected_num_params
from auditkit.package.rows import RNG_SEED_COLUMN
from auditkit.verify.view import PackageView, finding


def check(view: PackageView) -> Iterator[Finding]:
    yield from named_by_rows(view)
    yield from scanned(view)


def named_by_rows(view: PackageView) -> Iterator[Finding]:
    for rid, (rel, i, r) in sorted(view.runs.items()):
        ck = r.get("checkpoint", "")
        if not ck:
            continue
        fs = view.files.get(ck)
        if fs is None:
            yield finding(rel, "checkpoint-missing", row_location(i, "checkpoint"), ck, "absent")
            continue
        if fs.sha256 != r.get("checkpoint_sha256"):
            yield finding(rel, "checkpoint-hash", row_location(i, "checkpoint_sha256"), r.get("checkpoint_sha256"),
                          fs.sha256, f"{ck} is not the checkpoint this run wrote")
        scan = fs.checkpoint
        if scan is None or scan.metadata is None:
            continue
        mid = scan.metadata.get("run_id")
        if mid != rid:
            yield finding(ck, "checkpoint-run-mismatch", "__metadata__.run_id", rid, mid,
                          "the row names a checkpoint of another run")
        rng = (r.get(RNG_SEED_COLUMN) or "").strip()
        if rng and scan.metadata.get(RNG_SEED_COLUMN) != rng:  # anchored seeds (SPEC v1.1)
            yield finding(ck, "checkpoint-run-mismatch", f"__metadata__.{RNG_SEED_COLUMN}", rng,
                          scan.metadata.get(RNG_SEED_COLUMN) or "absent",
                          "the checkpoint was not trained with the seed its row claims")
        n_params = expected_num_params(scan)
        if n_params is None:
            continue
        n = n_params / 1e6
        try:
            claimed = float(r.get("num_params_M", ""))
        except ValueError:
            continue
        if abs(claimed - n) > 5e-7 + 1e-9:
            yield finding(rel, "num-params-mismatch", row_location(i, "num_params_M"), f"{n:.6f}", r["num_params_M"],
                          "the row's parameter count is not the checkpoint's")


def scanned(view: PackageView) -> Iterator[Finding]:
    from auditkit.verify.fastschema import violations

    for rel, fs in sorted(view.files.items()):
        scan = fs.checkpoint
        if scan is None:
            continue
        for code, loc, exp, found in scan.problems:
            yield finding(rel, code, loc, exp, found)
        meta = scan.metadata
        if meta is None and not scan.problems:
            yield finding(rel, "checkpoint-metadata-missing", "__metadata__",
                          "run_id, config_id, seed, step, model_config", "none")
        elif meta is not None:
            for v in violations(meta, "checkpoint-metadata"):
                yield finding(rel, "checkpoint-metadata-invalid", "__metadata__" + v.json_path[1:],
                              f"SPEC section 8 metadata ({v.keyword})", v.message)
            if "model_config" in meta and scan.tensors:
                for code, loc, exp, found in architecture_problems(scan):
                    yield finding(rel, code, loc, exp, found, "the checkpoint is not the architecture its "
                                  "model_config names")

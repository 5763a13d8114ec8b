"""Candidate matrices and run rows, row by row (SPEC sections 2 and 4).

Each CSV parses (UTF-8, no BOM, `\\n` endings, every row as wide as the header, the
required columns once each, at least one row); each row follows its schema; run rows
name the host and stage of their file, a stage of the protocol and a config_id of the
matrix, start no later than they finish, and have a run_id unique in the package;
matrix config_ids are unique.
"""

from __future__ import annotations

import math
from typing import Iterator

from auditkit.findings import Finding, row_location
from auditkit.package.rows import parse_run_csv_path
from auditkit.package.jsonscan import MAX_INT_DIGITS
from auditkit.verify.view import PackageView, finding, parse_timestamp


DECIMAL_COLUMNS = ("budget_value", "val_bpb", "training_seconds", "total_seconds", "total_tokens_M", "num_params_M",
                   "peak_vram_mb", "mfu_percent")
INTEGER_COLUMNS = ("seed", "num_steps")


def _column(json_path: str) -> str | None:
    return json_path[2:] if json_path.startswith("$.") else None


def check(view: PackageView) -> Iterator[Finding]:
    yield from matrices(view)
    yield from run_rows(view)


def matrices(view: PackageView) -> Iterator[Finding]:
    for rel in view.matrices:
        table = view.table(rel)
        yield from table.findings
        bad = view.row_violations(rel)
        configs: set[str] = set()
        for i, r in table.rows:
            for v in bad.get(i, ()):
                yield finding(rel, "row-invalid", row_location(i, _column(v.json_path)),
                              f"a matrix row following SPEC section 2 ({v.keyword})", v.message)
            cid = r.get("config_id", "")
            if cid in configs:
                yield finding(rel, "config-id-duplicate", row_location(i, "config_id"), "unique config_id", cid)
            configs.add(cid)


def run_rows(view: PackageView) -> Iterator[Finding]:
    for rel in sorted(view.files):
        if rel.startswith("remote-results/") and rel.endswith(".csv") and not parse_run_csv_path(rel):
            yield finding(rel, "run-csv-name", "", "remote-results/<host>_<stage>_summary.csv", rel)
    configs, stages, first = view.configs, view.stages, view.runs
    for rel, host, stage in view.run_csvs:
        table = view.table(rel)
        yield from table.findings
        bad = view.row_violations(rel)
        for i, r in table.rows:
            for v in bad.get(i, ()):
                yield finding(rel, "row-invalid", row_location(i, _column(v.json_path)),
                              f"a value following SPEC section 4 ({v.keyword})", v.message)
            if r.get("host") and r["host"] != host:
                yield finding(rel, "host-mismatch", row_location(i, "host"), host, r["host"],
                              "a row's host must equal the host in its file name")
            if r.get("stage") and r["stage"] != stage:
                yield finding(rel, "stage-mismatch", row_location(i, "stage"), stage, r["stage"])
            rid = r.get("run_id", "")
            if rid and first[rid][:2] != (rel, i):
                yield finding(rel, "run-id-duplicate", row_location(i, "run_id"), "a run_id unique in the package",
                              f"{rid} (also {first[rid][0]} row {first[rid][1]})")
            if stages and r.get("stage") and r["stage"] not in stages:
                yield finding(rel, "unknown-stage", row_location(i, "stage"), "a stage of protocol.json", r["stage"])
            if configs and r.get("config_id") and r["config_id"] not in configs:
                yield finding(rel, "unknown-config", row_location(i, "config_id"), "a config_id of the matrix",
                              r["config_id"])
            yield from numbers(rel, i, r)
            a, b = parse_timestamp(r.get("started_at")), parse_timestamp(r.get("finished_at"))
            if a and b and _ordered(a, b) is False:
                yield finding(rel, "time-order", row_location(i, "finished_at"), f"at or after {r['started_at']}",
                              r["finished_at"])


def numbers(rel: str, i: int, r: dict[str, str]) -> Iterator[Finding]:
    """Numbers the schema's decimal pattern accepts but no reader can use: a decimal that overflows
    to infinity (a 400-digit val_bpb), an integer longer than any parser takes."""
    for col in DECIMAL_COLUMNS:
        v = r.get(col, "")
        if len(v) > 300:
            try:
                finite = math.isfinite(float(v))
            except ValueError:
                continue            # not a decimal at all: the schema says so
            if not finite:
                yield finding(rel, "value-not-finite", row_location(i, col), "a finite decimal",
                              f"{v[:20]}... ({len(v)} characters)", "the value overflows to infinity when read")
    for col in INTEGER_COLUMNS:
        v = r.get(col, "")
        if len(v.lstrip("-")) > MAX_INT_DIGITS:
            yield finding(rel, "value-too-long", row_location(i, col), f"an integer of at most {MAX_INT_DIGITS} digits",
                          f"{v[:20]}... ({len(v)} characters)")


def _ordered(a, b) -> bool | None:
    """a <= b, or None when the two cannot be compared (one has an offset, the other none)."""
    try:
        return a <= b
    except TypeError:
        return None

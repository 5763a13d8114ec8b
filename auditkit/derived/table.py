"""A derived table as a value (`Table`: typed rows written byte-stably as CSV and JSON), the kinds of
table (`TableKind`), and the versions of their generators: which version this auditkit runs
(`GENERATOR_VERSIONS`), how an older version's table is projected from the current one (`AS_OF`),
and which versions were retired (`RETIRED`)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

TABLE_DIR = "analysis"


class TableKind(str, Enum):
    BUDGET_COUNTERFACTUAL = "budget_counterfactual"
    PROMOTION_SURVIVAL = "promotion_survival"
    THRESHOLD_SENSITIVITY = "threshold_sensitivity"
    HOST_COMPARISON = "host_comparison"
    STAGE_SUMMARY = "stage_summary"
    SMOKE_SUMMARY = "smoke_summary"
    ROBUSTNESS = "robustness"


# The version of each generator this auditkit runs.  A generator's version goes up whenever the
# bytes it writes for the same inputs change (a new column, another number format); the version
# that wrote a table is recorded with it in table_manifest.json, so `--check` compares a table with
# what *that* version gives, and a package keeps checking after auditkit grows.  `AS_OF` turns the
# current generator's table into an older version's (every older version is a projection of the
# current one).  A manifest without `generators` was written by auditkit's first table generators
# (SPEC v1): every kind but `robustness`, each at version 1.
GENERATOR_VERSIONS = {
    TableKind.BUDGET_COUNTERFACTUAL.value: 1,
    TableKind.PROMOTION_SURVIVAL.value: 2,    # 2: the `reason` column
    TableKind.THRESHOLD_SENSITIVITY.value: 1,
    TableKind.HOST_COMPARISON.value: 1,
    TableKind.STAGE_SUMMARY.value: 1,
    TableKind.SMOKE_SUMMARY.value: 1,
    TableKind.ROBUSTNESS.value: 2,            # a kind the first generators did not have; 2: the statistics corrected
}
FIRST_GENERATORS = {k: 1 for k in GENERATOR_VERSIONS if k != TableKind.ROBUSTNESS.value}


def _drop_columns(table: "Table", names: tuple[str, ...]) -> "Table":
    keep = [j for j, c in enumerate(table.columns) if c not in names]
    return Table(table.id, table.kind, tuple(table.columns[j] for j in keep),
                 tuple(tuple(r[j] for j in keep) for r in table.rows), table.inputs, table.decimals)


AS_OF = {
    (TableKind.PROMOTION_SURVIVAL.value, 1): lambda t: _drop_columns(t, ("reason",)),
}

# Versions auditkit retired on purpose: their numbers were wrong, so they are not rerun.  A package
# whose tables one of them made keeps checking everything else; these tables are reported as not
# checked (information), with the reason, never as matching.
RETIRED = {
    (TableKind.ROBUSTNESS.value, 1): "robustness generator 1 drew evaluation noise independently for each candidate "
                                     "(all are scored on the same tokens) and resampled cells without stratifying by "
                                     "host; generator 2 corrects both (docs/STATISTICS.md) and version 1 is not rerun",
}


def table_as_of(table: "Table", version: int) -> "Table | None":
    """`table` as version `version` of its generator writes it; None for a version this auditkit
    does not know (newer than its own, or never made)."""
    current = GENERATOR_VERSIONS.get(table.kind)
    if current is None or not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return None
    if version == current:
        return table
    step = AS_OF.get((table.kind, version))
    return step(table) if step else None


_FORMULA_START = frozenset("=+-@\t\r")
_SPEC_ID = re.compile(r"[A-Za-z0-9._:-]+")     # the alphabet of SPEC's ids (config_id, host, stage, run_id)


@dataclass(frozen=True)
class Table:
    """One derived table: typed rows (str, int, float, bool or None), written byte-stably."""

    id: str
    kind: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    inputs: tuple[str, ...]
    decimals: dict = field(default_factory=dict)  # column -> decimals (default 6)

    def _formatted(self) -> tuple[list[list[str]], list[list]]:
        """(CSV text, JSON value) of every cell, column by column."""
        n = len(self.columns)
        csv_rows: list[list[str]] = [[""] * n for _ in self.rows]
        json_rows: list[list] = [[None] * n for _ in self.rows]
        for j, col in enumerate(self.columns):
            d = self.decimals.get(col, 6)
            zero, negzero = f"{0.0:.{d}f}", f"{-0.0:.{d}f}"
            for i, r in enumerate(self.rows):
                v = r[j]
                t = type(v)
                if v is None:
                    continue
                if t is float:
                    if v != v or v in (math.inf, -math.inf):
                        raise ValueError(f"table {self.id}, column {col}: non-finite value {v!r}")
                    text = f"{v:.{d}f}"
                    if text == negzero:
                        text = zero
                    csv_rows[i][j], json_rows[i][j] = text, float(text)
                elif t is bool:
                    csv_rows[i][j], json_rows[i][j] = ("true" if v else "false"), v
                elif t is int or isinstance(v, (int, np.integer)):
                    csv_rows[i][j], json_rows[i][j] = str(int(v)), int(v)
                else:
                    csv_rows[i][j] = json_rows[i][j] = str(v)
        return csv_rows, json_rows

    def csv_text(self, formatted=None) -> str:
        csv_rows = (formatted or self._formatted())[0]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        w.writerows(csv_rows)
        return buf.getvalue()

    def json_text(self, formatted=None) -> str:
        """Sorted keys, one row object a line (compact separators keep the C encoder)."""
        json_rows = (formatted or self._formatted())[1]
        head = {"columns": list(self.columns), "id": self.id, "inputs": list(self.inputs), "kind": self.kind}
        dumps = json.JSONEncoder(sort_keys=True, separators=(", ", ": ")).encode
        cols = self.columns
        rows = ",\n".join(dumps(dict(zip(cols, r))) for r in json_rows)
        return dumps(head)[:-1] + (', "rows": [\n' + rows + "\n]}\n" if rows else ', "rows": []}\n')

    def formula_cell(self) -> tuple[int, str, str] | None:
        """(row, column, text) of the first text cell a spreadsheet would run as a formula (it
        starts with =, +, -, @, a tab or a carriage return and is not an id of SPEC's alphabet),
        or None.  Such text comes from the package's data (verify refuses such ids)."""
        for j, col in enumerate(self.columns):
            for i, r in enumerate(self.rows):
                v = r[j]
                if type(v) is str and v[:1] in _FORMULA_START and not _SPEC_ID.fullmatch(v):
                    return i + 1, col, v
        return None

    def files(self) -> dict[str, str]:
        """Package-relative path -> text, for both forms."""
        f = self._formatted()
        return {f"{TABLE_DIR}/{self.id}.csv": self.csv_text(f), f"{TABLE_DIR}/{self.id}.json": self.json_text(f)}

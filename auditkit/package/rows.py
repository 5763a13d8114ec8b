"""Run rows (SPEC section 4): the columns, CSV reading and typed parsing.

`read_csv_text` returns raw string rows (what the schema validates);
`RunRow.from_strings` types one row for the gate engine and the tables.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass

from auditkit.errors import AuditError
from auditkit.package.store import csv_rows

RUN_COLUMNS = (
    "run_id", "host", "stage", "seed", "config_id", "budget_kind", "budget_value",
    "status", "val_bpb", "training_seconds", "total_seconds", "num_steps",
    "total_tokens_M", "num_params_M", "peak_vram_mb", "mfu_percent",
    "started_at", "finished_at", "runner_sha256", "checkpoint", "checkpoint_sha256",
)
# v1.1 optional columns (SPEC section 4): how the row's val_bpb was measured.  A package
# without them verifies as before; a runner that knows them writes all of them.
STATUSES = ("ok", "failed", "diverged", "oom", "timeout")
#: the seed a run trained with, when its stage's seeds are anchored (SPEC v1.1); after RUN_COLUMNS
RNG_SEED_COLUMN = "rng_seed"
#: v1.1 optional columns: how val_bpb was measured (every row of the bundled runner has them)
EVAL_COLUMNS = ("val_bpb_se", "eval_sha256", "eval_seq_len", "eval_tokens", "eval_bytes", "tokenizer")
#: v1.2 optional columns: the run's per-document evaluation file and its sha256 (docs/SPEC.md)
EVAL_DOCS_COLUMNS = ("eval_docs", "eval_docs_sha256")
#: all optional columns, in this order after RUN_COLUMNS
OPTIONAL_RUN_COLUMNS = EVAL_COLUMNS + (RNG_SEED_COLUMN,) + EVAL_DOCS_COLUMNS

RUN_CSV_RE = re.compile(r"^remote-results/(?P<host>[a-z0-9-]+)_(?P<stage>.+)_summary\.csv$")


def run_csv_path(host: str, stage: str) -> str:
    return f"remote-results/{host}_{stage}_summary.csv"


def parse_run_csv_path(path: str) -> tuple[str, str] | None:
    """(host, stage) from ``remote-results/<host>_<stage>_summary.csv``, or None."""
    m = RUN_CSV_RE.match(path)
    return (m["host"], m["stage"]) if m else None


def read_csv_text(text: str, path: str = "<csv>") -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows (dicts of strings) of CSV `text` (`store.csv_rows`). Raises AuditError if not CSV
    at all (a package's own file is read with `PackageStore.read_csv`, whose error is a finding)."""
    try:
        return csv_rows(text)
    except csv.Error as exc:
        raise AuditError(f"not a readable CSV: {exc}", path=path) from exc


def format_float(x: float | None, decimals: int = 6) -> str:
    """Plain decimal, fixed decimals, '' for None: the package's byte-stable float format."""
    if x is None:
        return ""
    if not math.isfinite(x):
        raise ValueError(f"non-finite value {x!r} cannot be written")
    text = f"{x:.{decimals}f}"
    return "0." + "0" * decimals if text.lstrip("-") == "0." + "0" * decimals else text


def utc_ts(s: str) -> str:
    """Normalise an ISO-8601 UTC timestamp so that string order is time order."""
    return s.replace("+00:00", "Z")


@dataclass(frozen=True)
class RunRow:
    run_id: str
    host: str
    stage: str
    seed: int
    config_id: str
    status: str
    val_bpb: float | None
    training_seconds: float
    started_at: str
    finished_at: str
    budget_kind: str = "seconds"
    budget_value: float = 0.0
    num_steps: int = 0
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    extra: tuple = ()

    def metric(self, column: str) -> float | None:
        if column == "val_bpb":
            return self.val_bpb
        v = dict(self.extra).get(column)
        if v in (None, ""):
            return None
        try:
            return float(v)
        except ValueError:
            return None

    @classmethod
    def from_strings(cls, d: dict[str, str]) -> "RunRow":
        """Typed row; raises ValueError naming the column when a value does not parse."""
        def num(col, typ=float, empty=None):
            v = (d.get(col) or "").strip()
            if v == "":
                return empty
            try:
                return typ(v)
            except ValueError:
                raise ValueError(f"column {col}: {v!r} is not a {typ.__name__}") from None

        val = num("val_bpb")
        return cls(
            run_id=d.get("run_id", ""), host=d.get("host", ""), stage=d.get("stage", ""),
            seed=num("seed", int, 0), config_id=d.get("config_id", ""), status=d.get("status", ""),
            val_bpb=val, training_seconds=num("training_seconds", float, 0.0),
            started_at=utc_ts(d.get("started_at", "")), finished_at=utc_ts(d.get("finished_at", "")),
            budget_kind=d.get("budget_kind", ""), budget_value=num("budget_value", float, 0.0),
            num_steps=num("num_steps", int, 0), checkpoint=d.get("checkpoint", ""),
            checkpoint_sha256=d.get("checkpoint_sha256", ""),
            extra=tuple(sorted((k, v) for k, v in d.items() if k not in RUN_COLUMNS and k is not None)),
        )


def run_header(rows: list[dict]) -> list[str]:
    """The columns to write for these run rows: SPEC's, then the optional ones any row has
    (in OPTIONAL_RUN_COLUMNS order), then any other column a row already carries."""
    header = list(RUN_COLUMNS) + [c for c in OPTIONAL_RUN_COLUMNS if any(c in r for r in rows)]
    return header + sorted({c for r in rows for c in r} - set(header))


def write_csv_text(header: list[str], rows: list[dict]) -> str:
    """CSV text with `\\n` endings and minimal quoting (byte-stable)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n", extrasaction="raise")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()

"""The columnar CSV reader: run CSVs (and any CSV wanted as columns) parsed by pandas from bytes
the store already read.

The store (`auditkit.package.store`) owns every read of package bytes and its text reader
(`PackageStore.read_csv`) gives rows as dicts; this module owns the other CSV read site of the
library, for data read whole as columns: `text_frame` (every value as text, a PackageDefect naming
the file when it is not CSV), `typed_frame` (the fast typed parse; pandas' own errors, for a caller
that falls back) and, on top of them, `read_run_csv` (a run CSV as replay's compact typed columns,
strict errors naming the file and row) and `concat_rows`.
"""

from __future__ import annotations

import csv
import hashlib
import io

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from auditkit.errors import defect
from auditkit.package.store import PackageStore, csv_rows, decode_utf8

ROW_COLUMNS = ("host", "stage", "seed", "config_id", "status", "started_at")
TEXT_COLUMNS = ("host", "stage", "config_id", "status")
# A decision holds one object per run row and a run CSV one line per run: both are read whole,
# so they get a larger cap than the store's default for one document.
MAX_RUN_CSV_BYTES = 1 << 30


def text_frame(data: bytes, rel: str, usecols=None, *, dtype=str, what: str = "CSV") -> pd.DataFrame:
    """Every value of CSV `data` as text (no NA conversion), only the columns `usecols` (names or a
    predicate on a name) when given. Raises PackageDefect ``csv-unreadable`` naming `rel` when the
    bytes are not CSV ("not a readable <what>: ...")."""
    try:
        return _pandas_frame(data, usecols=usecols, dtype=dtype)
    except (ValueError, pd.errors.ParserError) as exc:
        raise defect(rel, "csv-unreadable", f"not a readable {what}: {exc}") from None


def typed_frame(data: bytes, usecols, dtype: dict, *, na_values=None, dates=()) -> pd.DataFrame:
    """CSV `data` parsed straight into typed columns by pandas' C reader (`dates`: ISO-8601 columns).
    Raises pandas' own ValueError/TypeError/OverflowError when a value does not parse: the caller
    falls back to `text_frame`, which names the row."""
    return _pandas_frame(data, usecols=usecols, dtype=dtype, na_values=na_values, parse_dates=list(dates) or None,
                         date_format="ISO8601" if dates else None)


def _pandas_frame(data: bytes, **options) -> pd.DataFrame:
    """pandas' C reader over `data`, nothing converted to NA unless `na_values` says so: the one
    columnar CSV read of the library (the store's `csv_rows` is the other, for text)."""
    return pd.read_csv(io.BytesIO(data), keep_default_na=False, engine="c", **options)


def csv_header(data: bytes, rel: str) -> list[str]:
    """The header of CSV `data` (PackageDefect when it is not CSV or names a column twice)."""
    end = data.find(b"\n")
    first = (data if end < 0 else data[:end]).decode("utf-8").rstrip("\r")
    try:
        header = csv_rows(first)[0]
    except csv.Error as exc:
        raise defect(rel, "csv-unreadable", f"the header is not CSV: {exc}", location="header") from None
    seen = set()
    for name in header:
        if name in seen:
            raise defect(rel, "csv-duplicate-column", f"column {name!r} appears twice in the header", location="header",
                         expected="each column once", found=name,
                         hint="two columns of one name: which one holds the run's value is ambiguous")
        seen.add(name)
    return header


# every column replay and the derived tables read from a run CSV, with the types of the common case
SHARED_COLUMNS = {"run_id": "str", "host": "category", "stage": "category", "seed": "int64", "config_id": "category",
                  "status": "category", "training_seconds": "float64", "num_steps": "int64"}


def shared_run_frame(store: PackageStore, rel: str, metric: str = "val_bpb", *,
                     keep: bool = True) -> tuple[pd.DataFrame | None, str | None]:
    """(frame, sha256) of run CSV `rel`: one typed parse, from the very bytes hashed, of every column
    replay and the derived tables read (`SHARED_COLUMNS`, `started_at` as UTC timestamps, `metric` as
    float64; an empty metric or training time is NaN), kept on the store so that one command parses a
    file once whichever of its steps reads it first. The frame is None when the file lacks one of
    these columns or a value does not parse as its type: each reader then reads the file its own way
    (and names the row). Never mutate the frame: select columns from it. With `keep=False` only a
    frame parsed already is returned ((None, None) otherwise): replay alone keeps no file's rows
    beyond its gate, so it takes the frame where the tables parsed it and never parses one for it."""
    key = ("run_frame", rel, metric)
    if key not in store.parsed and keep:
        data = store.read_bytes(rel, MAX_RUN_CSV_BYTES)
        sha = hashlib.sha256(data).hexdigest()
        frame = None
        if data.isascii():
            try:
                header = csv_header(data, rel)
            except Exception:  # noqa: BLE001 - the reader's own path names the defect
                header = []
            want = {**SHARED_COLUMNS, metric: "float64"}
            if all(c in header for c in [*want, "started_at"]):
                try:
                    frame = typed_frame(data, [*want, "started_at"], want, dates=["started_at"],
                                        na_values={metric: [""], "training_seconds": [""]})
                except (ValueError, TypeError, OverflowError, pd.errors.ParserError):
                    frame = None
                if frame is not None and not isinstance(frame["started_at"].dtype, pd.DatetimeTZDtype):
                    frame = None
        store.parsed[key] = (frame, sha)
    return store.parsed.get(key, (None, None))


def read_run_csv(store: PackageStore, rel: str, metric: str = "val_bpb") -> tuple[pd.DataFrame, str]:
    """(rows, sha256) of one run CSV, parsed from the very bytes that were hashed.

    Columns: `host`, `stage`, `config_id`, `status` (categorical), `seed` (int64), `value`
    (the metric as float64, NaN when empty or not a number), `started` (UTC datetime, NaT
    when not a timestamp), `_row` (data rows counted from 1), plus `started_at` (the text)
    only when some timestamp did not parse.  Raises PackageDefect naming the file (and row)
    when it is not a regular UTF-8 CSV with the columns replay needs, or a seed is no integer."""
    shared, sha = shared_run_frame(store, rel, metric, keep=False)
    if shared is not None and metric not in ROW_COLUMNS:
        need = set(ROW_COLUMNS) | {metric}      # in the file's order, as its own read gives them
        df = shared[[c for c in shared.columns if c in need]].rename(columns={metric: "value", "started_at": "started"})
        df["_row"] = np.arange(1, len(df) + 1, dtype=np.int64)
        return df, sha
    data = store.read_bytes(rel, MAX_RUN_CSV_BYTES)
    sha = hashlib.sha256(data).hexdigest()
    if not data.isascii():
        decode_utf8(data, rel)  # a BOM or an invalid byte is a PackageDefect naming the offset
    header = csv_header(data, rel)
    need = list(ROW_COLUMNS) + ([metric] if metric not in ROW_COLUMNS else [])
    missing = [c for c in need if c not in header]
    if missing:
        raise defect(rel, "run-csv-missing-column", f"the run CSV lacks column(s) {missing}", location="header",
                     expected=", ".join(need), found=", ".join(header) or "no header",
                     hint="SPEC.md section 4 lists the required columns; without them the gate cannot be replayed")
    try:
        df = _typed_rows(data, need, metric) if metric not in ROW_COLUMNS else None
    except (ValueError, TypeError, OverflowError):
        df = None  # a value that does not parse: the text path below finds and names it
    except pd.errors.ParserError as exc:
        raise defect(rel, "csv-unreadable", f"not a readable CSV: {exc}") from None
    if df is None:
        df = _text_rows(data, need, metric, rel)
    df["_row"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df, sha


def _typed_rows(data: bytes, need: list[str], metric: str) -> pd.DataFrame:
    """The common case, parsed straight into compact columns by pandas' C reader."""
    dtype = {c: "category" for c in TEXT_COLUMNS} | {"seed": "int64", metric: "float64"}
    df = typed_frame(data, need, dtype, na_values={metric: [""]}, dates=["started_at"])
    if not isinstance(df["started_at"].dtype, pd.DatetimeTZDtype):
        raise ValueError("a started_at that is not an ISO-8601 UTC timestamp")
    return df.rename(columns={metric: "value", "started_at": "started"})


def _text_rows(data: bytes, need: list[str], metric: str, rel: str) -> pd.DataFrame:
    """Every value as text first: slower, and names the row of a value that does not parse."""
    raw = text_frame(data, rel, need, dtype=object).fillna("")
    seed = pd.to_numeric(raw["seed"], errors="coerce")
    bad = (seed.isna() | (seed % 1 != 0)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise defect(rel, "row-bad-seed", "a seed is not an integer", location=f"row {i + 1}, column seed",
                     expected="an integer", found=repr(raw["seed"].iat[i]),
                     hint="cells are (host, seed) pairs: a row without an integer seed cannot be placed")
    df = pd.DataFrame({c: raw[c].astype("category") for c in TEXT_COLUMNS})
    df["seed"] = seed.astype(np.int64).to_numpy()
    df["value"] = pd.to_numeric(raw[metric], errors="coerce").astype(np.float64).to_numpy()
    df["started"] = pd.to_datetime(raw["started_at"], utc=True, format="ISO8601", errors="coerce")
    df["started_at"] = raw["started_at"].astype(object).to_numpy()
    return df


def with_file(df: pd.DataFrame, rel: str) -> pd.DataFrame:
    """`df` with a categorical `_file` column naming `rel` on every row."""
    df["_file"] = pd.Categorical.from_codes(np.zeros(len(df), dtype=np.int8), categories=[rel])
    return df


def concat_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of `read_run_csv` as one (categorical columns joined without decoding them)."""
    if not frames:
        out = pd.DataFrame({c: pd.Categorical([]) for c in TEXT_COLUMNS})
        out["seed"] = np.zeros(0, dtype=np.int64)
        out["value"] = np.zeros(0, dtype=np.float64)
        out["started"] = pd.to_datetime(pd.Series([], dtype=object), utc=True)
        out["_row"] = np.zeros(0, dtype=np.int64)
        out["_file"] = pd.Categorical([])
        return out
    if len(frames) == 1:
        return frames[0]
    cols = {}
    for c in frames[0].columns.union([c for f in frames for c in f.columns], sort=False):
        parts = [f[c] if c in f.columns else pd.Series([None] * len(f), dtype=object) for f in frames]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            if any(p.cat.categories.dtype != parts[0].cat.categories.dtype for p in parts):
                # categories of one text dtype (an empty file's have none to infer it from)
                parts = [p.cat.rename_categories(p.cat.categories.astype(str)) for p in parts]
            cols[c] = union_categoricals(parts, ignore_order=True)
        else:
            cols[c] = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(cols)

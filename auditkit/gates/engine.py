"""The pure decision engine: frozen gate rules (SPEC section 5; their vocabulary and validation
are `auditkit.gates.rules`) plus run rows give a `Decision`.

`decide(rules, rows, candidates)` and `decide_columns(rules, cols, candidates)`
turn frozen rules plus run rows into a `Decision`; neither does I/O, reads a
clock or draws a random number, and the result does not depend on the order
of the rows.  Both go through one vectorised core, so the small path
(`RunRow` objects, tests) and the large path (columns read by pandas, replay
of a million rows) give the same numbers bit for bit.

Numbers, exactly:
- a candidate's mean is ``math.fsum(values) / n`` (the correctly rounded sum,
  so it does not depend on the order of the cells); `std` is the sample
  standard deviation (``None`` for one cell);
- the overall order sorts eligible candidates by that float mean, ties by
  `config_id`; per-cell ranks sort by the metric value, ties by `config_id`;
- a check's value is the difference of means rounded half-even to 9 decimals
  (from its shortest decimal repr), compared with the threshold as decimals
  (SPEC 5.9); mean/min/max/std are written rounded to 9 decimals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from auditkit.gates.rules import CHECK_KINDS, DECIMALS, Better, CheckKind, round9, threshold_passes


class DuplicateRowError(ValueError):
    """Two rows for one candidate in one cell (SPEC 5.2). `where` names the rows when known."""

    def __init__(self, config_id: str, cell: str, where: list[str]):
        self.config_id, self.cell, self.where = config_id, cell, where
        rows = f" ({'; '.join(where)})" if where else ""
        super().__init__(f"two or more rows for candidate {config_id!r} in cell {cell}{rows}")


# --------------------------------------------------------------------------- the decision

class CellResult(NamedTuple):
    """One candidate in one cell (a NamedTuple: a decision holds one per run row)."""

    value: float | None
    rank: int | None
    status: str  # the run's status, or "missing"


@dataclass(frozen=True)
class CandidateResult:
    config_id: str
    eligible: bool
    rank: int | None
    mean: float | None
    min: float | None
    max: float | None
    std: float | None
    wins: int
    values: tuple[float | None, ...]   # per cell, in Decision.cells order (columns: one entry per run row)
    cell_ranks: tuple[int | None, ...]
    statuses: tuple[str, ...]          # the run's status, or "missing"
    reason: str = ""  # why ineligible

    @property
    def cells(self) -> tuple[CellResult, ...]:
        return tuple(map(CellResult._make, zip(self.values, self.cell_ranks, self.statuses)))


@dataclass(frozen=True)
class CheckResult:
    kind: str
    candidate: str
    reference: str | None
    value: float | None
    threshold: float | None
    passed: bool


@dataclass(frozen=True)
class Decision:
    gate: str
    cells: tuple[tuple[str, int], ...]
    candidates: tuple[CandidateResult, ...]  # eligible by rank, then ineligible by config_id
    promoted: tuple[str, ...]
    checks: tuple[CheckResult, ...]

    def candidate(self, config_id: str) -> CandidateResult | None:
        for c in self.candidates:
            if c.config_id == config_id:
                return c
        return None

    def cell_keys(self) -> list[str]:
        """The per-cell keys of the decision document, ``host/seed``, in `cells` order."""
        return [f"{h}/{s}" for h, s in self.cells]

    def to_json(self, *, rules_ref: dict, inputs: list[dict], decided_at: str, cells: bool = True) -> dict:
        """The SPEC section 6 document (with `cells=False`, every candidate's ``cells`` left out:
        one object per run row is what makes a large decision large)."""
        keys = self.cell_keys()
        cands = []
        for c in self.candidates:
            doc = {"config_id": c.config_id, "eligible": c.eligible, "rank": c.rank,
                   "mean": _r(c.mean), "min": _r(c.min), "max": _r(c.max), "std": _r(c.std), "wins": c.wins}
            if cells:
                doc["cells"] = {k: {"val_bpb": v, "rank": r} if st == "ok" else {"val_bpb": v, "rank": r, "status": st}
                                for k, v, r, st in zip(keys, c.values, c.cell_ranks, c.statuses)}
            if c.reason:
                doc["ineligible"] = c.reason
            cands.append(doc)
        checks = []
        for ch in self.checks:
            d = {"kind": ch.kind, "candidate": ch.candidate, "value": ch.value,
                 "threshold": ch.threshold, "passed": ch.passed}
            if ch.reference is not None:
                d["reference"] = ch.reference
            checks.append(d)
        return {"schema": "auditkit/decision/v1", "gate": self.gate, "rules": dict(rules_ref),
                "inputs": [dict(i) for i in inputs], "cells": [[h, s] for h, s in self.cells],
                "candidates": cands, "promoted": list(self.promoted), "checks": checks,
                "decided_at": decided_at}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, DECIMALS)


def decide(rules: dict, rows: Iterable, candidates: Sequence[str]) -> Decision:
    """Apply frozen `rules` to run rows (`RunRow`s); pure.

    `candidates` are the gate's candidates, already resolved by the caller.
    Raises DuplicateRowError (a ValueError) for two rows of one candidate in one cell.
    """
    column = rules["metric"]["column"]
    cols: dict[str, list] = {"stage": [], "host": [], "seed": [], "config_id": [], "status": [], "value": [],
                             "where": []}
    for r in rows:
        cols["stage"].append(r.stage)
        cols["host"].append(r.host)
        cols["seed"].append(int(r.seed))
        cols["config_id"].append(r.config_id)
        cols["status"].append(r.status)
        v = r.metric(column)
        cols["value"].append(math.nan if v is None else float(v))
        cols["where"].append(f"run {r.run_id}")
    return decide_columns(rules, cols, candidates)


def decide_columns(rules: dict, cols: Mapping[str, Sequence], candidates: Sequence[str]) -> Decision:
    """`decide` on columns: equal-length sequences (lists, numpy arrays or pandas Series) named
    `stage`, `host`, `seed` (int), `config_id`, `status`, `value` (float, NaN when absent),
    and optionally `where` (text naming each row, used in DuplicateRowError). Pure."""
    inputs = rules["inputs"]
    better = Better(rules["metric"]["better"])
    value = np.asarray(cols["value"], dtype=np.float64)

    hosts = sorted(set(inputs["hosts"]))
    seeds = sorted(set(int(s) for s in inputs["seeds"]))
    cands = sorted(set(candidates))
    cells = tuple((h, s) for h in hosts for s in seeds)
    nc, ncell = len(cands), len(cells)

    # each row's index among the rules' stages, hosts, seeds and the candidates (-1: not among them)
    stage_i = _codes(cols["stage"], sorted(set(inputs["stages"])))
    host_i = _codes(cols["host"], hosts)
    config_i = _codes(cols["config_id"], cands)
    seed = np.asarray(cols["seed"], dtype=np.int64)
    seed_arr = np.asarray(seeds, dtype=np.int64)
    seed_i = np.searchsorted(seed_arr, seed)
    seed_ok = seed_i < len(seeds)
    seed_ok[seed_ok] = seed_arr[seed_i[seed_ok]] == seed[seed_ok]
    idx = np.flatnonzero((stage_i >= 0) & (host_i >= 0) & seed_ok & (config_i >= 0))
    h_i, s_i, c_i = host_i[idx], seed_i[idx], config_i[idx]
    key = c_i * ncell + h_i * len(seeds) + s_i
    status_code, status_names = _text_codes(cols["status"], idx)  # names[0] is "missing"

    if len(key):
        order = np.argsort(key, kind="stable")
        sk = key[order]
        dup = np.flatnonzero(sk[1:] == sk[:-1])
        if len(dup):
            k = int(sk[dup[0]])
            rows_at = idx[order[sk == k]]
            where = [str(cols["where"][int(i)]) for i in rows_at] if "where" in cols else []
            h, s = cells[k % ncell]
            raise DuplicateRowError(cands[k // ncell], f"{h}/{s}", where)

    vals = np.full(nc * ncell, np.nan)
    present = np.zeros(nc * ncell, dtype=bool)
    ok = np.zeros(nc * ncell, dtype=bool)
    stat = np.zeros(nc * ncell, dtype=np.int32)  # index into status_names; 0: no row ("missing")
    ok_code = status_names.index("ok") if "ok" in status_names else -1
    row_ok = (status_code == ok_code) & np.isfinite(value[idx])
    present[key] = True
    stat[key] = status_code
    ok[key] = row_ok
    vals[key] = np.where(np.isfinite(value[idx]), value[idx], np.nan)
    vals, present, ok, stat = (a.reshape(nc, ncell) for a in (vals, present, ok, stat))
    eligible = ok.all(axis=1) if ncell else np.zeros(nc, dtype=bool)

    # per-cell ranks among eligible candidates; candidates are sorted by config_id,
    # so a stable sort breaks ties by config_id
    el = np.flatnonzero(eligible)
    ranks = np.zeros((nc, ncell), dtype=np.int64)
    if len(el) and ncell:
        sub = vals[el]
        order = np.argsort(sub if better is Better.LOWER else -sub, axis=0, kind="stable")
        r = np.empty_like(order)
        np.put_along_axis(r, order, np.arange(1, len(el) + 1)[:, None], axis=0)
        ranks[el] = r
    wins = (ranks == 1).sum(axis=1)

    # statistics of the eligible: exact sums (fsum), so nothing depends on the order of the cells.
    # One candidate at a time: its values become the Python floats the result keeps, and nothing
    # the size of all rows is built beside them.
    stats = {}
    shared = list(range(len(el) + 1))  # one int object per rank, shared by every cell
    for i in el.tolist() if ncell else ():
        row = vals[i]
        xs = row.tolist()
        mean = math.fsum(xs) / ncell
        dev = row - mean
        std = math.sqrt(math.fsum((dev * dev).tolist()) / (ncell - 1)) if ncell > 1 else None
        stats[i] = (mean, min(xs), max(xs), std, tuple(xs), tuple([shared[r] for r in ranks[i].tolist()]))
    sign = 1.0 if better is Better.LOWER else -1.0
    ordered = sorted(stats, key=lambda i: (sign * stats[i][0], cands[i]))
    overall = {i: pos + 1 for pos, i in enumerate(ordered)}

    all_ok = ("ok",) * ncell
    names = np.asarray(status_names, dtype=object)
    results = []
    for i in ordered:
        mean, lo, hi, std, xs, rs = stats[i]
        results.append(CandidateResult(cands[i], True, overall[i], mean, lo, hi, std, int(wins[i]), xs, rs, all_ok))
    for i in np.flatnonzero(~eligible).tolist():
        row_vals, row_stat = vals[i].tolist(), names[stat[i]].tolist()
        results.append(CandidateResult(cands[i], False, None, None, None, None, None, 0,
                                       tuple(None if v != v else v for v in row_vals), (None,) * ncell,
                                       tuple(row_stat),
                                       _reason(cells, present[i].tolist(), row_stat, row_vals, ncell)))

    top_k = int(rules["promote"]["top_k"])
    keep = [c for c in rules["promote"].get("always_keep", []) if c in cands and eligible[cands.index(c)]]
    chosen = set(keep[:top_k] if len(keep) > top_k else keep)
    for i in ordered:
        if len(chosen) >= top_k:
            break
        chosen.add(cands[i])
    promoted = tuple(cands[i] for i in ordered if cands[i] in chosen)

    by_id = {c.config_id: c for c in results}
    checks = tuple(_check(ch, by_id, better, ncell) for ch in rules.get("checks", []))
    return Decision(rules["gate"], cells, tuple(results), promoted, checks)


def _categorical(col) -> pd.Categorical | None:
    if isinstance(col, pd.Categorical):
        return col
    if isinstance(col, pd.Series) and isinstance(col.dtype, pd.CategoricalDtype):
        return col.array
    return None


def _codes(col, sorted_values: list) -> np.ndarray:
    """Each entry's index in `sorted_values` (unique), -1 where it is not among them. A categorical
    column is mapped through its categories, never decoded row by row."""
    cat = _categorical(col)
    if cat is not None:     # a few categories: looked up in a dict (an Index costs more to build than this)
        pos = {v: i for i, v in enumerate(sorted_values)}
        lookup = np.fromiter((pos.get(c, -1) for c in cat.categories.tolist()), dtype=np.int64,
                             count=len(cat.categories))
        return np.append(lookup, -1)[cat.codes]  # code -1 (no value) picks the appended -1
    index = pd.Index(sorted_values, dtype=object)
    return index.get_indexer(pd.Index(np.asarray(col, dtype=object), dtype=object)).astype(np.int64)


def _text_codes(col, idx: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The entries `idx` of a text column as (codes, names): names[code] is the text, code 0 means
    "missing" (a categorical without a value reads as "")."""
    cat = _categorical(col)
    if cat is not None:
        names = ["missing", *[str(c) for c in cat.categories], ""]
        codes = cat.codes[idx].astype(np.int32)
        return np.where(codes >= 0, codes + 1, len(names) - 1), names
    codes, uniques = pd.factorize(np.asarray(col, dtype=object)[idx])
    return codes.astype(np.int32) + 1, ["missing", *[str(u) for u in uniques]]


def _reason(cells, present, stat, vals, ncell) -> str:
    if ncell == 0:
        return "the rules select no cell"
    parts = []
    for (h, s), p, st, v in zip(cells, present, stat, vals):
        if not p:
            parts.append(f"{h}/{s} missing")
        elif st != "ok":
            parts.append(f"{h}/{s} {st}")
        elif math.isnan(v):
            parts.append(f"{h}/{s} metric not finite")
    return "; ".join(parts)


def _check(ch: dict, by_id: dict[str, CandidateResult], better: Better, ncell: int) -> CheckResult:
    kind = ch["kind"]
    cand = by_id.get(ch["candidate"])
    ref_id = ch.get("reference")
    threshold = ch.get("threshold")
    if kind == CheckKind.RANKS_FIRST_IN_ALL_CELLS:
        wins = cand.wins if cand is not None and cand.eligible else None
        return CheckResult(kind, ch["candidate"], ref_id, None if wins is None else float(wins),
                           None if threshold is None else float(threshold),
                           bool(wins is not None and ncell > 0 and wins == ncell))
    if kind not in CHECK_KINDS:
        raise ValueError(f"unknown check kind {kind!r}")
    ref = by_id.get(ref_id)
    value = None
    if cand is not None and ref is not None and cand.eligible and ref.eligible:
        diff = cand.mean - ref.mean if better is Better.LOWER else ref.mean - cand.mean
        value = round9(diff)
    return CheckResult(kind, ch["candidate"], ref_id, value, float(threshold),
                       threshold_passes(kind, value, threshold))

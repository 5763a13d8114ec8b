"""Uncertainty of a gate's checks: every check of an engine `Decision` given an interval for the
gap its rule thresholds and a three-way call beside the frozen rule's own outcome, each eligible
candidate's mean with its interval, per-document evaluation losses (`DocLosses`), and Holm's
adjustment across the gates reported together. Pure: no I/O, no clock, no random numbers.

The model, the intervals and the calls are `auditkit.stats.intervals`' (docs/STATISTICS.md); its
public names are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from auditkit.stats.intervals import (DOCS_SUFFIX, LEVEL, METHODS, Call, Interval, Method,  # noqa: F401
                                      add_variance, call_arrays, cells_exchangeable, cells_se, gap_intervals,
                                      holm, hosts_fixed, hosts_fixed_se, hosts_random, hosts_random_se,
                                      ratio_docs_var, ratio_docs_variance, t_quantile, threshold_call,
                                      welch_satterthwaite, with_docs)

# --------------------------------------------------------------------------- a gate

@dataclass(frozen=True)
class DocLosses:
    """Per-document losses of a gate's runs (SPEC v1.2 ``eval_docs``): `nats[(config_id, cell)]`
    the per-document nats of that run (cell: index into the decision's cells), `bytes` the
    documents' bytes (shared: every run has the same `eval_sha256`)."""

    nats: Mapping[tuple[str, int], np.ndarray]
    bytes: np.ndarray

    def paired_variance(self, cand: str, ref: str, sign: float, ncell: int) -> tuple[float, float] | None:
        """Document-sampling (variance, df) of the cell-averaged paired gap, or None when a run lacks its file."""
        z = np.zeros(len(self.bytes))
        for k in range(ncell):
            a, b = self.nats.get((cand, k)), self.nats.get((ref, k))
            if a is None or b is None:
                return None
            z += sign * (a - b)
        return ratio_docs_variance(z / (ncell * math.log(2)), self.bytes.astype(np.float64))

    def single_variance(self, cand: str, ncell: int) -> tuple[float, float] | None:
        z = np.zeros(len(self.bytes))
        for k in range(ncell):
            a = self.nats.get((cand, k))
            if a is None:
                return None
            z += a
        return ratio_docs_variance(z / (ncell * math.log(2)), self.bytes.astype(np.float64))


@dataclass
class GateUncertainty:
    gate: str
    level: float
    checks: list[dict] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"level": self.level, "checks": self.checks, "candidates": self.candidates, "notes": self.notes}


def _iv_json(iv: Interval | None, level: float) -> dict:
    lo, hi = iv.bounds(level) if iv is not None else (None, None)
    return {"method": iv.method if iv is not None else Method.NONE, "low": _f(lo), "high": _f(hi),
            "se": _f(iv.se if iv is not None else None), "df": _f(iv.df if iv is not None else None)}


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(round(x, 12))


def _hosts_seeds(cells: Sequence[tuple[str, int]]) -> tuple[list[str], list[int]] | None:
    hosts = sorted({h for h, _ in cells})
    seeds = sorted({s for _, s in cells})
    return (hosts, seeds) if len(cells) == len(hosts) * len(seeds) else None


def gate_uncertainty(decision, rules: dict, level: float = LEVEL, docs: DocLosses | None = None
                     ) -> GateUncertainty:
    """Intervals and calls for every check of `decision` (the engine's `Decision` of `rules`).
    Each check entry's `estimate` is the decision's check `value`. Pure."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, not {level}")
    out = GateUncertainty(decision.gate, level)
    cells = list(decision.cells)
    ncell = len(cells)
    hs = _hosts_seeds(cells)
    sign = 1.0 if rules["metric"]["better"] == "lower" else -1.0
    by_id = {c.config_id: c for c in decision.candidates}
    grid = None
    if hs is not None:
        hosts, seeds = hs
        grid = [[cells.index((h, s)) for s in seeds] for h in hosts]
        out.notes.append(_model_note(len(hosts), len(seeds), level))
    elif ncell:
        out.notes.append("the cells are not every host x seed pair: intervals treat the cells as exchangeable")
    if docs is None:
        out.notes.append("no per-document evaluation losses (SPEC v1.2 eval_docs): the evaluation set is held fixed "
                         "and only seed-to-seed variation across cells enters the intervals")
    else:
        out.notes.append(f"per-document evaluation losses over {len(docs.bytes)} documents: the document sample's "
                         "variance (ratio estimator, documents as the unit, paired within each cell) is added")

    def diffs(cand: str, ref: str) -> np.ndarray:
        a = np.asarray(by_id[cand].values, dtype=np.float64)
        b = np.asarray(by_id[ref].values, dtype=np.float64)
        d = sign * (a - b)
        return d[np.asarray(grid)] if grid is not None else d[None, :]

    def eligible(cid) -> bool:
        c = by_id.get(cid)
        return c is not None and c.eligible

    for i, ch in enumerate(decision.checks):
        entry = {"index": i, "kind": ch.kind, "candidate": ch.candidate, "reference": ch.reference,
                 "threshold": ch.threshold, "estimate": ch.value, "passed": ch.passed}
        if ch.kind in ("near_equivalence", "mean_gap"):
            if ch.value is None or not (eligible(ch.candidate) and eligible(ch.reference)) or ncell == 0:
                entry.update(_iv_json(None, level), call=Call.UNDETERMINED, p=None, alternatives=[],
                             reason="no value: a candidate of the check is not eligible")
            else:
                dv = docs.paired_variance(ch.candidate, ch.reference, sign, ncell) if docs is not None else None
                primary, alts = gap_intervals(diffs(ch.candidate, ch.reference), float(ch.value), dv)
                call, p = threshold_call(ch.kind, primary, float(ch.threshold), ch.passed, level)
                entry.update(_iv_json(primary, level), call=call, p=_f(p))
                entry["alternatives"] = []
                for iv in alts:
                    c2, p2 = threshold_call(ch.kind, iv, float(ch.threshold), ch.passed, level)
                    entry["alternatives"].append({**_iv_json(iv, level), "call": c2, "p": _f(p2)})
                if primary is None:
                    entry["reason"] = "one cell: no variance can be estimated"
        else:
            entry.update(_ranks_first(ch, decision, by_id, diffs, docs, sign, ncell, level))
        out.checks.append(entry)
    out.candidates = _candidate_intervals([c for c in decision.candidates if c.eligible], grid, docs, ncell, level)
    return out


def _candidate_intervals(elig, grid, docs, ncell: int, level: float) -> list[dict]:
    """Each eligible candidate's mean with its interval under the same model as the gaps (all at once:
    a gate may have thousands of candidates)."""
    if not elig or ncell == 0:
        return []
    x = np.array([c.values for c in elig], dtype=np.float64)
    x = x[:, np.asarray(grid)] if grid is not None else x[:, None, :]
    means = [float(round(c.mean, 9)) for c in elig]
    h, s = x.shape[1:]
    if s >= 2:
        se, df, method = *hosts_fixed_se(x), Method.HOSTS_FIXED
    elif h * s >= 2:
        se, df, method = *cells_se(x), Method.CELLS
    else:
        se = df = None
        method = Method.NONE
    if se is not None and docs is not None:
        parts = [docs.single_variance(c.config_id, ncell) for c in elig]
        if all(pv is not None for pv in parts):
            se, df = add_variance(se, df, np.array([pv[0] for pv in parts]), np.array([pv[1] for pv in parts]))
            method += DOCS_SUFFIX
    out = []
    if se is None:
        for c, m in zip(elig, means):
            out.append({"config_id": c.config_id, "rank": c.rank, "mean": m, **_iv_json(None, level)})
        return out
    q = np.asarray(t_quantile(1 - (1 - level) / 2, df)) if len(df) else df
    q = np.where(se > 0, q, 0.0)
    for i, (c, m) in enumerate(zip(elig, means)):
        out.append({"config_id": c.config_id, "rank": c.rank, "mean": m, "method": method,
                    "low": _f(m - float(q[i] * se[i])), "high": _f(m + float(q[i] * se[i])),
                    "se": _f(float(se[i])), "df": _f(float(df[i]))})
    return out


def _ranks_first(ch, decision, by_id, diffs, docs, sign, ncell, level) -> dict:
    """A ranks-first check: `estimate` is the number of cells won (the check's value); the interval is
    that of the smallest mean gap to another eligible candidate (`margin`); the call is the
    intersection-union test over every other candidate."""
    base = {"method": Method.NONE, "low": None, "high": None, "se": None, "df": None, "alternatives": []}
    cid = ch.candidate
    others = [c.config_id for c in decision.candidates if c.eligible and c.config_id != cid]
    if not (by_id.get(cid) is not None and by_id[cid].eligible) or not others:
        why = "the candidate is not eligible" if not others or by_id.get(cid) is None or not by_id[cid].eligible \
            else "no other eligible candidate"
        return {**base, "call": Call.UNDETERMINED, "p": None, "margin": None, "reason": why}
    alpha = (1 - level) / 2
    rows = []
    for o in others:   # gap of the other to the candidate: > 0 when the candidate is better
        d = diffs(o, cid)
        dv = docs.paired_variance(o, cid, sign, ncell) if docs is not None else None
        est = math.fsum(d.reshape(-1).tolist()) / d.size
        iv, _ = gap_intervals(d, est, dv)
        rows.append((est, o, iv))
    est, runner_up, iv = min(rows, key=lambda r: (r[0], r[1]))
    lo, hi = iv.bounds(level) if iv is not None else (None, None)
    margin = {"versus": runner_up, "estimate": _f(est), "low": _f(lo), "high": _f(hi),
              "method": iv.method if iv is not None else Method.NONE}
    if any(r[2] is None for r in rows):
        return {**base, "call": Call.UNDETERMINED, "p": None, "margin": margin,
                "reason": "one cell: no variance can be estimated"}
    p_pass = max(r[2].p_above(0.0) for r in rows)      # IUT: every other is worse
    p_fail = min(r[2].p_below(0.0) for r in rows)      # some other is better
    if ch.passed:
        call = Call.PASS if p_pass <= alpha else Call.UNDETERMINED
        p = p_pass
    else:
        call = Call.FAIL if p_fail <= alpha else Call.UNDETERMINED
        p = p_fail
    return {**base, "call": call, "p": _f(p), "margin": margin}


def _model_note(h: int, s: int, level: float) -> str:
    a = f"{(1 - level) / 2:g}"
    if s >= 2:
        base = (f"hosts fixed: {h} host(s) as strata, {s} seeds each; paired differences within cells; "
                f"Welch-Satterthwaite df across strata; calls at one-sided alpha {a} (the two-sided {level:g} "
                "interval against the threshold)")
    else:
        base = (f"{h} host(s) with one seed each: within-host variance cannot be estimated, so the cells are "
                f"treated as exchangeable (paired t, {h * s - 1} df); calls at one-sided alpha {a}")
    if h >= 2:
        base += f"; hosts random (t over {h} host means, {h - 1} df) is given under alternatives"
    return base


def apply_holm(gates: list[GateUncertainty]) -> None:
    """Holm-adjust the `p` of every check of `gates` together (one family: a package's checks), in place:
    each check gains `p_holm` and `call_holm` (the call at the family-wise level)."""
    entries = [c for g in gates for c in g.checks]
    adj = holm([c.get("p") for c in entries])
    for c, g_level, p in zip(entries, [g.level for g in gates for _ in g.checks], adj):
        c["p_holm"] = _f(p)
        alpha = (1 - g_level) / 2
        c["call_holm"] = c["call"] if p is not None and p <= alpha else Call.UNDETERMINED
    for g in gates:
        if g.checks:
            g.notes.append(f"p_holm: Holm's step-down adjustment across all {len(entries)} checks of the gates "
                           "reported together (family-wise error); call_holm is the call at that adjusted p")


def render_calls(u: GateUncertainty) -> list[str]:
    """One line per check: the rule's outcome, the estimate with its interval, the call and its p."""
    lines = []
    for c in u.checks:
        ref = f" vs {c['reference']}" if c.get("reference") else ""
        rule = "pass" if c["passed"] else "FAIL"
        if c["kind"] == "ranks_first_in_all_cells":
            m = c.get("margin")
            what = ("no other eligible candidate" if m is None else
                    f"smallest gap to {m['versus']} {_num(m['estimate'])} [{_num(m['low'])}, {_num(m['high'])}]")
        else:
            what = f"gap {_num(c['estimate'])} [{_num(c['low'])}, {_num(c['high'])}] vs threshold {c['threshold']}"
        p = "" if c.get("p") is None else f", p {c['p']:.3g}"
        holm_p = "" if c.get("p_holm") is None else f", Holm p {c['p_holm']:.3g}"
        method = (c.get("margin") or {}).get("method", c["method"]) if c["kind"] == "ranks_first_in_all_cells" \
            else c["method"]
        lines.append(f"call {c['kind']} {c['candidate']}{ref}: rule {rule}; {what} ({u.level:g}, {method}) "
                     f"-> {c['call']}{p}{holm_p}")
    return lines


def _num(x) -> str:
    return "-" if x is None else f"{x:.6f}"

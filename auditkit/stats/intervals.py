"""Intervals and three-way calls for a mean paired gap: the statistics of one thresholded check
(docs/STATISTICS.md), batch forms for the calibration simulation, and Holm's adjustment. Pure: no
I/O, no clock, no random numbers. `auditkit.stats.uncertainty` applies them to a gate's decision.

The model. A check compares a candidate with a reference on the gate's host-seed cells. Within a
cell both were trained and scored under the same host and seed slot, so the unit of analysis is
the *paired* difference of that cell, ``d[h, s] = x_cand - x_ref`` (``x_ref - x_cand`` when higher
is better: the sign the engine gives the check's value). Whatever a host or a cell adds to every
candidate cancels in ``d``; what remains is seed-to-seed noise (and any host x candidate
interaction). The rule thresholds the mean of ``d`` over the cells, which is the check's value.

- **Hosts fixed** (the primary interval): the estimand is the mean gap over *these* hosts. Each
  host is a stratum; its variance is estimated from its own seeds; the strata are combined with
  their cell weights, and the degrees of freedom are Welch-Satterthwaite's across strata (with one
  host: ``n - 1``). It needs at least two seeds in every host.
- **Cells exchangeable**: when a host has one seed (no within-host replication) the hosts-fixed
  variance cannot be estimated; then the cells are treated as exchangeable (a one-sample t over
  the cell differences, ``n - 1`` df, as `scipy.stats.ttest_rel`) and the output says so.
- **Hosts random** (reported beside, with at least two hosts): the estimand is the mean gap over
  hosts like these; a t over the host means with ``H - 1`` df.
- **Evaluation noise**: without per-document losses the evaluation set is fixed and enters no
  variance (the output says so). With them (SPEC v1.2 ``eval_docs``) the variance of the
  document sample is added: the ratio-estimator variance over documents of the cell-averaged
  paired per-document differences; the df combine by Welch-Satterthwaite.

The call. With ``alpha = (1 - level) / 2`` (the two-sided ``level`` interval is what the forest
plot shows, so the picture and the call always agree):

- ``near_equivalence`` (passes when ``|gap| <= threshold``): ``pass`` when both one-sided tests of
  TOST reject at alpha (the interval lies within ``[-threshold, threshold]``), ``fail`` when a
  one-sided test shows ``|gap| > threshold`` at alpha (the interval lies wholly beyond one bound);
- ``mean_gap`` (passes when ``gap <= threshold``): ``pass`` when ``gap < threshold`` is shown
  (the interval lies below the threshold), ``fail`` when ``gap > threshold`` is shown;
- ``ranks_first_in_all_cells``: ``pass`` when, for every other eligible candidate, its paired gap
  to the candidate is shown to be positive (an intersection-union test: each at alpha, no
  correction needed); ``fail`` when some other candidate is shown to be better on average;
- otherwise ``undetermined``. A call is never the opposite of the rule's outcome: the estimate
  lies inside its own interval. `p` is the one-sided p-value of the test that would make the
  rule's outcome a call (TOST's larger p for an equivalence pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95


class Call:
    PASS = "pass"
    FAIL = "fail"
    UNDETERMINED = "undetermined"


class Method:
    """How an interval was computed (the `method` of a check)."""

    HOSTS_FIXED = "paired-t-hosts-fixed"        # strata = hosts, Welch-Satterthwaite df
    CELLS = "paired-t-cells"                    # cells exchangeable, n - 1 df
    HOSTS_RANDOM = "paired-t-hosts-random"      # t over host means, H - 1 df
    NONE = "none"                               # no interval (one cell, or no value)


METHODS = (Method.HOSTS_FIXED, Method.CELLS, Method.HOSTS_RANDOM, Method.NONE)
# with per-document losses the method gains this suffix
DOCS_SUFFIX = "+docs"


@dataclass(frozen=True)
class Interval:
    """A t interval: `estimate` +- t(df) * `se`. `se` 0 gives a point; df None means no interval."""

    estimate: float
    se: float | None
    df: float | None
    method: str

    def bounds(self, level: float) -> tuple[float | None, float | None]:
        if self.se is None or self.df is None:
            return None, None
        if self.se == 0:
            return self.estimate, self.estimate
        q = t_quantile(1 - (1 - level) / 2, self.df)
        return self.estimate - q * self.se, self.estimate + q * self.se

    def p_above(self, x: float) -> float | None:
        """One-sided p of H0: gap <= x (small when the data show gap > x)."""
        return None if self.se is None or self.df is None else _p_greater(self.estimate - x, self.se, self.df)

    def p_below(self, x: float) -> float | None:
        """One-sided p of H0: gap >= x (small when the data show gap < x)."""
        return None if self.se is None or self.df is None else _p_greater(x - self.estimate, self.se, self.df)


def t_quantile(q: float, df):
    """The t quantile (scipy.special.stdtrit, what scipy.stats.t.ppf computes; scipy.special imports in a
    third of the time scipy.stats takes); an array for an array of df."""
    from scipy import special

    out = special.stdtrit(df, q)
    return float(out) if np.ndim(out) == 0 else out


def _p_greater(diff: float, se: float, df: float) -> float:
    """P(T >= diff / se) for T ~ t(df); 0 or 1 (0.5 on a tie) when se is 0."""
    from scipy import special

    if se == 0:
        return 0.0 if diff > 0 else (1.0 if diff < 0 else 0.5)
    return float(special.stdtr(df, -diff / se))


# --------------------------------------------------------------------------- intervals for a mean gap

def welch_satterthwaite(parts: Sequence[tuple[float, float]]) -> float | None:
    """df of a sum of independent variance estimates `parts` = [(variance, df)]: (sum v)^2 / sum v^2/df.
    None when every part is 0 (a point: df does not matter)."""
    num = math.fsum(v for v, _ in parts) ** 2
    den = math.fsum(v * v / df for v, df in parts if v > 0)
    return None if den == 0 else num / den


# Batch forms: `d` has shape (..., hosts, seeds); every leading axis is a separate data set (the
# calibration simulation decides thousands at once). Each returns (se, df) arrays of the leading shape.

def hosts_fixed_se(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hosts as fixed strata: stratum h has weight 1/H (every host has S cells), its mean's variance
    s_h^2 / S with S - 1 df; the overall mean's variance is sum s_h^2 / (H^2 S), the df
    Welch-Satterthwaite's across strata (H (S - 1) where every variance is 0). Needs S >= 2."""
    h, s = d.shape[-2:]
    v = np.var(d, axis=-1, ddof=1) / (h * h * s)          # (..., H)
    var = v.sum(axis=-1)
    den = (v * v).sum(axis=-1) / (s - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(den > 0, var * var / np.where(den > 0, den, 1.0), float(h * (s - 1)))
    return np.sqrt(var), df


def cells_se(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells exchangeable: a one-sample t over all H x S differences (`scipy.stats.ttest_rel`'s model)."""
    x = d.reshape(*d.shape[:-2], -1)
    n = x.shape[-1]
    return np.std(x, axis=-1, ddof=1) / math.sqrt(n), np.full(x.shape[:-1], n - 1.0)


def hosts_random_se(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hosts random: a t over the H host means, H - 1 df."""
    m = d.mean(axis=-1)
    h = m.shape[-1]
    return np.std(m, axis=-1, ddof=1) / math.sqrt(h), np.full(m.shape[:-1], h - 1.0)


def ratio_docs_var(z: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variance, df) of the ratio estimator sum(z) / sum(b) over documents (the last axis, the unit):
    the linearised variance n/(n-1) * sum (z_j - R b_j)^2 / B^2, n - 1 df. `z` are per-document values
    in the estimator's unit times bytes (here nats / ln 2, or a paired difference of them), `b` bytes."""
    n = z.shape[-1]
    big_b = b.sum(axis=-1)
    r = z.sum(axis=-1) / big_b
    e = z - r[..., None] * b
    return n / (n - 1) * (e * e).sum(axis=-1) / (big_b * big_b), np.full(np.shape(r), n - 1.0)


def add_variance(se: np.ndarray, df: np.ndarray, var2: np.ndarray, df2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(se, df) of the sum of two independent variance parts, Welch-Satterthwaite df."""
    v1 = se * se
    tot = v1 + var2
    den = np.where(v1 > 0, v1 * v1 / df, 0.0) + np.where(var2 > 0, var2 * var2 / df2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_df = np.where(den > 0, tot * tot / np.where(den > 0, den, 1.0), df)
    return np.sqrt(tot), out_df


def call_arrays(kind: str, est, se, df, threshold: float, passed, level: float):
    """(call codes, p) of thresholded checks, vectorised: code 1 pass, -1 fail, 0 undetermined.
    `passed` is the rule's outcome on `est` (see the module docstring for the tests)."""
    from scipy import special

    est, se, df, passed = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (est, se, df, passed)))
    passed = passed.astype(bool)

    def p_greater(diff):   # P(T >= diff / se); 0, 1 or 0.5 when se is 0
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(se > 0, diff / np.where(se > 0, se, 1.0), 0.0)
        p = special.stdtr(df, -t)   # the t survival function
        return np.where(se > 0, p, np.where(diff > 0, 0.0, np.where(diff < 0, 1.0, 0.5)))

    above = lambda x: p_greater(est - x)   # noqa: E731  small when gap > x is shown
    below = lambda x: p_greater(x - est)   # noqa: E731  small when gap < x is shown
    t = float(threshold)
    if kind == "near_equivalence":
        p = np.where(passed, np.maximum(above(-t), below(t)), np.where(est > 0, above(t), below(-t)))
    elif kind == "mean_gap":
        p = np.where(passed, below(t), above(t))
    else:
        raise ValueError(f"check kind {kind!r} has no threshold")
    decided = p <= (1 - level) / 2
    return np.where(decided, np.where(passed, 1, -1), 0), p


def _one(fn, d: np.ndarray, estimate: float, method: str) -> Interval:
    se, df = fn(d)
    return Interval(estimate, float(se), float(df), method)


def hosts_fixed(d: np.ndarray, estimate: float) -> Interval | None:
    """Hosts as fixed strata (`hosts_fixed_se`) for one hosts x seeds array; None when S < 2."""
    return _one(hosts_fixed_se, d, estimate, Method.HOSTS_FIXED) if d.shape[1] >= 2 else None


def cells_exchangeable(d: np.ndarray, estimate: float) -> Interval | None:
    """Cells exchangeable (`cells_se`); None for one cell."""
    return _one(cells_se, d, estimate, Method.CELLS) if d.size >= 2 else None


def hosts_random(d: np.ndarray, estimate: float) -> Interval | None:
    """Hosts random (`hosts_random_se`); None for fewer than two hosts."""
    return _one(hosts_random_se, d, estimate, Method.HOSTS_RANDOM) if d.shape[0] >= 2 else None


def ratio_docs_variance(z: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """`ratio_docs_var` of one run (or one paired difference); (0, 1) for fewer than two documents."""
    if len(z) < 2:
        return 0.0, 1.0
    v, df = ratio_docs_var(z, b)
    return float(v), float(df)


def with_docs(iv: Interval | None, docs_var: tuple[float, float] | None) -> Interval | None:
    """`iv` with the document-sampling variance added (Welch-Satterthwaite df)."""
    if iv is None or docs_var is None or iv.se is None:
        return iv
    se, df = add_variance(np.float64(iv.se), np.float64(iv.df if iv.df is not None else 1.0),
                          np.float64(docs_var[0]), np.float64(docs_var[1]))
    return Interval(iv.estimate, float(se), float(df), iv.method + DOCS_SUFFIX)


def gap_intervals(d: np.ndarray, estimate: float, docs_var: tuple[float, float] | None = None
                  ) -> tuple[Interval | None, list[Interval]]:
    """(primary interval, alternatives) for the mean of `d` (hosts x seeds). Primary: hosts fixed,
    else cells exchangeable; alternatives: the other models that apply."""
    fixed, cells, rand = hosts_fixed(d, estimate), cells_exchangeable(d, estimate), hosts_random(d, estimate)
    primary = fixed or cells
    alts = [iv for iv in (cells, rand) if iv is not None and iv is not primary]
    return with_docs(primary, docs_var), [with_docs(iv, docs_var) for iv in alts]


# --------------------------------------------------------------------------- calls

def threshold_call(kind: str, iv: Interval | None, threshold: float, passed: bool, level: float
                   ) -> tuple[str, float | None]:
    """(call, p) of a thresholded check whose rule outcome is `passed` (see the module docstring)."""
    if iv is None or iv.se is None or iv.df is None:
        return Call.UNDETERMINED, None
    code, p = call_arrays(kind, iv.estimate, iv.se, iv.df, threshold, passed, level)
    return {1: Call.PASS, -1: Call.FAIL, 0: Call.UNDETERMINED}[int(code)], float(p)


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error), None kept in place."""
    idx = [i for i, p in enumerate(ps) if p is not None]
    order = sorted(idx, key=lambda i: ps[i])
    m = len(order)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * ps[i]))
        out[i] = running
    return out

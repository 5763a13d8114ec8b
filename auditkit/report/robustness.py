"""How robust is each gate's decision? Resampling through the engine, seeded and byte-stable.

Per gate (`gate_robustness`, pure): the gate's host-seed cells are resampled with
replacement, each resample is decided by `rules.decide_columns` with the frozen
rules, and what changes is counted:

- each eligible candidate's probability of being promoted and of ranking first,
  and a 95% interval of its overall rank;
- each check's probability of flipping its outcome, and a 95% interval of its value;
- the margin between the last candidate promoted on its rank and the first one
  eliminated, in val_bpb and in units of the observed noise (the standard error of
  their paired per-cell difference), with a one-sided paired t-test
  (`scipy.stats.ttest_rel`);
- the promoted list under every `top_k` within 3 of the frozen one and without
  `always_keep` (thresholds never change a promoted list: SPEC 5.8; the
  `threshold_sensitivity` table covers the checks).

Resampling: with n cells and no evaluation standard errors, the bootstrap is exact —
every multiset of n cells drawn from n, weighted by its multinomial probability —
while there are at most `EXACT_LIMIT` of them (n <= 7); beyond that, `RESAMPLES`
draws from `numpy.random.default_rng` seeded by `SEED` and the gate's name (fewer,
never below `MIN_RESAMPLES`, for gates so large that 1000 draws would decide more
than `VALUE_BUDGET` values; gates beyond `MAX_ENTRIES` values are not resampled and
say so). When the
rows carry `<metric>_se` (SPEC v1.1), each draw also adds normal evaluation noise of
that standard error to every value (always drawn, never exact).

Host correlations (`host_correlation_intervals`): per stage and host pair, the
Spearman correlation of the hosts' candidate rankings with a 95% percentile interval
from a bootstrap over candidates (exact over all n^n resamples for n <= 6, else
`RESAMPLES` seeded draws; resamples where either ranking is constant are left out and
counted), and the permutation p-value of an agreement at least as strong
(`scipy.stats.permutation_test`: every pairing for n <= 7, 9999 seeded ones up to
`PERMUTATION_LIMIT` candidates, scipy's t approximation beyond).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations_with_replacement, product

import numpy as np

from auditkit.gates.engine import Better, Decision, decide_columns

SEED = 20260502
RESAMPLES = 1000
EXACT_LIMIT = 2000           # distinct cell multisets enumerated exactly
LEVEL = 0.95
MAX_ENTRIES = 20_000         # candidates x cells above which a gate is not resampled (stated in its row)
VALUE_BUDGET = 2_000_000     # values decided per gate (or ranked per host pair): fewer draws for large ones
MIN_RESAMPLES = 200
SENSITIVITY_SPAN = 3         # top_k variants: the frozen top_k +- this many
CORR_EXACT_LIMIT = 50_000    # n^n candidate resamples enumerated exactly
PERMUTATION_LIMIT = 200      # candidates above which the permutation p-value is scipy's t approximation


@dataclass(frozen=True)
class CandidateRobustness:
    config_id: str
    promoted: bool
    rank: int
    p_promoted: float
    p_rank1: float
    rank_lo: int
    rank_hi: int


@dataclass(frozen=True)
class CheckRobustness:
    index: int
    kind: str
    candidate: str
    reference: str | None
    passed: bool
    value: float | None
    value_lo: float | None
    value_hi: float | None
    p_flip: float


@dataclass(frozen=True)
class GateRobustness:
    gate: str
    cells: int
    candidates: int
    eligible: int
    method: str
    resamples: int
    note: str = ""
    rows: tuple[CandidateRobustness, ...] = ()
    checks: tuple[CheckRobustness, ...] = ()
    last_promoted: str | None = None
    first_eliminated: str | None = None
    margin: float | None = None
    noise: float | None = None
    noise_source: str | None = None
    margin_in_noise: float | None = None
    p_one_sided: float | None = None
    sensitivity: tuple[tuple[str, int, tuple[str, ...], tuple[str, ...]], ...] = field(default=())
    # (variant, top_k, always_keep, promoted)


def _resample_rules(rules: dict, n: int, candidates: list[str], top_k: int | None = None,
                    keep: list[str] | None = None) -> dict:
    """The frozen rules re-pointed at n pseudo-cells ``r000/0 .. r<n-1>/0``."""
    promote = dict(rules["promote"])
    if top_k is not None:
        promote["top_k"] = top_k
    if keep is not None:
        promote["always_keep"] = keep
    return {**rules, "inputs": {"stages": ["resample"], "hosts": [f"r{j:03d}" for j in range(n)], "seeds": [0],
                                "candidates": candidates}, "promote": promote}


def _columns(values: np.ndarray, candidates: list[str]) -> dict:
    """Engine columns for a candidates x cells matrix of metric values."""
    nc, n = values.shape
    return {**_labels(tuple(candidates), n), "value": values.reshape(-1)}


@lru_cache(maxsize=64)
def _labels(candidates: tuple[str, ...], n: int) -> dict:
    """The label columns of `_columns` (shared by every resample of a gate; never mutated)."""
    nc = len(candidates)
    return {"stage": np.full(nc * n, "resample", dtype=object),
            "host": np.array([f"r{j:03d}" for _ in range(nc) for j in range(n)], dtype=object),
            "seed": np.zeros(nc * n, dtype=np.int64),
            "config_id": np.array([c for c in candidates for _ in range(n)], dtype=object),
            "status": np.full(nc * n, "ok", dtype=object)}


def _quantile(pairs: list[tuple[float, float]], q: float) -> float:
    """Smallest x whose cumulative weight reaches q (pairs: (x, weight), weights summing to 1)."""
    acc = 0.0
    for x, w in sorted(pairs):
        acc += w
        if acc >= q - 1e-12:
            return x
    return sorted(pairs)[-1][0]


def draw_count(values_per_draw: int) -> int:
    """Draws for a resampling whose every draw handles `values_per_draw` values: `RESAMPLES`, fewer
    (not below `MIN_RESAMPLES`) where that would exceed `VALUE_BUDGET`; the method names the count."""
    return min(RESAMPLES, max(MIN_RESAMPLES, VALUE_BUDGET // max(1, values_per_draw)))


def _draws(n: int, gate: str, noisy: bool, entries: int) -> tuple[str, list[tuple[tuple[int, ...], float]], int]:
    """(method, [(cell indexes, weight)], number of resamples)."""
    if not noisy and math.comb(2 * n - 1, n) <= EXACT_LIMIT:
        out = []
        for combo in combinations_with_replacement(range(n), n):
            counts = Counter(combo).values()
            w = math.factorial(n) / math.prod(math.factorial(m) for m in counts) / n ** n
            out.append((combo, w))
        return f"exact bootstrap over {n} cells ({len(out)} distinct resamples)", out, len(out)
    count = draw_count(entries)
    rng = np.random.default_rng([SEED, zlib.crc32(gate.encode())])
    idx = rng.integers(0, n, size=(count, n))
    what = f"bootstrap over {n} cells" + (" and evaluation noise" if noisy else "")
    return f"{what} ({count} draws, seed {SEED})", [(tuple(int(i) for i in row), 1.0 / count) for row in idx], count


def gate_robustness(rules: dict, decision: Decision, se: np.ndarray | None = None) -> GateRobustness:
    """Resample `decision`'s cells (and evaluation noise where `se`, candidates x cells in the
    decision's order, is given) through the engine with `rules`. Pure and deterministic."""
    gate = decision.gate
    n = len(decision.cells)
    elig = [c for c in decision.candidates if c.eligible]
    ids = [c.config_id for c in elig]
    base = dict(gate=gate, cells=n, candidates=len(decision.candidates), eligible=len(elig))
    if not elig or n == 0:
        return GateRobustness(**base, method="not resampled", resamples=0,
                              note="no eligible candidate" if n else "the rules select no cell")
    if len(elig) * n > MAX_ENTRIES:
        return GateRobustness(**base, method="not resampled", resamples=0,
                              note=f"{len(elig)} candidates x {n} cells exceeds {MAX_ENTRIES} values")
    values = np.array([c.values for c in elig], dtype=np.float64)
    rows_se = None
    if se is not None:
        pos = {c.config_id: i for i, c in enumerate(decision.candidates)}
        rows_se = np.nan_to_num(se[[pos[c] for c in ids]], nan=0.0)
        if not rows_se.any():
            rows_se = None
    noisy = rows_se is not None
    method, draws, count = _draws(n, gate, noisy, len(ids) * n)
    rrules = _resample_rules(rules, n, ids)
    noise_rng = np.random.default_rng([SEED, zlib.crc32(gate.encode()), 1])

    promoted_w: dict[str, list[float]] = {c: [] for c in ids}
    rank1_w: dict[str, list[float]] = {c: [] for c in ids}
    ranks: dict[str, list[tuple[float, float]]] = {c: [] for c in ids}
    flips: dict[int, list[float]] = {i: [] for i in range(len(decision.checks))}
    check_values: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(decision.checks))}
    cache: dict[tuple[int, ...], Decision] = {}
    for combo, w in draws:
        if noisy:
            cols = list(combo)
            v = values[:, cols] + rows_se[:, cols] * noise_rng.standard_normal((len(ids), n))
            d = decide_columns(rrules, _columns(v, ids), ids)
        else:
            key = tuple(sorted(combo))
            if key not in cache:
                cache[key] = decide_columns(rrules, _columns(values[:, list(key)], ids), ids)
            d = cache[key]
        for cid in d.promoted:
            promoted_w[cid].append(w)
        for c in d.candidates:
            ranks[c.config_id].append((c.rank, w))
            if c.rank == 1:
                rank1_w[c.config_id].append(w)
        for i, (got, want) in enumerate(zip(d.checks, decision.checks)):
            if got.passed != want.passed:
                flips[i].append(w)
            if got.value is not None:
                check_values[i].append((got.value, w))

    lo_q, hi_q = (1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2
    rows = tuple(CandidateRobustness(c.config_id, c.config_id in decision.promoted, c.rank,
                                     math.fsum(promoted_w[c.config_id]), math.fsum(rank1_w[c.config_id]),
                                     int(_quantile(ranks[c.config_id], lo_q)),
                                     int(_quantile(ranks[c.config_id], hi_q))) for c in elig)
    checks = []
    for i, ch in enumerate(decision.checks):
        vals = check_values[i]
        total = math.fsum(w for _, w in vals)
        norm = [(x, w / total) for x, w in vals] if total > 0 else []
        checks.append(CheckRobustness(i, ch.kind, ch.candidate, ch.reference, ch.passed, ch.value,
                                      _quantile(norm, lo_q) if norm else None,
                                      _quantile(norm, hi_q) if norm else None, math.fsum(flips[i])))
    margin = _margin(rules, decision, values, ids, rows_se)
    return GateRobustness(**base, method=method, resamples=count, rows=rows, checks=tuple(checks), **margin,
                          sensitivity=_sensitivity(rules, decision, values, ids))


def _margin(rules: dict, decision: Decision, values: np.ndarray, ids: list[str], se: np.ndarray | None) -> dict:
    """Last promoted on its rank vs first eliminated: gap, noise, gap / noise, one-sided paired t-test."""
    from scipy import stats

    keep = set(rules["promote"].get("always_keep", []))
    order = sorted((c for c in decision.candidates if c.eligible), key=lambda c: c.rank)
    promoted = [c for c in order if c.config_id in decision.promoted]
    on_rank = [c for c in promoted if c.config_id not in keep] or promoted
    out_ = [c for c in order if c.config_id not in decision.promoted]
    if not on_rank or not out_:
        return {}
    a, b = on_rank[-1], out_[0]
    ia, ib = ids.index(a.config_id), ids.index(b.config_id)
    sign = 1.0 if Better(rules["metric"]["better"]) is Better.LOWER else -1.0
    diff = sign * (values[ib] - values[ia])  # > 0: the eliminated one is worse in that cell
    n = len(diff)
    margin = math.fsum(diff.tolist()) / n
    out = {"last_promoted": a.config_id, "first_eliminated": b.config_id, "margin": margin}
    noise, source, p = None, None, None
    if n >= 2 and float(np.std(diff, ddof=1)) > 0:
        noise, source = float(np.std(diff, ddof=1)) / math.sqrt(n), f"paired difference over {n} cells"
        p = float(stats.ttest_rel(sign * values[ib], sign * values[ia], alternative="greater").pvalue)
    elif se is not None:
        var = math.fsum((se[ia] ** 2 + se[ib] ** 2).tolist()) / n ** 2
        if var > 0:
            noise, source = math.sqrt(var), "evaluation standard errors"
            p = float(stats.norm.sf(margin / noise))
    out.update(noise=noise, noise_source=source, p_one_sided=p,
               margin_in_noise=None if noise is None else margin / noise)
    return out


def _sensitivity(rules: dict, decision: Decision, values: np.ndarray, ids: list[str]) -> tuple:
    """The promoted list under top_k within `SENSITIVITY_SPAN` of the frozen one and without
    always_keep, decided by the engine."""
    n = values.shape[1]
    cols = _columns(values, ids)
    keep = list(rules["promote"].get("always_keep", []))
    frozen_k = int(rules["promote"]["top_k"])
    out = []
    for k in range(max(1, frozen_k - SENSITIVITY_SPAN), min(len(ids), frozen_k + SENSITIVITY_SPAN) + 1):
        d = decide_columns(_resample_rules(rules, n, ids, top_k=k), cols, ids)
        out.append(("frozen" if k == frozen_k else f"top_k={k}", k, tuple(keep), d.promoted))
    if keep:
        d = decide_columns(_resample_rules(rules, n, ids, keep=[]), cols, ids)
        out.append(("no always_keep", frozen_k, (), d.promoted))
    if frozen_k > len(ids):
        out.append(("frozen", frozen_k, tuple(keep), decision.promoted))
    return tuple(out)


# --------------------------------------------------------------------------- host correlations

@dataclass(frozen=True)
class CorrelationInterval:
    n: int
    spearman: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    p_permutation: float | None
    permutation_method: str


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (average ranks for ties); NaN where a row is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / den
    rho[den == 0] = np.nan
    return rho


def correlation_interval(a: list[float], b: list[float], key: str) -> CorrelationInterval:
    """Spearman of paired values `a`, `b` (one pair per candidate) with a bootstrap interval over
    candidates and a permutation p-value; `key` seeds the draws where they are not exact."""
    from scipy import stats

    n = len(a)
    if n < 3:
        return CorrelationInterval(n, None, None, None, "not computed: fewer than 3 candidates", None, "not computed")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rho = float(_spearman_rows(x[None, :], y[None, :])[0])
    rng = np.random.default_rng([SEED, zlib.crc32(key.encode())])
    if n ** n <= CORR_EXACT_LIMIT:
        idx = np.array(list(product(range(n), repeat=n)), dtype=np.int64)
        how = f"exact bootstrap over {n} candidates ({len(idx)} resamples"
    else:
        count = draw_count(n)
        idx = rng.integers(0, n, size=(count, n))
        how = f"bootstrap over {n} candidates ({count} draws, seed {SEED}"
    rhos = _spearman_rows(x[idx], y[idx])
    ok = rhos[~np.isnan(rhos)]
    how += f", {len(ok)} with both rankings defined)"
    lo = hi = None
    if len(ok):
        w = 1.0 / len(ok)
        pairs = [(float(r), w) for r in ok]
        lo, hi = _quantile(pairs, (1 - LEVEL) / 2), _quantile(pairs, 1 - (1 - LEVEL) / 2)
    if n <= PERMUTATION_LIMIT:
        exact = math.factorial(n) <= 9999
        # permuting one sample against the other fixed gives the n! pairings (both permuted: (n!)^2)
        res = stats.permutation_test((x,), lambda u, axis=-1: _rho_axis(u, y, axis), permutation_type="pairings",
                                     vectorized=True, n_resamples=9999, alternative="greater", rng=rng)
        p = float(res.pvalue)
        pm = (f"exact over all {math.factorial(n)} pairings" if exact
              else f"9999 random pairings (seed {SEED})") + ", one-sided (agreement at least as strong)"
    else:   # many candidates: the t approximation scipy.stats.spearmanr uses is accurate, and cheap
        p = float(stats.spearmanr(x, y, alternative="greater").pvalue)
        pm = f"t approximation for {n} candidates (scipy.stats.spearmanr), one-sided (agreement at least as strong)"
    return CorrelationInterval(n, rho, lo, hi, how, p, pm)


def _rho_axis(u: np.ndarray, v: np.ndarray, axis: int) -> np.ndarray:
    u, v = np.moveaxis(np.atleast_2d(u), axis, -1), np.moveaxis(np.atleast_2d(v), axis, -1)
    shape = np.broadcast_shapes(u.shape, v.shape)
    u, v = np.broadcast_to(u, shape).reshape(-1, shape[-1]), np.broadcast_to(v, shape).reshape(-1, shape[-1])
    return _spearman_rows(u, v).reshape(shape[:-1])


# --------------------------------------------------------------------------- tables

def robustness_tables(p) -> list:
    """The `robustness` tables of a package (`tables._Package` `p`): `robustness` (per gate and
    candidate), `robustness_checks`, `robustness_gates` (method, margin, noise),
    `promotion_sensitivity` and `host_correlation_interval`. Only gates with a recorded
    decision, like the other tables; each decided again from the raw rows."""
    from auditkit.report.gates import decide_all
    from auditkit.derived.tables import Table, _hosts

    kind = "robustness"
    outcomes = decide_all(p.pkg) if p.decisions else {}
    cand_rows, check_rows, gate_rows, sens_rows = [], [], [], []
    inputs = {"protocol.json", p.protocol.matrix}
    for g in p.protocol.gates:
        if g.gate not in p.decisions:
            continue
        o = outcomes[g.gate]
        inputs.add(o.rules_path)
        inputs.update(o.inputs)
        if not o.decided:
            gate_rows.append((g.gate, None, None, None, "not resampled", 0, None, None, None, None, None, None, None,
                              f"could not be decided: {o.error}"))
            continue
        r = gate_robustness(o.rules, o.decision, o.se)
        gate_rows.append((r.gate, r.cells, r.candidates, r.eligible, r.method, r.resamples, r.last_promoted,
                          r.first_eliminated, r.margin, r.noise, r.noise_source, r.margin_in_noise, r.p_one_sided,
                          r.note or None))
        for c in r.rows:
            cand_rows.append((r.gate, c.config_id, c.rank, c.promoted, c.p_promoted, c.p_rank1, c.rank_lo, c.rank_hi))
        for c in r.checks:
            check_rows.append((r.gate, c.index, c.kind, c.candidate, c.reference, c.passed, c.value, c.value_lo,
                               c.value_hi, c.p_flip))
        for variant, k, keep, promoted in r.sensitivity:
            sens_rows.append((r.gate, variant, k, " ".join(keep), " ".join(promoted),
                              tuple(promoted) == tuple(o.decision.promoted)))
    corr_rows = []
    host_tab = _hosts(p)[0]
    means: dict[tuple[str, str], dict[str, float]] = {}
    for stage, cid, host, _n, mean, _rank in host_tab.rows:
        if mean is not None:
            means.setdefault((stage, host), {})[cid] = mean
    for s in p.protocol.stages:
        hosts = sorted(h for (st, h) in means if st == s.stage)
        for i, a in enumerate(hosts):
            for b in hosts[i + 1:]:
                common = sorted(set(means[(s.stage, a)]) & set(means[(s.stage, b)]))
                ci = correlation_interval([means[(s.stage, a)][c] for c in common],
                                          [means[(s.stage, b)][c] for c in common], f"{s.stage}/{a}/{b}")
                corr_rows.append((s.stage, a, b, ci.n, ci.spearman, ci.ci_low, ci.ci_high, LEVEL, ci.ci_method,
                                  ci.p_permutation, ci.permutation_method))
    inputs = tuple(sorted(inputs))
    return [
        Table("robustness", kind, ("gate", "config_id", "rank", "promoted", "p_promoted", "p_rank1", "rank_lo",
                                   "rank_hi"), tuple(cand_rows), inputs),
        Table("robustness_checks", kind, ("gate", "check", "kind", "candidate", "reference", "passed", "value",
                                          "value_lo", "value_hi", "p_flip"), tuple(check_rows), inputs,
              {"value": 9, "value_lo": 9, "value_hi": 9}),
        Table("robustness_gates", kind, ("gate", "cells", "candidates", "eligible", "method", "resamples",
                                         "last_promoted", "first_eliminated", "margin", "noise", "noise_source",
                                         "margin_in_noise", "p_one_sided", "note"), tuple(gate_rows), inputs,
              {"margin": 9, "noise": 9, "margin_in_noise": 3}),
        Table("promotion_sensitivity", kind, ("gate", "variant", "top_k", "always_keep", "promoted",
                                              "same_as_frozen"), tuple(sens_rows), inputs),
        Table("host_correlation_interval", kind, ("stage", "host_a", "host_b", "n", "spearman", "ci_low", "ci_high",
                                                  "ci_level", "ci_method", "p_permutation", "permutation_method"),
              tuple(corr_rows), tuple(p.run_csvs), {"ci_level": 2}),
    ]

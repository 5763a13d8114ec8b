"""Host correlations, pure (no I/O; seeded draws). `correlation_interval`: for two hosts' candidate
means (per stage and host pair in the tables), the Spearman correlation of their rankings with a 95% interval from Fisher's z
with the Bonett-Wright variance (none below 4 candidates or at |rho| = 1: a percentile
bootstrap over 3 or 4 candidates gives [1, 1] or [-1, 1] and says nothing), and the
permutation p-value of an agreement at least as strong
(`scipy.stats.permutation_test`: every pairing for n <= 7, 9999 seeded ones up to
`PERMUTATION_LIMIT` candidates, scipy's t approximation beyond). `host_baseline`: cross-host
agreement against its baseline, the cross-seed agreement within a host.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from itertools import permutations, product

import numpy as np

SEED = 20260502
LEVEL = 0.95
PERMUTATION_LIMIT = 200      # candidates above which the permutation p-value is scipy's t approximation


@dataclass(frozen=True)
class CorrelationInterval:
    n: int
    spearman: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    p_permutation: float | None
    permutation_method: str


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given their average rank (scipy.stats.rankdata's default)."""
    import pandas as pd

    return pd.DataFrame(np.asarray(a)).rank(axis=1, method="average").to_numpy(dtype=np.float64, copy=True)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (average ranks for ties); NaN where a row is constant."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / den
    rho[den == 0] = np.nan
    return rho


def spearman_pairs(values: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Spearman's rho of columns i and j of `values` (candidates x cells) for every (i, j) of `pairs`
    (sorted by i), each column ranked once: `_spearman_rows` of the pairs, value for value (the same
    ranks, centring, products and sums), without a row of ranks per pair."""
    r = _average_ranks(np.asarray(values, dtype=np.float64).T)      # (cells, candidates)
    r -= r.mean(axis=1, keepdims=True)
    ss = (r * r).sum(axis=1)
    out = np.empty(len(pairs), dtype=np.float64)
    k = 0
    while k < len(pairs):
        i = pairs[k][0]
        end = k
        while end < len(pairs) and pairs[end][0] == i:
            end += 1
        js = np.array([j for _, j in pairs[k:end]], dtype=np.int64)
        den = np.sqrt(ss[i] * ss[js])
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (r[i][None, :] * r[js]).sum(axis=1) / den
        rho[den == 0] = np.nan
        out[k:end] = rho
        k = end
    return out


PERMUTATIONS = 9999   # random pairings where n! is larger


def correlation_interval(a: list[float], b: list[float], key: str) -> CorrelationInterval:
    """Spearman of paired values `a`, `b` (one pair per candidate) with a Fisher z interval
    (`fisher_z_interval`) and a one-sided permutation p-value of an agreement at least as strong:
    exact over all n! pairings while n! <= 9999, else 9999 seeded random pairings, p = (k + 1) /
    (9999 + 1) (as scipy.stats.permutation_test counts them); beyond `PERMUTATION_LIMIT`
    candidates the t approximation scipy.stats.spearmanr uses. `key` seeds the draws."""
    from scipy import special

    n = len(a)
    if n < 3:
        return CorrelationInterval(n, None, None, None, "not computed: fewer than 3 candidates", None, "not computed")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rho = float(_spearman_rows(x[None, :], y[None, :])[0])
    rng = np.random.default_rng([SEED, zlib.crc32(key.encode())])
    lo, hi, how = fisher_z_interval(rho, n, LEVEL)
    tol = 1e-12 * max(1.0, abs(rho)) if math.isfinite(rho) else 0.0
    if n <= PERMUTATION_LIMIT and math.factorial(n) <= PERMUTATIONS:
        perms = np.array(list(permutations(range(n))), dtype=np.int64)
        rhos = _spearman_rows(np.broadcast_to(x, perms.shape), y[perms])
        p = float(np.mean(rhos >= rho - tol))
        pm = f"exact over all {len(perms)} pairings, one-sided (agreement at least as strong)"
    elif n <= PERMUTATION_LIMIT:
        perms = rng.permuted(np.tile(np.arange(n), (PERMUTATIONS, 1)), axis=1)
        rhos = _spearman_rows(np.broadcast_to(x, perms.shape), y[perms])
        p = float((np.sum(rhos >= rho - tol) + 1) / (PERMUTATIONS + 1))
        pm = f"{PERMUTATIONS} random pairings (seed {SEED}), one-sided (agreement at least as strong)"
    else:   # many candidates: the t approximation scipy.stats.spearmanr uses is accurate, and cheap
        t = rho * math.sqrt((n - 2) / max(1e-300, 1 - rho * rho))
        p = float(special.stdtr(n - 2, -t))
        pm = f"t approximation for {n} candidates (as scipy.stats.spearmanr), one-sided (agreement at least as strong)"
    return CorrelationInterval(n, rho, lo, hi, how, p, pm)


def fisher_z_interval(rho: float, n: int, level: float = LEVEL) -> tuple[float | None, float | None, str]:
    """(low, high, method) for Spearman's rho of n pairs: Fisher's z = atanh(rho) with the
    Bonett-Wright variance (1 + rho^2 / 2) / (n - 3). None (and the reason) for n < 4, where no
    interval says anything, and for |rho| = 1 or an undefined rho, where z is infinite."""
    from scipy import special

    if n < 4:
        return None, None, f"not computed: {n} candidates (Fisher z needs at least 4)"
    if not math.isfinite(rho) or abs(rho) >= 1:
        return None, None, f"not computed: rho = {rho:g} over {n} candidates (Fisher z is infinite at |rho| = 1)"
    se = math.sqrt((1 + rho * rho / 2) / (n - 3))
    q = float(special.ndtri(1 - (1 - level) / 2))
    z = math.atanh(rho)
    return math.tanh(z - q * se), math.tanh(z + q * se), \
        f"Fisher z, Bonett-Wright variance (1 + rho^2/2)/(n - 3), {n} candidates"


def host_baseline(values: np.ndarray, hosts: list[str], seeds: list) -> dict | None:
    """Host sensitivity against its baseline, from one gate's cells. `values`: candidates x (hosts x
    seeds, host-major). Mean Spearman over pairs of cells on different hosts with the same seed
    (`cross_host`) and over pairs on the same host with different seeds (`cross_seed`, the baseline:
    how much rankings move with the seed alone); `difference` = cross_seed - cross_host (> 0: hosts
    disagree more than seeds do). One-sided p: the share of the balanced reassignments of cells to
    hosts (every split of the cells into groups of the hosts' sizes, at most 5,000) whose difference
    is at least the observed one. None below 3 candidates, 2 hosts or 2 seeds."""
    nc = values.shape[0]
    h, s = len(hosts), len(seeds)
    if nc < 3 or h < 2 or s < 2:
        return None
    ncell = h * s
    pairs = [(i, j) for i in range(ncell) for j in range(i + 1, ncell)]
    rho = spearman_pairs(values, pairs)
    seed_of = [k % s for k in range(ncell)]

    def diff(host_of) -> float:
        cross = [r for (i, j), r in zip(pairs, rho) if host_of[i] != host_of[j] and seed_of[i] == seed_of[j]]
        within = [r for (i, j), r in zip(pairs, rho) if host_of[i] == host_of[j]]
        cross, within = [r for r in cross if r == r], [r for r in within if r == r]
        if not cross or not within:
            return math.nan
        return float(np.mean(within) - np.mean(cross)), float(np.mean(cross)), float(np.mean(within))

    observed = diff([k // s for k in range(ncell)])
    if not isinstance(observed, tuple):
        return None
    # reassignments: each seed's cells permuted across hosts (keeps one cell per host and seed)
    perms = list(permutations(range(h)))
    total = len(perms) ** s
    if total > 5000:
        return {"cross_host": observed[1], "cross_seed": observed[2], "difference": observed[0], "p": None,
                "method": f"{total} reassignments: too many to enumerate; no p-value"}
    count = ok = 0
    for combo in product(perms, repeat=s):
        host_of = [combo[k % s][k // s] for k in range(ncell)]
        d = diff(host_of)
        if isinstance(d, tuple):
            ok += 1
            count += d[0] >= observed[0] - 1e-12
    return {"cross_host": observed[1], "cross_seed": observed[2], "difference": observed[0],
            "p": count / ok if ok else None,
            "method": f"exact over the {ok} reassignments of each seed's cells to hosts, one-sided"}
